package media

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hraban/opus"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// DTLS-SRTP with ICE (Meta's default key exchange) runs on pion/webrtc:
// ICE as the full, controlling agent (Meta is ICE-lite), DTLS as the client
// (a=setup:active, ECDSA), SRTP keyed from DTLS. Our own Opus, jitter
// buffer and pacing stay the same as in SDES mode: pion carries RTP.

const (
	gatherTimeout = 2 * time.Second  // no trickle over SIP: gather before answering
	dtlsTimeout   = 10 * time.Second // ICE + DTLS must complete this soon after Start
)

type rtcPeer struct {
	pc        *webrtc.PeerConnection
	track     *rawTrack
	ssrc      uint32 // our stream's SSRC on the wire (pion's sender picks it)
	connected chan struct{}
	connOnce  sync.Once
	failed    chan error
	failOnce  sync.Once
}

func (p *rtcPeer) fail(err error) { p.failOnce.Do(func() { p.failed <- err; close(p.failed) }) }

// isDTLSOffer: a fingerprint and no a=crypto means DTLS-SRTP.
func isDTLSOffer(sd *sdp.SessionDescription) bool {
	fp := hasAttr(sd.Attributes, "fingerprint")
	for _, md := range sd.MediaDescriptions {
		if strings.EqualFold(md.MediaName.Media, "audio") {
			if hasAttr(md.Attributes, "crypto") {
				return false
			}
			fp = fp || hasAttr(md.Attributes, "fingerprint")
		}
	}
	return fp
}

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
	var se webrtc.SettingEngine
	// pion answers an ICE-lite peer with a=setup:passive unless told: Meta
	// needs us to be the DTLS client.
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
	if cfg.PortMin > 0 && cfg.PortMax > cfg.PortMin {
		if err := se.SetEphemeralUDPPortRange(uint16(cfg.PortMin), uint16(cfg.PortMax)); err != nil {
			return nil, fmt.Errorf("media: rtp_ports: %w", err)
		}
	}
	if cfg.AdvertiseIP != nil && (cfg.BindIP == nil || !cfg.AdvertiseIP.Equal(cfg.BindIP)) {
		// 1:1 NAT (a port-forwarded kiosk): advertise the public address.
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External: []string{cfg.AdvertiseIP.String()}, AsCandidateType: webrtc.ICECandidateTypeHost,
		}); err != nil {
			return nil, fmt.Errorf("media: public_address: %w", err)
		}
	}
	// An empty interceptor registry: without one pion adds its defaults,
	// which send their own RTCP sender/receiver reports next to ours (two
	// SRs for one SSRC with different counts), NACK lost audio that Opus
	// FEC/PLC covers anyway, and allocate on every packet.
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se),
		webrtc.WithInterceptorRegistry(&interceptor.Registry{})), nil
}

// newRTCPeer makes the PeerConnection, our send track and the state hooks.
func (s *Session) newRTCPeer(opusPT uint8, opusFmtp string, dtmfPT int) error {
	api, err := newRTCAPI(s.cfg, opusPT, opusFmtp, dtmfPT)
	if err != nil {
		return err
	}
	var ice []webrtc.ICEServer
	if s.cfg.STUN != "" {
		ice = []webrtc.ICEServer{{URLs: []string{"stun:" + s.cfg.STUN}}}
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{ICEServers: ice})
	if err != nil {
		return fmt.Errorf("media: peer connection: %w", err)
	}
	track := &rawTrack{}
	sender, err := pc.AddTrack(track)
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("media: audio track: %w", err)
	}
	p := &rtcPeer{pc: pc, track: track, connected: make(chan struct{}), failed: make(chan error, 1)}
	if enc := sender.GetParameters().Encodings; len(enc) > 0 {
		p.ssrc = uint32(enc[0].SSRC)
	}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		s.log.Debug("ice/dtls state", "state", st.String())
		switch st {
		case webrtc.PeerConnectionStateConnected:
			p.connOnce.Do(func() { close(p.connected) })
		case webrtc.PeerConnectionStateFailed:
			p.fail(errors.New("ICE/DTLS failed: no path to the peer, or a bad fingerprint"))
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		s.wg.Add(2)
		go s.rtcRecv(tr)
		go s.readRTCP(r.ReadRTCP) // the peer's sender reports
	})
	s.wg.Add(1)
	go s.readRTCP(sender.ReadRTCP) // the peer's reports about our stream
	s.rtc = p
	return nil
}

