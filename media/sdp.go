package media

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// Payload types and fmtp we put in our own offers.
const (
	offerOpusPT = 111
	offerDTMFPT = 126
	// Our receive preferences: FEC helps us, 10 ms is the smallest we accept.
	localOpusFmtp = "minptime=10;useinbandfec=1"
	maxSDPLen     = 64 << 10
)

// codecInfo is one a=rtpmap (+ a=fmtp) entry of an m= line.
type codecInfo struct {
	name     string // as written, e.g. "opus"
	clock    int
	channels string
	fmtp     string
	hasFmtp  bool
}

func (c codecInfo) rtpmap() string {
	s := c.name + "/" + strconv.Itoa(c.clock)
	if c.channels != "" {
		s += "/" + c.channels
	}
	return s
}

// remoteDesc is what we took from the peer's SDP for the audio stream.
type remoteDesc struct {
	index     int // m= line index in the peer's SDP
	protos    []string
	addr      netip.AddrPort // zero if the peer gave 0.0.0.0 (wait for its packets)
	opusPT    uint8
	opus      codecInfo
	dtmfPT    int // -1 if none
	dtmf      codecInfo
	key       sdesKey
	rtcpMux   bool
	mid       string
	direction string
}

// localDesc is what goes into our SDP.
type localDesc struct {
	sessID    uint64
	ip        netip.Addr
	port      int
	key       sdesKey
	protos    []string
	opusPT    uint8
	dtmfPT    int // -1 if none
	dtmf      codecInfo
	rtcpMux   bool
	mid       string
	direction string
}

func badSDP(format string, a ...any) *NegotiationError {
	return &NegotiationError{Status: 400, Reason: fmt.Sprintf(format, a...)}
}

func notAcceptable(format string, a ...any) *NegotiationError {
	return &NegotiationError{Status: 488, Reason: fmt.Sprintf(format, a...)}
}

// sdpRank orders lines the way RFC 4566 wants them; pion's parser is strict
// about order and real gateways are not (e.g. c= after t=). r= shares t='s
// rank so a stable sort keeps each r= with its t=.
func sdpRank(typ byte, media bool) int {
	order := "vosiuepcbtrzka"
	if media {
		order = "micbka"
	}
	if typ == 'r' && !media {
		typ = 't'
	}
	if i := strings.IndexByte(order, typ); i >= 0 {
		return i
	}
	return len(order) // unknown letters: pion rejects them, as RFC 4566 asks
}

// normalizeSDP accepts LF or CRLF, a missing final newline, blank lines and
// out-of-order lines, and gives pion a CRLF body in RFC order.
func normalizeSDP(raw []byte) ([]byte, error) {
	if len(raw) > maxSDPLen {
		return nil, fmt.Errorf("sdp too large (%d bytes)", len(raw))
	}
	var sections [][]string
	cur := []string{}
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if len(line) < 2 || line[1] != '=' {
			return nil, fmt.Errorf("malformed sdp line %q", truncate(line, 40))
		}
		if line[0] == 'm' {
			sections = append(sections, cur)
			cur = []string{}
		}
		cur = append(cur, line)
	}
	sections = append(sections, cur)
	if len(sections[0]) == 0 {
		return nil, errors.New("empty sdp")
	}
	var b bytes.Buffer
	for i, sec := range sections {
		media := i > 0
		body := sec
		if media { // keep m= first
			b.WriteString(sec[0])
			b.WriteString("\r\n")
			body = sec[1:]
		}
		slices.SortStableFunc(body, func(x, y string) int {
			return sdpRank(x[0], media) - sdpRank(y[0], media)
		})
		for _, l := range body {
			b.WriteString(l)
			b.WriteString("\r\n")
		}
	}
	return b.Bytes(), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// parseSDP never panics: pion is fuzzed upstream, but a recover keeps a
