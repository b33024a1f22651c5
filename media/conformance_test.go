package media

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

// TestAnswerConformance answers every offer of a corpus — Meta's guide
// samples, real offers of baresip 1.0.0 and linphone 5.1 (SDES and DTLS,
// captured by the interop tests), a browser-style one — and checks our
// answer rule by rule against the offer (RFC 3264 offer/answer, RFC 5888
// and 8843 mid/BUNDLE, RFC 5761 rtcp-mux, RFC 8839 ICE, RFC 5763 DTLS
// setup, RFC 4568 SDES), parsing both with pion/sdp: no string equality.
func TestAnswerConformance(t *testing.T) {
	corpus := map[string]string{
		"meta_sdes":        guideMetaOffer,
		"meta_sdes_digest": guideMetaOfferDigest,
		"meta_dtls":        guideMetaOfferDTLS,
		"twilio_sdes":      guideTwilioOffer,
		// An SDES offer with video next to audio: the video is rejected.
		"sdes_audio_video": "v=0\r\no=- 7 7 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
			"a=group:BUNDLE a v\r\n" +
			"m=audio 4000 RTP/SAVP 111\r\na=mid:a\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-mux\r\n" + testCrypto + "\r\n" +
			"m=video 4002 RTP/SAVP 96\r\na=mid:v\r\na=rtpmap:96 VP8/90000\r\n",
		// DTLS without rtcp-mux (baresip without "rtcp_mux yes"): no
		// rtcp-mux in the answer, component-2 candidates and a=rtcp.
		"dtls_no_rtcp_mux": "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
			"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n" +
			"a=fingerprint:sha-256 " + strings.TrimSuffix(strings.Repeat("AB:", 32), ":") + "\r\n" +
			"m=audio 4000 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n" +
			"a=candidate:1 1 UDP 2113929471 192.0.2.1 4000 typ host\r\na=candidate:1 2 UDP 2113929470 192.0.2.1 4001 typ host\r\n",
	}
	files, err := filepath.Glob(filepath.Join("testdata", "offers", "*.sdp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		corpus[strings.TrimSuffix(filepath.Base(f), ".sdp")] = string(b)
	}
	for _, want := range []string{"baresip_sdes", "baresip_dtls", "linphone_sdes", "linphone_dtls", "browser_dtls"} {
		if _, ok := corpus[want]; !ok {
			t.Errorf("corpus lacks %s (testdata/offers/%s.sdp)", want, want)
		}
	}
	names := make([]string, 0, len(corpus))
	for n := range corpus {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			offer := corpus[name]
			s, ans, err := Answer(testConfig(), []byte(offer))
			if err != nil {
				t.Fatalf("Answer: %v", err)
			}
			defer s.Close()
			t.Logf("answer:\n%s", ans)
			checkAnswer(t, mustParse(t, "offer", []byte(offer)), mustParse(t, "answer", ans))
			// 183, 200 and a re-INVITE all carry these bytes.
			if string(s.LocalSDP()) != string(ans) {
				t.Error("LocalSDP (re-INVITE, 200) differs from the answer (183)")
			}
		})
	}
}

func mustParse(t *testing.T, what string, raw []byte) *sdp.SessionDescription {
	t.Helper()
	norm, err := normalizeSDP(raw)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(norm); err != nil {
		t.Fatalf("%s does not parse: %v\n%s", what, err, raw)
	}
	return &sd
}

func attr(sd *sdp.SessionDescription, md *sdp.MediaDescription, key string) (string, bool) {
	if v, ok := md.Attribute(key); ok {
		return v, true
	}
	return sd.Attribute(key)
}

func attrs(md *sdp.MediaDescription, key string) []string {
	var out []string
	for _, a := range md.Attributes {
		if strings.EqualFold(a.Key, key) {
			out = append(out, a.Value)
		}
	}
	return out
}

func bundleMids(sd *sdp.SessionDescription) ([]string, bool) {
	for _, a := range sd.Attributes {
		if f := strings.Fields(a.Value); strings.EqualFold(a.Key, "group") && len(f) > 0 && f[0] == "BUNDLE" {
			return f[1:], true
		}
	}
	return nil, false
}

