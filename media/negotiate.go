package media

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hraban/opus"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

const (
	frameDur = 20 * time.Millisecond
	// Meta drops a call that stays silent for about 20 s at the start.
	startNoMediaLimit = 20 * time.Second
	// Largest Opus packet is 120 ms; the decoder sizes its output by cap().
	maxDecodeSamples = SampleRate * 120 / 1000
	// Consecutive underrun frames we conceal before playing plain silence.
	maxPLCRun = 5
	// When maxaveragebitrate is absent: plenty for wideband/fullband voice.
	defaultBitrate = 32000
	// Expected loss we tell the encoder so that in-band FEC is really used.
	fecLossPerc = 10
)

// Session is the media of one call. Create it with Offer or Answer.
type Session struct {
	cfg   Config
	log   *slog.Logger
	conn  *net.UDPConn
	local localDesc

	mu        sync.Mutex
	localSDP  []byte
	offerer   bool
	remote    *remoteDesc
	codec     string
	started   bool
	stopped   bool
	startedAt time.Time
	cancel    context.CancelFunc
	err       error
	firstSent time.Time
	firstRecv time.Time

	muted    atomic.Bool
	dest     atomic.Pointer[netip.AddrPort] // where RTP goes; moves to the source of authenticated packets
	lastRecv atomic.Int64                   // time.Since(startedAt)+1 of the last authenticated packet, 0 = none
	// Unix nanoseconds of the send and play loops' latest ticks: a loop
	// stuck (in a device read, say) stops its beat, and Beat tells the watchdog.
	sendBeat, playBeat atomic.Int64

	sent, recv, authFail, concealed, fec, unknownPT atomic.Uint64
	dups, late, dtmf, rtcpRecv, malformed           atomic.Uint64
	lastRTCP                                        atomic.Uint64 // DTLS mode: the last report taken, see readRTCP

	seqMu sync.Mutex
	seq   seqTracker

	jbMu sync.Mutex
	jb   jitterBuffer

	rtc *rtcPeer // DTLS-SRTP mode (pion/webrtc); nil for SDES

	dtmfQueue []byte // events waiting to be sent (guarded by mu)
	q         quality
	ourSSRC   atomic.Uint32

	wg   sync.WaitGroup
	done chan struct{}
}

// Offer starts an outbound call: it opens the RTP socket and returns our
// SDES offer (Opus PT 111, telephone-event 126, RTP/SAVP, rtcp-mux).
func Offer(cfg Config) (*Session, []byte, error) {
	kx, err := cfg.keyExchange()
	if err != nil {
		return nil, nil, err
	}
	if kx == "dtls" {
		return offerDTLS(cfg)
	}
	s, err := newSession(cfg, cfg.BindIP != nil && cfg.BindIP.To4() == nil)
	if err != nil {
		return nil, nil, err
	}
	key, err := newSDESKey(1, suite80)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.local.key = key
	s.local.protos = []string{"RTP", "SAVP"}
	s.local.opusPT, s.local.dtmfPT = offerOpusPT, offerDTMFPT
	s.local.dtmf = codecInfo{name: "telephone-event", clock: 8000, fmtp: "0-16", hasFmtp: true}
	s.local.rtcpMux, s.local.direction = true, "sendrecv"
	b, err := buildSDP(s.local, nil, 0)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.localSDP, s.offerer = b, true
	s.codec = fmt.Sprintf("opus/48000/2 pt %d", offerOpusPT)
	return s, bytes.Clone(b), nil
}

