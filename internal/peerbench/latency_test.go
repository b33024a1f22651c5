//go:build benchpeers

package peerbench

import (
	"context"
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

// TestMouthToEar measures the latency waphone's media adds one way, from a
// capture callback to the far side's playback callback: two media sessions
// on loopback (SDES-SRTP, Opus), each end a real-time "null device" — a
// goroutine that every 10 ms writes one period into an audio.Ring (the
// headset's capture ring) or takes one out of the playback ring, as
// miniaudio's callbacks do. A click every 400 ms is timed from the
// callback that captured it to the callback that plays it.
func TestMouthToEar(t *testing.T) {
	const (
		period = 10 * time.Millisecond
		per    = audio.SampleRate / 100 // samples per 10 ms period
		clicks = 12
		every  = 40 // periods between clicks
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
	capt := audio.NewRing(audio.SampleRate / 5) // as the headset's: 200 ms
	play := audio.NewRing(audio.SampleRate / 5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Start(ctx, ringSource{capt}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, nil, ringSink{play}); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()

	var mu sync.Mutex
	var sentAt []time.Time
	var lat []time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the capture callback
		defer wg.Done()
		tk := time.NewTicker(period)
		defer tk.Stop()
		buf := make([]int16, per)
		for i := 0; i < (clicks+2)*every; i++ {
			<-tk.C
			clear(buf)
			if i%every == every-1 && i > every { // after a second of settling
				for j := range buf {
					buf[j] = 16000 * int16(1-2*((j/12)%2)) // a 2 kHz square burst
				}
				mu.Lock()
				sentAt = append(sentAt, time.Now())
				mu.Unlock()
			}
			capt.Write(buf)
		}
	}()
	go func() { // the playback callback
		defer wg.Done()
		tk := time.NewTicker(period)
		defer tk.Stop()
		buf := make([]int16, per)
		loud := false
		for i := 0; i < (clicks+3)*every; i++ {
			<-tk.C
			play.Read(buf)
			peak := 0
			for _, v := range buf {
				peak = max(peak, abs(int(v)))
			}
			now := time.Now()
			if peak > 4000 && !loud {
				mu.Lock()
				if n := len(sentAt); n > len(lat) {
					lat = append(lat, now.Sub(sentAt[len(lat)]))
				}
				mu.Unlock()
			}
			loud = peak > 4000
		}
	}()
	wg.Wait()
	if len(lat) < clicks/2 {
		t.Fatalf("heard %d of %d clicks: cannot measure", len(lat), len(sentAt))
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	t.Logf("mouth-to-ear (capture callback -> far playback callback, loopback, 10 ms device periods): median %.1f ms, min %.1f, max %.1f over %d clicks",
		ms(lat[len(lat)/2]), ms(lat[0]), ms(lat[len(lat)-1]), len(lat))
	t.Logf("parts: frame 20 ms (a 20 ms frame is read from the capture ring once per tick: 0-20 ms wait), Opus look-ahead 6.5 ms, " +
		"jitter buffer 2 packets = 40 ms target at low jitter (setTarget), play tick 0-20 ms after arrival, playback ring 10-30 ms (20 ms written per tick, 10 ms read per callback), loopback ~0")
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

type ringSource struct{ r *audio.Ring }

func (s ringSource) ReadFrame(pcm []int16) error { s.r.Read(pcm); return nil }

type ringSink struct{ r *audio.Ring }

func (s ringSink) WriteFrame(pcm []int16) error { s.r.Write(pcm); return nil }
