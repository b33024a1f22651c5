package media

import (
	"context"
	"testing"
	"time"
)

// TestPacer: a wait never returns before its deadline (the RTP clock and
// the frames depend on it), and an ended context wakes a long one.
func TestPacer(t *testing.T) {
	for name, mk := range map[string]func(context.Context) pacer{
		"platform": newPacer,
		"timer":    func(context.Context) pacer { return newTimerPacer() },
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			p := mk(ctx)
			defer p.close()
			next := time.Now()
			for i := 0; i < 10; i++ {
				next = next.Add(frameDur)
				if err := p.wait(ctx, next); err != nil {
					t.Fatal(err)
				}
				if early := time.Until(next); early > 0 {
					t.Fatalf("tick %d returned %v early", i, early)
				}
			}
			if err := p.wait(ctx, time.Now().Add(-time.Second)); err != nil {
				t.Fatalf("a past deadline: %v", err)
			}
			done := make(chan error, 1)
			go func() { done <- p.wait(ctx, time.Now().Add(time.Hour)) }()
			time.Sleep(20 * time.Millisecond)
			cancel()
			select {
			case err := <-done:
				if err != context.Canceled {
					t.Fatalf("after cancel: %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("an ended context did not wake the wait")
			}
		})
	}
}