// gatherLocal sets our description and waits (bounded) for host
// candidates: SIP has no trickle, so they must be in the SDP.
func (s *Session) gatherLocal(desc webrtc.SessionDescription) ([]byte, error) {
	done := webrtc.GatheringCompletePromise(s.rtc.pc)
	if err := s.rtc.pc.SetLocalDescription(desc); err != nil {
		return nil, fmt.Errorf("media: local description: %w", err)
	}
	select {
	case <-done:
	case <-time.After(gatherTimeout):
		s.log.Warn("ICE gathering incomplete; answering with the candidates found so far")
	}
	return defaultCandidate([]byte(s.rtc.pc.LocalDescription().SDP)), nil
}

var (
	candRE      = regexp.MustCompile(`(?m)^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host`)
	srflxCandRE = regexp.MustCompile(`(?m)^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ srflx`)
	mPortRE     = regexp.MustCompile(`(?m)^m=audio 9 `)
	cNullRE     = regexp.MustCompile(`(?m)^c=IN IP4 0\.0\.0\.0`)
)

// defaultCandidate puts our default candidate in c= and m= (RFC 8839
// §4.2.1.1): the server-reflexive one when STUN gave us one (the address
// most likely to work from outside a NAT, §4.2.1.2), else the first host
// one. pion leaves "0.0.0.0 9" there, which WebRTC peers ignore but SIP
// endpoints read: baresip, for one, then decides the peer has no ICE.
func defaultCandidate(sdp []byte) []byte {
	m := srflxCandRE.FindSubmatch(sdp)
	if m == nil {
		m = candRE.FindSubmatch(sdp)
	}
	if m == nil {
		return sdp
	}
	ip := net.ParseIP(string(m[1]))
	if ip == nil {
		return sdp
	}
	af := "IP4"
	if ip.To4() == nil {
		af = "IP6"
	}
	sdp = mPortRE.ReplaceAll(sdp, []byte("m=audio "+string(m[2])+" "))
	return cNullRE.ReplaceAll(sdp, []byte("c=IN "+af+" "+ip.String()))
}

// forPion adapts a normalized SIP peer's SDP to what pion reads: SIP
// endpoints that are not WebRTC (baresip) put a=setup at session level,
// which RFC 4145 allows but pion reads only in media sections, and write
// no a=mid, without which pion rejects an offer and ignores the a=ssrc of
// an answer (every RTP packet is then dropped). A missing mid becomes the
// section's index, which is what pion numbers its own sections.
func forPion(norm []byte) []byte {
	lines := strings.Split(strings.TrimSuffix(string(norm), "\r\n"), "\r\n")
	var out []string
	setup, section, inMedia, hasMid, hasSetup := "", -1, false, false, false
	flush := func() {
		if !inMedia {
			return
		}
		if !hasMid {
			out = append(out, fmt.Sprintf("a=mid:%d", section))
		}
		if !hasSetup && setup != "" {
			out = append(out, setup)
		}
	}
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "m="):
			flush()
			section, inMedia, hasMid, hasSetup = section+1, true, false, false
		case !inMedia && strings.HasPrefix(l, "a=setup:"):
			setup = l
			continue
		case strings.HasPrefix(l, "a=mid:"):
			hasMid = true
		case strings.HasPrefix(l, "a=setup:"):
			hasSetup = true
		}
		out = append(out, l)
	}
	flush()
	return []byte(strings.Join(out, "\r\n") + "\r\n")
}

var (
	bundleLineRE = regexp.MustCompile(`(?m)^a=group:BUNDLE[^\r\n]*\r\n`)
	zeroPortRE   = regexp.MustCompile(`(?m)^m=audio 0 `)
	midRE        = regexp.MustCompile(`(?m)^a=mid:(\S+)`)
)

// bundleLoneSection gives an offer with one media section and no BUNDLE
// group (baresip's) a group of that section: pion answers every section
// outside the offer's BUNDLE group with port 0, which rejects the only
// audio stream. It reports whether it added the group.
func bundleLoneSection(norm []byte) ([]byte, bool) {
	if bytes.Contains(norm, []byte("\r\na=group:BUNDLE")) || bytes.Count(norm, []byte("\r\nm=")) != 1 {
		return norm, false
	}
	m := midRE.FindSubmatch(norm)
	if m == nil {
		return norm, false
	}
	i := bytes.Index(norm, []byte("\r\nm=")) + 2
	out := make([]byte, 0, len(norm)+32)
	out = append(out, norm[:i]...)
	out = append(out, "a=group:BUNDLE "...)
	out = append(out, m[1]...)
	out = append(out, "\r\n"...)
	return append(out, norm[i:]...), true
}

