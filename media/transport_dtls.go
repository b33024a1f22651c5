package media

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// dtlsTransport is DTLS-SRTP with ICE (Meta's default key exchange) on
// pion/webrtc: ICE as the full, controlling agent (Meta is ICE-lite), DTLS
// as the client (a=setup:active, ECDSA), SRTP keyed from DTLS. pion only
// carries RTP: our own Opus, jitter buffer and pacing are the same as with
// SDES.
type dtlsTransport struct {
	pc      *webrtc.PeerConnection
	track   *rawTrack
	ourSSRC uint32 // our stream's SSRC on the wire (pion's sender picks it)
	log     *slog.Logger
	rx      *receiver

	connected chan struct{}
	connOnce  sync.Once
	failed    chan error
	failOnce  sync.Once
	lastRTCP  atomic.Uint64 // the last report taken, see readRTCP

	mu     sync.Mutex // orders pion's OnTrack callbacks against close
	closed bool
	wg     sync.WaitGroup
}

const dtlsTimeout = 10 * time.Second // ICE + DTLS must complete this soon after Start

func newRTCAPI(cfg Config, opusPT uint8, opusFmtp string, dtmfPT int) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: opusFmtp},
		PayloadType:        webrtc.PayloadType(opusPT),
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("media: register opus: %w", err)
	}
	if dtmfPT >= 0 { // unregistered, pion's ReadRTP would fail on DTMF packets
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: "audio/telephone-event", ClockRate: 8000, SDPFmtpLine: "0-16"},
			PayloadType:        webrtc.PayloadType(dtmfPT),
		}, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, fmt.Errorf("media: register telephone-event: %w", err)
		}
	}
	se, err := settingEngine(cfg)
	if err != nil {
		return nil, err
	}
	// An empty interceptor registry: without one pion adds its defaults,
	// which send their own RTCP sender/receiver reports next to ours (two
	// SRs for one SSRC with different counts), NACK lost audio that Opus
	// FEC/PLC covers anyway, and allocate on every packet.
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se),
		webrtc.WithInterceptorRegistry(&interceptor.Registry{})), nil
}

// settingEngine turns Config into pion's ICE and DTLS settings.
func settingEngine(cfg Config) (webrtc.SettingEngine, error) {
	var se webrtc.SettingEngine
	// pion answers an ICE-lite peer with a=setup:passive unless told: Meta
	// needs us to be the DTLS client. Toward a full-ICE actpass peer the
	// answerer shows pion an offer that says active, and we are the server
	// (answerSetup in negotiate_dtls.go).
	se.SetAnsweringDTLSRole(webrtc.DTLSRoleClient)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	if cfg.BindIP != nil && !cfg.BindIP.IsUnspecified() {
		bind := cfg.BindIP
		se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(bind) })
		if bind.IsLoopback() {
			se.SetIncludeLoopbackCandidate(true)
		}
	}
	lo, hi, err := cfg.portRange()
	if err != nil {
		return se, err
	}
	if lo > 0 { // ICE binds its host candidates here: the only sockets of a DTLS call
		if err := se.SetEphemeralUDPPortRange(uint16(lo), uint16(hi)); err != nil {
			return se, fmt.Errorf("media: rtp_ports: %w", err)
		}
	}
	if cfg.AdvertiseIP != nil && (cfg.BindIP == nil || !cfg.AdvertiseIP.Equal(cfg.BindIP)) {
		// 1:1 NAT (a port-forwarded kiosk): advertise the public address.
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External: []string{cfg.AdvertiseIP.String()}, AsCandidateType: webrtc.ICECandidateTypeHost,
		}); err != nil {
			return se, fmt.Errorf("media: public_address: %w", err)
		}
	}
	return se, nil
}

// newDTLSTransport makes the PeerConnection, our send track and the hooks
// that hand the peer's packets to rx.
func newDTLSTransport(cfg Config, rx *receiver, log *slog.Logger, opusPT uint8, opusFmtp string, dtmfPT int) (*dtlsTransport, error) {
	api, err := newRTCAPI(cfg, opusPT, opusFmtp, dtmfPT)
	if err != nil {
		return nil, err
	}
	var servers []webrtc.ICEServer
	if cfg.STUN != "" {
		servers = []webrtc.ICEServer{{URLs: []string{"stun:" + cfg.STUN}}}
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{ICEServers: servers})
	if err != nil {
		return nil, fmt.Errorf("media: peer connection: %w", err)
	}
	track := &rawTrack{}
	sender, err := pc.AddTrack(track)
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("media: audio track: %w", err)
	}
	t := &dtlsTransport{pc: pc, track: track, log: log, rx: rx, connected: make(chan struct{}), failed: make(chan error, 1)}
	if enc := sender.GetParameters().Encodings; len(enc) > 0 {
		t.ourSSRC = uint32(enc[0].SSRC)
	}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		log.Debug("ice/dtls state", "state", st.String())
		switch st {
		case webrtc.PeerConnectionStateConnected:
			t.connOnce.Do(func() { close(t.connected) })
		case webrtc.PeerConnectionStateFailed:
			t.fail(errors.New("ICE/DTLS failed: no path to the peer, or a bad fingerprint"))
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		t.spawn(func() { t.readTrack(tr) })
		t.spawn(func() { t.readRTCP(r.ReadRTCP) }) // the peer's sender reports
	})
	t.spawn(func() { t.readRTCP(sender.ReadRTCP) }) // the peer's reports about our stream
	return t, nil
}

func (t *dtlsTransport) fail(err error) {
	t.failOnce.Do(func() { t.failed <- err; close(t.failed) })
}

// spawn runs f on a goroutine that close waits for, unless close began:
// pion may still fire OnTrack while the peer connection shuts down.
func (t *dtlsTransport) spawn(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
}

