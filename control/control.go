// Package control is the daemon's local control socket and its protocol:
// `waphone answer`, `hangup`, `mute`, `dtmf`, `call`, `status` and
// `events` talk to a running `waphone run` through it, and so may any
// other program (docs/control.md describes the wire format).
//
// One JSON request per connection. Most commands get one JSON reply; `call`
// first streams the call's progress as events, and `events` streams every
// event until the client hangs up. The socket is 0660 with the daemon's
// group: under systemd (Group=waphone) members of the waphone group may
// drive the phone without root; nobody else may.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/waphone/waphone/phone"
)

// Phone is what the socket drives.
type Phone interface {
	Answer() error
	Hangup() error
	ToggleMute() (bool, error)
	SendDTMF(digits string) error
	Call(ctx context.Context, number string) error
	StatusJSON() ([]byte, error)
	Subscribe(n int) (<-chan phone.Event, func())
}

// Request is one command.
type Request struct {
	Cmd    string `json:"cmd"` // answer | hangup | mute | dtmf | call | status | events
	Number string `json:"number,omitempty"`
	Digits string `json:"digits,omitempty"`
}

// Reply is the answer to one command.
type Reply struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Status json.RawMessage `json:"status,omitempty"`
	Muted  *bool           `json:"muted,omitempty"`
	// Event is a streamed event (`events`, and `call`'s progress); the
	// final reply of a command has none.
	Event *phone.Event `json:"event,omitempty"`
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
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req Request
	br := bufio.NewReader(&limitedReader{c, 4096})
	if err := json.NewDecoder(br).Decode(&req); err != nil {
		writeReply(c, Reply{Error: "bad request: " + err.Error()})
		return
	}
	// A client that hangs up (Ctrl-C) ends what it asked for: a call
	// still ringing is cancelled, an event stream stops.
	_ = c.SetReadDeadline(time.Time{})
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, c)
		cancel()
	}()
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
		err = s.call(cctx, c, req.Number)
	case "status":
		var b []byte
		b, err = s.p.StatusJSON()
		rep.Status = b
	case "events":
		s.stream(cctx, c, func(phone.Event) bool { return true })
		return
	default:
		err = fmt.Errorf("unknown command %q", req.Cmd)
	}
	rep.OK = err == nil
	if err != nil {
		rep.Error = err.Error()
	}
	writeReply(c, rep)
}

// callTimeout bounds a call command: ringing, then the answer.
const callTimeout = 90 * time.Second

// call places a call and streams its progress (dialing, ringback,
// answered or ended) until it is answered or failed.
func (s *Server) call(ctx context.Context, c net.Conn, number string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	events, stop := s.p.Subscribe(16)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- s.p.Call(ctx, number) }()
	for {
		select {
		case err := <-done:
			return err
		case ev, ok := <-events:
			if !ok {
				return <-done
			}
			switch ev.Kind {
			case phone.EvDialing, phone.EvRingback, phone.EvAnswered, phone.EvEnded:
				if writeReply(c, Reply{OK: true, Event: &ev}) != nil {
					cancel() // the client is gone: hang up
				}
			}
		}
	}
}

// stream writes every event that keep accepts until ctx ends or the
// client stops reading.
func (s *Server) stream(ctx context.Context, c net.Conn, keep func(phone.Event) bool) {
	events, stop := s.p.Subscribe(64)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if keep(ev) && writeReply(c, Reply{OK: true, Event: &ev}) != nil {
				return
			}
		}
	}
}

// writeReply writes one JSON line; a client that does not read for 10 s
// is given up on.
func writeReply(c net.Conn, r Reply) error {
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return json.NewEncoder(c).Encode(r)
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

// Do sends one command to a running daemon and returns its reply.
func Do(ctx context.Context, path string, req Request) (Reply, error) {
	return Stream(ctx, path, req, nil)
}

// Stream sends one command and hands every streamed event to onEvent
// (nil: ignored) before it returns the final reply. For `events`, which
// has no final reply, it returns when ctx ends or the daemon goes away.
// Ending ctx hangs up on the daemon, which then ends what was asked
// (a call still ringing is cancelled).
func Stream(ctx context.Context, path string, req Request, onEvent func(phone.Event)) (Reply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Reply{}, fmt.Errorf("is waphone running? control socket %s: %w", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Reply{}, fmt.Errorf("control socket: %w", err)
	}
	dec := json.NewDecoder(c)
	for {
		var rep Reply
		if err := dec.Decode(&rep); err != nil {
			if ctx.Err() != nil {
				return Reply{}, ctx.Err()
			}
			if req.Cmd == "events" && errors.Is(err, io.EOF) {
				return Reply{OK: true}, nil
			}
			return Reply{}, fmt.Errorf("control socket reply: %w", err)
		}
		if rep.Event == nil {
			return rep, nil
		}
		if onEvent != nil {
			onEvent(*rep.Event)
		}
	}
}
