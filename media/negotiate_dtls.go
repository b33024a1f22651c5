package media

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Offer/answer for DTLS-SRTP: pion/webrtc writes and reads the SDP (ICE
// credentials and candidates, fingerprint, setup role); we adapt what SIP
// peers send to what pion reads, and what pion writes to what SIP peers read.

const gatherTimeout = 2 * time.Second // no trickle over SIP: gather before answering

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

// answerDTLS answers Meta's WebRTC offer.
func answerDTLS(cfg Config, raw []byte, sd *sdp.SessionDescription) (*Session, []byte, error) {
	md := firstAudio(sd)
	if md == nil {
		return nil, nil, notAcceptable("no audio stream offered")
	}
	opusPT, opus, dtmfPT := offeredCodecs(md)
	if opusPT < 0 {
		return nil, nil, notAcceptable("no common codec (need opus/48000)")
	}
	s, err := newSession(cfg)
	if err != nil {
		return nil, nil, err
	}
	t, err := newDTLSTransport(cfg, &s.rx, s.log, uint8(opusPT), opus.fmtp, dtmfPT)
	if err != nil {
		return nil, nil, err
	}
	s.tr = t
	s.local.opusPT, s.local.dtmfPT = uint8(opusPT), dtmfPT
	// Before the offer reaches pion: the peer may connect and send at once.
	s.setRemote(&remoteDesc{opusPT: uint8(opusPT), opus: opus, dtmfPT: dtmfPT})
	b, err := answerWithPion(t, raw)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.localSDP = b
	s.codec = codecName(uint8(opusPT), true)
	return s, bytes.Clone(b), nil
}

// firstAudio is the first audio section that is not rejected (port 0).
func firstAudio(sd *sdp.SessionDescription) *sdp.MediaDescription {
	for _, m := range sd.MediaDescriptions {
		if strings.EqualFold(m.MediaName.Media, "audio") && m.MediaName.Port.Value != 0 {
			return m
		}
	}
	return nil
}

// offeredCodecs picks the first opus/48000 and telephone-event/8000 of the
// m= line's formats (-1: none); an rtpmap for a format the m= line does
// not list is no offer.
func offeredCodecs(md *sdp.MediaDescription) (opusPT int, opus codecInfo, dtmfPT int) {
	opusPT, dtmfPT = -1, -1
	cm := codecs(md)
	for _, f := range md.MediaName.Formats {
		pt, c, ok := formatCodec(cm, f, nil)
		switch {
		case !ok:
		case strings.EqualFold(c.name, "opus") && c.clock == 48000 && opusPT < 0:
			opusPT, opus = pt, c
		case strings.EqualFold(c.name, "telephone-event") && c.clock == 8000 && dtmfPT < 0:
			dtmfPT = pt
		}
	}
	return opusPT, opus, dtmfPT
}

// answerWithPion gives pion the (adapted) offer and returns pion's answer
// with its candidates, adapted for SIP peers.
func answerWithPion(t *dtlsTransport, raw []byte) ([]byte, error) {
	norm, err := normalizeSDP(raw) // pion wants CRLF lines in RFC order
	if err != nil {
		return nil, badSDP("%v", err)
	}
	norm, bundled := bundleLoneSection(forPion(norm))
	if err := t.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(norm)}); err != nil {
		return nil, notAcceptable("WebRTC offer not usable: %v", err)
	}
	ans, err := t.pc.CreateAnswer(nil)
	if err != nil {
		return nil, notAcceptable("cannot answer the WebRTC offer: %v", err)
	}
	b, err := gatherLocal(t, ans)
	if err != nil { // pion could not apply its own answer: the offer is what it cannot use
		return nil, notAcceptable("cannot answer the WebRTC offer: %v", err)
	}
	if bundled { // the group was ours, not the offer's: RFC 8843 forbids adding one
		b = bundleLineRE.ReplaceAll(b, nil)
	}
	if zeroPortRE.Match(b) {
		return nil, notAcceptable("pion rejected the offered audio stream (m=audio 0)")
	}
	return b, nil
}

// offerDTLS makes our WebRTC offer for a business-initiated call.
func offerDTLS(cfg Config) (*Session, []byte, error) {
	s, err := newSession(cfg)
	if err != nil {
		return nil, nil, err
	}
	// Only useinbandfec: pion matches codecs by fmtp, and Meta's answer says
	// minptime=20, maxplaybackrate=16000... which must not contradict ours.
	t, err := newDTLSTransport(cfg, &s.rx, s.log, offerOpusPT, "useinbandfec=1", offerDTMFPT)
	if err != nil {
		return nil, nil, err
	}
	s.tr = t
	s.local.opusPT, s.local.dtmfPT = offerOpusPT, offerDTMFPT
	off, err := t.pc.CreateOffer(nil)
	if err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("media: offer: %w", err)
	}
	b, err := gatherLocal(t, off)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.localSDP, s.offerer = b, true
	s.codec = codecName(offerOpusPT, true)
	return s, bytes.Clone(b), nil
}

// setAnswerDTLS applies Meta's ICE-lite answer to our offer (s.mu held).
func (s *Session) setAnswerDTLS(t *dtlsTransport, answer []byte) error {
	norm, err := normalizeSDP(answer)
	if err != nil {
		return badSDP("%v", err)
	}
	norm = forPion(norm)
	opus, dtmfPT := codecInfo{}, -1
	if sd, nerr := parseSDP(answer); nerr == nil {
		opus, dtmfPT = answeredCodecs(sd)
	}
	// Set before pion may fire OnTrack (from inside SetRemoteDescription).
	s.setRemote(&remoteDesc{opusPT: offerOpusPT, opus: opus, dtmfPT: dtmfPT})
	if err := t.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(norm)}); err != nil {
		s.setRemote(nil)
		return &NegotiationError{Status: 488, Reason: "WebRTC answer not usable: " + err.Error()}
	}
	return nil
}

// answeredCodecs: the answer's fmtp for our Opus PT (the peer's receive
// limits, for our encoder) and its telephone-event PT (-1: none).
func answeredCodecs(sd *sdp.SessionDescription) (opus codecInfo, dtmfPT int) {
	dtmfPT = -1
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
	return opus, dtmfPT
}

// gatherLocal sets our description and waits (bounded) for host
// candidates: SIP has no trickle, so they must be in the SDP.
func gatherLocal(t *dtlsTransport, desc webrtc.SessionDescription) ([]byte, error) {
	done := webrtc.GatheringCompletePromise(t.pc)
	if err := t.pc.SetLocalDescription(desc); err != nil {
		return nil, fmt.Errorf("media: local description: %w", err)
	}
	select {
	case <-done:
	case <-time.After(gatherTimeout):
		t.log.Warn("ICE gathering incomplete; answering with the candidates found so far")
	}
	return defaultCandidate([]byte(t.pc.LocalDescription().SDP)), nil
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
