package media

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// fdPacer is a one-shot timerfd read through Go's poller; a context that
// ends sets a read deadline in the past, which wakes the read (no goroutine
// per session for that).
type fdPacer struct {
	f    *os.File
	fd   int
	stop func() bool
	buf  [8]byte
}

func newPacer(ctx context.Context) pacer {
	p, err := newFDPacer(ctx)
	if err != nil {
		return newTimerPacer() // a kernel without timerfd (none Go supports), or out of fds
	}
	return p
}

func newFDPacer(ctx context.Context) (*fdPacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("media: timerfd: %w", err)
	}
	p := &fdPacer{f: os.NewFile(uintptr(fd), "media-tick"), fd: fd}
	p.stop = context.AfterFunc(ctx, func() { _ = p.f.SetReadDeadline(time.Unix(1, 0)) })
	return p, nil
}

func (p *fdPacer) wait(ctx context.Context, next time.Time) error {
	d := time.Until(next)
	if d <= 0 {
		return ctx.Err()
	}
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(d.Nanoseconds())}
	if err := unix.TimerfdSettime(p.fd, 0, &its, nil); err != nil {
		return fmt.Errorf("media: timerfd_settime: %w", err)
	}
	if _, err := p.f.Read(p.buf[:]); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("media: timerfd read: %w", err)
	}
	return nil
}

func (p *fdPacer) close() {
	p.stop()
	_ = p.f.Close()
}
