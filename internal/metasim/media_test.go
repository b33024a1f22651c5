package metasim

import (
	"context"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/testutil"
	"github.com/waphone/waphone/media"
)

func mmMetaCfg(hz float64) metaMediaConfig {
	return metaMediaConfig{BindIP: net.IPv4(127, 0, 0, 1), ToneHz: hz, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func mmMediaCfg() media.Config {
	return media.Config{BindIP: net.IPv4(127, 0, 0, 1), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

type mmTone struct{ hz, phase float64 }

func (s *mmTone) ReadFrame(pcm []int16) error {
	step := 2 * math.Pi * s.hz / media.SampleRate
	for i := range pcm {
		pcm[i] = int16(0.3 * 32767 * math.Sin(s.phase))
		s.phase = math.Mod(s.phase+step, 2*math.Pi)
	}
	return nil
}

type mmSink struct {
	mu  sync.Mutex
	pcm []int16
}

func (s *mmSink) WriteFrame(p []int16) error {
	s.mu.Lock()
	s.pcm = append(s.pcm, p...)
	s.mu.Unlock()
	return nil
}

func (s *mmSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pcm)
}

func (s *mmSink) last(n int) []int16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return mmTail(s.pcm, n)
}

func mmTail(p []int16, n int) []int16 {
	if len(p) < n {
		return nil
	}
	return append([]int16(nil), p[len(p)-n:]...)
}

// mmGoertzel: power at hz over total power; ~1 for a pure tone at hz,
// ~2/len for noise, 0 for silence. len(pcm) must put hz on a DFT bin.
func mmGoertzel(pcm []int16, hz float64) float64 {
	if len(pcm) == 0 {
		return 0
	}
	coeff := 2 * math.Cos(2*math.Pi*hz/media.SampleRate)
	var s1, s2, e float64
	for _, v := range pcm {
		x := float64(v)
		s1, s2 = x+coeff*s1-s2, s1
		e += x * x
	}
	if e == 0 {
		return 0
	}
	return 2 * (s1*s1 + s2*s2 - coeff*s1*s2) / (float64(len(pcm)) * e)
}

const mmWindow = media.SampleRate / 2 // 0.5 s, 2 Hz bins

func TestGoertzelRatioNegative(t *testing.T) {
	pure := make([]int16, mmWindow)
	(&mmTone{hz: 440}).ReadFrame(pure)
	if r := mmGoertzel(pure, 440); r < 0.9 {
		t.Fatalf("pure tone ratio %.3f", r)
	}
	noise := make([]int16, mmWindow)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range noise {
		noise[i] = int16(rng.NormFloat64() * 3000)
	}
	for name, p := range map[string][]int16{"silence": make([]int16, mmWindow), "noise": noise, "other tone": pure} {
		if r := mmGoertzel(p, 1000); r > 0.5 {
			t.Errorf("%s passes the 1000 Hz check: %.3f", name, r)
		}
	}
}

// mmCheckCall runs both directions for a while and checks tones and ordering.
func mmCheckCall(t *testing.T, s *media.Session, m *metaMedia, out *mmSink) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() bool { return len(m.recorded()) >= 2*mmWindow }, "business audio at metasim")
	testutil.Eventually(t, 5*time.Second, func() bool { return out.len() >= 2*mmWindow }, "metasim audio at business")

	rec := mmTail(m.recorded(), mmWindow)
	heard := out.last(mmWindow)
	t.Logf("metasim hears business: 440 Hz %.3f, 1000 Hz %.3f", mmGoertzel(rec, 440), mmGoertzel(rec, 1000))
	t.Logf("business hears metasim: 1000 Hz %.3f, 440 Hz %.3f", mmGoertzel(heard, 1000), mmGoertzel(heard, 440))
	if r := mmGoertzel(rec, 440); r < 0.5 {
		t.Errorf("metasim recording: 440 Hz ratio %.3f", r)
	}
	if r := mmGoertzel(heard, 1000); r < 0.5 {
		t.Errorf("business sink: 1000 Hz ratio %.3f", r)
	}
	if r := mmGoertzel(rec, 1000); r > 0.1 {
		t.Errorf("metasim recording contains its own tone: %.3f", r)
	}

	ms, bs := m.stats(), s.Stats()
	if !m.firstFromBusiness() {
		t.Error("metasim sent before the business's first packet")
	}
	if bs.FirstSentAt.IsZero() || ms.FirstSentAt.IsZero() || !bs.FirstSentAt.Before(ms.FirstSentAt) {
		t.Errorf("business first sent %v, metasim first sent %v", bs.FirstSentAt, ms.FirstSentAt)
	}
	if ms.FirstRecvAt.After(ms.FirstSentAt) {
		t.Errorf("metasim first recv %v after its first send %v", ms.FirstRecvAt, ms.FirstSentAt)
	}
	if ms.AuthFailures != 0 || bs.AuthFailures != 0 || ms.PacketsSent == 0 || bs.PacketsReceived == 0 {
		t.Errorf("metasim %+v business %+v", ms, bs)
	}
}