// malformed INVITE from taking the phone down if it ever does.
func parseSDP(raw []byte) (d *sdp.SessionDescription, nerr *NegotiationError) {
	defer func() {
		if r := recover(); r != nil {
			d, nerr = nil, badSDP("unparseable SDP (parser panic: %v)", r)
		}
	}()
	norm, err := normalizeSDP(raw)
	if err != nil {
		return nil, badSDP("unparseable SDP: %v", err)
	}
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(norm); err != nil {
		return nil, badSDP("unparseable SDP: %v", err)
	}
	if len(sd.MediaDescriptions) == 0 {
		return nil, notAcceptable("no media in SDP")
	}
	return &sd, nil
}

// codecs collects rtpmap/fmtp of one m= line by payload type.
func codecs(md *sdp.MediaDescription) map[int]codecInfo {
	m := map[int]codecInfo{}
	for _, a := range md.Attributes {
		switch strings.ToLower(a.Key) {
		case "rtpmap":
			ptS, enc, ok := strings.Cut(strings.TrimSpace(a.Value), " ")
			pt, err := strconv.Atoi(ptS)
			if !ok || err != nil || pt < 0 || pt > 127 {
				continue
			}
			parts := strings.Split(strings.TrimSpace(enc), "/")
			if len(parts) < 2 {
				continue
			}
			clock, err := strconv.Atoi(parts[1])
			if err != nil {
				continue
			}
			c := m[pt]
			c.name, c.clock = parts[0], clock
			if len(parts) > 2 {
				c.channels = parts[2]
			}
			m[pt] = c
		case "fmtp":
			ptS, params, _ := strings.Cut(strings.TrimSpace(a.Value), " ")
			pt, err := strconv.Atoi(ptS)
			if err != nil || pt < 0 || pt > 127 {
				continue
			}
			c := m[pt]
			c.fmtp, c.hasFmtp = strings.TrimSpace(params), true
			m[pt] = c
		}
	}
	return m
}

func hasAttr(attrs []sdp.Attribute, key string) bool {
	for _, a := range attrs {
		if strings.EqualFold(a.Key, key) {
			return true
		}
	}
	return false
}

func direction(sd *sdp.SessionDescription, md *sdp.MediaDescription) string {
	for _, attrs := range [][]sdp.Attribute{md.Attributes, sd.Attributes} {
		for _, a := range attrs {
			switch k := strings.ToLower(a.Key); k {
			case "sendrecv", "sendonly", "recvonly", "inactive":
				return k
			}
		}
	}
	return "sendrecv"
}

func answerDirection(offered string) string {
	switch offered {
	case "sendonly":
		return "recvonly"
	case "recvonly":
		return "sendonly"
	case "inactive":
		return "inactive"
	}
	return "sendrecv"
}

func connAddr(sd *sdp.SessionDescription, md *sdp.MediaDescription) (netip.Addr, *NegotiationError) {
	ci := md.ConnectionInformation
	if ci == nil {
		ci = sd.ConnectionInformation
	}
	if ci == nil || ci.Address == nil {
		return netip.Addr{}, badSDP("no c= line for the audio stream")
	}
	if !strings.EqualFold(ci.NetworkType, "IN") {
		return netip.Addr{}, notAcceptable("unsupported network type %q", ci.NetworkType)
	}
	ip, err := netip.ParseAddr(ci.Address.Address)
	if err != nil {
		return netip.Addr{}, notAcceptable("unsupported connection address %q (need an IP literal)", truncate(ci.Address.Address, 64))
	}
	return ip.Unmap(), nil
}

// answerCheck is set when analysing an answer to our offer: the crypto line
// must carry our tag and suite, and PTs without rtpmap fall back to ours.
type answerCheck struct {
	tag      int
	suite    string
	fallback map[int]codecInfo
}