// SetAnswer applies the peer's answer to our offer. Calling it again with the
// same keys (e.g. 183 then 200 with one SDP) is fine; re-keying after Start is not.
func (s *Session) SetAnswer(answer []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.offerer {
		return errors.New("media: SetAnswer on a session created by Answer")
	}
	if s.stopped {
		return errors.New("media: session closed")
	}
	if s.rtc != nil {
		return s.setAnswerDTLS(answer)
	}
	sd, nerr := parseSDP(answer)
	if nerr != nil {
		return nerr
	}
	md := sd.MediaDescriptions[0]
	if !strings.EqualFold(md.MediaName.Media, "audio") || md.MediaName.Port.Value == 0 {
		return notAcceptable("answer rejected the audio stream")
	}
	rd, nerr := analyzeAudio(sd, 0, &answerCheck{
		tag: s.local.key.tag, suite: s.local.key.suite,
		fallback: map[int]codecInfo{
			offerOpusPT: {name: "opus", clock: SampleRate, channels: "2"},
			offerDTMFPT: s.local.dtmf,
		},
	})
	if nerr != nil {
		return nerr
	}
	if s.started {
		if s.remote == nil || !bytes.Equal(rd.key.keySalt, s.remote.key.keySalt) || rd.opusPT != s.remote.opusPT {
			return errors.New("media: changing keys or codec of a running session is not supported")
		}
		if rd.addr.IsValid() && s.recvCount() == 0 {
			s.dest.Store(&rd.addr)
		}
		return nil
	}
	s.remote = &rd
	s.codec = fmt.Sprintf("opus/48000/2 pt %d", rd.opusPT)
	s.log.Debug("sdp answer applied", "remote", rd.addr, "opus_pt", rd.opusPT, "dtmf_pt", rd.dtmfPT, "rtcp_mux", rd.rtcpMux)
	return nil
}

func (s *Session) recvCount() uint64 { return s.recv.Load() }

// Answer accepts an inbound call's offer: it mirrors the offered Opus and
// telephone-event payload types, answers the chosen a=crypto tag with a fresh
// key and opens the RTP socket.
func Answer(cfg Config, offer []byte) (*Session, []byte, error) {
	if _, err := cfg.keyExchange(); err != nil {
		return nil, nil, err
	}
	sd, nerr := parseSDP(offer)
	if nerr != nil {
		return nil, nil, nerr
	}
	if isDTLSOffer(sd) {
		return answerDTLS(cfg, offer, sd)
	}
	rd, nerr := pickAudio(sd, nil)
	if nerr != nil {
		return nil, nil, nerr
	}
	v6 := rd.addr.IsValid() && rd.addr.Addr().Is6()
	if cfg.BindIP != nil {
		if bind6 := cfg.BindIP.To4() == nil; bind6 != v6 && rd.addr.IsValid() {
			return nil, nil, notAcceptable("address family of %s does not match bind address %s", rd.addr.Addr(), cfg.BindIP)
		}
		v6 = cfg.BindIP.To4() == nil
	}
	s, err := newSession(cfg, v6)
	if err != nil {
		return nil, nil, err
	}
	key, err := newSDESKey(rd.key.tag, rd.key.suite)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.local.key = key
	s.local.protos = rd.protos
	s.local.opusPT, s.local.dtmfPT, s.local.dtmf = rd.opusPT, rd.dtmfPT, rd.dtmf
	s.local.rtcpMux, s.local.mid, s.local.direction = rd.rtcpMux, rd.mid, answerDirection(rd.direction)
	b, err := buildSDP(s.local, sd, rd.index)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.localSDP, s.remote = b, &rd
	s.codec = fmt.Sprintf("opus/48000/2 pt %d", rd.opusPT)
	s.log.Debug("sdp offer answered", "remote", rd.addr, "opus_pt", rd.opusPT, "dtmf_pt", rd.dtmfPT, "rtcp_mux", rd.rtcpMux)
	return s, bytes.Clone(b), nil
}

func newSession(cfg Config, v6 bool) (*Session, error) {
	conn, err := listenRTP(cfg, v6)
	if err != nil {
		return nil, err
	}
	la := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("media: random session id: %w", err)
	}
	s := &Session{
		cfg:  cfg,
		conn: conn,
		done: make(chan struct{}),
		local: localDesc{
			sessID: binary.BigEndian.Uint64(id[:]) >> 2, // stay well inside int64 for picky parsers
			ip:     advertiseIP(cfg, v6),
			port:   int(la.Port()),
		},
	}
	s.log = cfg.logger().With("rtp_local", la.String())
	return s, nil
}