func TestBusinessOffersMetasimAnswers(t *testing.T) {
	s, offer, err := media.Offer(mmMediaCfg())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, answer, err := newMetaAnswer(mmMetaCfg(1000), offer)
	if err != nil {
		t.Fatalf("newMetaAnswer: %v", err)
	}
	defer m.close()
	if !regexp.MustCompile(`(?m)^m=audio \d+ RTP/SAVP 111 126\r$`).Match(answer) {
		t.Errorf("meta answer does not mirror 111/126:\n%s", answer)
	}
	if err := s.SetAnswer(answer); err != nil {
		t.Fatalf("SetAnswer: %v", err)
	}
	m.start()
	time.Sleep(100 * time.Millisecond)
	if m.stats().PacketsSent != 0 {
		t.Fatal("metasim sent before the business")
	}
	var out mmSink
	if err := s.Start(context.Background(), &mmTone{hz: 440}, &out); err != nil {
		t.Fatal(err)
	}
	mmCheckCall(t, s, m, &out)
}

func TestMetasimOffersBusinessAnswers(t *testing.T) {
	m, offer, err := newMetaOffer(mmMetaCfg(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	m.start() // receive loop before the answer: packets wait for the key
	s, answer, err := media.Answer(mmMediaCfg(), offer)
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	defer s.Close()
	if !regexp.MustCompile(`(?m)^m=audio \d+ RTP/SAVP 111 126\r$`).Match(answer) {
		t.Errorf("business answer does not mirror 111/126:\n%s", answer)
	}
	var out mmSink
	// Business starts sending before Meta has its answer (the 200 OK is in
	// flight): the first packets must still count.
	if err := s.Start(context.Background(), &mmTone{hz: 440}, &out); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return s.Stats().PacketsSent > 0 }, "the business's first packets")
	if err := m.setAnswer(answer); err != nil {
		t.Fatalf("setAnswer: %v", err)
	}
	mmCheckCall(t, s, m, &out)
}

