package media

import (
	"context"
	"time"
)

// pacer sleeps the send loop until its next tick. Linux's is a timerfd in
// Go's poller (pacer_linux.go): the tick then costs one epoll wake-up, where
// a Go timer's millisecond-rounded epoll waits cost two or three, and its
// Reset often a netpoll break (a write) on top. Elsewhere, a Go timer.
type pacer interface {
	// wait returns at next, or with ctx's error once ctx ends.
	wait(ctx context.Context, next time.Time) error
	close()
}

// timerPacer is the portable pacer.
type timerPacer struct{ t *time.Timer }

func newTimerPacer() *timerPacer { return &timerPacer{t: time.NewTimer(time.Hour)} }

func (p *timerPacer) wait(ctx context.Context, next time.Time) error {
	p.t.Reset(time.Until(next))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-p.t.C:
		return nil
	}
}

func (p *timerPacer) close() { p.t.Stop() }
