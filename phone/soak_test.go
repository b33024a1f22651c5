package phone_test

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/phone"
)

// TestSoakCalls: one phone takes and places DTLS calls back to back, as a
// shop's phone does for years. After a warm-up call, every goroutine a call
// started must be gone once it ended, and the live heap must not grow with
// the number of calls. `make soak` sets WAPHONE_SOAK_CALLS to run hundreds.
func TestSoakCalls(t *testing.T) {
	n := 6
	if v := os.Getenv("WAPHONE_SOAK_CALLS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 2 {
			t.Fatalf("WAPHONE_SOAK_CALLS=%q: want a number ≥ 2", v)
		}
	}
	r := newRig(t, rigOpts{dtls: true, quiet: true})
	call := func(i int) {
		t.Helper()
		ctx := context.Background()
		var c *metasim.Call
		if i%2 == 0 { // a WhatsApp user calls
			var err error
			if c, err = r.sim.Call(ctx, r.target, metasim.CallOptions{From: user}); err != nil || c.Status() != 200 {
				t.Fatalf("call %d: %v", i, err)
			}
		} else { // the shop calls back
			if err := r.phone.Call(ctx, user); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			select {
			case c = <-r.sim.Incoming():
			case <-time.After(5 * time.Second):
				t.Fatalf("call %d: metasim saw no call", i)
			}
		}
		r.waitState(t, phone.Talking)
		deadline := time.Now().Add(5 * time.Second)
		for c.MediaStats().FirstRecvAt.IsZero() {
			if time.Now().After(deadline) {
				t.Fatalf("call %d: no audio reached Meta", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		if i%2 == 0 {
			_ = c.Hangup(ctx)
		} else {
			_ = r.phone.Hangup()
		}
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d: metasim's side did not end", i)
		}
		r.waitState(t, phone.Idle)
		r.mu.Lock()
		r.events = nil // the rig's own record, not the phone's
		r.mu.Unlock()
	}
	// settle waits for call goroutines to wind down and measures.
	settle := func(limit int) (goroutines int, heap uint64) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			runtime.GC()
			goroutines = runtime.NumGoroutine()
			if goroutines <= limit || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return goroutines, ms.HeapAlloc
	}
	call(0)
	call(1)
	g0, h0 := settle(0)
	for i := 2; i < n+2; i++ {
		call(i)
	}
	g1, h1 := settle(g0)
	t.Logf("%d calls: goroutines %d → %d, live heap %d KiB → %d KiB", n, g0, g1, h0>>10, h1>>10)
	if g1 > g0 {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines grew from %d to %d over %d calls:\n%s", g0, g1, n, buf[:runtime.Stack(buf, true)])
	}
	// sipgo keeps each ended transaction about 32 s (RFC 3261's timers),
	// some 8 KiB per call: wait for them before calling growth a leak.
	const slack = 512 << 10
	deadline := time.Now().Add(45 * time.Second)
	for h1 > h0+slack && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		_, h1 = settle(g0)
	}
	if h1 > h0+slack {
		t.Fatalf("live heap grew from %d KiB to %d KiB over %d calls and stays there", h0>>10, h1>>10, n)
	}
	t.Logf("live heap settles at %d KiB", h1>>10)
}
