package media

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Offers and answers copied from Meta's Business Calling guide (seed
// 000_aa0f2bdc908dfe01.txt). The guide masks the a=crypto lines; they are
// replaced by valid ones. Line endings are LF and the final newline is
// missing, as in the guide text: parsing must cope.
const (
	testCrypto  = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e"
	testCrypto2 = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGC"

	// Business-initiated call via Twilio: INVITE to Meta (107 0 8 101).
	guideTwilioOffer = `v=0
o=root 1185414872 1185414872 IN IP4 172.18.155.180
s=Twilio Media Gateway
c=IN IP4 168.86.138.232
t=0 0
m=audio 19534 RTP/SAVP 107 0 8 101
` + testCrypto + `
a=rtpmap:0 PCMU/8000
a=rtpmap:107 opus/48000/2
a=fmtp:107 useinbandfec=1
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:20
a=sendrecv`

	// Meta's 200 OK to the above.
	guideMetaAnswer107 = `v=0
o=- 1746657286595 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE audio
a=msid-semantic: WMS 42da9643-cb50-4eca-95d3-ca41b3f1f4bb
m=audio 3480 RTP/SAVP 107 101
c=IN IP4 157.240.19.130
a=rtcp:9 IN IP4 0.0.0.0
a=mid:audio
a=sendrecv
a=msid:42da9643-cb50-4eca-95d3-ca41b3f1f4bb WhatsAppTrack1
a=rtcp-mux
` + testCrypto2 + `
a=rtpmap:107 opus/48000/2
a=fmtp:107 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1
a=rtpmap:101 telephone-event/8000
a=maxptime:20
a=ptime:20
a=ssrc:1238967757 cname:WhatsAppAudioStream1`

	// User-initiated call: Meta's INVITE with SDES.
	guideMetaOffer = `v=0
o=- 1746659966980 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE audio
a=msid-semantic: WMS 07092115-d151-427e-8722-26c70936b104
m=audio 3480 RTP/SAVP 111 126
c=IN IP4 157.240.19.130
a=rtcp:9 IN IP4 0.0.0.0
a=mid:audio
a=sendrecv
a=msid:07092115-d151-427e-8722-26c70936b104 WhatsAppTrack1
a=rtcp-mux
` + testCrypto + `
a=rtpmap:111 opus/48000/2
a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1
a=rtpmap:126 telephone-event/8000
a=maxptime:20
a=ptime:20
a=ssrc:1615009994 cname:WhatsAppAudioStream1`

	// Twilio's 200 OK to Meta's INVITE (session-level c=).
	guideTwilioAnswer111 = `v=0
o=root 1353670385 1353670385 IN IP4 172.18.164.24
s=Twilio Media Gateway
c=IN IP4 168.86.138.176
t=0 0
m=audio 15822 RTP/SAVP 111 126
a=rtpmap:111 opus/48000/2
a=fmtp:111 maxplaybackrate=16000;sprop-maxcapturerate=16000;maxaveragebitrate=20000;useinbandfec=1
a=rtpmap:126 telephone-event/8000
a=fmtp:126 0-16
` + testCrypto2 + `
a=ptime:20
a=maxptime:20
a=sendrecv`

	// The digest-auth variant of Meta's INVITE.
	guideMetaOfferDigest = `v=0
o=- 1750716867913 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE audio
a=msid-semantic: WMS 4e37b099-8aef-45d0-be4f-1cde2ca5a37d
m=audio 3480 RTP/SAVP 111 126
c=IN IP4 57.144.219.49
a=rtcp:9 IN IP4 0.0.0.0
a=mid:audio
a=sendrecv
a=msid:4e37b099-8aef-45d0-be4f-1cde2ca5a37d WhatsAppTrack1
a=rtcp-mux
` + testCrypto + `
a=rtpmap:111 opus/48000/2
a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1
a=rtpmap:126 telephone-event/8000
a=maxptime:20
a=ptime:20
a=ssrc:215879358 cname:WhatsAppAudioStream1`

	// User-initiated call with WebRTC media (DTLS): must be refused for now.
	guideMetaOfferDTLS = `v=0
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
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99
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
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig() Config {
	return Config{BindIP: net.IPv4(127, 0, 0, 1), Logger: quietLogger()}
}

func mLine(t *testing.T, sdpText string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^m=audio .*$`).FindString(sdpText)
	if m == "" {
		t.Fatalf("no m=audio in\n%s", sdpText)
	}
	return strings.TrimRight(m, "\r")
}

