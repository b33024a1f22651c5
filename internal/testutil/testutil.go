// Package testutil has the small helpers tests across the module share, so
// each does not grow its own copy.
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// pollEvery is short against the timeouts tests use and long enough not to
// busy a shared CI machine.
const pollEvery = 10 * time.Millisecond

// Poll calls cond every 10 ms until it returns true or timeout passes, and
// reports whether it did. cond is always called at least once, and once
// more after the deadline, so a slow machine does not fail a test whose
// condition became true during the last sleep.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return cond()
		}
		time.Sleep(pollEvery)
	}
	return true
}

// Eventually waits like Poll and fails the test, naming what it waited
// for (format and args, as fmt.Sprintf), when cond never holds.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("after %v still waiting for %s", timeout, fmt.Sprintf(format, args...))
	}
}

// Missing skips a test whose real third-party part (a browser, a broker,
// Kamailio) is not installed here; under CI (CI set, where .ci/run has
// installed them all) it fails instead, so a lost install step cannot turn
// a test into a silent skip.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI must install it: scripts/deps.sh)", msg)
	}
	t.Skip(msg)
}

// Buffer is a bytes.Buffer safe for one writer (a subprocess's output, a
// logger) and a reader (the test) at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
