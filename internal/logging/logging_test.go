package logging

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestJournalPrefixesWhenStreamMatches(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	log := slog.New(NewHandler(f, slog.LevelDebug)).With("call", "x")
	log.Error("boom", "n", 1)
	log.Warn("careful")
	log.Info("hello")
	log.Debug("detail")
	b, _ := os.ReadFile(f.Name())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{`<3>msg=boom call=x n=1`, `<4>msg=careful call=x`, `<6>msg=hello call=x`, `<7>msg=detail call=x`}
	if len(lines) != len(want) {
		t.Fatalf("got %q", lines)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Fatalf("line %d: %q, want %q", i, lines[i], want[i])
		}
	}
}

func TestPlainWhenNotJournal(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "1:2")
	var buf bytes.Buffer
	slog.New(NewHandler(&buf, slog.LevelInfo)).Info("hello")
	if s := buf.String(); strings.HasPrefix(s, "<") || !strings.Contains(s, "time=") {
		t.Fatalf("%q", s)
	}
}
