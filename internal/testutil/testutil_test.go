package testutil

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	var n atomic.Int32
	if !Poll(5*time.Second, func() bool { return n.Add(1) == 3 }) {
		t.Fatal("a condition true on the third call was not seen")
	}
	if Poll(30*time.Millisecond, func() bool { return false }) {
		t.Fatal("a false condition held")
	}
}

func TestEventuallyFails(t *testing.T) {
	ft := &fakeTB{TB: t}
	Eventually(ft, 20*time.Millisecond, func() bool { return false }, "the %s", "thing")
	if ft.msg != "after 20ms still waiting for the thing" {
		t.Fatalf("message %q", ft.msg)
	}
}

// fakeTB records Fatalf instead of stopping the test.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }
