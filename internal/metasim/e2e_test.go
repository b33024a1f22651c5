package metasim

// SIP and media together: the business side's audio is waphone's own media
// package, the way the product would use it.

import (
	"context"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/testutil"
	"github.com/waphone/waphone/media"
)

type simTone struct{ hz, phase float64 }

func (s *simTone) ReadFrame(pcm []int16) error {
	step := 2 * math.Pi * s.hz / 48000
	for i := range pcm {
		pcm[i] = int16(0.3 * 32767 * math.Sin(s.phase))
		s.phase = math.Mod(s.phase+step, 2*math.Pi)
	}
	return nil
}

type simSink struct {
	mu  sync.Mutex
	pcm []int16
}

func (s *simSink) WriteFrame(p []int16) error {
	s.mu.Lock()
	s.pcm = append(s.pcm, p...)
	s.mu.Unlock()
	return nil
}

func (s *simSink) tail(n int) []int16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pcm) < n {
		return nil
	}
	return append([]int16(nil), s.pcm[len(s.pcm)-n:]...)
}

// simToneRatio is the share of pcm's power at hz (Goertzel); ~1 for a pure tone.
func simToneRatio(pcm []int16, hz float64) float64 {
	if len(pcm) == 0 {
		return 0
	}
	coeff := 2 * math.Cos(2*math.Pi*hz/48000)
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

const simWindow = 24000 // 0.5 s at 48 kHz: 2 Hz bins

func simMediaCfg() media.Config {
	return media.Config{BindIP: net.IPv4(127, 0, 0, 1), Logger: simDiscardLogger(), NoMediaTimeout: -1}
}

func simCheckAudio(t *testing.T, c *Call, sink *simSink) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() bool { return len(c.Recorded()) >= 2*simWindow }, "business audio at metasim")
	testutil.Eventually(t, 10*time.Second, func() bool { return sink.tail(2*simWindow) != nil }, "metasim tone at the business")
	rec := c.Recorded()
	rec = rec[len(rec)-simWindow:]
	if r := simToneRatio(rec, 440); r < 0.5 {
		t.Errorf("metasim recording: 440 Hz ratio %.3f", r)
	}
	if r := simToneRatio(sink.tail(simWindow), 1000); r < 0.5 {
		t.Errorf("business hears metasim: 1000 Hz ratio %.3f", r)
	}
	st := c.MediaStats()
	if st.PacketsReceived == 0 || st.PacketsSent == 0 || st.AuthFailures != 0 {
		t.Errorf("media stats %+v", st)
	}
	if st.FirstSentAt.Before(st.FirstRecvAt) {
		t.Errorf("metasim sent (%v) before the business's first packet (%v)", st.FirstSentAt, st.FirstRecvAt)
	}
}

func TestUserInitiatedMediaEndToEnd(t *testing.T) {
	sim, b := simSetup(t, Config{NoMediaTimeout: 2 * time.Second})
	var mu sync.Mutex
	var sess *media.Session
	b.setBehavior(func(u *bizBehavior) {
		u.answerSDP = func(offer []byte) []byte {
			s, ans, err := media.Answer(simMediaCfg(), offer)
			if err != nil {
				t.Errorf("media.Answer: %v", err)
				return nil
			}
			mu.Lock()
			sess = s
			mu.Unlock()
			return ans
		}
	})
	ctx := simCtx(t)
	c, err := sim.Call(ctx, b.addr, CallOptions{})
	if err != nil || c.Status() != 200 {
		t.Fatalf("call: %v", err)
	}
	mu.Lock()
	s := sess
	mu.Unlock()
	defer s.Close()
	var sink simSink
	if err := s.Start(context.Background(), &simTone{hz: 440}, &sink); err != nil {
		t.Fatal(err)
	}
	simCheckAudio(t, c, &sink)
	// Media flows, so the no-media watchdog (2 s) must not hang up.
	time.Sleep(2500 * time.Millisecond)
	select {
	case <-c.Done():
		t.Fatalf("call ended (%q) while media flowed", c.EndedBy())
	default:
	}
	if err := c.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBusinessInitiatedMediaEndToEnd(t *testing.T) {
	sim, b := simSetup(t, Config{AnswerDelay: -1})
	s, offer, err := media.Offer(simMediaCfg())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := simCtx(t)
	bc := b.newCall(sim)
	bc.offer = offer
	bc.establish(t, ctx, 0)
	if err := s.SetAnswer(bc.res.Body()); err != nil {
		t.Fatalf("SetAnswer(metasim's 200 SDP): %v", err)
	}
	var sink simSink
	if err := s.Start(context.Background(), &simTone{hz: 440}, &sink); err != nil {
		t.Fatal(err)
	}
	c := <-sim.Incoming()
	simCheckAudio(t, c, &sink)
}
