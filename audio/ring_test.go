package audio

import "testing"

// simulate runs a device and the media loop against one ring for secs
// seconds in 1 ms steps. The device moves a 10 ms period every 10 ms, plus
// drift samples per second (negative: fewer); the media loop moves a 20 ms
// frame every 20 ms. For 90 ms after the first second, the side that
// fills the ring runs on while the other one stalls. It returns the fill the
// media loop saw in the last second (lowest, highest).
func simulate(capture, live bool, drift, secs int) (lo, hi int) {
	const period = SampleRate / 100
	r := NewRing(SampleRate / 5)
	dev := make([]int16, period+1)
	frame := make([]int16, FrameSamples)
	lo, hi = 1<<30, -1
	owed := 0
	for ms := 0; ms < secs*1000; ms++ {
		stalled := ms >= 1000 && ms < 1090
		if ms%10 == 0 && !(stalled && !capture) { // a playback device stalls
			n := period
			if owed += drift; owed >= 100 {
				n, owed = n+1, owed-100
			} else if owed <= -100 {
				n, owed = n-1, owed+100
			}
			if capture {
				r.Write(dev[:n])
			} else {
				r.Read(dev[:n])
			}
		}
		if ms%20 == 0 && !(stalled && capture) { // the loop reading capture stalls
			fill := r.Buffered()
			if ms >= (secs-1)*1000 {
				lo, hi = min(lo, fill), max(hi, fill)
			}
			switch {
			case capture && live:
				r.ReadLive(frame)
			case capture:
				r.Read(frame)
			case live:
				r.WriteLive(frame)
			default:
				r.Write(frame)
			}
		}
	}
	return lo, hi
}

// A stall or a drifting device clock adds latency for good to a plain ring;
// ReadLive and WriteLive bring it back to about one device period plus the
// margin, without running the ring dry.
func TestRingLiveBoundsLatency(t *testing.T) {
	const period = SampleRate / 100
	for _, c := range []struct {
		name    string
		capture bool
		drift   int
	}{
		{"capture after a 90 ms stall", true, 0},
		{"capture, device 2 % fast", true, 960},
		{"playback after a 90 ms stall", false, 0},
		{"playback, device 2 % slow", false, -960},
	} {
		t.Run(c.name, func(t *testing.T) {
			need := 0
			if c.capture {
				need = FrameSamples // a frame must be there to read
			}
			bound := need + period + boundStep + boundSlack + 100
			if _, hi := simulate(c.capture, false, c.drift, 10); hi <= bound {
				t.Fatalf("a plain ring holds only %d samples: the case shows nothing", hi)
			}
			lo, hi := simulate(c.capture, true, c.drift, 10)
			if hi > bound {
				t.Errorf("fill up to %d samples in the last second, want <= %d", hi, bound)
			}
			if lo < need {
				t.Errorf("fill down to %d samples: the ring ran dry", lo)
			}
		})
	}
}

// A device callback that now and then comes late (here 12 ms, once in 1.3
// s: rarer than a window) makes the ring run dry at the first margin; the
// margin grows until it does not.
func TestRingLiveMarginGrowsAfterUnderruns(t *testing.T) {
	r := NewRing(SampleRate / 5)
	dev := make([]int16, SampleRate/100)
	frame := make([]int16, FrameSamples)
	var last uint64
	quiet := 0
	d := lateDevice{r: r, dev: dev}
	for ms := 0; ms < 30_000; ms++ {
		d.step(ms, true)
		if ms%20 == 5 && ms > 100 {
			r.ReadLive(frame)
		}
		if ms%1000 == 0 {
			if u := r.Underruns(); u == last {
				quiet++
			} else {
				quiet, last = 0, u
			}
		}
	}
	if quiet < 10 {
		t.Fatalf("still running dry in the last seconds: margin %d samples, %d underruns", r.rb.margin, r.Underruns())
	}
	if r.rb.margin > boundMax/2 {
		t.Fatalf("margin grew to %d samples for a 12 ms late callback", r.rb.margin)
	}
}

// A burst of load (late callbacks for ten seconds) raises the margin; two
// quiet minutes later it is back to the first one, and so is the latency.
func TestRingLiveMarginComesBack(t *testing.T) {
	r := NewRing(SampleRate / 5)
	dev := make([]int16, SampleRate/100)
	frame := make([]int16, FrameSamples)
	peak := 0
	d := lateDevice{r: r, dev: dev}
	for ms := 0; ms < 130_000; ms++ {
		d.step(ms, ms < 10000)
		if ms%20 == 5 && ms > 100 {
			r.ReadLive(frame)
		}
		if ms == 11000 {
			peak = r.rb.margin
		}
	}
	if peak <= boundStep {
		t.Fatalf("margin %d after the burst: the burst shows nothing", peak)
	}
	if r.rb.margin != boundStep {
		t.Fatalf("margin %d samples two quiet minutes after the burst (peak %d), want %d", r.rb.margin, peak, boundStep)
	}
}

// lateDevice is a capture device delivering a period every 10 ms, but,
// while late is true, its callback comes 12 ms late once in 1.3 s (rarer
// than a bound's window, and crossing a 20 ms read).
type lateDevice struct {
	r                *Ring
	dev              []int16
	writes, deferred int
}

func (d *lateDevice) step(ms int, late bool) {
	if ms%10 == 0 {
		if d.writes++; late && d.writes%130 == 1 && d.writes > 1 {
			d.deferred = ms + 12
		} else {
			d.r.Write(d.dev)
		}
	}
	if d.deferred > 0 && ms == d.deferred {
		d.r.Write(d.dev)
		d.deferred = 0
	}
}