// analyzeAudio checks one audio m= line. The order of checks decides which
// reason a caller sees: codec first, then transport security.
func analyzeAudio(sd *sdp.SessionDescription, idx int, ac *answerCheck) (remoteDesc, *NegotiationError) {
	md := sd.MediaDescriptions[idx]
	rd := remoteDesc{index: idx, dtmfPT: -1, protos: md.MediaName.Protos}
	proto := strings.ToUpper(strings.Join(md.MediaName.Protos, "/"))
	isDTLS := strings.HasPrefix(proto, "UDP/TLS/") || strings.HasPrefix(proto, "TCP/TLS/") || strings.HasPrefix(proto, "TCP/DTLS/")
	isRTP := proto == "RTP/AVP" || proto == "RTP/AVPF" || proto == "RTP/SAVP" || proto == "RTP/SAVPF"
	if !isDTLS && !isRTP {
		return rd, notAcceptable("unsupported transport %q", truncate(proto, 40))
	}

	cm := codecs(md)
	lookup := func(pt int) (codecInfo, bool) {
		c, ok := cm[pt]
		if (!ok || c.name == "") && ac != nil {
			c, ok = ac.fallback[pt]
		}
		return c, ok && c.name != ""
	}
	rd.opusPT, rd.dtmfPT = 0, -1
	foundOpus, dtmf8k := false, false
	for _, f := range md.MediaName.Formats {
		pt, err := strconv.Atoi(f)
		if err != nil || pt < 0 || pt > 127 {
			continue
		}
		c, ok := lookup(pt)
		if !ok {
			continue
		}
		switch {
		case !foundOpus && strings.EqualFold(c.name, "opus") && c.clock == SampleRate:
			foundOpus, rd.opusPT, rd.opus = true, uint8(pt), c
		case strings.EqualFold(c.name, "telephone-event") && !dtmf8k:
			// Prefer the 8 kHz clock (what Meta uses) if several are offered.
			if rd.dtmfPT < 0 || c.clock == 8000 {
				rd.dtmfPT, rd.dtmf, dtmf8k = pt, c, c.clock == 8000
			}
		}
	}
	if !foundOpus {
		return rd, notAcceptable("no common codec (need opus/48000)")
	}

	var cryptoLines []string
	for _, a := range md.Attributes {
		if strings.EqualFold(a.Key, "crypto") {
			cryptoLines = append(cryptoLines, a.Value)
		}
	}
	fingerprint := hasAttr(md.Attributes, "fingerprint") || hasAttr(sd.Attributes, "fingerprint")
	switch {
	case isDTLS:
		return rd, notAcceptable("DTLS-SRTP not supported yet")
	case len(cryptoLines) == 0 && fingerprint:
		return rd, notAcceptable("DTLS-SRTP not supported yet")
	case len(cryptoLines) == 0:
		return rd, notAcceptable("SRTP required")
	}
	found := false
	for _, cl := range cryptoLines {
		k, err := parseCrypto(cl)
		if err != nil {
			continue
		}
		if ac != nil && (k.tag != ac.tag || k.suite != ac.suite) {
			continue
		}
		rd.key, found = k, true
		break
	}
	if !found {
		if ac != nil {
			return rd, notAcceptable("answer has no usable a=crypto for tag %d %s", ac.tag, ac.suite)
		}
		return rd, notAcceptable("no supported SRTP crypto suite (need %s)", suite80)
	}

	ip, nerr := connAddr(sd, md)
	if nerr != nil {
		return rd, nerr
	}
	port := md.MediaName.Port.Value
	if port <= 0 || port > 65535 {
		return rd, badSDP("bad port %d", port)
	}
	if !ip.IsUnspecified() {
		rd.addr = netip.AddrPortFrom(ip, uint16(port))
	}
	rd.rtcpMux = hasAttr(md.Attributes, "rtcp-mux")
	rd.mid, _ = md.Attribute("mid")
	rd.direction = direction(sd, md)
	return rd, nil
}

// pickAudio returns the first usable audio stream of an offer; if none is
// usable, the reason of the first active audio stream.
func pickAudio(sd *sdp.SessionDescription, ac *answerCheck) (remoteDesc, *NegotiationError) {
	var first *NegotiationError
	for i, md := range sd.MediaDescriptions {
		if !strings.EqualFold(md.MediaName.Media, "audio") || md.MediaName.Port.Value == 0 {
			continue
		}
		rd, nerr := analyzeAudio(sd, i, ac)
		if nerr == nil {
			return rd, nil
		}
		if first == nil {
			first = nerr
		}
	}
	if first == nil {
		first = notAcceptable("no audio stream offered")
	}
	return remoteDesc{}, first
}