func TestAnswerGuideOffers(t *testing.T) {
	tests := []struct {
		name, offer  string
		wantM        string
		want, reject []string
	}{
		{
			name: "meta sdes invite", offer: guideMetaOffer,
			wantM: `^m=audio \d+ RTP/SAVP 111 126$`,
			want:  []string{"a=rtpmap:111 opus/48000/2", "a=rtpmap:126 telephone-event/8000", "a=rtcp-mux", "a=mid:audio", "a=sendrecv", "a=ptime:20"},
			// Meta's offer has no fmtp for 126: do not invent one.
			reject: []string{"a=fmtp:126", "PCMU", "PCMA"},
		},
		{
			name: "meta digest invite", offer: guideMetaOfferDigest,
			wantM: `^m=audio \d+ RTP/SAVP 111 126$`,
			want:  []string{"a=rtpmap:111 opus/48000/2", "a=rtcp-mux"},
		},
		{
			name: "twilio offer with pcmu/pcma", offer: guideTwilioOffer,
			wantM:  `^m=audio \d+ RTP/SAVP 107 101$`,
			want:   []string{"a=rtpmap:107 opus/48000/2", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"},
			reject: []string{"PCMU", "PCMA", "a=rtcp-mux", " 0 8", "a=mid"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, ans, err := Answer(testConfig(), []byte(tc.offer))
			if err != nil {
				t.Fatalf("Answer: %v", err)
			}
			defer s.Close()
			a := string(ans)
			t.Logf("answer:\n%s", a)
			if !regexp.MustCompile(tc.wantM).MatchString(mLine(t, a)) {
				t.Errorf("m= line %q, want %s", mLine(t, a), tc.wantM)
			}
			for _, w := range tc.want {
				if !strings.Contains(a, w+"\r\n") {
					t.Errorf("answer lacks %q:\n%s", w, a)
				}
			}
			for _, r := range tc.reject {
				if strings.Contains(a, r) {
					t.Errorf("answer must not contain %q:\n%s", r, a)
				}
			}
			// Same tag, same suite, a fresh key (not the offer's).
			cr := regexp.MustCompile(`a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]{40})\r\n`).FindStringSubmatch(a)
			if cr == nil {
				t.Fatalf("answer has no valid crypto line:\n%s", a)
			}
			if strings.Contains(tc.offer, cr[1]) {
				t.Error("answer reused the offer's key")
			}
			if !strings.Contains(a, "c=IN IP4 127.0.0.1\r\n") {
				t.Errorf("c= should advertise the bind address:\n%s", a)
			}
			if !strings.HasPrefix(a, "v=0\r\no=- ") {
				t.Errorf("bad start:\n%s", a)
			}
			// LocalSDP is the same bytes (a re-INVITE is answered identically).
			if string(s.LocalSDP()) != a {
				t.Error("LocalSDP differs from the answer")
			}
			// Our answer must parse back as an acceptable offer-shaped SDP.
			if _, nerr := parseSDP(ans); nerr != nil {
				t.Errorf("answer does not parse: %v", nerr)
			}
		})
	}
}

func TestNegotiationErrors(t *testing.T) {
	replace := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("test setup: %q not found", old)
		}
		return strings.ReplaceAll(s, old, new)
	}
	tests := []struct {
		name   string
		offer  string
		status int
		reason string
	}{
		{"no opus", replace(replace(guideTwilioOffer, "a=rtpmap:107 opus/48000/2\n", ""), "107 0 8 101", "0 8 101"), 488, "no common codec (need opus/48000)"},
		{"opus at wrong rate", replace(guideMetaOffer, "opus/48000/2", "opus/16000/2"), 488, "no common codec"},
		{"plain rtp/avp", replace(replace(guideMetaOffer, testCrypto+"\n", ""), "RTP/SAVP", "RTP/AVP"), 488, "SRTP required"},
		{"savp without crypto", replace(guideMetaOffer, testCrypto+"\n", ""), 488, "SRTP required"},
		{"savp with fingerprint only", replace(guideMetaOffer, testCrypto, "a=fingerprint:sha-256 AA:BB"), 488, "without usable ICE credentials"},
		// Dangerous parameters: refused before answering, with the reason.
		{"all-zero key", replace(guideMetaOffer, "inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e", "inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 488, "all-zero master key"},
		{"tiny key lifetime", replace(guideMetaOffer, "HB0e", "HB0e|2^4"), 488, "key lifetime 2^4"},
		{"huge key lifetime", replace(guideMetaOffer, "HB0e", "HB0e|2^63"), 488, "key lifetime 2^63"},
		{"multicast c=", replace(guideMetaOffer, "c=IN IP4 157.240.19.130", "c=IN IP4 239.1.2.3"), 488, "multicast or broadcast"},
		{"broadcast c=", replace(guideMetaOffer, "c=IN IP4 157.240.19.130", "c=IN IP4 255.255.255.255"), 488, "multicast or broadcast"},
		{"unspecified c=", replace(guideMetaOffer, "c=IN IP4 157.240.19.130", "c=IN IP4 0.0.0.0"), 488, "nowhere to send RTP"},
		{"dtls holdconn", replace(guideMetaOfferDTLS, "a=setup:actpass", "a=setup:holdconn"), 488, "holdconn"},
		{"dtls no ice-pwd", replace(guideMetaOfferDTLS, "a=ice-pwd:abcdefghijklmnopqrstuvwx\n", ""), 488, "ICE credentials"},
		{"dtls short fingerprint", replace(guideMetaOfferDTLS, "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99", "AA:BB"), 488, "fingerprint: 2 bytes"},
		{"dtls unknown hash", replace(guideMetaOfferDTLS, "a=fingerprint:sha-256", "a=fingerprint:md5"), 488, "a=fingerprint"},
		{"dtls oversized fingerprint", replace(guideMetaOfferDTLS, "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99", strings.Repeat("AA:", 200)+"AA"), 488, "a=fingerprint of"},
		{"dtls multicast c=", replace(guideMetaOfferDTLS, "c=IN IP4 57.144.135.35", "c=IN IP4 224.0.0.9"), 488, "multicast or broadcast"},
		{"dtls profile with sdes keys", replace(guideMetaOffer, "RTP/SAVP", "UDP/TLS/RTP/SAVPF"), 488, "a=crypto with the DTLS profile"},
		{"unsupported suite", replace(guideMetaOffer, "AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM"), 488, "no supported SRTP crypto suite"},
		{"short key", replace(guideMetaOffer, "inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e", "inline:AQID"), 488, "key is not 30 bytes"},
		{"mki", replace(guideMetaOffer, "HB0e", "HB0e|2^31|1:4"), 488, "MKI"},
		{"rtp/avp carrying a=crypto", replace(guideMetaOffer, "RTP/SAVP", "RTP/AVP"), 488, "SRTP required"},
		{"video only", replace(guideMetaOffer, "m=audio", "m=video"), 488, "no audio stream offered"},
		{"audio port 0", replace(guideMetaOffer, "m=audio 3480", "m=audio 0"), 488, "no audio stream offered"},
		{"hostname in c=", replace(guideMetaOffer, "c=IN IP4 157.240.19.130", "c=IN IP4 media.example.com"), 488, "need an IP literal"},
		{"no c=", replace(guideMetaOffer, "c=IN IP4 157.240.19.130\n", ""), 400, "no c= line"},
		{"garbage", "this is not sdp", 400, "unparseable SDP"},
		{"empty", "", 400, "unparseable SDP"},
		{"binary", "\x00\x01\x02=\xff", 400, "unparseable SDP"},
		{"unknown line type", guideMetaOffer + "\nx=what", 400, "unparseable SDP"},
		{"no media", "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n", 488, "no media"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _, err := Answer(testConfig(), []byte(tc.offer))
			if err == nil {
				s.Close()
				t.Fatal("Answer succeeded, want error")
			}
			var ne *NegotiationError
			if !errors.As(err, &ne) {
				t.Fatalf("error %v (%T) is not a *NegotiationError", err, err)
			}
			if ne.Status != tc.status || !strings.Contains(ne.Reason, tc.reason) {
				t.Errorf("got %d %q, want %d containing %q", ne.Status, ne.Reason, tc.status, tc.reason)
			}
		})
	}
}