func TestMetaOfferShape(t *testing.T) {
	m, offer, err := newMetaOffer(mmMetaCfg(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	// The guide's user-initiated SDES INVITE, line by line.
	want := []string{
		`v=0`,
		`o=- \d{13} 2 IN IP4 127\.0\.0\.1`,
		`s=-`,
		`t=0 0`,
		`a=group:BUNDLE audio`,
		`a=msid-semantic: WMS ([0-9a-f-]{36})`,
		`m=audio \d+ RTP/SAVP 111 126`,
		`c=IN IP4 127\.0\.0\.1`,
		`a=rtcp:9 IN IP4 0\.0\.0\.0`,
		`a=mid:audio`,
		`a=sendrecv`,
		`a=msid:[0-9a-f-]{36} WhatsAppTrack1`,
		`a=rtcp-mux`,
		`a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:[A-Za-z0-9+/]{40}`,
		`a=rtpmap:111 opus/48000/2`,
		`a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1`,
		`a=rtpmap:126 telephone-event/8000`,
		`a=maxptime:20`,
		`a=ptime:20`,
		`a=ssrc:\d+ cname:WhatsAppAudioStream1`,
	}
	lines := strings.Split(strings.TrimSuffix(string(offer), "\r\n"), "\r\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), offer)
	}
	for i, w := range want {
		if !regexp.MustCompile("^" + w + "$").MatchString(lines[i]) {
			t.Errorf("line %d %q, want %s", i, lines[i], w)
		}
	}
}

func TestMetaAnswerMirrorsTwilioStyleOffer(t *testing.T) {
	offer := strings.ReplaceAll(`v=0
o=root 1185414872 1185414872 IN IP4 172.18.155.180
s=Twilio Media Gateway
c=IN IP4 127.0.0.1
t=0 0
m=audio 19534 RTP/SAVP 107 0 8 101
a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e
a=rtpmap:0 PCMU/8000
a=rtpmap:107 opus/48000/2
a=fmtp:107 useinbandfec=1
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:20
a=sendrecv
`, "\n", "\r\n")
	m, ans, err := newMetaAnswer(mmMetaCfg(1000), []byte(offer))
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	a := string(ans)
	for _, w := range []string{"RTP/SAVP 107 101\r\n", "a=rtpmap:107 opus/48000/2\r\n", "a=rtpmap:101 telephone-event/8000\r\n", "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:"} {
		if !strings.Contains(a, w) {
			t.Errorf("answer lacks %q:\n%s", w, a)
		}
	}
	if strings.Contains(a, "PCMU") || strings.Contains(a, "inline:AQIDBAUG") {
		t.Errorf("answer keeps PCMU or reuses the offer key:\n%s", a)
	}
	if _, _, err := newMetaAnswer(mmMetaCfg(1000), []byte(strings.Replace(offer, "RTP/SAVP", "RTP/AVP", 1))); err == nil {
		t.Error("metasim accepted RTP/AVP")
	}
}

func TestMetaNoMediaAndWrongKey(t *testing.T) {
	cfg := mmMetaCfg(1000)
	cfg.NoMediaTimeout = 300 * time.Millisecond
	m, offer, err := newMetaOffer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	s, answer, err := media.Answer(mmMediaCfg(), offer)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Metasim gets a wrong business key: nothing from the business
	// authenticates, so Meta never sends and declares no media.
	bad := regexp.MustCompile(`inline:[A-Za-z0-9+/=]+`).ReplaceAll(answer, []byte("inline:ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGC"))
	if err := m.setAnswer(bad); err != nil {
		t.Fatal(err)
	}
	m.start()
	s.Start(context.Background(), &mmTone{hz: 440}, nil)
	select {
	case <-m.noMedia():
	case <-time.After(3 * time.Second):
		t.Fatal("noMedia not signalled")
	}
	st := m.stats()
	if st.AuthFailures == 0 || st.PacketsReceived != 0 || st.PacketsSent != 0 || len(m.recorded()) != 0 || m.firstFromBusiness() {
		t.Errorf("stats %+v recorded %d", st, len(m.recorded()))
	}
	m.close()
	m.close() // idempotent
}

// A SIP endpoint's answer to Meta's WebRTC offer may carry no a=mid, no
// BUNDLE group and a=setup at session level only (baresip 1.0's does; RFC
// 3264 needs none of them). Built from waphone's own DTLS answer with
// those taken out: without completeAnswer pion cannot tie the answer's
// a=ssrc to its transceiver and drops every packet ("Incoming unhandled
// RTP ssrc"), so neither side hears anything.
func TestMetasimWebRTCOfferAnsweredWithoutMid(t *testing.T) {
	m, offer, err := newMetaOffer(metaMediaConfig{BindIP: net.IPv4(127, 0, 0, 1), ToneHz: 1000, KeyExchange: "dtls",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	m.start()
	s, answer, err := media.Answer(mmMediaCfg(), offer)
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	defer s.Close()
	var session, rest []string
	setup := ""
	for _, l := range strings.Split(strings.TrimRight(string(answer), "\r\n"), "\r\n") {
		switch {
		case strings.HasPrefix(l, "a=mid:"), strings.HasPrefix(l, "a=group:BUNDLE"):
		case strings.HasPrefix(l, "a=setup:"):
			setup = l
		case strings.HasPrefix(l, "m="), len(rest) > 0:
			rest = append(rest, l)
		default:
			session = append(session, l)
		}
	}
	if setup == "" || len(rest) == 0 || !strings.Contains(string(answer), "a=ssrc:") {
		t.Fatalf("waphone's DTLS answer has no a=setup, m= or a=ssrc:\n%s", answer)
	}
	sipStyle := strings.Join(append(append(session, setup), rest...), "\r\n") + "\r\n"
	if err := m.setAnswer([]byte(sipStyle)); err != nil {
		t.Fatalf("setAnswer:\n%s\n%v", sipStyle, err)
	}
	var out mmSink
	if err := s.Start(context.Background(), &mmTone{hz: 440}, &out); err != nil {
		t.Fatal(err)
	}
	mmCheckCall(t, s, m, &out)
}

func TestCompleteAnswer(t *testing.T) {
	m, _, err := newMetaOfferDTLS(mmMetaCfg(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	const head = "v=0\r\no=- 1 1 IN IP4 198.18.0.1\r\ns=-\r\nc=IN IP4 198.18.0.1\r\nt=0 0\r\n"
	const audio = "m=audio 26404 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
	for _, tc := range []struct {
		name, in     string
		want, absent []string
	}{
		{"baresip", head + "a=setup:passive\r\n" + audio, []string{"a=rtpmap:111 opus/48000/2\r\na=mid:audio\r\na=setup:passive\r\n"}, nil},
		{"complete", head + audio + "a=mid:audio\r\na=setup:active\r\n", []string{"a=mid:audio\r\na=setup:active\r\n"}, []string{"passive"}},
		{"media setup wins", head + "a=setup:passive\r\n" + audio + "a=setup:active\r\n", []string{"a=setup:active\r\na=mid:audio\r\n"}, []string{"a=setup:passive\r\na=mid"}},
		{"two sections untouched", head + audio + audio, nil, []string{"a=mid"}},
	} {
		got, err := m.rtc.completeAnswer([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: lacks %q:\n%s", tc.name, w, got)
			}
		}
		for _, n := range tc.absent {
			if strings.Contains(got, n) {
				t.Errorf("%s: has %q:\n%s", tc.name, n, got)
			}
		}
	}
	if _, err := m.rtc.completeAnswer([]byte("not sdp")); err == nil {
		t.Error("completeAnswer took junk")
	}
}
