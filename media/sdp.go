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

// analyzeAudio checks one audio m= line of an SDES offer, or of the answer
// to our SDES offer (ac set), in named steps. Their order decides which
// reason a caller sees: transport profile, codecs, then keys, then the
// address. DTLS-SRTP offers (a fingerprint, no a=crypto) never get here:
// Answer hands them to pion. What is refused here is DTLS in an SDES
// context: an answer to our SDES offer, or an offer mixing a DTLS profile
// with a=crypto.
func analyzeAudio(sd *sdp.SessionDescription, idx int, ac *answerCheck) (remoteDesc, *NegotiationError) {
	md := sd.MediaDescriptions[idx]
	rd := remoteDesc{index: idx, dtmfPT: -1, protos: md.MediaName.Protos}
	isDTLS, nerr := audioProfile(md)
	if nerr != nil {
		return rd, nerr
	}
	if nerr := pickCodecs(&rd, md, ac); nerr != nil {
		return rd, nerr
	}
	if nerr := pickKey(&rd, sd, md, isDTLS, ac); nerr != nil {
		return rd, nerr
	}
	if nerr := mediaAddr(&rd, sd, md); nerr != nil {
		return rd, nerr
	}
	rd.rtcpMux = hasAttr(md.Attributes, "rtcp-mux")
	rd.mid, _ = md.Attribute("mid")
	rd.direction = direction(sd, md)
	return rd, nil
}

// audioProfile accepts the RTP profiles (RTP/AVP, /AVPF, /SAVP, /SAVPF) and
// the DTLS ones (UDP/TLS/..., TCP/TLS/..., TCP/DTLS/...), telling which.
func audioProfile(md *sdp.MediaDescription) (isDTLS bool, nerr *NegotiationError) {
	proto := strings.ToUpper(strings.Join(md.MediaName.Protos, "/"))
	isDTLS = strings.HasPrefix(proto, "UDP/TLS/") || strings.HasPrefix(proto, "TCP/TLS/") || strings.HasPrefix(proto, "TCP/DTLS/")
	switch proto {
	case "RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF":
		return false, nil
	}
	if !isDTLS {
		return false, notAcceptable("unsupported transport %q", truncate(proto, 40))
	}
	return true, nil
}

// pickCodecs takes the first opus/48000 of the m= line's formats, and its
// telephone-event (the 8 kHz one, what Meta uses, if several are offered).
func pickCodecs(rd *remoteDesc, md *sdp.MediaDescription, ac *answerCheck) *NegotiationError {
	cm := codecs(md)
	foundOpus, dtmf8k := false, false
	for _, f := range md.MediaName.Formats {
		pt, c, ok := formatCodec(cm, f, ac)
		switch {
		case !ok:
		case !foundOpus && strings.EqualFold(c.name, "opus") && c.clock == SampleRate:
			foundOpus, rd.opusPT, rd.opus = true, uint8(pt), c
		case strings.EqualFold(c.name, "telephone-event") && !dtmf8k && (rd.dtmfPT < 0 || c.clock == 8000):
			rd.dtmfPT, rd.dtmf, dtmf8k = pt, c, c.clock == 8000
		}
	}
	if !foundOpus {
		return notAcceptable("no common codec (need opus/48000)")
	}
	return nil
}

// formatCodec is the codec of one m= format: its rtpmap or, in an answer,
// our offer's for a format the answer does not map.
func formatCodec(cm map[int]codecInfo, format string, ac *answerCheck) (int, codecInfo, bool) {
	pt, err := strconv.Atoi(format)
	if err != nil || pt < 0 || pt > 127 {
		return 0, codecInfo{}, false
	}
	c := cm[pt]
	if c.name == "" && ac != nil {
		c = ac.fallback[pt]
	}
	return pt, c, c.name != ""
}