// listenRTP binds the UDP socket, trying even ports of the range first
// (RFC 3550 convention; some middleboxes still care).
func listenRTP(cfg Config, v6 bool) (*net.UDPConn, error) {
	network, ip := "udp4", net.IPv4zero
	if v6 {
		network, ip = "udp6", net.IPv6unspecified
	}
	if cfg.BindIP != nil {
		ip = cfg.BindIP
	}
	if cfg.PortMin == 0 && cfg.PortMax == 0 {
		c, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
		if err != nil {
			return nil, fmt.Errorf("media: listen rtp on %s: %w", ip, err)
		}
		return c, nil
	}
	lo, hi := cfg.PortMin, cfg.PortMax
	if lo <= 0 || hi > 65535 || lo > hi {
		return nil, fmt.Errorf("media: bad rtp port range %d-%d", lo, hi)
	}
	n := hi - lo + 1
	start := mrand.IntN(n)
	var lastErr error
	for _, wantEven := range []bool{true, false} {
		for i := range n {
			p := lo + (start+i)%n
			if (p%2 == 0) != wantEven {
				continue
			}
			c, err := net.ListenUDP(network, &net.UDPAddr{IP: ip, Port: p})
			if err == nil {
				return c, nil
			}
			lastErr = err
		}
	}
	return nil, fmt.Errorf("media: no free rtp port in %d-%d on %s: %w", lo, hi, ip, lastErr)
}

func advertiseIP(cfg Config, v6 bool) netip.Addr {
	if a, ok := netip.AddrFromSlice(cfg.AdvertiseIP); ok && cfg.AdvertiseIP != nil {
		return a.Unmap()
	}
	if a, ok := netip.AddrFromSlice(cfg.BindIP); ok && !a.IsUnspecified() {
		return a.Unmap()
	}
	if ifs, err := net.Interfaces(); err == nil {
		for _, ifc := range ifs {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, err := ifc.Addrs()
			if err != nil {
				continue
			}
			for _, ad := range addrs {
				pfx, err := netip.ParsePrefix(ad.String())
				if err != nil {
					continue
				}
				a := pfx.Addr().Unmap()
				if a.Is4() != !v6 || a.IsLoopback() || a.IsLinkLocalUnicast() {
					continue
				}
				return a
			}
		}
	}
	if v6 {
		return netip.IPv6Loopback()
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// LocalSDP returns our SDP. It never changes during the session, so a
// re-INVITE is answered with the same bytes (same o= version, RFC 3264 §8).
func (s *Session) LocalSDP() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.localSDP)
}

// SetMute sends encoded silence instead of the source while on; the packet
// stream never pauses (Meta hangs up on silence gaps, and no DTX either).
func (s *Session) SetMute(m bool) { s.muted.Store(m) }

// Beat is the time of the older of the send and play loops' latest
// ticks (both tick every 20 ms while the session runs), zero before Start
// and after the session ended. The watchdog uses it to tell a wedged
// media loop from a quiet call.
func (s *Session) Beat() time.Time {
	select {
	case <-s.done:
		return time.Time{}
	default:
	}
	a, b := s.sendBeat.Load(), s.playBeat.Load()
	if a == 0 || b == 0 {
		return time.Time{}
	}
	return time.Unix(0, min(a, b))
}

// Done is closed when the session ended (Close, ctx cancel, no-media timeout).
func (s *Session) Done() <-chan struct{} { return s.done }

// Err tells why the session ended: nil after Close, ErrNoMedia on timeout,
// the context's error on cancellation.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session and waits for its goroutines; it is idempotent.
func (s *Session) Close() error {
	s.stop(nil)
	<-s.done
	return nil
}

// stop ends the session once; the first caller's reason wins. Start holds
// s.mu while it launches goroutines, so wg.Wait below never races wg.Add.
func (s *Session) stop(err error) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped, s.err = true, err
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.conn.Close() // unblocks the receive loop
	if s.rtc != nil {
		_ = s.rtc.pc.Close() // ends the remote track reader and ICE/DTLS
	}
	if err != nil {
		s.log.Info("media session ended", "err", err)
	}
	go func() {
		s.wg.Wait()
		close(s.done)
	}()
}

