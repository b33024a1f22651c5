package media

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Offer/answer. This is where a session's transport is chosen, once:
// Config.KeyExchange picks it for our offers, the peer's SDP for its offers
// (a fingerprint and no a=crypto: DTLS-SRTP). Everything after negotiation
// works through the transport interface. The DTLS side lives in
// negotiate_dtls.go.

// Offer starts an outbound call. With SDES (the default) it opens the RTP
// socket and returns our offer (Opus PT 111, telephone-event 126,
// RTP/SAVP, a=crypto, rtcp-mux); with KeyExchange "dtls" a WebRTC offer
// (UDP/TLS/RTP/SAVPF, ICE candidates gathered, a=setup:actpass).
func Offer(cfg Config) (*Session, []byte, error) {
	kx, err := cfg.keyExchange()
	if err != nil {
		return nil, nil, err
	}
	if kx == "dtls" {
		return offerDTLS(cfg)
	}
	s, t, err := newSDESSession(cfg, cfg.BindIP != nil && cfg.BindIP.To4() == nil)
	if err != nil {
		return nil, nil, err
	}
	key, err := newSDESKey(1, suite80)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	t.local, s.local.key = key, key
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
	s.codec = codecName(offerOpusPT, false)
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
	switch t := s.tr.(type) {
	case *dtlsTransport:
		return s.setAnswerDTLS(t, answer)
	case *sdesTransport:
		return s.setAnswerSDES(t, answer)
	}
	return fmt.Errorf("media: unknown transport %T", s.tr)
}

// setAnswerSDES checks the answer against our SDES offer (s.mu held).
func (s *Session) setAnswerSDES(t *sdesTransport, answer []byte) error {
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
		t.retarget(rd.addr)
		return nil
	}
	s.setRemote(&rd)
	t.peer, t.peerAddr = rd.key, rd.addr
	s.codec = codecName(rd.opusPT, false)
	s.log.Debug("sdp answer applied", "remote", rd.addr, "opus_pt", rd.opusPT, "dtmf_pt", rd.dtmfPT, "rtcp_mux", rd.rtcpMux)
	return nil
}

// Answer accepts an inbound call's offer. For an SDES offer it mirrors the
// offered Opus and telephone-event payload types, answers the chosen
// a=crypto tag with a fresh key and opens the RTP socket; a DTLS-SRTP offer
// (Meta's default) is answered with our ICE agent's credentials and
// candidates and our certificate's fingerprint (DTLS: the client toward
// ICE-lite peers like Meta, the server toward others, see answerSetup),
// written by buildDTLSSDP. Either answer follows the offer/answer rules
// (TestAnswerConformance).
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
	s, t, err := newSDESSession(cfg, v6)
	if err != nil {
		return nil, nil, err
	}
	key, err := newSDESKey(rd.key.tag, rd.key.suite)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	t.local, s.local.key = key, key
	s.local.protos = rd.protos
	s.local.opusPT, s.local.dtmfPT, s.local.dtmf = rd.opusPT, rd.dtmfPT, rd.dtmf
	s.local.rtcpMux, s.local.mid, s.local.direction = rd.rtcpMux, rd.mid, answerDirection(rd.direction)
	b, err := buildSDP(s.local, sd, rd.index)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.localSDP = b
	s.setRemote(&rd)
	t.peer, t.peerAddr = rd.key, rd.addr
	s.codec = codecName(rd.opusPT, false)
	s.log.Debug("sdp offer answered", "remote", rd.addr, "opus_pt", rd.opusPT, "dtmf_pt", rd.dtmfPT, "rtcp_mux", rd.rtcpMux)
	return s, bytes.Clone(b), nil
}

func codecName(opusPT uint8, dtls bool) string {
	if dtls {
		return fmt.Sprintf("opus/48000/2 pt %d (DTLS-SRTP)", opusPT)
	}
	return fmt.Sprintf("opus/48000/2 pt %d", opusPT)
}

// setRemote records the peer's description (s.mu held, or the session not
// yet returned) and tells the receiver which payload types to expect:
// both the peer's and ours, as RFC 3264 lets an answer renumber and each
// side should send with the other's numbers. nil forgets a failed one.
func (s *Session) setRemote(rd *remoteDesc) {
	s.remote = rd
	if rd == nil {
		s.rx.pts.Store(nil)
		return
	}
	s.rx.pts.Store(&payloadTypes{
		opus: [2]uint8{rd.opusPT, s.local.opusPT},
		dtmf: [2]int{rd.dtmfPT, s.local.dtmfPT},
	})
}

// newSDESSession makes a session on a freshly bound RTP socket.
func newSDESSession(cfg Config, v6 bool) (*Session, *sdesTransport, error) {
	s, err := newSession(cfg)
	if err != nil {
		return nil, nil, err
	}
	t, err := newSDESTransport(cfg, v6, &s.rx, s.log)
	if err != nil {
		return nil, nil, err
	}
	la := t.localAddr()
	s.log = s.log.With("rtp_local", la.String())
	s.rx.log, t.log = s.log, s.log
	s.tr = t
	s.local.ip, s.local.port = advertiseIP(cfg, v6), int(la.Port())
	return s, t, nil
}

// advertiseIP is the address for our SDP's c= line (SDES; in DTLS mode
// pion's ICE candidates say where we are).
func advertiseIP(cfg Config, v6 bool) netip.Addr {
	if a, ok := netip.AddrFromSlice(cfg.AdvertiseIP); ok && cfg.AdvertiseIP != nil {
		return a.Unmap()
	}
	if a, ok := netip.AddrFromSlice(cfg.BindIP); ok && !a.IsUnspecified() {
		return a.Unmap()
	}
	if a, ok := interfaceIP(v6); ok {
		return a
	}
	if v6 {
		return netip.IPv6Loopback()
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// interfaceIP is the first global address of the wanted family on an
// interface that is up and not a loopback.
func interfaceIP(v6 bool) (netip.Addr, bool) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, false
	}
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
			return a, true
		}
	}
	return netip.Addr{}, false
}