// checkAnswer is the rule book. Each failure names its rule.
func checkAnswer(t *testing.T, offer, ans *sdp.SessionDescription) {
	t.Helper()
	// RFC 3264 §6: as many m= lines as offered, in order, same media.
	if len(ans.MediaDescriptions) != len(offer.MediaDescriptions) {
		t.Fatalf("RFC 3264 §6: %d m= lines answered to %d offered", len(ans.MediaDescriptions), len(offer.MediaDescriptions))
	}
	// RFC 4566 §5.2/§5.7: a real address in o= and c=.
	if ip, err := netip.ParseAddr(ans.Origin.UnicastAddress); err != nil || ip.IsUnspecified() {
		t.Errorf("o= address %q is not a real address", ans.Origin.UnicastAddress)
	}
	if hasAttr(ans.Attributes, "ice-lite") {
		t.Error("answer claims ice-lite: we are a full ICE agent")
	}
	offerBundle, offerHasBundle := bundleMids(offer)
	ansBundle, ansHasBundle := bundleMids(ans)
	if ansHasBundle && !offerHasBundle {
		t.Error("RFC 8843 §7.3: BUNDLE group in the answer, none in the offer")
	}
	accepted := -1
	for i, om := range offer.MediaDescriptions {
		am := ans.MediaDescriptions[i]
		if am.MediaName.Media != om.MediaName.Media {
			t.Errorf("RFC 3264 §6: m= line %d is %q, offered %q", i, am.MediaName.Media, om.MediaName.Media)
		}
		// RFC 3264 §6: the transport protocol is the offer's.
		if op, ap := strings.Join(om.MediaName.Protos, "/"), strings.Join(am.MediaName.Protos, "/"); op != ap {
			t.Errorf("RFC 3264 §6: m= line %d answered with %s, offered %s", i, ap, op)
		}
		// RFC 5888 §9.1 / RFC 8843: a mid only if offered, the same one.
		omid, ohas := om.Attribute("mid")
		amid, ahas := am.Attribute("mid")
		if ohas != ahas || omid != amid {
			t.Errorf("RFC 5888: m= line %d mid %q (present %v), offered %q (present %v)", i, amid, ahas, omid, ohas)
		}
		if am.MediaName.Port.Value == 0 {
			if ahas && slices.Contains(ansBundle, amid) {
				t.Errorf("RFC 8843 §7.3.3: rejected m= line %d (mid %s) is in the answer's BUNDLE group", i, amid)
			}
			continue
		}
		if accepted >= 0 {
			t.Errorf("m= line %d accepted next to %d: we take one audio stream", i, accepted)
		}
		accepted = i
		if om.MediaName.Media != "audio" || om.MediaName.Port.Value == 0 {
			t.Errorf("m= line %d (%s, offered port %d) accepted", i, om.MediaName.Media, om.MediaName.Port.Value)
		}
	}
	if accepted < 0 {
		t.Fatal("no audio stream accepted")
	}
	om, am := offer.MediaDescriptions[accepted], ans.MediaDescriptions[accepted]
	if accepted != firstAudio(offer) {
		t.Errorf("accepted m= line %d, the first usable audio is %d", accepted, firstAudio(offer))
	}
	if mid, ok := am.Attribute("mid"); ok && slices.Contains(offerBundle, mid) && !slices.Contains(ansBundle, mid) {
		t.Errorf("offered BUNDLE with %s, the answer does not group the accepted stream (RFC 8843 §7.3 lets an answerer decline; we accept, with SDES as with DTLS)", mid)
	}
	for _, mid := range ansBundle {
		if !slices.Contains(offerBundle, mid) {
			t.Errorf("RFC 8843 §7.3: answer bundles %s, not in the offer's group %v", mid, offerBundle)
		}
	}
	ci := am.ConnectionInformation
	if ci == nil {
		ci = ans.ConnectionInformation
	}
	if ci == nil || ci.Address == nil {
		t.Fatal("RFC 4566 §5.7: no c= for the accepted stream")
	}
	if ip, err := netip.ParseAddr(ci.Address.Address); err != nil || ip.IsUnspecified() {
		t.Errorf("c= address %q is not a real address", ci.Address.Address)
	}
	// RFC 3264 §6.1: formats are a subset of the offer's, with its numbers.
	for _, f := range am.MediaName.Formats {
		if !slices.Contains(om.MediaName.Formats, f) {
			t.Errorf("RFC 3264 §6.1: answered format %s not offered (%v)", f, om.MediaName.Formats)
		}
	}
	if opusPT, _, _ := offeredCodecs(om); opusPT < 0 || !slices.Contains(am.MediaName.Formats, strconv.Itoa(opusPT)) {
		t.Errorf("opus (PT %d) not answered: %v", opusPT, am.MediaName.Formats)
	}
	// RFC 3264 §6.1: direction mirrors the offer's.
	if got, want := direction(ans, am), answerDirection(direction(offer, om)); got != want {
		t.Errorf("RFC 3264 §6.1: direction %s, want %s", got, want)
	}
	mux := hasAttr(am.Attributes, "rtcp-mux")
	if mux && !hasAttr(om.Attributes, "rtcp-mux") {
		t.Error("RFC 5761 §5.1.1: rtcp-mux answered, not offered")
	}
	if hasAttr(am.Attributes, "rtcp-rsize") && !hasAttr(om.Attributes, "rtcp-rsize") {
		t.Error("RFC 5506 §5: rtcp-rsize answered, not offered")
	}
	proto := strings.ToUpper(strings.Join(om.MediaName.Protos, "/"))
	if hasAttr(am.Attributes, "rtcp-fb") && !strings.HasSuffix(proto, "F") {
		t.Errorf("RFC 4585 §4.2: rtcp-fb in a %s answer", proto)
	}
	if hasAttr(am.Attributes, "msid") && !hasAttr(offer.Attributes, "msid-semantic") && !hasAttr(om.Attributes, "msid") {
		t.Error("msid answered to a peer that uses none")
	}
	if isDTLSOffer(offer) {
		checkDTLS(t, offer, ans, om, am, mux)
	} else {
		checkSDES(t, om, am)
	}
}

