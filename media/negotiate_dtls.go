package media

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Offer/answer for DTLS-SRTP: pion/webrtc makes the ICE credentials and
// candidates, the fingerprint and the setup role. We adapt what SIP peers
// send to what pion reads (forPion, offerForPion), and build our answer
// from the offer by the offer/answer rules (conformAnswer): pion's own
// answer is a WebRTC one (BUNDLE, mid, SAVPF, 0.0.0.0) whatever the offer.

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

// answerDTLS answers a WebRTC offer (Meta's, or a SIP endpoint's).
func answerDTLS(cfg Config, raw []byte, sd *sdp.SessionDescription) (*Session, []byte, error) {
	idx := firstAudio(sd)
	if idx < 0 {
		return nil, nil, notAcceptable("no audio stream offered")
	}
	if nerr := checkDTLSOffer(sd, sd.MediaDescriptions[idx]); nerr != nil {
		return nil, nil, nerr
	}
	opusPT, opus, dtmfPT := offeredCodecs(sd.MediaDescriptions[idx])
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
	b, err := answerWithPion(cfg, t, raw, sd, idx)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.localSDP = b
	s.codec = codecName(uint8(opusPT), true)
	return s, bytes.Clone(b), nil
}

// firstAudio is the index of the first audio section that is not
// rejected (port 0), -1 if none.
func firstAudio(sd *sdp.SessionDescription) int {
	for i, m := range sd.MediaDescriptions {
		if strings.EqualFold(m.MediaName.Media, "audio") && m.MediaName.Port.Value != 0 {
			return i
		}
	}
	return -1
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

// answerWithPion runs the offer's audio section through pion (ICE
// credentials, candidates, DTLS certificate and role) and builds our answer
// from the offer and what pion wrote (conformAnswer).
func answerWithPion(cfg Config, t *dtlsTransport, raw []byte, offer *sdp.SessionDescription, idx int) ([]byte, error) {
	norm, err := normalizeSDP(raw) // pion wants CRLF lines in RFC order
	if err != nil {
		return nil, badSDP("%v", err)
	}
	po, err := offerForPion(norm, idx)
	if err != nil {
		return nil, badSDP("%v", err)
	}
	if err := t.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(po)}); err != nil {
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
	return conformAnswer(cfg, offer, idx, b)
}

// answerSetup is our DTLS role (RFC 5763 §5, RFC 4145): the opposite of
// an offer's active or passive; for actpass the client (active) toward
// ICE-lite peers, as Meta requires, else the server (passive): pion's
// DTLS client sends no certificate when the server's CertificateRequest
// names CAs its certificate is not from, and linphone (mediastreamer2)
// names its own, so its fingerprint check fails and no media flows. As
// server we take any client. No a=setup (RFC 4145 would say the offerer
// is active): pion's default, active, as before.
func answerSetup(offer *sdp.SessionDescription, om *sdp.MediaDescription) string {
	v, ok := om.Attribute("setup")
	if !ok {
		v, _ = offer.Attribute("setup")
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "active":
		return "passive"
	case "actpass":
		if !hasAttr(offer.Attributes, "ice-lite") {
			return "passive"
		}
	}
	return "active"
}

// offerForPion is the offer as pion can answer it: only the audio section
// we take (pion answers every section on its one ICE/DTLS transport, and
// rejects with port 0 every section outside the offer's BUNDLE group),
// with a mid and a=setup of its own (forPion) and a BUNDLE group of just
// that section. What pion then writes about the sections it never saw, the
// mid and the group is decided by conformAnswer from the real offer.
func offerForPion(norm []byte, idx int) ([]byte, error) {
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(forPion(norm)); err != nil {
		return nil, fmt.Errorf("offer for pion: %w", err)
	}
	if idx < 0 || idx >= len(sd.MediaDescriptions) {
		return nil, fmt.Errorf("offer for pion: no media section %d", idx)
	}
	md := sd.MediaDescriptions[idx]
	mid, _ := md.Attribute("mid")
	sd.MediaDescriptions = []*sdp.MediaDescription{md}
	if answerSetup(&sd, md) == "passive" {
		// pion takes the role from the offer: "the peer is the client".
		// (It still writes its configured setup:active; conformAnswer
		// writes the role it takes.)
		for i, a := range md.Attributes {
			if strings.EqualFold(a.Key, "setup") {
				md.Attributes[i].Value = "active"
			}
		}
	}
	attrs := sd.Attributes[:0:0]
	for _, a := range sd.Attributes {
		if !strings.EqualFold(a.Key, "group") {
			attrs = append(attrs, a)
		}
	}
	sd.Attributes = append(attrs, sdp.NewAttribute("group", "BUNDLE "+mid))
	b, err := sd.Marshal()
	if err != nil {
		return nil, fmt.Errorf("offer for pion: %w", err)
	}
	return b, nil
}