// Stats returns a snapshot of the counters.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	st := Stats{FirstSentAt: s.firstSent, FirstReceivedAt: s.firstRecv, Codec: s.codec}
	s.mu.Unlock()
	s.seqMu.Lock()
	st.PacketsLost = s.seq.lost()
	s.seqMu.Unlock()
	if d := s.dest.Load(); d != nil {
		st.RemoteAddr = d.String()
	}
	st.PacketsSent, st.PacketsReceived = s.sent.Load(), s.recv.Load()
	st.AuthFailures, st.Concealed, st.FECRecovered = s.authFail.Load()+s.malformed.Load(), s.concealed.Load(), s.fec.Load()
	st.Duplicates, st.Late, st.UnknownPT = s.dups.Load(), s.late.Load(), s.unknownPT.Load()
	st.TelephoneEvents, st.RTCPReceived = s.dtmf.Load(), s.rtcpRecv.Load()
	st.ConcealedMs = st.Concealed * 20
	s.q.mu.Lock()
	st.JitterMs, st.RTTMs = s.q.jitter*1000/SampleRate, s.q.rttMs
	st.LossPercent = float64(s.q.remoteLoss) * 100 / 256
	s.q.mu.Unlock()
	if st.PacketsReceived > 0 {
		// Our own view of loss counts too: what we could not play.
		local := 0.0
		if exp := st.PacketsReceived + st.PacketsLost; exp > 0 {
			local = float64(st.PacketsLost) * 100 / float64(exp)
		}
		st.MOS = math.Round(mos(st.RTTMs, st.JitterMs, max(local, st.LossPercent))*100) / 100
	}
	return st
}

// Start runs the media: it sends the first SRTP packet at once (Meta waits
// for the business to send first), then a frame every 20 ms. From the peer's
// first authenticated packet on, sink gets one frame every 20 ms (decoded,
// concealed, or silence on a long gap). It does not block. src or sink may
// be nil (silence / discard). The session ends on Close, ctx cancellation
// or the no-media timeout; see Done and Err.
func (s *Session) Start(ctx context.Context, src Source, sink Sink) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return errors.New("media: session closed")
	case s.started:
		return errors.New("media: session already started")
	case s.remote == nil:
		return errors.New("media: no remote description (SetAnswer not called)")
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("media: start: %w", ctx.Err())
	default:
	}
	rd := s.remote
	if s.rtc != nil {
		return s.startRTC(ctx, src, sink)
	}
	tx, err := newSender(s.local.key, rd)
	if err != nil {
		return err
	}
	rx, err := rd.key.context(true)
	if err != nil {
		return err
	}
	dec, err := opus.NewDecoder(SampleRate, 1)
	if err != nil {
		return fmt.Errorf("media: opus decoder: %w", err)
	}
	if rd.addr.IsValid() {
		a := rd.addr
		s.dest.Store(&a)
	}
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel, s.started, s.startedAt = cancel, true, time.Now()
	s.wg.Add(3)
	go s.sendLoop(runCtx, ctx, src, tx)
	// Accept both our and the peer's PT numbers: RFC 3264 lets an answer
	// renumber, and each side should send with the other's numbers.
	go s.recvLoop(&receiver{ctx: rx, opusPT: rd.opusPT, opusPT2: s.local.opusPT, dtmfPT: rd.dtmfPT, dtmfPT2: s.local.dtmfPT})
	go s.playLoop(runCtx, ctx, sink, &player{dec: dec, lastN: FrameSamples})
	s.log.Info("media started", "remote", rd.addr, "codec", s.codec, "suite", rd.key.suite)
	return nil
}

// sender owns everything the 20 ms send path touches, allocated once.
type sender struct {
	enc   *opus.Encoder
	srtp  *srtp.Context
	hdr   rtp.Header
	pt    uint8
	seq   uint16
	ts    uint32
	ssrc  uint32
	first bool
	pcm   [FrameSamples]int16
	pkt   [maxPayload]byte
	out   [maxPayload + 32]byte
}

func newSender(local sdesKey, rd *remoteDesc) (*sender, error) {
	c, err := local.context(false)
	if err != nil {
		return nil, err
	}
	return newPlainSender(c, rd)
}

// newPlainSender builds the send path; c == nil leaves packets unprotected
// (DTLS mode: pion protects them).
func newPlainSender(c *srtp.Context, rd *remoteDesc) (*sender, error) {
	enc, err := newEncoder(parseOpusFmtp(rd.opus.fmtp))
	if err != nil {
		return nil, err
	}
	var r [10]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("media: random rtp ids: %w", err)
	}
	return &sender{
		enc: enc, srtp: c, pt: rd.opusPT, first: true,
		ssrc: binary.BigEndian.Uint32(r[0:]), ts: binary.BigEndian.Uint32(r[4:]),
		// Random start seq, but low enough that the ROC does not roll soon
		// after start (some receivers mis-guess an early rollover).
		seq: binary.BigEndian.Uint16(r[8:]) & 0x7fff,
	}, nil
}

