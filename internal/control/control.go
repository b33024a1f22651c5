// Package control is the daemon's local control socket: `waphone answer`,
// `hangup`, `mute`, `dtmf`, `call` and `status` talk to a running
// `waphone run` through it.
// One JSON request per connection, one JSON reply. The socket is 0660 with
// the daemon's group: under systemd (Group=waphone) members of the waphone
// group may drive the phone without root; nobody else may.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Phone is what the socket drives.
type Phone interface {
	Answer() error
	Hangup() error
	ToggleMute() (bool, error)
	SendDTMF(digits string) error
	Call(ctx context.Context, number string) error
	StatusJSON() ([]byte, error)
}

// Request is one command.
type Request struct {
	Cmd    string `json:"cmd"` // answer | hangup | mute | dtmf | call | status
	Number string `json:"number,omitempty"`
	Digits string `json:"digits,omitempty"`
}

// Reply is the answer to one command.
type Reply struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Status json.RawMessage `json:"status,omitempty"`
	Muted  *bool           `json:"muted,omitempty"`
}

// Server serves the control socket.
type Server struct {
	path string
	ln   net.Listener
	p    Phone
	log  *slog.Logger
	wg   sync.WaitGroup
}

// Listen creates the socket with mode 0660 and the process's group (its
// directory 0750 if we make it), so that the admin group can reach it.
func Listen(path string, p Phone, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	// A socket left by a crash would make Listen fail; only remove a socket.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("control socket %s: another waphone is running", path)
		}
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Chmod after bind: the umask (systemd's UMask=0077) shapes the bind.
	if err := os.Chmod(path, 0o660); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("control socket chmod: %w", err)
	}
	return &Server{path: path, ln: ln, p: p, log: log}, nil
}

// Serve handles connections until ctx ends.
func (s *Server) Serve(ctx context.Context) {
	go func() {
		<-ctx.Done()
		_ = s.ln.Close()
	}()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, c)
		}()
	}
	s.wg.Wait()
	_ = os.Remove(s.path)
}

func (s *Server) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	var req Request
	if err := json.NewDecoder(bufio.NewReader(&limitedReader{c, 4096})).Decode(&req); err != nil {
		writeReply(c, Reply{Error: "bad request: " + err.Error()})
		return
	}
	var rep Reply
	var err error
	switch req.Cmd {
	case "answer":
		err = s.p.Answer()
	case "hangup":
		err = s.p.Hangup()
	case "dtmf":
		err = s.p.SendDTMF(req.Digits)
	case "mute":
		var muted bool
		muted, err = s.p.ToggleMute()
		rep.Muted = &muted
	case "call":
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		err = s.p.Call(cctx, req.Number)
		cancel()
	case "status":
		var b []byte
		b, err = s.p.StatusJSON()
		rep.Status = b
	default:
		err = fmt.Errorf("unknown command %q", req.Cmd)
	}
	rep.OK = err == nil
	if err != nil {
		rep.Error = err.Error()
	}
	writeReply(c, rep)
}

func writeReply(c net.Conn, r Reply) {
	_ = json.NewEncoder(c).Encode(r)
}

type limitedReader struct {
	c interface{ Read([]byte) (int, error) }
	n int
}

func (l *limitedReader) Read(b []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("request too large")
	}
	if len(b) > l.n {
		b = b[:l.n]
	}
	n, err := l.c.Read(b)
	l.n -= n
	return n, err
}

// Do sends one command to a running daemon.
func Do(ctx context.Context, path string, req Request) (Reply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Reply{}, fmt.Errorf("is waphone running? control socket %s: %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Reply{}, fmt.Errorf("control socket: %w", err)
	}
	var rep Reply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return Reply{}, fmt.Errorf("control socket reply: %w", err)
	}
	return rep, nil
}