func checkDTLS(t *testing.T, offer, ans *sdp.SessionDescription, om, am *sdp.MediaDescription, mux bool) {
	t.Helper()
	for _, k := range []string{"fingerprint", "ice-ufrag", "ice-pwd"} {
		if _, ok := attr(ans, am, k); !ok {
			t.Errorf("DTLS answer without a=%s", k)
		}
	}
	setup, _ := attr(ans, am, "setup")
	offered, _ := attr(offer, om, "setup")
	// RFC 5763 §5: the answerer is active or passive. Toward ICE-lite
	// peers (Meta, which needs us to be the client) active; toward others
	// passive (answerSetup says why).
	want := map[string]string{"active": "passive", "passive": "active"}[offered]
	if offered == "actpass" {
		want = "passive"
		if hasAttr(offer.Attributes, "ice-lite") {
			want = "active"
		}
	}
	if want != "" && setup != want {
		t.Errorf("RFC 5763 §5: a=setup:%s answered to %s, want %s", setup, offered, want)
	}
	var comp1 []int
	for _, c := range attrs(am, "candidate") {
		f := strings.Fields(c)
		if len(f) < 8 {
			t.Errorf("RFC 8839: bad candidate %q", c)
			continue
		}
		if mux && f[1] != "1" {
			t.Errorf("RFC 5761 §5.1.3: rtcp-mux agreed, yet a component-%s candidate: %s", f[1], c)
		}
		if f[1] == "1" {
			p, err := strconv.Atoi(f[5])
			if err != nil {
				t.Errorf("RFC 8839: bad candidate port in %q", c)
			}
			comp1 = append(comp1, p)
		}
	}
	if len(comp1) == 0 {
		t.Fatal("RFC 8839: no component-1 candidate")
	}
	// RFC 8839 §4.2.1.1: m= names the default candidate.
	if !slices.Contains(comp1, am.MediaName.Port.Value) {
		t.Errorf("RFC 8839 §4.2.1.1: m= port %d is none of our candidates' %v", am.MediaName.Port.Value, comp1)
	}
	if !mux {
		if _, ok := am.Attribute("rtcp"); !ok {
			t.Error("RFC 3605: no rtcp-mux and no a=rtcp: the peer would send RTCP to port+1")
		}
	}
}

func checkSDES(t *testing.T, om, am *sdp.MediaDescription) {
	t.Helper()
	got := attrs(am, "crypto")
	if len(got) != 1 {
		t.Fatalf("RFC 4568 §7.1.1: %d a=crypto in the answer, want 1", len(got))
	}
	k, err := parseCrypto(got[0])
	if err != nil {
		t.Fatalf("RFC 4568: answer's crypto %q: %v", got[0], err)
	}
	matched := false
	for _, oc := range attrs(om, "crypto") {
		if ok, err := parseCrypto(oc); err == nil && ok.tag == k.tag && ok.suite == k.suite {
			matched = true
			if string(ok.keySalt) == string(k.keySalt) {
				t.Error("RFC 4568: the answer reuses the offer's key")
			}
		}
	}
	if !matched {
		t.Errorf("RFC 4568 §7.1.1: answered tag %d %s is not an offered one", k.tag, k.suite)
	}
	for _, k := range []string{"fingerprint", "setup", "candidate"} {
		if hasAttr(am.Attributes, k) {
			t.Errorf("SDES answer carries a=%s", k)
		}
	}
}