// newEncoder applies the peer's fmtp limits (RFC 7587 §6.1).
func newEncoder(p opusParams) (*opus.Encoder, error) {
	enc, err := opus.NewEncoder(SampleRate, 1, opus.AppVoIP)
	if err != nil {
		return nil, fmt.Errorf("media: opus encoder: %w", err)
	}
	br := p.maxAverageBitrate
	if br <= 0 {
		br = defaultBitrate
	}
	br = min(max(br, 6000), 510000)
	bw := opus.Fullband
	switch r := p.maxPlaybackRate; {
	case r <= 0:
	case r <= 8000:
		bw = opus.Narrowband
	case r <= 12000:
		bw = opus.Mediumband
	case r <= 16000:
		bw = opus.Wideband
	case r <= 24000:
		bw = opus.SuperWideband
	}
	var errs []error
	check := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	check("bitrate", enc.SetBitrate(br))
	check("max bandwidth", enc.SetMaxBandwidth(bw))
	check("dtx", enc.SetDTX(false)) // Meta hangs up on silent gaps; mute sends coded silence
	check("fec", enc.SetInBandFEC(p.useInbandFEC))
	if p.useInbandFEC {
		// libopus only spends bits on FEC if told to expect loss.
		check("loss perc", enc.SetPacketLossPerc(fecLossPerc))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("media: opus encoder: %w", err)
	}
	return enc, nil
}

// frame encodes pcm and protects it; the result aliases t.out.
func (t *sender) frame(pcm []int16) ([]byte, error) {
	n, err := t.enc.Encode(pcm, t.pkt[12:len(t.pkt):len(t.pkt)])
	if err != nil {
		return nil, fmt.Errorf("opus encode: %w", err)
	}
	b := t.pkt[:12+n]
	b[0] = 0x80
	b[1] = t.pt
	if t.first {
		b[1] |= 0x80 // marker: start of the stream
	}
	binary.BigEndian.PutUint16(b[2:], t.seq)
	binary.BigEndian.PutUint32(b[4:], t.ts)
	binary.BigEndian.PutUint32(b[8:], t.ssrc)
	out := b
	if t.srtp != nil {
		if out, err = t.srtp.EncryptRTP(t.out[:0], b, &t.hdr); err != nil {
			return nil, fmt.Errorf("srtp protect: %w", err)
		}
	}
	t.first = false
	t.seq++
	t.ts += FrameSamples
	return out, nil
}

// logEvery logs the 1st, 2nd, 4th, 8th... occurrence of a recurring problem.
func logEvery(n uint64) bool { return n&(n-1) == 0 }

func (s *Session) sendLoop(ctx, parent context.Context, src Source, tx *sender) {
	defer s.wg.Done()
	var srcErrs, sendErrs uint64
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	next := time.Now()
	var dtmf dtmfState
	s.ourSSRC.Store(tx.ssrc)
	nextRTCP := time.Now().Add(rtcpFirst)
	for {
		now := time.Now()
		s.sendBeat.Store(now.UnixNano())
		if now.After(nextRTCP) {
			nextRTCP = now.Add(rtcpInterval)
			s.sendRTCP(tx, now)
		}
		s.applyLoss(tx)
		pcm := tx.pcm[:]
		if s.muted.Load() || src == nil {
			clear(pcm)
		} else if err := src.ReadFrame(pcm); err != nil {
			clear(pcm)
			if srcErrs++; logEvery(srcErrs) {
				s.log.Warn("audio source failed, sending silence", "err", err, "count", srcErrs)
			}
		}
		out, err := []byte(nil), error(nil)
		if ev := s.nextDTMF(tx, &dtmf); ev != nil {
			// A telephone-event replaces this tick's audio; the audio clock runs on.
			tx.ts += FrameSamples
			out = ev
			if tx.srtp != nil {
				out, err = tx.srtp.EncryptRTP(tx.out[:0], ev, &tx.hdr)
			}
		} else {
			out, err = tx.frame(pcm)
		}
		if err != nil {
			if sendErrs++; logEvery(sendErrs) {
				s.log.Warn("rtp frame failed", "err", err, "count", sendErrs)
			}
		} else if s.rtc != nil {
			sendAt := time.Now() // before the write: the peer may answer before it returns
			if err := s.rtcWrite(out); err == nil {
				s.noteSent(nil, sendAt)
			} else if !errors.Is(err, errNotConnected) {
				if sendErrs++; logEvery(sendErrs) {
					s.log.Warn("rtp send failed", "err", err, "count", sendErrs)
				}
			}
		} else if dst := s.dest.Load(); dst != nil {
			sendAt := time.Now() // before the write: the peer may answer before it returns
			if _, err := s.conn.WriteToUDPAddrPort(out, *dst); err != nil {
				if ctx.Err() != nil {
					s.stop(parent.Err())
					return
				}
				if sendErrs++; logEvery(sendErrs) {
					s.log.Warn("rtp send failed", "to", dst.String(), "err", err, "count", sendErrs)
				}
			} else {
				s.noteSent(dst, sendAt)
			}
		}
		next = next.Add(frameDur)
		if behind := time.Since(next); behind > 5*frameDur {
			// We stalled (suspend, overloaded host): do not burst the missed
			// frames, but keep the RTP clock honest about the gap.
			skipped := int(behind / frameDur)
			tx.ts += uint32(skipped * FrameSamples)
			next = next.Add(time.Duration(skipped) * frameDur)
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			s.stop(parent.Err())
			return
		case <-timer.C:
		}
	}
}