// answerDTLS answers Meta's WebRTC offer.
func answerDTLS(cfg Config, raw []byte, sd *sdp.SessionDescription) (*Session, []byte, error) {
	var md *sdp.MediaDescription
	for _, m := range sd.MediaDescriptions {
		if strings.EqualFold(m.MediaName.Media, "audio") && m.MediaName.Port.Value != 0 {
			md = m
			break
		}
	}
	if md == nil {
		return nil, nil, notAcceptable("no audio stream offered")
	}
	opusPT, dtmfPT, opus := -1, -1, codecInfo{}
	for pt, c := range codecs(md) {
		switch {
		case strings.EqualFold(c.name, "opus") && c.clock == 48000 && opusPT < 0:
			opusPT, opus = pt, c
		case strings.EqualFold(c.name, "telephone-event") && c.clock == 8000 && dtmfPT < 0:
			dtmfPT = pt
		}
	}
	if opusPT < 0 {
		return nil, nil, notAcceptable("no common codec (need opus/48000)")
	}
	s, err := newSession(cfg, false)
	if err != nil {
		return nil, nil, err
	}
	if err := s.newRTCPeer(uint8(opusPT), opus.fmtp, dtmfPT); err != nil {
		s.Close()
		return nil, nil, err
	}
	norm, err := normalizeSDP(raw) // pion wants CRLF lines in RFC order
	if err != nil {
		s.Close()
		return nil, nil, badSDP("%v", err)
	}
	norm, bundled := bundleLoneSection(forPion(norm))
	if err := s.rtc.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(norm)}); err != nil {
		s.Close()
		return nil, nil, notAcceptable("WebRTC offer not usable: %v", err)
	}
	ans, err := s.rtc.pc.CreateAnswer(nil)
	if err != nil {
		s.Close()
		return nil, nil, notAcceptable("cannot answer the WebRTC offer: %v", err)
	}
	b, err := s.gatherLocal(ans)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	if bundled { // the group was ours, not the offer's: RFC 8843 forbids adding one
		b = bundleLineRE.ReplaceAll(b, nil)
	}
	if zeroPortRE.Match(b) {
		s.Close()
		return nil, nil, notAcceptable("pion rejected the offered audio stream (m=audio 0)")
	}
	s.mu.Lock()
	s.localSDP = b
	s.remote = &remoteDesc{opusPT: uint8(opusPT), opus: opus, dtmfPT: dtmfPT}
	s.mu.Unlock()
	s.codec = fmt.Sprintf("opus/48000/2 pt %d (DTLS-SRTP)", opusPT)
	return s, bytes.Clone(b), nil
}

// offerDTLS makes our WebRTC offer for a business-initiated call.
func offerDTLS(cfg Config) (*Session, []byte, error) {
	s, err := newSession(cfg, false)
	if err != nil {
		return nil, nil, err
	}
	// Only useinbandfec: pion matches codecs by fmtp, and Meta's answer says
	// minptime=20, maxplaybackrate=16000... which must not contradict ours.
	if err := s.newRTCPeer(offerOpusPT, "useinbandfec=1", offerDTMFPT); err != nil {
		s.Close()
		return nil, nil, err
	}
	off, err := s.rtc.pc.CreateOffer(nil)
	if err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("media: offer: %w", err)
	}
	b, err := s.gatherLocal(off)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.localSDP, s.offerer = b, true
	s.codec = fmt.Sprintf("opus/48000/2 pt %d (DTLS-SRTP)", offerOpusPT)
	return s, bytes.Clone(b), nil
}