func TestAnswerOddButValidOffers(t *testing.T) {
	tests := []struct{ name, offer, wantM string }{
		// Session c= after t= (out of RFC order) and CRLF endings.
		{"reordered session lines", strings.ReplaceAll(strings.Replace(guideTwilioOffer, "c=IN IP4 168.86.138.232\nt=0 0", "t=0 0\nc=IN IP4 168.86.138.232", 1), "\n", "\r\n") + "\r\n", `^m=audio \d+ RTP/SAVP 107 101$`},
		// A video stream next to audio must be answered with port 0.
		{"audio plus video", guideMetaOffer + "\nm=video 9 RTP/SAVP 96\na=rtpmap:96 VP8/90000", `^m=audio \d+ RTP/SAVP 111 126$`},
		// An unsupported crypto line first, a good one second.
		{"second crypto usable", strings.Replace(guideMetaOffer, testCrypto, "a=crypto:2 AEAD_AES_256_GCM inline:AAAA\n"+testCrypto, 1), `^m=audio \d+ RTP/SAVP 111 126$`},
		// No telephone-event at all.
		{"opus only", strings.Replace(strings.Replace(guideMetaOffer, "111 126", "111", 1), "a=rtpmap:126 telephone-event/8000\n", "", 1), `^m=audio \d+ RTP/SAVP 111$`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, ans, err := Answer(testConfig(), []byte(tc.offer))
			if err != nil {
				t.Fatalf("Answer: %v", err)
			}
			defer s.Close()
			if m := mLine(t, string(ans)); !regexp.MustCompile(tc.wantM).MatchString(m) {
				t.Errorf("m= %q, want %s\n%s", m, tc.wantM, ans)
			}
			if strings.Contains(tc.offer, "m=video") && !strings.Contains(string(ans), "m=video 0 RTP/SAVP 96\r\n") {
				t.Errorf("video not rejected with port 0:\n%s", ans)
			}
			if strings.Contains(tc.name, "second crypto") && !strings.Contains(string(ans), "a=crypto:1 ") {
				t.Errorf("wrong crypto tag chosen:\n%s", ans)
			}
		})
	}
}