// noteSent counts a packet; to is nil in DTLS mode. No allocation after the first.
func (s *Session) noteSent(to *netip.AddrPort, at time.Time) {
	if s.sent.Add(1) == 1 {
		s.mu.Lock()
		s.firstSent = at
		s.mu.Unlock()
		where := "dtls"
		if to != nil {
			where = to.String()
		}
		s.log.Debug("first rtp packet sent", "to", where)
	}
}

// receiver owns the inbound SRTP context and buffers (receive goroutine only).
type receiver struct {
	ctx     *srtp.Context
	hdr     rtp.Header
	opusPT  uint8
	opusPT2 uint8
	dtmfPT  int
	dtmfPT2 int
	// last telephone-event seen, to report each event once
	lastEventTS uint32
	haveEvent   bool
	lastSSRC    uint32
	haveSSRC    bool
	buf         [2048]byte
	rtcpBuf     [2048]byte
}

// unprotect authenticates and decrypts one SRTP packet and returns its
// payload without padding; r.hdr holds the header.
func (r *receiver) unprotect(pkt []byte) ([]byte, error) {
	dec, err := r.ctx.DecryptRTP(r.buf[:0], pkt, &r.hdr)
	if err != nil {
		return nil, err
	}
	hl, err := r.hdr.Unmarshal(dec)
	if err != nil {
		return nil, err
	}
	p := dec[hl:]
	if r.hdr.Padding {
		if len(p) == 0 || int(p[len(p)-1]) == 0 || int(p[len(p)-1]) > len(p) {
			return nil, errors.New("bad rtp padding")
		}
		p = p[:len(p)-int(p[len(p)-1])]
	}
	return p, nil
}

func isDuplicate(err error) bool {
	// pion's duplicate error is unexported; its text is stable API-wise.
	return err != nil && strings.Contains(err.Error(), "duplicated")
}

func (s *Session) recvLoop(rx *receiver) {
	defer s.wg.Done()
	var buf [2048]byte
	var readErrs uint64
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf[:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if readErrs++; logEvery(readErrs) {
				s.log.Warn("rtp read failed", "err", err, "count", readErrs)
			}
			time.Sleep(time.Millisecond) // no hot loop on a persistent error
			continue
		}
		s.handlePacket(rx, buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	}
}

func (s *Session) handlePacket(rx *receiver, pkt []byte, from netip.AddrPort) {
	if len(pkt) < 12 || pkt[0]>>6 != 2 {
		if n := s.malformed.Add(1); logEvery(n) {
			s.log.Debug("dropping non-RTP packet", "from", from.String(), "len", len(pkt), "count", n)
		}
		return
	}
	if pt := pkt[1]; pt >= 192 && pt <= 223 { // RTCP on the muxed port (RFC 5761 §4)
		dec, err := rx.ctx.DecryptRTCP(rx.rtcpBuf[:0], pkt, nil)
		if err != nil {
			s.countUnprotectError(err, from, true)
			return
		}
		s.rtcpRecv.Add(1)
		s.q.onRTCP(dec, s.ourSSRC.Load(), time.Now())
		s.gotValid(from)
		return
	}
	payload, err := rx.unprotect(pkt)
	if err != nil {
		s.countUnprotectError(err, from, false)
		return
	}
	s.recv.Add(1)
	s.gotValid(from)
	s.handleRTP(rx, &rx.hdr, payload)
}