// setAnswerDTLS applies Meta's ICE-lite answer to our offer.
func (s *Session) setAnswerDTLS(answer []byte) error {
	norm, err := normalizeSDP(answer)
	if err != nil {
		return badSDP("%v", err)
	}
	norm = forPion(norm)
	sd, nerr := parseSDP(answer)
	opus, dtmfPT := codecInfo{}, -1
	if nerr == nil {
		for _, md := range sd.MediaDescriptions {
			for pt, c := range codecs(md) {
				if strings.EqualFold(c.name, "opus") && pt == int(offerOpusPT) {
					opus = c
				}
				if strings.EqualFold(c.name, "telephone-event") {
					dtmfPT = pt
				}
			}
		}
	}
	// Set before pion may fire OnTrack (from inside SetRemoteDescription).
	s.remote = &remoteDesc{opusPT: offerOpusPT, opus: opus, dtmfPT: dtmfPT}
	if err := s.rtc.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(norm)}); err != nil {
		s.remote = nil
		return &NegotiationError{Status: 488, Reason: "WebRTC answer not usable: " + err.Error()}
	}
	return nil
}

// rtcWrite sends one plain RTP packet through pion (which protects it).
func (s *Session) rtcWrite(pkt []byte) error {
	select {
	case <-s.rtc.connected:
	default:
		return errNotConnected
	}
	return s.rtc.track.write(pkt)
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
		return errNotConnected
	}
	binary.BigEndian.PutUint32(pkt[8:12], ssrc) // the SSRC announced in our SDP
	n, err := t.hdr.Unmarshal(pkt)
	if err != nil {
		return fmt.Errorf("media: our own RTP header: %w", err)
	}
	_, err = w.WriteRTP(&t.hdr, pkt[n:])
	return err
}

var errNotConnected = errors.New("media: ICE/DTLS not connected yet")

// rtcRecv feeds the remote track's RTP into the jitter buffer.
func (s *Session) rtcRecv(tr *webrtc.TrackRemote) {
	defer s.wg.Done()
	s.mu.Lock() // SetAnswer may still hold it: wait for the remote description
	rd := s.remote
	s.mu.Unlock()
	if rd == nil {
		return
	}
	rx := &receiver{opusPT: uint8(tr.PayloadType()), opusPT2: rd.opusPT, dtmfPT: rd.dtmfPT, dtmfPT2: rd.dtmfPT}
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			s.malformed.Add(1)
			continue
		}
		s.recv.Add(1)
		s.gotValid(netip.AddrPort{})
		s.handleRTP(rx, &pkt.Header, pkt.Payload)
	}
}

// watchRTC ends the session when ICE/DTLS fails or never completes.
func (s *Session) watchRTC(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTimer(dtlsTimeout)
	defer t.Stop()
	connected := s.rtc.connected
	for {
		select {
		case <-connected:
			connected = nil
			t.Stop()
			s.log.Info("DTLS-SRTP connected")
		case err, ok := <-s.rtc.failed:
			if ok {
				s.stop(err)
			}
			return
		case <-t.C:
			s.stop(errors.New("ICE/DTLS did not complete within 10 s"))
			return
		case <-ctx.Done():
			return
		}
	}
}

// startRTC runs the same send/play loops as SDES mode over pion's
// transport; the first packet goes out the moment DTLS completes.
func (s *Session) startRTC(ctx context.Context, src Source, sink Sink) error {
	tx, err := newPlainSender(nil, s.remote)
	if err != nil {
		return err
	}
	// Our reports must name the SSRC the packets carry (rawTrack stamps
	// pion's), or the peer's reception blocks never match us: no RTT, no
	// remote loss for the encoder.
	if s.rtc.ssrc != 0 {
		tx.ssrc = s.rtc.ssrc
	}
	dec, err := opus.NewDecoder(SampleRate, 1)
	if err != nil {
		return fmt.Errorf("media: opus decoder: %w", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel, s.started, s.startedAt = cancel, true, time.Now()
	s.wg.Add(3)
	go s.watchRTC(runCtx)
	go s.sendLoop(runCtx, ctx, src, tx)
	go s.playLoop(runCtx, ctx, sink, &player{dec: dec, lastN: FrameSamples})
	s.log.Info("media started", "codec", s.codec)
	return nil
}

// readRTCP feeds pion's RTCP to the quality figures until the peer closes.
func (s *Session) readRTCP(read func() ([]rtcp.Packet, interceptor.Attributes, error)) {
	defer s.wg.Done()
	for {
		pkts, _, err := read()
		if err != nil {
			return
		}
		// pion hands a sender report that carries a block about our stream
		// to both readers (the peer's SSRC and ours): take it once.
		if k := rtcpKey(pkts); k != 0 && s.lastRTCP.Swap(k) == k {
			continue
		}
		s.rtcpRecv.Add(1)
		s.q.onRTCPPackets(pkts, s.ourSSRC.Load(), time.Now())
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
