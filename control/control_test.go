package control

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/waphone/waphone/phone"
)

type fakePhone struct{}

func (fakePhone) Answer() error                      { return nil }
func (fakePhone) Hangup() error                      { return nil }
func (fakePhone) ToggleMute() (bool, error)          { return true, nil }
func (fakePhone) SendDTMF(string) error              { return nil }
func (fakePhone) Call(context.Context, string) error { return nil }
func (fakePhone) StatusJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"state": "idle"})
}
func (fakePhone) Subscribe(int) (<-chan phone.Event, func()) {
	ch := make(chan phone.Event)
	return ch, func() {}
}

// The socket is group read/write (the waphone admin group drives the
// phone without root), never world; its new directory is 0750.
func TestSocketModeAndStatus(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	s, err := Listen(path, fakePhone{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket: %v %v", fi.Mode(), err)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o750 {
		t.Fatalf("socket directory: %v %v", di.Mode(), err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	rep, err := Do(rctx, path, Request{Cmd: "status"})
	if err != nil || !rep.OK || string(rep.Status) != `{"state":"idle"}` {
		t.Fatalf("status: %+v %v", rep, err)
	}
	rep, err = Do(rctx, path, Request{Cmd: "mute"})
	if err != nil || !rep.OK || rep.Muted == nil || !*rep.Muted {
		t.Fatalf("mute: %+v %v", rep, err)
	}
	cancel()
	<-done
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("socket left behind")
	}
}