// pickKey takes the first usable a=crypto line (in an answer: the one with
// our offer's tag and suite).
func pickKey(rd *remoteDesc, sd *sdp.SessionDescription, md *sdp.MediaDescription, isDTLS bool, ac *answerCheck) *NegotiationError {
	lines := cryptoLines(md)
	if nerr := sdesOnly(sd, md, isDTLS, len(lines) > 0, ac != nil); nerr != nil {
		return nerr
	}
	var refused error // why the first supported-suite line was refused (all-zero key, lifetime)
	for _, cl := range lines {
		k, err := parseCrypto(cl)
		if err != nil {
			if refused == nil && !strings.Contains(err.Error(), "suite") {
				refused = err
			}
			continue
		}
		if ac != nil && (k.tag != ac.tag || k.suite != ac.suite) {
			continue
		}
		rd.key = k
		return nil
	}
	if ac != nil {
		return notAcceptable("answer has no usable a=crypto for tag %d %s", ac.tag, ac.suite)
	}
	if refused != nil {
		return notAcceptable("no usable SRTP key: %v", refused)
	}
	return notAcceptable("no supported SRTP crypto suite (need %s)", suite80)
}

func cryptoLines(md *sdp.MediaDescription) []string {
	var lines []string
	for _, a := range md.Attributes {
		if strings.EqualFold(a.Key, "crypto") {
			lines = append(lines, a.Value)
		}
	}
	return lines
}

// sdesOnly refuses a stream that has no SDES key or mixes DTLS-SRTP into
// an SDES negotiation, each with a reason that says which.
func sdesOnly(sd *sdp.SessionDescription, md *sdp.MediaDescription, isDTLS, hasCrypto, isAnswer bool) *NegotiationError {
	fingerprint := hasAttr(md.Attributes, "fingerprint") || hasAttr(sd.Attributes, "fingerprint")
	dtlsKeys := isDTLS || (!hasCrypto && fingerprint)
	switch {
	case dtlsKeys && isAnswer:
		return notAcceptable("answer uses DTLS-SRTP, but our offer was SDES (a=crypto)")
	case isDTLS && hasCrypto:
		return notAcceptable("a=crypto with the DTLS profile %q: SDES keys need RTP/SAVP", truncate(strings.Join(md.MediaName.Protos, "/"), 40))
	case isDTLS:
		return notAcceptable("DTLS-SRTP profile without a=fingerprint")
	case dtlsKeys:
		// Only when another audio stream carries a=crypto: otherwise the
		// offer is DTLS-SRTP and pion answers it.
		return notAcceptable("a=fingerprint without a=crypto next to an SDES audio stream")
	case !hasCrypto:
		return notAcceptable("SRTP required")
	case !strings.Contains(strings.ToUpper(strings.Join(md.MediaName.Protos, "/")), "SAVP"):
		// RFC 4568 §3.1.4: a=crypto belongs to a secure profile. Under
		// RTP/AVP it is "best effort" SRTP, which we never fall back from.
		return notAcceptable("SRTP required: a=crypto under %q needs RTP/SAVP", truncate(strings.Join(md.MediaName.Protos, "/"), 40))
	}
	return nil
}

// mediaAddr takes where the peer wants our RTP: c= and the m= port.
func mediaAddr(rd *remoteDesc, sd *sdp.SessionDescription, md *sdp.MediaDescription) *NegotiationError {
	ip, nerr := connAddr(sd, md)
	if nerr != nil {
		return nerr
	}
	port := md.MediaName.Port.Value
	if port <= 0 || port > 65535 {
		return badSDP("bad port %d", port)
	}
	switch {
	case unusableAddr(ip):
		return notAcceptable("connection address %s is multicast or broadcast", ip)
	case ip.IsUnspecified():
		// Without ICE there is nowhere to send our first packet (Meta
		// expects it from us), and hold (RFC 2543) makes no sense in an offer.
		return notAcceptable("connection address %s: nowhere to send RTP", ip)
	}
	rd.addr = netip.AddrPortFrom(ip, uint16(port))
	return nil
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
