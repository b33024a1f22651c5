package metasim

import (
	"testing"
	"time"
)

// A sender that stalls for 100 ms gets its missed frames at once, and
// over the whole run sends one frame per 20 ms (a Ticker would send 5
// fewer per stall).
func TestFramePacerCatchesUp(t *testing.T) {
	p := newFramePacer()
	defer p.stop()
	quit := make(chan struct{})
	start := time.Now()
	frames := 0
	for time.Since(start) < 400*time.Millisecond {
		if frames == 5 {
			time.Sleep(100 * time.Millisecond) // a stall
		}
		if !p.wait(quit) {
			t.Fatal("wait returned false with quit open")
		}
		frames++
	}
	// Frames due by now: elapsed/20 ms. Timer slop may cost one or two.
	if due := int(time.Since(start) / (20 * time.Millisecond)); frames < due-2 {
		t.Errorf("%d frames in %v, want about %d", frames, time.Since(start), due)
	}
	close(quit)
	if p.wait(quit) {
		t.Error("wait returned true after quit")
	}
}

// Far behind (past maxCatchUp), the pacer restarts its clock rather than
// bursting every missed frame.
func TestFramePacerResyncs(t *testing.T) {
	p := newFramePacer()
	defer p.stop()
	quit := make(chan struct{})
	time.Sleep(maxCatchUp + 100*time.Millisecond)
	t0 := time.Now()
	burst := 0
	for time.Since(t0) < 5*time.Millisecond {
		p.wait(quit)
		burst++
	}
	if burst > 3 {
		t.Errorf("%d frames in a burst after a long stall, want a fresh clock", burst)
	}
}