func addrType(ip netip.Addr) string {
	if ip.Is4() {
		return "IP4"
	}
	return "IP6"
}

// buildSDP renders our description. For an answer, offer is the peer's
// session so that every offered m= line gets a line back (RFC 3264 §6),
// the ones we do not use with port 0.
func buildSDP(ld localDesc, offer *sdp.SessionDescription, audioIdx int) ([]byte, error) {
	ipStr := ld.ip.String()
	sd := &sdp.SessionDescription{
		Version: 0,
		Origin: sdp.Origin{
			Username: "-", SessionID: ld.sessID, SessionVersion: ld.sessID,
			NetworkType: "IN", AddressType: addrType(ld.ip), UnicastAddress: ipStr,
		},
		SessionName: "waphone",
		ConnectionInformation: &sdp.ConnectionInformation{
			NetworkType: "IN", AddressType: addrType(ld.ip), Address: &sdp.Address{Address: ipStr},
		},
		TimeDescriptions: []sdp.TimeDescription{{Timing: sdp.Timing{}}},
	}

	formats := []string{strconv.Itoa(int(ld.opusPT))}
	if ld.dtmfPT >= 0 {
		formats = append(formats, strconv.Itoa(ld.dtmfPT))
	}
	am := &sdp.MediaDescription{
		MediaName: sdp.MediaName{Media: "audio", Port: sdp.RangedPort{Value: ld.port}, Protos: ld.protos, Formats: formats},
	}
	add := func(k, v string) { am.Attributes = append(am.Attributes, sdp.NewAttribute(k, v)) }
	if ld.mid != "" {
		add("mid", ld.mid)
	}
	add("rtpmap", fmt.Sprintf("%d opus/48000/2", ld.opusPT))
	add("fmtp", fmt.Sprintf("%d %s", ld.opusPT, localOpusFmtp))
	if ld.dtmfPT >= 0 {
		add("rtpmap", fmt.Sprintf("%d %s", ld.dtmfPT, ld.dtmf.rtpmap()))
		if ld.dtmf.hasFmtp {
			add("fmtp", fmt.Sprintf("%d %s", ld.dtmfPT, ld.dtmf.fmtp))
		}
	}
	add("crypto", ld.key.attr())
	if ld.rtcpMux {
		am.Attributes = append(am.Attributes, sdp.NewPropertyAttribute("rtcp-mux"))
	}
	add("ptime", "20")
	add("maxptime", "20")
	am.Attributes = append(am.Attributes, sdp.NewPropertyAttribute(ld.direction))

	if offer == nil {
		sd.MediaDescriptions = []*sdp.MediaDescription{am}
	} else {
		for i, om := range offer.MediaDescriptions {
			if i == audioIdx {
				sd.MediaDescriptions = append(sd.MediaDescriptions, am)
				continue
			}
			f := om.MediaName.Formats
			if len(f) == 0 {
				f = []string{"0"}
			}
			sd.MediaDescriptions = append(sd.MediaDescriptions, &sdp.MediaDescription{
				MediaName: sdp.MediaName{Media: om.MediaName.Media, Port: sdp.RangedPort{Value: 0}, Protos: om.MediaName.Protos, Formats: f[:1]},
			})
		}
	}
	b, err := sd.Marshal()
	if err != nil {
		return nil, fmt.Errorf("media: marshal sdp: %w", err)
	}
	return b, nil
}

// opusParams are the peer's receive limits from its Opus fmtp (RFC 7587).
type opusParams struct {
	maxAverageBitrate int
	maxPlaybackRate   int
	useInbandFEC      bool
}

func parseOpusFmtp(s string) opusParams {
	var p opusParams
	for _, kv := range strings.Split(s, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		n, _ := strconv.Atoi(strings.TrimSpace(v))
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "maxaveragebitrate":
			p.maxAverageBitrate = n
		case "maxplaybackrate":
			p.maxPlaybackRate = n
		case "useinbandfec":
			p.useInbandFEC = n == 1
		}
	}
	return p
}
