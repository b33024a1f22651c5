package media

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
)

// Offer/answer for DTLS-SRTP. The transport (transport_dtls.go) gives the
// ICE credentials, candidates and certificate fingerprint; this file reads
// the peer's ICE and DTLS parameters and writes our SDP by the
// offer/answer rules, for Meta and for SIP endpoints alike
// (docs/interop.md has what each peer needs).

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
	t, err := newDTLSTransport(cfg, &s.rx, s.log)
	if err != nil {
		return nil, nil, err
	}
	s.tr = t
	s.local.opusPT, s.local.dtmfPT = uint8(opusPT), dtmfPT
	om := sd.MediaDescriptions[idx]
	s.setRemote(&remoteDesc{opusPT: uint8(opusPT), opus: opus, dtmfPT: dtmfPT})
	setup := answerSetup(sd, om)
	t.peer = peerICE(sd, om)
	// RFC 8445 §6.1.1: the offerer controls, unless it is ICE-lite (Meta).
	t.peer.controlling = hasAttr(sd.Attributes, "ice-lite") || hasAttr(om.Attributes, "ice-lite")
	t.peer.dtlsClient = setup == "active"
	t.addRemoteCandidates(attrValues(om, "candidate"), fallbackCandidate(sd, om))
	dtmf := codecs(om)[dtmfPT]
	desc := dtlsDesc{
		opusPT: uint8(opusPT), opusFmtp: opus.fmtp, dtmfPT: dtmfPT, dtmf: dtmf,
		protos: om.MediaName.Protos, setup: setup,
		rtcpMux:   hasAttr(om.Attributes, "rtcp-mux"),
		msid:      hasAttr(sd.Attributes, "msid-semantic") || hasAttr(om.Attributes, "msid"),
		direction: answerDirection(direction(sd, om)),
	}
	if mid, ok := om.Attribute("mid"); ok { // RFC 5888 §9.1: a mid in the answer only if offered
		desc.mid, desc.bundle = mid, bundleHas(sd, mid)
	}
	want6 := false
	if ip, nerr := connAddr(sd, om); nerr == nil {
		want6 = ip.Is6()
	}
	b, err := buildDTLSSDP(t, desc, want6, sd, idx)
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

// peerICE reads the peer's ICE credentials and certificate fingerprints,
// media level first, then session level (baresip writes them there).
func peerICE(sd *sdp.SessionDescription, md *sdp.MediaDescription) dtlsPeer {
	attr := func(key string) string {
		if v, ok := md.Attribute(key); ok {
			return strings.TrimSpace(v)
		}
		v, _ := sd.Attribute(key)
		return strings.TrimSpace(v)
	}
	p := dtlsPeer{ufrag: attr("ice-ufrag"), pwd: attr("ice-pwd")}
	p.fingerprints = attrValues(md, "fingerprint")
	if len(p.fingerprints) == 0 {
		for _, a := range sd.Attributes {
			if strings.EqualFold(a.Key, "fingerprint") {
				p.fingerprints = append(p.fingerprints, a.Value)
			}
		}
	}
	return p
}

func attrValues(md *sdp.MediaDescription, key string) []string {
	var v []string
	for _, a := range md.Attributes {
		if strings.EqualFold(a.Key, key) {
			v = append(v, a.Value)
		}
	}
	return v
}

// fallbackCandidate is the c=/m= address of a section (zero if unusable): the
// peer's candidate when it lists none.
func fallbackCandidate(sd *sdp.SessionDescription, md *sdp.MediaDescription) netip.AddrPort {
	ip, nerr := connAddr(sd, md)
	if nerr != nil || ip.IsUnspecified() || md.MediaName.Port.Value <= 0 || md.MediaName.Port.Value > 65535 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip, uint16(md.MediaName.Port.Value))
}

// dtlsDesc is what goes into our DTLS-SRTP SDP besides the transport's
// ICE and DTLS parameters.
type dtlsDesc struct {
	opusPT    uint8
	opusFmtp  string
	dtmfPT    int // -1 if none
	dtmf      codecInfo
	protos    []string
	mid       string // "" if the offer had none
	bundle    bool   // a BUNDLE group of our one section
	setup     string // actpass (offer), active or passive
	rtcpMux   bool
	msid      bool // WebRTC peers (Meta) name streams with msid
	direction string
}

