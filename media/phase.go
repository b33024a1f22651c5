package media

import "time"

// TimedSource is a Source that knows when its device last delivered audio
// (audio's headset does). The send loop then reads each frame just after a
// delivery instead of up to a device period later, for the whole call.
type TimedSource interface {
	Source
	CapturedAt() time.Time
}

// phaseLock moves the 20 ms tick to just after the capture device's
// callback. Only our send phase moves: the far side sees one step of
// jitter, and our playout follows arrivals, not the tick (see playout), so
// two ends never chase each other.
//
// Each window it takes the shortest time between a delivery and our read:
// more than the guard and the tick comes earlier by the difference (within
// the same device period, so the read finds the same audio and nothing
// runs dry); less than half the guard and it goes later. The first move goes
// the whole way; later ones at most phaseStep, which follows a device clock
// off by far more than a crystal's 100 ppm (2 µs a frame).
type phaseLock struct {
	low    time.Duration // shortest delivery-to-read time in this window
	n      int
	locked bool
}

const (
	phaseWindow = 50 // ticks per decision: 1 s
	phaseGuard  = time.Millisecond
	phaseStep   = time.Millisecond
)

// observe takes one tick's delivery-to-read time and returns how far to
// move the next tick (negative: earlier).
func (l *phaseLock) observe(sinceDelivery time.Duration) time.Duration {
	if l.n == 0 {
		l.low = sinceDelivery
	}
	l.low = min(l.low, sinceDelivery)
	if l.n++; l.n < phaseWindow {
		return 0
	}
	l.n = 0
	var move time.Duration
	switch {
	case l.low > frameDur:
		return 0 // the device has stopped delivering: nothing to lock to
	case l.low > phaseGuard+phaseStep/2:
		move = -(l.low - phaseGuard)
	case l.low < phaseGuard/2:
		move = phaseGuard - l.low
	}
	if !l.locked {
		l.locked = true
		return move
	}
	return max(-phaseStep, min(move, phaseStep))
}