// conformAnswer builds our answer from the peer's offer and pion's answer
// to the audio section alone: this is the one place where pion's WebRTC
// SDP is made an answer by the offer/answer rules, for Meta and for SIP
// endpoints alike (docs/interop.md has what each broke). From pion it
// takes only the transport and codec attributes of the audio section.
func conformAnswer(cfg Config, offer *sdp.SessionDescription, idx int, pionSDP []byte) ([]byte, error) {
	var local sdp.SessionDescription
	if err := local.Unmarshal(pionSDP); err != nil {
		return nil, fmt.Errorf("media: pion's answer: %w", err)
	}
	if len(local.MediaDescriptions) != 1 || local.MediaDescriptions[0].MediaName.Port.Value == 0 {
		return nil, notAcceptable("pion rejected the offered audio stream")
	}
	pm, om := local.MediaDescriptions[0], offer.MediaDescriptions[idx]
	want6 := false
	if ip, nerr := connAddr(offer, om); nerr == nil {
		want6 = ip.Is6() && !ip.Is4In6()
	}
	ip, port, ok := defaultCandidateOf(pm, want6)
	if !ok {
		return nil, notAcceptable("no ICE candidate gathered to answer with")
	}
	offerMux := hasAttr(om.Attributes, "rtcp-mux")
	offerMsid := hasAttr(offer.Attributes, "msid-semantic") || hasAttr(om.Attributes, "msid")
	feedback := strings.HasSuffix(strings.ToUpper(strings.Join(om.MediaName.Protos, "/")), "F")
	mid, hasMid := om.Attribute("mid")

	am := &sdp.MediaDescription{MediaName: sdp.MediaName{
		// RFC 8839 §4.2.1.1: m=/c= carry the default candidate (pion
		// writes "9" and 0.0.0.0, which SIP endpoints read as no ICE).
		// RFC 3264 §6: the answer keeps the offer's transport protocol
		// (linphone's UDP/TLS/RTP/SAVP must not come back as SAVPF).
		Media: pm.MediaName.Media, Port: sdp.RangedPort{Value: port},
		Protos: om.MediaName.Protos, Formats: pm.MediaName.Formats,
	}}
	if hasMid { // RFC 5888 §9.1: a mid in the answer only if the offer had one
		am.Attributes = append(am.Attributes, sdp.NewAttribute("mid", mid))
	}
	for _, a := range pm.Attributes {
		switch strings.ToLower(a.Key) {
		case "mid":
			continue
		case "setup": // pion writes its configured role, not the one it takes
			a = sdp.NewAttribute("setup", answerSetup(offer, om))
		case "rtcp-mux": // RFC 5761 §5.1.1: only if offered
			if !offerMux {
				continue
			}
		case "rtcp-rsize": // RFC 5506 §5: only if offered
			if !hasAttr(om.Attributes, "rtcp-rsize") {
				continue
			}
		case "rtcp-fb": // RFC 4585 §4.2: AVPF profiles only
			if !feedback {
				continue
			}
		case "candidate": // RFC 5761 §5.1.3: with rtcp-mux, no RTCP (component 2) candidates
			if f := strings.Fields(a.Value); offerMux && len(f) > 1 && f[1] != "1" {
				continue
			}
		case "msid": // RFC 8830: for peers that use msid (WebRTC, Meta)
			if !offerMsid {
				continue
			}
		case "ssrc":
			if _, v, _ := strings.Cut(a.Value, " "); !offerMsid && !strings.HasPrefix(v, "cname:") {
				continue
			}
		}
		am.Attributes = append(am.Attributes, a)
	}
	if !offerMux {
		// pion sends and takes RTCP on the RTP socket, and answers ICE
		// checks for its component-2 candidates there (the same address):
		// RFC 3605 says so to a peer that did not offer rtcp-mux.
		am.Attributes = append(am.Attributes, sdp.NewAttribute("rtcp", fmt.Sprintf("%d IN %s %s", port, addrType(ip), ip)))
	}

	ans := &sdp.SessionDescription{
		Version: 0,
		// RFC 4566 §5.2: o= names our address, not pion's 0.0.0.0. The
		// session version stays: we answer once and repeat these bytes
		// (183, 200, re-INVITE).
		Origin: sdp.Origin{
			Username: "-", SessionID: local.Origin.SessionID, SessionVersion: local.Origin.SessionVersion,
			NetworkType: "IN", AddressType: addrType(ip), UnicastAddress: ip.String(),
		},
		SessionName:           "-",
		ConnectionInformation: &sdp.ConnectionInformation{NetworkType: "IN", AddressType: addrType(ip), Address: &sdp.Address{Address: ip.String()}},
		TimeDescriptions:      []sdp.TimeDescription{{}},
	}
	if hasMid && bundleHas(offer, mid) {
		// RFC 8843 §7.3: a group only if offered, with only the sections we accept.
		ans.Attributes = append(ans.Attributes, sdp.NewAttribute("group", "BUNDLE "+mid))
	}
	for _, a := range local.Attributes {
		switch strings.ToLower(a.Key) {
		case "group", "ice-lite":
			continue
		case "msid-semantic":
			if !offerMsid {
				continue
			}
		}
		ans.Attributes = append(ans.Attributes, a)
	}
	// RFC 3264 §6: one m= line per offered one, in order; the others rejected.
	for i, o := range offer.MediaDescriptions {
		if i == idx {
			ans.MediaDescriptions = append(ans.MediaDescriptions, am)
			continue
		}
		ans.MediaDescriptions = append(ans.MediaDescriptions, rejectedSection(o))
	}
	b, err := ans.Marshal()
	if err != nil {
		return nil, fmt.Errorf("media: marshal answer: %w", err)
	}
	return b, nil
}

