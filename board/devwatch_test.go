package board

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A node appearing wakes the watcher at once (not at the next poll), also
// in a directory that did not exist when the watch began (no /dev/input
// before the first input device).
func TestDevChangesWakesOnANewNode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dev := filepath.Join(t.TempDir(), "input")
	changed, err := devChanges(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(rescanEvery / 2):
			t.Fatalf("no wake-up after %s", what)
		}
	}
	drain := func() {
		for {
			select {
			case <-changed:
			case <-time.After(50 * time.Millisecond):
				return
			}
		}
	}
	if err := os.Mkdir(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	wait("the directory appeared")
	drain()
	if err := os.WriteFile(filepath.Join(dev, "event3"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wait("event3 appeared")
	drain()
	if err := os.Chmod(filepath.Join(dev, "event3"), 0o660); err != nil { // udev's group and mode
		t.Fatal(err)
	}
	wait("event3's mode changed")
}