func TestOfferShape(t *testing.T) {
	s, off, err := Offer(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o := string(off)
	for _, w := range []string{
		"a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
		"a=rtpmap:126 telephone-event/8000", "a=rtcp-mux", "a=ptime:20", "a=sendrecv",
		"c=IN IP4 127.0.0.1",
	} {
		if !strings.Contains(o, w+"\r\n") {
			t.Errorf("offer lacks %q:\n%s", w, o)
		}
	}
	if !regexp.MustCompile(`^m=audio \d+ RTP/SAVP 111 126$`).MatchString(mLine(t, o)) {
		t.Errorf("m= %q", mLine(t, o))
	}
	if !regexp.MustCompile(`a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:[A-Za-z0-9+/]{40}\r\n`).MatchString(o) {
		t.Errorf("bad crypto line:\n%s", o)
	}
	if st := s.Stats(); st.Codec != "opus/48000/2 pt 111" {
		t.Errorf("codec %q", st.Codec)
	}
	// Two offers never share a key.
	s2, off2, err := Offer(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	k := regexp.MustCompile(`inline:(\S+)`)
	if k.FindString(o) == k.FindString(string(off2)) {
		t.Error("two offers with the same key")
	}
}

func TestOfferDTLSAndBadConfig(t *testing.T) {
	cfg := testConfig()
	cfg.KeyExchange = "dtls"
	if s, off, err := Offer(cfg); err != nil {
		t.Errorf("dtls offer: %v", err)
	} else {
		for _, want := range []string{"UDP/TLS/RTP/SAVPF 111 126", "a=setup:actpass", "a=fingerprint:sha-256", "a=ice-ufrag:", "a=group:BUNDLE", "a=rtcp-mux", "typ host", "telephone-event/8000"} {
			if !strings.Contains(string(off), want) {
				t.Errorf("dtls offer lacks %q:\n%s", want, off)
			}
		}
		if strings.Contains(string(off), ".local") {
			t.Error("mDNS candidate in the offer")
		}
		s.Close()
	}
	cfg.KeyExchange = "zrtp"
	if _, _, err := Offer(cfg); err == nil {
		t.Error("unknown key exchange accepted")
	}
	cfg = testConfig()
	cfg.PortMin, cfg.PortMax = 5000, 4000
	if _, _, err := Offer(cfg); err == nil {
		t.Error("bad port range accepted")
	}
}

func TestPortRangePrefersEven(t *testing.T) {
	// Find a free even/odd pair first so the test does not depend on luck.
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := probe.LocalAddr().(*net.UDPAddr).Port &^ 1
	probe.Close()
	cfg := testConfig()
	cfg.PortMin, cfg.PortMax = p, p+1
	s, off, err := Offer(cfg)
	if err != nil {
		t.Skipf("ports %d-%d busy: %v", p, p+1, err)
	}
	defer s.Close()
	if got := mLine(t, string(off)); !strings.HasPrefix(got, "m=audio "+strconv.Itoa(p)+" ") {
		t.Errorf("m= %q, want even port %d", got, p)
	}
}

func TestSetAnswer(t *testing.T) {
	t.Run("twilio answer", func(t *testing.T) {
		s, _, err := Offer(testConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.SetAnswer([]byte(guideTwilioAnswer111)); err != nil {
			t.Fatalf("SetAnswer: %v", err)
		}
		// Same answer again (183 then 200): fine.
		if err := s.SetAnswer([]byte(guideTwilioAnswer111)); err != nil {
			t.Fatalf("SetAnswer again: %v", err)
		}
		s.mu.Lock()
		rd := s.remote
		s.mu.Unlock()
		if rd.addr.String() != "168.86.138.176:15822" || rd.opusPT != 111 || rd.dtmfPT != 126 {
			t.Errorf("remote %+v", rd)
		}
		if p := parseOpusFmtp(rd.opus.fmtp); p.maxAverageBitrate != 20000 || p.maxPlaybackRate != 16000 || !p.useInbandFEC {
			t.Errorf("opus params %+v", p)
		}
	})
	t.Run("renumbered answer", func(t *testing.T) {
		s, _, err := Offer(testConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.SetAnswer([]byte(guideMetaAnswer107)); err != nil {
			t.Fatalf("SetAnswer: %v", err)
		}
		if st := s.Stats(); st.Codec != "opus/48000/2 pt 107" {
			t.Errorf("codec %q", st.Codec)
		}
	})
	bad := []struct{ name, answer, reason string }{
		{"wrong crypto tag", strings.Replace(guideTwilioAnswer111, "a=crypto:1 ", "a=crypto:7 ", 1), "no usable a=crypto"},
		{"no crypto", strings.Replace(guideTwilioAnswer111, testCrypto2+"\n", "", 1), "SRTP required"},
		{"dtls answer to an sdes offer", guideMetaOfferDTLS, "answer uses DTLS-SRTP"},
		{"rejected audio", strings.Replace(guideTwilioAnswer111, "m=audio 15822", "m=audio 0", 1), "rejected the audio"},
		{"garbage", "nope", "unparseable"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			s, _, err := Offer(testConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = s.SetAnswer([]byte(tc.answer))
			var ne *NegotiationError
			if !errors.As(err, &ne) || !strings.Contains(ne.Reason, tc.reason) {
				t.Errorf("SetAnswer: %v, want reason containing %q", err, tc.reason)
			}
		})
	}
}

func TestParseCrypto(t *testing.T) {
	ok := []string{
		"1 AES_CM_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e",
		"2 AES_CM_128_HMAC_SHA1_32 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e|2^31",
		"3 aes_cm_128_hmac_sha1_80 INLINE:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e",
	}
	for _, v := range ok {
		if _, err := parseCrypto(v); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
	bad := []string{
		"", "1", "x AES_CM_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e",
		"1 F8_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e",
		"1 AES_CM_128_HMAC_SHA1_80 uri:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e",
		"1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
		"1 AES_CM_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e|2^20|1:4",
		"1 AES_CM_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e UNENCRYPTED_SRTP",
		"1 AES_CM_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e;inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e",
	}
	for _, v := range bad {
		if _, err := parseCrypto(v); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
}

func FuzzAnswer(f *testing.F) {
	for _, s := range []string{guideMetaOffer, guideMetaOfferDigest, guideTwilioOffer, guideMetaOfferDTLS, guideMetaAnswer107, guideTwilioAnswer111, "", "v=0"} {
		f.Add([]byte(s))
	}
	cfg := testConfig()
	f.Fuzz(func(t *testing.T, offer []byte) {
		// Parse-level checks on every input; Answer (which binds a socket) too.
		s, ans, err := Answer(cfg, offer)
		if err != nil {
			var ne *NegotiationError
			if !errors.As(err, &ne) || (ne.Status != 400 && ne.Status != 488) {
				t.Fatalf("non-negotiation error %v", err)
			}
			return
		}
		defer s.Close()
		if _, nerr := parseSDP(ans); nerr != nil {
			t.Fatalf("our answer does not parse: %v\n%s", nerr, ans)
		}
		// SetAnswer on an offer-side session must not panic either.
		o, _, err := Offer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_ = o.SetAnswer(offer)
		o.Close()
	})
}