// buildDTLSSDP writes our offer (offer nil) or answer. For an answer,
// every offered m= line gets one back in order (RFC 3264 §6), the ones we
// do not take with port 0.
func buildDTLSSDP(t *dtlsTransport, d dtlsDesc, want6 bool, offer *sdp.SessionDescription, idx int) ([]byte, error) {
	cands := t.localCandidates()
	ip, port, ok := defaultCandidateOf(cands, want6)
	if !ok {
		return nil, notAcceptable("no ICE candidate gathered to answer with")
	}
	af := addrType(ip)
	id := uint64(t.ourSSRC)<<16 | uint64(len(cands)) // any number; we answer once and repeat these bytes
	sd := &sdp.SessionDescription{
		Origin: sdp.Origin{
			Username: "-", SessionID: id, SessionVersion: 2,
			NetworkType: "IN", AddressType: af, UnicastAddress: ip.String(), // RFC 4566 §5.2: our address
		},
		SessionName:           "-",
		ConnectionInformation: &sdp.ConnectionInformation{NetworkType: "IN", AddressType: af, Address: &sdp.Address{Address: ip.String()}},
		TimeDescriptions:      []sdp.TimeDescription{{}},
	}
	if d.bundle { // RFC 8843 §7.3: in an answer only if offered, with only the sections we accept
		sd.Attributes = append(sd.Attributes, sdp.NewAttribute("group", "BUNDLE "+d.mid))
	}
	if d.msid {
		sd.Attributes = append(sd.Attributes, sdp.NewAttribute("msid-semantic", "WMS *"))
	}
	sd.Attributes = append(sd.Attributes, sdp.NewAttribute("fingerprint", t.fp))

	formats := []string{strconv.Itoa(int(d.opusPT))}
	if d.dtmfPT >= 0 {
		formats = append(formats, strconv.Itoa(d.dtmfPT))
	}
	// RFC 8839 §4.2.1.1: m=/c= carry the default candidate (SIP endpoints
	// read them; 0.0.0.0 and port 9 would mean "no ICE" to baresip).
	am := &sdp.MediaDescription{MediaName: sdp.MediaName{Media: "audio", Port: sdp.RangedPort{Value: port}, Protos: d.protos, Formats: formats}}
	add := func(k, v string) { am.Attributes = append(am.Attributes, sdp.NewAttribute(k, v)) }
	flag := func(k string) { am.Attributes = append(am.Attributes, sdp.NewPropertyAttribute(k)) }
	if d.mid != "" {
		add("mid", d.mid)
	}
	add("setup", d.setup)
	add("ice-ufrag", t.ufrag)
	add("ice-pwd", t.pwd)
	if d.rtcpMux { // RFC 5761 §5.1.1: in an answer only if offered
		flag("rtcp-mux")
	}
	add("rtpmap", fmt.Sprintf("%d opus/48000/2", d.opusPT))
	if d.opusFmtp != "" {
		add("fmtp", fmt.Sprintf("%d %s", d.opusPT, d.opusFmtp))
	}
	if d.dtmfPT >= 0 {
		add("rtpmap", fmt.Sprintf("%d %s", d.dtmfPT, d.dtmf.rtpmap()))
		if d.dtmf.hasFmtp {
			add("fmtp", fmt.Sprintf("%d %s", d.dtmfPT, d.dtmf.fmtp))
		}
	}
	add("ptime", "20")
	add("ssrc", fmt.Sprintf("%d cname:waphone", t.ourSSRC))
	if d.msid { // RFC 8830
		add("ssrc", fmt.Sprintf("%d msid:waphone audio", t.ourSSRC))
		add("msid", "waphone audio")
	}
	flag(d.direction)
	for _, c := range cands {
		line := c.Marshal()
		add("candidate", line)
		if !d.rtcpMux {
			// Without rtcp-mux a full-ICE peer (baresip) checks component 2
			// too: the same socket answers it, as RFC 3605's a=rtcp says.
			if f := strings.Fields(line); len(f) > 1 {
				f[1] = "2"
				add("candidate", strings.Join(f, " "))
			}
		}
	}
	flag("end-of-candidates")
	if !d.rtcpMux {
		add("rtcp", fmt.Sprintf("%d IN %s %s", port, af, ip))
	}
	sd.MediaDescriptions = sections(am, offer, idx)
	b, err := sd.Marshal()
	if err != nil {
		return nil, fmt.Errorf("media: marshal sdp: %w", err)
	}
	return b, nil
}

