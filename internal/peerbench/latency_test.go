//go:build benchpeers

package peerbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/media"
)

// TestMouthToEar measures the latency waphone's media adds one way, mouth
// to ear: two media sessions on loopback (SDES-SRTP, Opus), each end a
// real-time "null device" — a goroutine that every 10 ms writes one period
// into an audio.Ring (the headset's capture ring) or takes one out of the
// playback ring, as miniaudio's callbacks do. A 2 ms click every 410 ms
// starts at a different sample of its period each time (so clicks fall
// everywhere in a 20 ms frame); it is timed from when its first sample
// was "spoken" (a capture callback at T delivers the audio of T-10 ms..T)
// to when it is heard (a playback callback at T plays its period from T on).
func TestMouthToEar(t *testing.T) {
	const (
		period   = 10 * time.Millisecond
		per      = audio.SampleRate / 100 // samples per 10 ms period
		clicks   = 12
		every    = 41 // periods between clicks: not a whole number of frames
		clickLen = 96 // 2 ms
	)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	lo := net.IPv4(127, 0, 0, 1)
	a, offer, err := media.Offer(media.Config{KeyExchange: "sdes", BindIP: lo, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	b, answer, err := media.Answer(media.Config{BindIP: lo, Logger: quiet}, offer)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(answer); err != nil {
		t.Fatal(err)
	}
	var cfill, pfill fillStats
	capt := audio.NewRing(audio.SampleRate / 5) // as the headset's: 200 ms
	play := audio.NewRing(audio.SampleRate / 5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Start(ctx, ringSource{capt, &cfill}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, nil, ringSink{play, &pfill}); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()

	var mu sync.Mutex
	var sentAt []time.Time
	var lat []time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	start := time.Now()
	go func() { // the capture callback
		defer wg.Done()
		buf := make([]int16, per)
		for i := 0; i < (clicks+2)*every; i++ {
			deviceWait(start, i, period)
			clear(buf)
			if i%every == every-1 && i > every { // after a second of settling
				at := (len(sentAt) * 173) % (per - clickLen) // 173: spreads the starts over the period
				for j := range clickLen {
					buf[at+j] = 16000 * int16(1-2*((j/12)%2)) // a 2 kHz square burst
				}
				mu.Lock()
				sentAt = append(sentAt, time.Now().Add(-samples(per-at)))
				mu.Unlock()
			}
			capt.Write(buf)
		}
	}()
	go func() { // the playback callback
		defer wg.Done()
		buf := make([]int16, per)
		loud := false
		for i := 0; i < (clicks+3)*every; i++ {
			deviceWait(start, i, period)
			play.Read(buf)
			now, first := time.Now(), -1
			for j, v := range buf {
				if abs(int(v)) > 4000 {
					first = j
					break
				}
			}
			if first >= 0 && !loud {
				now = now.Add(samples(first))
				mu.Lock()
				// The newest click sent: clicks are 400 ms apart, far more
				// than any latency here, and a missed one shifts nothing.
				if n := len(sentAt); n > 0 {
					lat = append(lat, now.Sub(sentAt[n-1]))
				}
				mu.Unlock()
			}
			loud = first >= 0
		}
	}()
	wg.Wait()
	st := b.Stats()
	t.Logf("receiver: jitter %.1f ms, jitter buffer %d ms, %d frames concealed; capture ring beyond the frame read: %v, %d underruns; playback ring ahead of each frame: %v, %d underruns",
		st.JitterMs, st.BufferMs, st.Concealed, &cfill, capt.Underruns(), &pfill, play.Underruns())
	if len(lat) < clicks/2 {
		t.Fatalf("heard %d of %d clicks: cannot measure", len(lat), len(sentAt))
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	t.Logf("mouth-to-ear (a sample spoken -> the same sample played, loopback, 10 ms device periods): median %.1f ms, min %.1f, max %.1f over %d clicks",
		ms(lat[len(lat)/2]), ms(lat[0]), ms(lat[len(lat)-1]), len(lat))
	t.Logf("parts: the frame and Opus look-ahead 26.5 ms for every sample (20 ms frame + 6.5 ms, wherever the sample falls in it); " +
		"the capture ring's fill beyond the frame and the playback ring's fill ahead of it (above, kept to a margin by ReadLive/WriteLive); " +
		"the read ~1 ms after a capture callback (phase lock); SRTP and loopback < 1 ms; jitter buffer: on arrival at low jitter (target above); " +
		"the far device's callback phase against arrivals, 0-10 ms")
}

// deviceWait waits for a null device's period i: a sound card's clock
// loses no periods, so a callback the scheduler delays is late, not
// skipped (a time.Ticker would drop it and drift the rings).
func deviceWait(start time.Time, i int, period time.Duration) {
	time.Sleep(time.Until(start.Add(time.Duration(i+1) * period)))
}

// samples is how long n samples play.
func samples(n int) time.Duration { return time.Duration(n) * time.Second / audio.SampleRate }

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// ringSource and ringSink are the headset's two ends (audio.Headset reads
// and writes its rings the same way), and note each ring's fill when the
// media loop comes: the audio it holds then is latency.
type ringSource struct {
	r    *audio.Ring
	fill *fillStats
}

func (s ringSource) ReadFrame(pcm []int16) error {
	s.fill.add(s.r.Buffered() - len(pcm))
	s.r.ReadLive(pcm)
	return nil
}
func (s ringSource) CapturedAt() time.Time { return s.r.LastWrite() }

type ringSink struct {
	r    *audio.Ring
	fill *fillStats
}

func (s ringSink) WriteFrame(pcm []int16) error {
	s.fill.add(s.r.Buffered())
	s.r.WriteLive(pcm)
	return nil
}

// fillStats averages a ring's fill in ms (the media loop's goroutine, or
// the receiver's under the session's lock: one at a time).
type fillStats struct {
	mu       sync.Mutex
	sum, n   int
	min, max int
}

func (f *fillStats) add(samples int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 || samples < f.min {
		f.min = samples
	}
	f.max = max(f.max, samples)
	f.sum += samples
	f.n++
}

func (f *fillStats) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ms := func(n int) float64 { return float64(n) * 1000 / audio.SampleRate }
	if f.n == 0 {
		return "none"
	}
	return fmt.Sprintf("mean %.1f ms (%.1f-%.1f)", ms(f.sum)/float64(f.n), ms(f.min), ms(f.max))
}
