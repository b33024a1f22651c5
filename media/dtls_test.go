package media

import (
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDTLSAnswerToTheGuidesOffer(t *testing.T) {
	s, ans, err := Answer(testConfig(), []byte(guideMetaOfferDTLS))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := string(ans)
	// Meta is ICE-lite: we are the controlling agent and the DTLS client.
	for _, want := range []string{"a=setup:active", "a=fingerprint:sha-256", "UDP/TLS/RTP/SAVPF 111 126", "a=rtcp-mux",
		"a=ice-ufrag:", "127.0.0.1", "typ host", "a=mid:audio", "telephone-event/8000"} {
		if !strings.Contains(a, want) {
			t.Errorf("answer lacks %q:\n%s", want, a)
		}
	}
	// SIP peers read c=/m=: they must name our default (first host) candidate.
	if strings.Contains(a, "c=IN IP4 0.0.0.0") || strings.Contains(a, "m=audio 9 ") || !strings.Contains(a, "c=IN IP4 127.0.0.1") {
		t.Errorf("c=/m= do not carry the default candidate:\n%s", a)
	}
	if strings.Contains(a, ".local") || strings.Contains(a, "a=setup:passive") {
		t.Errorf("mDNS candidate or passive role:\n%s", a)
	}
}

func TestDTLSPublicAddressAndBadOffers(t *testing.T) {
	cfg := testConfig()
	cfg.AdvertiseIP = net.IPv4(203, 0, 113, 7)
	s, ans, err := Answer(cfg, []byte(guideMetaOfferDTLS))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if !strings.Contains(string(ans), "203.0.113.7") {
		t.Fatalf("public_address not advertised:\n%s", ans)
	}
	// No opus: 488 before any ICE work.
	noOpus := strings.ReplaceAll(guideMetaOfferDTLS, "opus/48000/2", "G729/8000")
	if _, _, err := Answer(testConfig(), []byte(noOpus)); err == nil || !strings.Contains(err.Error(), "opus") {
		t.Fatalf("no-opus offer: %v", err)
	}
}

// TestDTLSNeverCompletes: a peer that never answers ICE/DTLS ends the
// session with a reason instead of a silent, hanging call.
func TestDTLSNeverCompletes(t *testing.T) {
	offer := strings.ReplaceAll(guideMetaOfferDTLS, "57.144.135.35 3480", "127.0.0.1 9") // loopback only, nobody there
	offer = strings.ReplaceAll(offer, "2a03:2880:f343:131:face:b00c:0:699c 3480", "::1 9")
	s, _, err := Answer(testConfig(), []byte(offer))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(t.Context(), nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("session still up without ICE/DTLS")
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "ICE/DTLS") {
		t.Fatalf("reason %v", err)
	}
	if st := s.Stats(); st.PacketsSent != 0 {
		t.Fatalf("%d packets sent before DTLS", st.PacketsSent)
	}
}

// Two waphone sessions over DTLS-SRTP (one offers WebRTC, the other
// answers): DTMF crosses unchanged (pion must not rewrite its payload type).
func TestDTLSPairDTMF(t *testing.T) {
	got := make(chan rune, 8)
	a, offer, err := Offer(Config{KeyExchange: "dtls", BindIP: testConfig().BindIP, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, answer, err := Answer(Config{BindIP: testConfig().BindIP, Logger: quietLogger(), OnDTMF: func(d rune) { got <- d }}, offer)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.SetAnswer(answer); err != nil {
		t.Fatal(err)
	}
	_ = a.Start(t.Context(), nil, nil)
	_ = b.Start(t.Context(), nil, nil)
	waitStat(t, a, "no DTLS media", func(st Stats) bool { return st.PacketsSent > 0 })
	if err := a.SendDTMF("5*"); err != nil {
		t.Fatal(err)
	}
	var digits []rune
	for len(digits) < 2 {
		select {
		case d := <-got:
			digits = append(digits, d)
		case <-time.After(5 * time.Second):
			t.Fatalf("received %q", string(digits))
		}
	}
	if string(digits) != "5*" {
		t.Fatalf("received %q", string(digits))
	}
	if b.Stats().PacketsReceived < 10 {
		t.Fatal("no audio over DTLS")
	}
}

// TestDTLSBadFingerprint: the peer's certificate does not match the
// fingerprint in its SDP. The session must end with a reason, and no
// audio may flow over the unauthenticated DTLS association.
func TestDTLSBadFingerprint(t *testing.T) {
	a, offer, err := Offer(Config{KeyExchange: "dtls", BindIP: testConfig().BindIP, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, answer, err := Answer(testConfig(), offer)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	forged := regexp.MustCompile(`a=fingerprint:sha-256 \S+`).ReplaceAll(answer,
		[]byte("a=fingerprint:sha-256 "+strings.Repeat("AB:", 31)+"AB"))
	if err := a.SetAnswer(forged); err != nil {
		t.Fatal(err)
	}
	_ = a.Start(t.Context(), nil, nil)
	_ = b.Start(t.Context(), nil, nil)
	select {
	case <-a.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("session with a forged fingerprint still up")
	}
	if err := a.Err(); err == nil || !strings.Contains(err.Error(), "ICE/DTLS") {
		t.Fatalf("reason %v", err)
	}
	if st := a.Stats(); st.PacketsReceived != 0 {
		t.Fatalf("%d packets accepted over a forged DTLS", st.PacketsReceived)
	}
	t.Logf("ended: %v", a.Err())
}

// TestPeerICELevels: a SIP peer's WebRTC SDP (baresip's shape: a=setup,
// a=fingerprint and ICE credentials at session level, no a=mid) is read
// as well as Meta's (all in the media section); our answer takes the role
// the session-level a=setup leaves us.
func TestPeerICELevels(t *testing.T) {
	fp := "sha-256 " + strings.TrimSuffix(strings.Repeat("AB:", 32), ":")
	baresip := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"a=fingerprint:" + fp + "\r\na=setup:active\r\na=ice-ufrag:xyzw\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
		"m=audio 4000 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-mux\r\na=ssrc:1 cname:y\r\n"
	sd, nerr := parseSDP([]byte(baresip))
	if nerr != nil {
		t.Fatal(nerr)
	}
	p := peerICE(sd, sd.MediaDescriptions[0])
	if p.ufrag != "xyzw" || p.pwd != "abcdefghijklmnopqrstuvwx" || len(p.fingerprints) != 1 || p.fingerprints[0] != fp {
		t.Fatalf("session-level ICE/DTLS parameters not read: %+v", p)
	}
	s, ans, err := Answer(testConfig(), []byte(baresip))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.Contains(string(ans), "a=setup:passive\r\n") || strings.Contains(string(ans), "a=mid") {
		t.Fatalf("answer to a session-level setup:active:\n%s", ans)
	}
	if tr := s.tr.(*dtlsTransport); tr.peer.controlling || tr.peer.dtlsClient {
		t.Fatalf("roles toward a full-ICE active peer: %+v", tr.peer)
	}
	sd, _ = parseSDP([]byte(guideMetaOfferDTLS))
	if p := peerICE(sd, sd.MediaDescriptions[0]); p.ufrag != "RmDDkfzkwbexPfbC" || len(p.fingerprints) != 1 {
		t.Fatalf("Meta's media-level parameters: %+v", p)
	}
}

// TestAnswerToOfferWithoutBundle: baresip offers WebRTC media with
// session-level a=setup, no a=mid and no BUNDLE group; our answer must
// keep the audio stream (pion would answer m=audio 0) and add no group.
func TestAnswerToOfferWithoutBundle(t *testing.T) {
	offer := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"a=fingerprint:sha-256 " + strings.TrimSuffix(strings.Repeat("AB:", 32), ":") + "\r\na=setup:actpass\r\n" +
		"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
		"m=audio 4000 UDP/TLS/RTP/SAVPF 111 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n" +
		"a=rtcp-mux\r\na=candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host\r\na=ssrc:1 cname:x\r\n"
	s, ans, err := Answer(testConfig(), []byte(offer))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := string(ans)
	// actpass from a full ICE peer: we are the DTLS server (answerSetup).
	if strings.Contains(a, "m=audio 0 ") || !strings.Contains(a, "a=setup:passive") {
		t.Fatalf("audio stream rejected or wrong DTLS role:\n%s", a)
	}
	if strings.Contains(a, "a=group:BUNDLE") {
		t.Fatalf("answer adds a BUNDLE group the offer did not have:\n%s", a)
	}
}

// freePortBlock finds n consecutive UDP ports free on 127.0.0.1.
func freePortBlock(t *testing.T, n int) int {
	t.Helper()
	for range 20 {
		probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		lo := probe.LocalAddr().(*net.UDPAddr).Port
		probe.Close()
		if lo+n-1 > 65535 {
			continue
		}
		if len(boundPorts(lo, lo+n-1)) == 0 {
			return lo
		}
	}
	t.Skip("no free block of UDP ports")
	return 0
}

// boundPorts lists the ports of lo..hi that something holds on 127.0.0.1.
func boundPorts(lo, hi int) []int {
	var busy []int
	for p := lo; p <= hi; p++ {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err != nil {
			busy = append(busy, p)
			continue
		}
		c.Close()
	}
	return busy
}

var hostCandRE = regexp.MustCompile(`(?m)^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host`)

// TestDTLSBindsNoRTPSocket: in a DTLS call the only sockets in rtp_ports
// are ICE's host candidates, which pion reads. (A DTLS session once also
// bound the SDES RTP socket there, which nothing read, and took the even
// port of a one-port range from ICE.)
func TestDTLSBindsNoRTPSocket(t *testing.T) {
	const n = 4
	lo := freePortBlock(t, n)
	cfg := testConfig()
	cfg.KeyExchange, cfg.PortMin, cfg.PortMax = "dtls", lo, lo+n-1
	check := func(t *testing.T, what string, sdpText []byte) {
		t.Helper()
		var cands []int
		for _, m := range hostCandRE.FindAllSubmatch(sdpText, -1) {
			p, _ := strconv.Atoi(string(m[1]))
			cands = append(cands, p)
		}
		busy := boundPorts(lo, lo+n-1)
		if len(cands) == 0 || !slices.Equal(busy, cands) {
			t.Errorf("%s: ports %v bound in %d-%d, want only the ICE host candidates' %v", what, busy, lo, lo+n-1, cands)
		}
	}
	t.Run("offer", func(t *testing.T) {
		s, offer, err := Offer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		check(t, "offer", offer)
		s.Close()
		if busy := boundPorts(lo, lo+n-1); len(busy) != 0 {
			t.Errorf("ports %v still bound after Close", busy)
		}
	})
	t.Run("answer", func(t *testing.T) {
		s, ans, err := Answer(cfg, []byte(guideMetaOfferDTLS))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		check(t, "answer", ans)
	})
	// A one-port range is ICE's alone: two calls in a row both get it.
	t.Run("one port", func(t *testing.T) {
		one := cfg
		one.PortMax = one.PortMin
		for i := range 2 {
			s, offer, err := Offer(one)
			if err != nil {
				t.Fatal(err)
			}
			if m := hostCandRE.FindSubmatch(offer); m == nil || string(m[1]) != strconv.Itoa(lo) {
				t.Errorf("call %d: host candidate not on the one rtp port %d:\n%s", i, lo, offer)
			}
			s.Close()
		}
	})
}
