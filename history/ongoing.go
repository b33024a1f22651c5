package history

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/waphone/waphone/internal/atomicfile"
)

// EndedInterrupted is what a call that was up when waphone died (a power
// cut, a crash, SIGKILL) is recorded as at the next start.
const EndedInterrupted = "interrupted"

// ongoingFile holds the call in progress; Touch keeps its mtime fresh, so
// that after a power cut the call's end is known to within touchEvery.
const ongoingFile = "ongoing.json"

func (s *Store) ongoingPath() string { return filepath.Join(filepath.Dir(s.path), ongoingFile) }

// Begin records that a call is up (written and fsynced before it returns).
func (s *Store) Begin(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := atomicfile.Write(s.ongoingPath(), b, 0o600); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// Touch marks the call in progress as still up now; without one it does nothing.
func (s *Store) Touch(now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := os.Chtimes(s.ongoingPath(), now, now)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// Finish appends the ended call and forgets the one in progress.
func (s *Store) Finish(r Record) error {
	if err := s.Append(r); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(s.ongoingPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// Recover, at start, turns a call left in progress by a process that died
// into a record ended "interrupted" (its end: the last Touch) and returns
// it; nil when there was none.
func (s *Store) Recover() (*Record, error) {
	p := s.ongoingPath()
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		// Torn by the power cut it should record: say so rather than lose it.
		r = Record{Direction: "unknown", Reason: "the record of the call in progress was torn"}
	}
	if fi, err := os.Stat(p); err == nil {
		r.End = fi.ModTime()
	}
	if !r.Answered.IsZero() && r.End.After(r.Answered) {
		r.Duration = r.End.Sub(r.Answered).Round(time.Second)
	}
	r.EndedBy = EndedInterrupted
	if r.Reason == "" {
		r.Reason = "waphone stopped during the call (power cut, crash or kill); the end is when it was last seen up"
	}
	if err := s.Finish(r); err != nil {
		return nil, err
	}
	return &r, nil
}
