// Package history keeps the call log: one JSON object per line, appended
// and fsynced, in the state directory. An append-only file survives power
// cuts (at worst the last line is torn, and reading skips it), keeps the
// binary pure Go and static, and is greppable on the board. A database
// would buy queries a desk phone does not need.
package history

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Record is one call.
type Record struct {
	Direction       string        `json:"direction"`
	Remote          string        `json:"remote"` // number or BSUID
	Username        string        `json:"username,omitempty"`
	WACID           string        `json:"wacid,omitempty"`
	UserID          string        `json:"user_id,omitempty"`
	ParentUserID    string        `json:"parent_user_id,omitempty"`
	CTAPayload      string        `json:"cta_payload,omitempty"`
	DeeplinkPayload string        `json:"deeplink_payload,omitempty"`
	Start           time.Time     `json:"start"`
	Answered        time.Time     `json:"answered,omitzero"`
	End             time.Time     `json:"end"`
	Duration        time.Duration `json:"duration_ns"`
	MetaDurationSec int           `json:"meta_duration_s,omitempty"`
	EndedBy         string        `json:"ended_by"`
	Reason          string        `json:"reason,omitempty"`
	Quality         any           `json:"quality,omitempty"`
}

// Store appends to one file.
type Store struct {
	mu        sync.Mutex
	path      string
	dirSynced map[string]bool // per file: its directory entry reached the disk
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open uses dir/calls.jsonl (dir is created 0700).
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return &Store{path: filepath.Join(dir, "calls.jsonl")}, nil
}

// Path is the file's path.
func (s *Store) Path() string { return s.path }

// Append writes one record and fsyncs before returning.
func (s *Store) Append(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return s.appendLine(s.path, b)
}

// appendLine appends one JSON line to path and fsyncs it (and, once, the
// directory).
func (s *Store) appendLine(path string, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	// A torn last line from a power cut must not swallow this record.
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if rf, err := os.Open(path); err == nil {
			if _, err := rf.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
				b = append([]byte{'\n'}, b...)
			}
			rf.Close()
		}
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if err == nil && !s.dirSynced[path] {
		// The file's directory entry must reach the disk too, or a power
		// cut after the first call can lose the whole file.
		err = syncDir(filepath.Dir(path))
		if err == nil {
			if s.dirSynced == nil {
				s.dirSynced = map[string]bool{}
			}
			s.dirSynced[path] = true
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// Read returns the records that started at or after since (zero = all),
// and how many unreadable (torn) lines were skipped.
func (s *Store) Read(since time.Time) ([]Record, int, error) {
	return readFile(s.path, func(r Record) bool { return true }, func(r Record) bool { return !r.Start.Before(since) })
}

// readFile reads a JSON-lines file: lines that do not decode, or that ok
// refuses, count as torn (a power cut mid-write); keep selects. A missing
// file is no lines.
func readFile[T any](path string, ok, keep func(T) bool) ([]T, int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("history: %w", err)
	}
	defer f.Close()
	return readLines(f, ok, keep)
}

func readLines[T any](r io.Reader, ok, keep func(T) bool) ([]T, int, error) {
	var out []T
	bad := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(line, &v); err != nil || !ok(v) {
			bad++
			continue
		}
		if keep(v) {
			out = append(out, v)
		}
	}
	if err := sc.Err(); err != nil {
		return out, bad, fmt.Errorf("history: %w", err)
	}
	return out, bad, nil
}
