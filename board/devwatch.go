package board

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// rescanEvery is how often a watcher looks for its device without being
// told: a safety net for changes inotify does not report (a node that was
// there all along becoming readable through an ACL, say).
const rescanEvery = 30 * time.Second

// devChanges wakes its caller when a node appears in, leaves or changes
// mode in dir (the kernel's devtmpfs creates /dev/hidrawN and
// /dev/input/eventN on plug; udev then sets their group and mode), and
// every rescanEvery in any case. Without inotify it falls back to polling
// every 2 s. It ends with ctx.
func devChanges(ctx context.Context, dir string) (<-chan struct{}, error) {
	out := make(chan struct{}, 1)
	kick := func() {
		select {
		case out <- struct{}{}:
		default: // one pending wake-up covers a burst
		}
	}
	const mask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_ATTRIB | unix.IN_MOVED_TO
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	watching := false
	// watchDir adds dir's watch; until dir exists (no input device yet: no
	// /dev/input) its parent's watch says when it appears.
	watchDir := func() error {
		if watching {
			return nil
		}
		_, werr := unix.InotifyAddWatch(fd, dir, mask)
		if werr == nil {
			watching = true
			kick() // it may have filled before we watched
			return nil
		}
		if errors.Is(werr, unix.ENOENT) {
			_, werr = unix.InotifyAddWatch(fd, filepath.Dir(dir), unix.IN_CREATE|unix.IN_MOVED_TO)
		}
		return werr
	}
	if err == nil {
		if werr := watchDir(); werr != nil {
			_ = unix.Close(fd)
			err = werr
		}
	}
	if err != nil {
		go poll(ctx, 2*time.Second, kick)
		return out, fmt.Errorf("watching %s for devices: %w (polling every 2 s instead)", dir, err)
	}
	f := os.NewFile(uintptr(fd), "inotify:"+dir) // non-blocking: Go's poller reads it, Close wakes it
	go func() {
		<-ctx.Done()
		_ = f.Close()
	}()
	go func() {
		var buf [4096]byte
		for {
			if _, err := f.Read(buf[:]); err != nil {
				if !errors.Is(err, os.ErrClosed) && ctx.Err() == nil {
					go poll(ctx, 2*time.Second, kick) // the watch broke: poll rather than go blind
				}
				return
			}
			_ = watchDir() // this goroutine only, from here on
			kick()
		}
	}()
	go poll(ctx, rescanEvery, kick)
	return out, nil
}

func poll(ctx context.Context, every time.Duration, kick func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			kick()
		}
	}
}