// handleRTP takes one authenticated RTP packet: audio into the jitter
// buffer, telephone-events counted, anything else ignored.
func (s *Session) handleRTP(rx *receiver, h *rtp.Header, payload []byte) {
	isOpus := h.PayloadType == rx.opusPT || h.PayloadType == rx.opusPT2
	// Loss is counted on the audio stream's SSRC (DTMF shares its sequence
	// space); a stray SSRC must not reset the statistics.
	s.seqMu.Lock()
	if isOpus || (s.seq.init && h.SSRC == s.seq.ssrc) {
		s.seq.update(h.SSRC, h.SequenceNumber)
	}
	s.seqMu.Unlock()
	switch {
	case isOpus:
		s.q.onRTPArrival(h, time.Now())
		s.jbMu.Lock()
		if rx.haveSSRC && h.SSRC != rx.lastSSRC {
			s.jb.init = false // new stream: start the buffer over
		}
		r := s.jb.push(h.SequenceNumber, payload)
		s.jbMu.Unlock()
		rx.lastSSRC, rx.haveSSRC = h.SSRC, true
		switch r {
		case pushDuplicate:
			s.dups.Add(1)
		case pushLate:
			s.late.Add(1)
		case pushTooBig:
			s.malformed.Add(1)
		}
	case int(h.PayloadType) == rx.dtmfPT || int(h.PayloadType) == rx.dtmfPT2:
		s.dtmf.Add(1)
		// One event = one RTP timestamp; report it once, at its first packet
		// (retransmitted end packets and the long-event updates share it).
		if len(payload) >= 4 && (!rx.haveEvent || h.Timestamp != rx.lastEventTS) {
			rx.haveEvent, rx.lastEventTS = true, h.Timestamp
			if d := dtmfDigit(payload[0]); d != 0 {
				s.log.Info("DTMF received", "digit", string(d))
				if s.cfg.OnDTMF != nil {
					s.cfg.OnDTMF(d)
				}
			}
		}
	default:
		if n := s.unknownPT.Add(1); logEvery(n) {
			s.log.Debug("ignoring rtp with unknown payload type", "pt", h.PayloadType, "count", n)
		}
	}
}

func (s *Session) countUnprotectError(err error, from netip.AddrPort, rtcp bool) {
	if isDuplicate(err) {
		s.dups.Add(1)
		return
	}
	if n := s.authFail.Add(1); logEvery(n) {
		s.log.Warn("srtp unprotect failed", "from", from.String(), "rtcp", rtcp, "err", err, "count", n)
	}
}

// gotValid records an authenticated packet and latches the send address to
// its source (symmetric RTP: NATs and Meta's relays send from where they listen).
func (s *Session) gotValid(from netip.AddrPort) {
	if s.lastRecv.Swap(int64(time.Since(s.startedAt))+1) == 0 {
		now := time.Now()
		s.mu.Lock()
		if s.firstRecv.IsZero() {
			s.firstRecv = now
		}
		s.mu.Unlock()
		s.log.Info("first media packet received", "from", from.String())
	}
	if !from.IsValid() { // DTLS mode: pion owns the path
		return
	}
	if cur := s.dest.Load(); cur == nil || *cur != from {
		f := from
		s.dest.Store(&f)
		s.log.Info("remote media address latched", "addr", from.String())
	}
}

// seqTracker computes RFC 3550 cumulative loss for the current SSRC.
type seqTracker struct {
	init     bool
	ssrc     uint32
	base     uint16
	maxSeq   uint16
	cycles   uint64
	received uint64
	prevLost uint64 // loss of earlier SSRCs
}

func (t *seqTracker) update(ssrc uint32, seq uint16) {
	if !t.init || ssrc != t.ssrc {
		prev := t.lost()
		*t = seqTracker{init: true, ssrc: ssrc, base: seq, maxSeq: seq, prevLost: prev}
	} else if d := seq - t.maxSeq; d != 0 && d < 0x8000 {
		if seq < t.maxSeq {
			t.cycles += 1 << 16
		}
		t.maxSeq = seq
	}
	t.received++
}