// defaultCandidateOf is our default candidate (RFC 8839 §4.2.1.2): the
// server-reflexive one when STUN gave us one (the address most likely to
// work from outside a NAT), else the first host one; of the family the
// peer's c= uses if we have one.
func defaultCandidateOf(cands []ice.Candidate, want6 bool) (netip.Addr, int, bool) {
	var best netip.Addr
	bestPort, bestRank := 0, -1
	for _, c := range cands {
		if c.Component() != 1 || !c.NetworkType().IsUDP() {
			continue
		}
		ip, err := netip.ParseAddr(c.Address())
		if err != nil || c.Port() <= 0 || c.Port() > 65535 {
			continue
		}
		ip = ip.Unmap()
		rank := 0
		if ip.Is6() == want6 {
			rank += 2
		}
		switch c.Type() {
		case ice.CandidateTypeServerReflexive:
			rank++
		case ice.CandidateTypeHost:
		default:
			continue
		}
		if rank > bestRank {
			best, bestPort, bestRank = ip, c.Port(), rank
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
	t, err := newDTLSTransport(cfg, &s.rx, s.log)
	if err != nil {
		return nil, nil, err
	}
	s.tr = t
	s.local.opusPT, s.local.dtmfPT = offerOpusPT, offerDTMFPT
	b, err := buildDTLSSDP(t, dtlsDesc{
		// Only useinbandfec: Meta's answer says minptime=20,
		// maxplaybackrate=16000… which must not contradict ours.
		opusPT: offerOpusPT, opusFmtp: "useinbandfec=1",
		dtmfPT: offerDTMFPT, dtmf: codecInfo{name: "telephone-event", clock: 8000, fmtp: "0-16", hasFmtp: true},
		protos: []string{"UDP", "TLS", "RTP", "SAVPF"}, mid: "0", bundle: true, setup: "actpass",
		rtcpMux: true, msid: true, direction: "sendrecv",
	}, false, nil, 0)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.localSDP, s.offerer = b, true
	s.codec = codecName(offerOpusPT, true)
	return s, bytes.Clone(b), nil
}

// setAnswerDTLS applies the peer's answer (Meta's is ICE-lite) to our
// offer (s.mu held). The same answer again (183, then 200) is fine; one
// with other ICE or DTLS parameters is refused.
func (s *Session) setAnswerDTLS(t *dtlsTransport, answer []byte) error {
	sd, nerr := parseSDP(answer)
	if nerr != nil {
		return nerr
	}
	idx := firstAudio(sd)
	if idx < 0 {
		return &NegotiationError{Status: 488, Reason: "the answer rejects our audio stream"}
	}
	md := sd.MediaDescriptions[idx]
	if nerr := checkDTLSOffer(sd, md); nerr != nil { // the same rules hold for an answer
		return &NegotiationError{Status: 488, Reason: "DTLS answer not usable: " + nerr.Reason}
	}
	p := peerICE(sd, md)
	p.controlling = true // RFC 8445 §6.1.1: the offerer
	// RFC 5763 §5: the answerer says active (it is the client) or passive.
	// No a=setup: we stay the client (pion/webrtc's choice, kept).
	v, ok := md.Attribute("setup")
	if !ok {
		v, _ = sd.Attribute("setup")
	}
	p.dtlsClient = !strings.EqualFold(strings.TrimSpace(v), "active")
	if t.peer.ufrag != "" {
		if t.peer.ufrag != p.ufrag || t.peer.pwd != p.pwd || !slices.Equal(t.peer.fingerprints, p.fingerprints) || t.peer.dtlsClient != p.dtlsClient {
			return &NegotiationError{Status: 488, Reason: "a second answer with other ICE/DTLS parameters"}
		}
		return nil
	}
	opus, dtmfPT := answeredCodecs(sd)
	s.setRemote(&remoteDesc{opusPT: offerOpusPT, opus: opus, dtmfPT: dtmfPT})
	t.peer = p
	t.addRemoteCandidates(attrValues(md, "candidate"), fallbackCandidate(sd, md))
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
