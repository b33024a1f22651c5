package metasim

import (
	"regexp"
	"strings"
	"testing"
)

// The guide's "User-initiated calls (with WebRTC media)" INVITE SDP.
const guideWebRTCOffer = `v=0
o=- 1741113186367 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE audio
a=msid-semantic: WMS 632a909f-1060-4369-96a4-7bd03e291ee7
a=ice-lite
m=audio 3480 UDP/TLS/RTP/SAVPF 111 126
c=IN IP4 57.144.135.35
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1775469887 1 udp 2122260223 57.144.135.35 3480 typ host generation 0 network-cost 50
a=candidate:3355715111 1 udp 2122262783 2a03:2880:f343:131:face:b00c:0:699c 3480 typ host generation 0 network-cost 50
a=ice-ufrag:RmDDkfzkwbexPfbC
a=ice-pwd:*************************
a=fingerprint:********************************************************************************************************
a=setup:actpass
a=mid:audio
a=sendrecv
a=msid:632a909f-1060-4369-96a4-7bd03e291ee7 WhatsAppTrack1
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1
a=rtpmap:126 telephone-event/8000
a=maxptime:20
a=ptime:20
a=ssrc:849255537 cname:WhatsAppAudioStream1`

// normalizeSDP blanks what must differ per call (ports, keys, ufrag,
// fingerprints, addresses, ids, ssrc) and folds the host candidates (one
// per bound address family) into one line.
func normalizeSDP(s string) []string {
	subs := []struct{ re, to string }{
		{`^o=- \d+ `, "o=- X "},
		{`^a=msid-semantic: WMS \S+$`, "a=msid-semantic: WMS X"},
		{`^a=msid:\S+ `, "a=msid:X "},
		{`^m=audio \d+ `, "m=audio X "},
		{`^c=IN IP[46] \S+$`, "c=IN X X"},
		{`^a=candidate:\S+ 1 udp \d+ \S+ \d+ typ host `, "a=candidate:X 1 udp X X X typ host "},
		{`^a=ice-ufrag:.*$`, "a=ice-ufrag:X"},
		{`^a=ice-pwd:.*$`, "a=ice-pwd:X"},
		{`^a=fingerprint:.*$`, "a=fingerprint:X"},
		{`^a=ssrc:\d+ `, "a=ssrc:X "},
	}
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(strings.TrimSpace(s), "\r\n", "\n"), "\n") {
		for _, sub := range subs {
			l = regexp.MustCompile(sub.re).ReplaceAllString(l, sub.to)
		}
		if len(out) > 0 && out[len(out)-1] == l && strings.HasPrefix(l, "a=candidate:") {
			continue
		}
		out = append(out, l)
	}
	return out
}

func TestDTLSSDPShapedLikeTheGuide(t *testing.T) {
	m, offer, err := newMetaOfferDTLS(mmMetaCfg(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	got, want := normalizeSDP(string(offer)), normalizeSDP(guideWebRTCOffer)
	for i := 0; i < len(got) || i < len(want); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("offer line %d:\n got %q\nwant %q", i+1, g, w)
		}
	}
	if t.Failed() {
		t.Logf("metasim's offer:\n%s", offer)
	}
	if !strings.Contains(string(offer), "c=IN IP4 127.0.0.1\r\n") || !strings.Contains(string(offer), " 127.0.0.1 ") {
		t.Fatalf("the c= and candidate address are not the bound address:\n%s", offer)
	}

	// Answering a business's offer (mid "0", our useinbandfec=1 fmtp, pion
	// extras): Meta's fmtp and layout, the offer's mid, passive DTLS.
	bizOffer := strings.NewReplacer("a=mid:audio", "a=mid:0", "a=group:BUNDLE audio", "a=group:BUNDLE 0", "a=ice-lite\r\n", "",
		"a=setup:actpass", "a=setup:actpass\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
		"a=fmtp:111 "+metaOpusFmtp, "a=fmtp:111 useinbandfec=1").Replace(string(offer))
	a, answer, err := newMetaAnswerDTLS(mmMetaCfg(1000), []byte(bizOffer))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	ans := string(answer)
	for _, want := range []string{"a=ice-lite\r\n", "a=group:BUNDLE 0\r\n", "a=mid:0\r\n", "a=setup:passive\r\n", "a=rtcp-mux\r\n",
		"a=fmtp:111 " + metaOpusFmtp + "\r\n", "a=ptime:20\r\n", "a=maxptime:20\r\n", "cname:WhatsAppAudioStream1\r\n",
		"typ host generation 0 network-cost 50\r\n", "c=IN IP4 127.0.0.1\r\n"} {
		if !strings.Contains(ans, want) {
			t.Errorf("answer lacks %q", strings.TrimSpace(want))
		}
	}
	for _, bad := range []string{"a=fmtp:111 useinbandfec=1", "a=extmap", "a=cryptex", "m=audio 9 ", "c=IN IP4 0.0.0.0"} {
		if strings.Contains(ans, bad) {
			t.Errorf("answer has %q", bad)
		}
	}
	if t.Failed() {
		t.Logf("metasim's answer:\n%s", ans)
	}
}