func (t *seqTracker) lost() uint64 {
	if !t.init {
		return t.prevLost
	}
	expected := t.cycles + uint64(t.maxSeq) - uint64(t.base) + 1
	if t.received >= expected {
		return t.prevLost
	}
	return t.prevLost + expected - t.received
}

// player turns jitter-buffer output into exactly one 20 ms frame per tick.
type player struct {
	dec     *opus.Decoder
	lastN   int // samples of the last decoded packet: PLC/FEC size
	plcRun  int
	decoded bool
	pend    int
	pay     [maxPayload]byte
	pcm     [FrameSamples + maxDecodeSamples]int16
	out     [FrameSamples]int16
}

// next produces the next frame; it returns how many packets' worth of audio
// were concealed, and how many of those came from FEC.
func (p *player) next(jb *jitterBuffer, mu *sync.Mutex) (frame []int16, concealed, fec int) {
	for p.pend < FrameSamples {
		mu.Lock()
		kind, n := jb.pop(p.pay[:])
		mu.Unlock()
		if kind == popEmpty {
			if p.decoded && p.plcRun < maxPLCRun {
				p.plcRun++
				p.plc()
				concealed++
			} else {
				clear(p.pcm[p.pend:FrameSamples])
				p.pend = FrameSamples
			}
			break
		}
		p.plcRun = 0
		switch kind {
		case popFrame:
			dst := p.pcm[p.pend : p.pend+maxDecodeSamples : p.pend+maxDecodeSamples]
			if m, err := p.dec.Decode(p.pay[:n], dst); err == nil && m > 0 {
				p.pend += m
				p.lastN = m
				p.decoded = true
			} else {
				p.plc() // corrupt payload (authenticated, so a peer bug): conceal
				concealed++
			}
		case popLostFEC:
			dst := p.pcm[p.pend : p.pend+p.lastN : p.pend+p.lastN]
			if err := p.dec.DecodeFEC(p.pay[:n], dst); err == nil {
				p.pend += p.lastN
				fec++
			} else {
				p.plc()
			}
			concealed++
		case popLost:
			p.plc()
			concealed++
		}
	}
	copy(p.out[:], p.pcm[:FrameSamples])
	p.pend = copy(p.pcm[:], p.pcm[FrameSamples:p.pend])
	return p.out[:], concealed, fec
}

func (p *player) plc() {
	n := p.lastN
	dst := p.pcm[p.pend : p.pend+n : p.pend+n]
	if !p.decoded || p.dec.DecodePLC(dst) != nil {
		clear(dst)
	}
	p.pend += n
}

func (s *Session) playLoop(ctx, parent context.Context, sink Sink, p *player) {
	defer s.wg.Done()
	t := time.NewTicker(frameDur)
	defer t.Stop()
	var sinkErrs uint64
	timeout := s.cfg.noMediaTimeout()
	for {
		select {
		case <-ctx.Done():
			s.stop(parent.Err())
			return
		case <-t.C:
		}
		s.playBeat.Store(time.Now().UnixNano())
		last := s.lastRecv.Load()
		if timeout > 0 {
			since := time.Since(s.startedAt)
			if (last == 0 && since > min(timeout, startNoMediaLimit)) ||
				(last != 0 && since-time.Duration(last-1) > timeout) {
				s.stop(ErrNoMedia)
				return
			}
		}
		if last == 0 {
			continue // nothing to play until the peer's first packet
		}
		s.q.mu.Lock()
		jit := s.q.jitter * 1000 / SampleRate
		s.q.mu.Unlock()
		s.jbMu.Lock()
		s.jb.setTarget(jit)
		s.jbMu.Unlock()
		frame, c, f := p.next(&s.jb, &s.jbMu)
		if c > 0 {
			s.concealed.Add(uint64(c))
			s.fec.Add(uint64(f))
		}
		if sink != nil {
			if err := sink.WriteFrame(frame); err != nil {
				if sinkErrs++; logEvery(sinkErrs) {
					s.log.Warn("audio sink failed", "err", err, "count", sinkErrs)
				}
			}
		}
	}
}
