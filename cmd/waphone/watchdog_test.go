package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/sdnotify"
)

// TestWatchdogStopsWhenWedged: with a fake NOTIFY_SOCKET, pings flow while
// the health check passes, stop while it hangs (a wedged phone) or fails (a
// stalled media loop), and resume when it recovers.
func TestWatchdogStopsWhenWedged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)

	const every = 20 * time.Millisecond
	var mode atomic.Int32 // 0 healthy, 1 wedged, 2 failing
	unwedge := make(chan struct{})
	check := func() (string, error) {
		switch mode.Load() {
		case 1:
			<-unwedge
		case 2:
			return "", errors.New("media loop stalled")
		}
		return "phone idle", nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pingWhileHealthy(ctx, sdnotify.FromEnv(), every, check, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() { cancel(); close(unwedge); <-done }()

	// count reads notifications for d and counts pings and unhealthy statuses.
	count := func(d time.Duration) (pings, unhealthy int) {
		buf := make([]byte, 256)
		_ = conn.SetReadDeadline(time.Now().Add(d))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			switch msg := string(buf[:n]); {
			case msg == "WATCHDOG=1":
				pings++
			case strings.HasPrefix(msg, "STATUS=unhealthy"):
				unhealthy++
			}
		}
	}
	drain := func() { count(3 * every) } // what was in flight at the switch

	if p, _ := count(20 * every); p < 3 {
		t.Fatalf("healthy: %d pings in 20 intervals", p)
	}
	mode.Store(1)
	drain()
	if p, _ := count(10 * every); p != 0 {
		t.Fatalf("wedged: %d pings", p)
	}
	mode.Store(2)
	unwedge <- struct{}{} // the hung check returns; later checks fail
	drain()
	if p, u := count(10 * every); p != 0 || u < 3 {
		t.Fatalf("failing: %d pings, %d unhealthy statuses", p, u)
	}
	mode.Store(0)
	drain()
	if p, _ := count(20 * every); p < 3 {
		t.Fatalf("recovered: %d pings", p)
	}
}