// start watches ICE/DTLS: the first packet goes out the moment DTLS
// completes, and a path that fails or never completes ends the session.
func (t *dtlsTransport) start(ctx context.Context, fail func(error)) error {
	t.spawn(func() { t.watch(ctx, fail) })
	return nil
}

func (t *dtlsTransport) watch(ctx context.Context, fail func(error)) {
	timer := time.NewTimer(dtlsTimeout)
	defer timer.Stop()
	connected := t.connected
	for {
		select {
		case <-connected:
			connected = nil
			timer.Stop()
			t.log.Info("DTLS-SRTP connected")
		case err, ok := <-t.failed:
			if ok {
				fail(err)
			}
			return
		case <-timer.C:
			fail(errors.New("ICE/DTLS did not complete within 10 s"))
			return
		case <-ctx.Done():
			return
		}
	}
}

func (t *dtlsTransport) ssrc() uint32 { return t.ourSSRC }

func (t *dtlsTransport) isConnected() bool {
	select {
	case <-t.connected:
		return true
	default:
		return false
	}
}

// writeRTP hands one plain RTP packet to pion, which protects it.
func (t *dtlsTransport) writeRTP(pkt []byte) error {
	if !t.isConnected() {
		return errNoPath
	}
	return t.track.write(pkt)
}

func (t *dtlsTransport) writeRTCP(p rtcp.Packet) error {
	if !t.isConnected() {
		return errNoPath
	}
	return t.pc.WriteRTCP([]rtcp.Packet{p})
}

// remoteAddr: pion owns the path (ICE may even change it).
func (t *dtlsTransport) remoteAddr() string { return "" }

func (t *dtlsTransport) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	_ = t.pc.Close() // ends the track and RTCP readers, ICE and DTLS
	t.wg.Wait()
}

// readTrack feeds the remote track's RTP to the receiver.
func (t *dtlsTransport) readTrack(tr *webrtc.TrackRemote) {
	st := t.rx.newStream()
	if st == nil {
		return // no remote description: SetAnswer failed
	}
	// Accept the payload type pion bound the track to as well (the PT of
	// its first packet, so only when that one was Opus).
	if strings.EqualFold(tr.Codec().MimeType, webrtc.MimeTypeOpus) {
		st.pts.opus[1] = uint8(tr.PayloadType())
	}
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			t.rx.malformedPacket(netip.AddrPort{}, n)
			continue
		}
		t.rx.rtp(st, &pkt.Header, pkt.Payload, netip.AddrPort{})
	}
}

// readRTCP feeds pion's RTCP to the receiver until the peer connection closes.
func (t *dtlsTransport) readRTCP(read func() ([]rtcp.Packet, interceptor.Attributes, error)) {
	for {
		pkts, _, err := read()
		if err != nil {
			return
		}
		// pion hands a sender report that carries a block about our stream
		// to both readers (the peer's SSRC and ours): take it once.
		if k := rtcpKey(pkts); k != 0 && t.lastRTCP.Swap(k) == k {
			continue
		}
		t.rx.rtcp(pkts, netip.AddrPort{})
	}
}

// rtcpKey identifies a compound RTCP packet well enough to spot the same
// one twice: a sender report's NTP time, or a receiver report's first block.
func rtcpKey(pkts []rtcp.Packet) uint64 {
	for _, p := range pkts {
		switch r := p.(type) {
		case *rtcp.SenderReport:
			return r.NTPTime
		case *rtcp.ReceiverReport:
			if len(r.Reports) > 0 {
				b := r.Reports[0]
				return uint64(b.LastSenderReport)<<32 | uint64(b.LastSequenceNumber) | 1
			}
		}
	}
	return 0
}

// rawTrack sends our own RTP through pion unchanged but for the SSRC.
// pion's TrackLocalStaticRTP rewrites every payload type to the bound
// codec's, which would turn RFC 4733 telephone-events into broken Opus.
type rawTrack struct {
	mu   sync.Mutex
	w    webrtc.TrackLocalWriter
	ssrc uint32
	hdr  rtp.Header // reused by write
}

func (t *rawTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	for _, c := range ctx.CodecParameters() {
		if strings.EqualFold(c.MimeType, webrtc.MimeTypeOpus) {
			t.mu.Lock()
			t.w, t.ssrc = ctx.WriteStream(), uint32(ctx.SSRC())
			t.mu.Unlock()
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, errors.New("media: no opus in the negotiated codecs")
}

func (t *rawTrack) Unbind(webrtc.TrackLocalContext) error {
	t.mu.Lock()
	t.w = nil
	t.mu.Unlock()
	return nil
}

func (t *rawTrack) ID() string                { return "audio" }
func (t *rawTrack) RID() string               { return "" }
func (t *rawTrack) StreamID() string          { return "waphone" }
func (t *rawTrack) Kind() webrtc.RTPCodecType { return webrtc.RTPCodecTypeAudio }

// write sends one RTP packet (the send goroutine only). It parses the
// header into a reused rtp.Header and calls WriteRTP: pion's Write(b)
// allocates a packet per call.
func (t *rawTrack) write(pkt []byte) error {
	t.mu.Lock()
	w, ssrc := t.w, t.ssrc
	t.mu.Unlock()
	if w == nil || len(pkt) < 12 {
		return errNoPath
	}
	binary.BigEndian.PutUint32(pkt[8:12], ssrc) // the SSRC announced in our SDP
	n, err := t.hdr.Unmarshal(pkt)
	if err != nil {
		return fmt.Errorf("media: our own RTP header: %w", err)
	}
	_, err = w.WriteRTP(&t.hdr, pkt[n:])
	return err
}
