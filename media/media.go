// Package media runs the audio of one WhatsApp Business call: SDP
// offer/answer, Opus 48 kHz mono over SRTP, a small jitter buffer with
// Opus PLC/FEC, RFC 4733 telephone-events and RTCP quality figures.
//
// SRTP is keyed one of two ways, chosen once at negotiation: DTLS-SRTP
// with ICE on pion/ice, pion/dtls and pion/srtp (Meta's default; toward
// Meta we are the controlling ICE agent and the DTLS client), or SDES (a=crypto) on one UDP socket with
// rtcp-mux and symmetric RTP. Everything else is the same code for both.
//
// Meta expects the business to send the first SRTP packet, so Start sends one
// right away and then one Opus frame every 20 ms without pauses (mute sends
// encoded silence, no DTX).
package media

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// SampleRate is the PCM rate at the Source/Sink boundary and Opus's RTP clock.
const SampleRate = 48000

// FrameSamples is one 20 ms frame of mono PCM at SampleRate.
const FrameSamples = 960

// Source gives one 20 ms frame of mono S16 PCM; it must not block longer than
// about a frame. An error makes the session send silence for that frame.
type Source interface{ ReadFrame(pcm []int16) error }

// Sink takes one 20 ms frame of decoded mono PCM. The slice is reused after
// WriteFrame returns, so a sink that keeps it must copy it.
type Sink interface{ WriteFrame(pcm []int16) error }

// Config configures one call's media.
type Config struct {
	// KeyExchange is what our offers use: "sdes" (default, also "") or
	// "dtls" (DTLS-SRTP with ICE, what Meta offers). Answer follows the
	// peer's offer whatever this says.
	KeyExchange string
	// BindIP is the local IP of the RTP socket (SDES) or of the ICE host
	// candidates (DTLS); nil means 0.0.0.0 (or :: when answering an IPv6
	// SDES offer), and any interface's address for ICE.
	BindIP net.IP
	// AdvertiseIP goes into c= (SDES) or replaces the host candidates'
	// address (DTLS, for a 1:1 NAT); nil means BindIP if specified, else
	// the first non-loopback IPv4 of an interface that is up, else
	// 127.0.0.1 (SDES) or the candidates' own addresses (DTLS).
	AdvertiseIP net.IP
	// PortMin, PortMax bound the local UDP ports: the one RTP socket of an
	// SDES call (even ports tried first), the ICE host candidates of a
	// DTLS call. 0,0 lets the kernel pick.
	PortMin, PortMax int
	// NoMediaTimeout ends the session with ErrNoMedia when no authenticated
	// packet arrived for this long. 0 means 30 s; negative disables it.
	// Before the first packet the limit is min(20 s, NoMediaTimeout), the
	// window after which Meta itself gives up on a silent call.
	NoMediaTimeout time.Duration
	// OnDTMF, if set, is called once per RFC 4733 telephone-event received
	// ('0'-'9', '*', '#', 'A'-'D'), from the receive goroutine.
	OnDTMF func(digit rune)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// STUN is a host:port for server-reflexive ICE candidates (DTLS mode); "" = none.
	STUN string
	// OpusComplexity is the encoder's complexity, 1 (cheapest) to 10;
	// 0 means DefaultOpusComplexity for this CPU.
	OpusComplexity int
}

// NegotiationError carries the SIP status the signaling layer should answer
// with: 488 for offers we cannot accept, 400 for SDP we cannot parse.
type NegotiationError struct {
	Status int
	Reason string
}

func (e *NegotiationError) Error() string {
	return fmt.Sprintf("media: sdp negotiation failed: %d %s", e.Status, e.Reason)
}

// ErrNoMedia is the Err of a session that saw no RTP for NoMediaTimeout.
var ErrNoMedia = errors.New("media: no RTP received")

// Stats is a snapshot of a session's counters.
type Stats struct {
	PacketsSent     uint64
	PacketsReceived uint64 // authenticated RTP packets (any payload type)
	PacketsLost     uint64 // RFC 3550 cumulative loss from sequence numbers
	AuthFailures    uint64 // packets that failed SRTP/SRTCP unprotect (bad tag, malformed)
	Concealed       uint64 // frames produced by Opus PLC or FEC instead of a packet
	FECRecovered    uint64 // of Concealed: frames rebuilt from the next packet's in-band FEC

	Duplicates      uint64 // replayed/duplicate packets dropped
	Late            uint64 // packets arriving after their playout slot
	UnknownPT       uint64 // authenticated packets with a payload type we did not negotiate
	TelephoneEvents uint64 // RFC 4733 packets received (each event goes to OnDTMF once)
	RTCPReceived    uint64 // authenticated SRTCP packets

	// Quality: RFC 3550 jitter of what we receive, round-trip time from the
	// peer's reports, the loss the peer reports for our stream, concealed
	// audio, and an E-model MOS estimate (1-4.5).
	JitterMs    float64
	BufferMs    int // the jitter buffer's playout depth now (20 ms a packet, adapted to JitterMs)
	RTTMs       float64
	LossPercent float64
	ConcealedMs uint64
	MOS         float64

	FirstSentAt     time.Time
	FirstReceivedAt time.Time
	RemoteAddr      string // SDES: where we send RTP now (after symmetric-RTP latching); DTLS: "" (ICE's)
	Codec           string // e.g. "opus/48000/2 pt 111"
}

func (c *Config) logger() *slog.Logger {
	l := c.Logger
	if l == nil {
		l = slog.Default()
	}
	return l.With("component", "media")
}

func (c *Config) noMediaTimeout() time.Duration {
	if c.NoMediaTimeout == 0 {
		return 30 * time.Second
	}
	return c.NoMediaTimeout
}

// portRange checks PortMin, PortMax; lo == 0 means no range.
func (c *Config) portRange() (lo, hi int, err error) {
	lo, hi = c.PortMin, c.PortMax
	if lo == 0 && hi == 0 {
		return 0, 0, nil
	}
	if lo <= 0 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("media: bad rtp port range %d-%d", lo, hi)
	}
	return lo, hi, nil
}

func (c *Config) keyExchange() (string, error) {
	switch c.KeyExchange {
	case "", "sdes", "SDES":
		return "sdes", nil
	case "dtls", "DTLS":
		return "dtls", nil
	default:
		return "", fmt.Errorf("media: unknown key exchange %q (want sdes or dtls)", c.KeyExchange)
	}
}
