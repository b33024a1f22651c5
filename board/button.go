package board

import "time"

// LongPressAfter is how long a press must last to count as long.
const LongPressAfter = time.Second

// minPress filters contact bounce the kernel's debounce let through.
const minPress = 30 * time.Millisecond

// Button turns edges into short and long presses. Edge is called by the
// GPIO event handler (or a test) with the line's timestamp.
type Button struct {
	down    bool
	pressAt time.Duration
}

// Edge takes one edge (pressed or released at t) and returns the press it
// completes, if any.
func (b *Button) Edge(pressed bool, t time.Duration) (Kind, bool) {
	if pressed {
		if !b.down {
			b.down, b.pressAt = true, t
		}
		return "", false
	}
	if !b.down {
		return "", false // a release without a press: bounce or start-up
	}
	b.down = false
	switch held := t - b.pressAt; {
	case held < minPress:
		return "", false
	case held >= LongPressAfter:
		return LongPress, true
	}
	return ShortPress, true
}
