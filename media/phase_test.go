package media

import (
	"testing"
	"time"
)

// A capture device delivering every 10 ms at some phase: the tick moves to
// just after a delivery and stays there while the device's clock drifts.
func TestPhaseLockFollowsTheDevice(t *testing.T) {
	const period = 10 * time.Millisecond
	for _, c := range []struct {
		name  string
		phase time.Duration // of the device's deliveries against our first tick
		drift float64       // device period error, parts per million
	}{
		{"delivery just before the tick", -300 * time.Microsecond, 0},
		{"delivery just after the tick", 200 * time.Microsecond, 0},
		{"delivery mid-period", 4700 * time.Microsecond, 0},
		{"device 300 ppm slow", 6 * time.Millisecond, 300},
		{"device 300 ppm fast", 6 * time.Millisecond, -300},
	} {
		t.Run(c.name, func(t *testing.T) {
			var l phaseLock
			devPeriod := time.Duration(float64(period) * (1 + c.drift/1e6))
			tick := time.Duration(0)
			var waits []time.Duration
			for i := range 30 * phaseWindow {
				// The newest delivery at or before the tick.
				k := (tick - c.phase) / devPeriod
				if tick-c.phase < 0 {
					k--
				}
				since := tick - (c.phase + k*devPeriod)
				if i >= 20*phaseWindow {
					waits = append(waits, since)
				}
				tick += frameDur + l.observe(since)
			}
			for _, w := range waits {
				if w < phaseGuard/4 || w > phaseGuard+2*phaseStep { // drift moves it a little within a window
					t.Fatalf("read %v after the delivery, want about %v", w, phaseGuard)
				}
			}
		})
	}
}