// defaultCandidateOf is the default candidate of a section (RFC 8839
// §4.2.1.2): the server-reflexive one when STUN gave us one (the address
// most likely to work from outside a NAT), else the first host one; of the
// family the peer's c= uses if we have one.
func defaultCandidateOf(md *sdp.MediaDescription, want6 bool) (netip.Addr, int, bool) {
	var best netip.Addr
	bestPort, bestRank := 0, -1
	for _, a := range md.Attributes {
		if !strings.EqualFold(a.Key, "candidate") {
			continue
		}
		// foundation component transport priority address port typ type
		f := strings.Fields(a.Value)
		if len(f) < 8 || f[1] != "1" || !strings.EqualFold(f[2], "udp") || f[6] != "typ" {
			continue
		}
		ip, err := netip.ParseAddr(f[4])
		port, perr := strconv.Atoi(f[5])
		if err != nil || perr != nil || port <= 0 || port > 65535 {
			continue
		}
		ip = ip.Unmap()
		rank := 0
		if ip.Is6() == want6 {
			rank += 2
		}
		if f[7] == "srflx" {
			rank++
		} else if f[7] != "host" {
			continue
		}
		if rank > bestRank {
			best, bestPort, bestRank = ip, port, rank
		}
	}
	return best, bestPort, bestRank >= 0
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
	b = defaultCandidate(b)
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
	return []byte(t.pc.LocalDescription().SDP), nil
}

var (
	candRE      = regexp.MustCompile(`(?m)^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host`)
	srflxCandRE = regexp.MustCompile(`(?m)^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ srflx`)
	mPortRE     = regexp.MustCompile(`(?m)^m=audio 9 `)
	cNullRE     = regexp.MustCompile(`(?m)^c=IN IP4 0\.0\.0\.0`)
	oNullRE     = regexp.MustCompile(`(?m)^(o=\S+ \d+ \d+ IN) IP4 0\.0\.0\.0`)
)

// defaultCandidate (our offers) puts our default candidate in c= and m= (RFC 8839
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
	sdp = oNullRE.ReplaceAll(sdp, []byte("${1} "+af+" "+ip.String())) // RFC 4566 §5.2: our address
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
