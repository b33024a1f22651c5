package metasim

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// metaShapeSDP rewrites pion's SDP into the layout of Meta's WebRTC SDP in
// the guide ("User-initiated calls (with WebRTC media)"): ICE-lite, one
// audio section with mid "audio" (an answer keeps the offer's mid),
// BUNDLE, the port and address of the first host candidate instead of
// pion's 9 / 0.0.0.0, host candidates with "generation 0 network-cost 50",
// rtcp-mux, Opus 111 with Meta's fmtp and transport-cc, telephone-event
// 126, ptime/maxptime 20 and one a=ssrc with cname WhatsAppAudioStream1.
// No extmaps and no cryptex: Meta offers neither. What must differ per
// call (ufrag, pwd, fingerprint, candidates, ssrc) is taken from pion, so
// the DTLS and ICE state behind it stays pion's.
func metaShapeSDP(pion string, setup string) (string, error) {
	var ufrag, pwd, fingerprint, mid, ssrc string
	var cands []string
	for _, l := range strings.Split(strings.ReplaceAll(pion, "\r\n", "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "a=ice-ufrag:"):
			ufrag = l
		case strings.HasPrefix(l, "a=ice-pwd:"):
			pwd = l
		case strings.HasPrefix(l, "a=fingerprint:"):
			fingerprint = l
		case strings.HasPrefix(l, "a=mid:"):
			mid = strings.TrimPrefix(l, "a=mid:")
		case strings.HasPrefix(l, "a=ssrc:") && ssrc == "":
			ssrc, _, _ = strings.Cut(strings.TrimPrefix(l, "a=ssrc:"), " ")
		case strings.HasPrefix(l, "a=candidate:"):
			f := strings.Fields(strings.TrimPrefix(l, "a=candidate:"))
			// foundation component transport priority ip port typ host
			if len(f) >= 8 && f[1] == "1" && strings.EqualFold(f[2], "udp") && f[6] == "typ" && f[7] == "host" {
				cands = append(cands, strings.Join(f[:8], " "))
			}
		}
	}
	if ufrag == "" || pwd == "" || fingerprint == "" || mid == "" || len(cands) == 0 {
		return "", errors.New("metasim: pion's SDP lacks ICE credentials, a fingerprint, a mid or a host candidate")
	}
	if ssrc == "" {
		return "", errors.New("metasim: pion's SDP has no a=ssrc")
	}
	first := strings.Fields(cands[0])
	ip, port := first[4], first[5]
	family := "IP4"
	if p := net.ParseIP(ip); p != nil && p.To4() == nil {
		family = "IP6"
	}
	msid := newUUID()
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\r\n", a...) }
	w("v=0")
	w("o=- %d 2 IN IP4 127.0.0.1", time.Now().UnixMilli())
	w("s=-")
	w("t=0 0")
	w("a=group:BUNDLE %s", mid)
	w("a=msid-semantic: WMS %s", msid)
	w("a=ice-lite")
	w("m=audio %s UDP/TLS/RTP/SAVPF 111 126", port)
	w("c=IN %s %s", family, ip)
	w("a=rtcp:9 IN IP4 0.0.0.0")
	for _, c := range cands {
		w("a=candidate:%s generation 0 network-cost 50", c)
	}
	w("%s", ufrag)
	w("%s", pwd)
	w("%s", fingerprint)
	w("a=setup:%s", setup)
	w("a=mid:%s", mid)
	w("a=sendrecv")
	w("a=msid:%s WhatsAppTrack1", msid)
	w("a=rtcp-mux")
	w("a=rtpmap:111 opus/48000/2")
	w("a=rtcp-fb:111 transport-cc")
	w("a=fmtp:111 %s", metaOpusFmtp)
	w("a=rtpmap:126 telephone-event/8000")
	w("a=maxptime:20")
	w("a=ptime:20")
	w("a=ssrc:%s cname:WhatsAppAudioStream1", ssrc)
	return b.String(), nil
}
