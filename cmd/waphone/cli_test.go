package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waphone/waphone/control"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/internal/testutil"
	"github.com/waphone/waphone/phone"
)

// cliRig is a real `waphone run` (in-process) with metasim as Meta.
type cliRig struct {
	cfgPath, sock, addr string
	sim                 *metasim.Sim
}

func newCLIRig(t *testing.T, answer string, answerDelay time.Duration) *cliRig {
	t.Helper()
	dir := t.TempDir()
	ca, _ := testpki.NewCA("cli CA")
	cf, kf := writeCert(t, ca, dir, time.Now().Add(30*24*time.Hour), "sip.example.com")
	pw := filepath.Join(dir, "pw")
	_ = os.WriteFile(pw, []byte("secret\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	sim, err := metasim.Start(ctx, metasim.Config{BusinessNumber: "+12145551869", BusinessHost: "sip.example.com",
		Password: "secret", BusinessRoots: ca.Pool(), AnswerDelay: answerDelay, Logger: newLogger("error")})
	if err != nil {
		t.Fatal(err)
	}
	simCA := filepath.Join(dir, "meta-ca.pem")
	_ = os.WriteFile(simCA, sim.CA().PEM, 0o644)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	r := &cliRig{addr: l.Addr().String(), sim: sim, sock: filepath.Join(dir, "ctl.sock"), cfgPath: filepath.Join(dir, "waphone.toml")}
	_ = l.Close()
	cfg := `[sip]
hostname = "sip.example.com"
listen = "` + r.addr + `"
cert_file = "` + cf + `"
key_file = "` + kf + `"
number = "+12145551869"
password_file = "` + pw + `"
gateway_addr = "` + sim.Addr() + `"
gateway_ca_file = "` + simCA + `"
[media]
key_exchange = "sdes"
bind_address = "127.0.0.1"
[audio]
capture = "tone:440"
playback = "null"
[phone]
answer = "` + answer + `"
control_socket = "` + r.sock + `"
[state]
dir = "` + filepath.Join(dir, "state") + `"
`
	_ = os.WriteFile(r.cfgPath, []byte(cfg), 0o644)
	t.Setenv("STATE_DIRECTORY", "")
	done := make(chan error, 1)
	go func() { done <- cmdRun(ctx, []string{"-config", r.cfgPath}, io.Discard) }()
	testutil.Eventually(t, 10*time.Second, func() bool { _, err := os.Stat(r.sock); return err == nil }, "the control socket")
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
		_ = sim.Close()
	})
	return r
}

// TestStatusJSONAndEvents: `waphone status --json` is the documented
// shape; `waphone events --json` follows a Meta call as it rings, is
// answered and ends, and stops on Ctrl-C (its context).
func TestStatusJSONAndEvents(t *testing.T) {
	r := newCLIRig(t, "auto", 0)
	var out, errb bytes.Buffer
	// Flags may follow the command's other words.
	if code := run([]string{"status", "--json", "-config", r.cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("status --json: %d %s", code, errb.String())
	}
	var st control.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("status --json is not control.Status: %v\n%s", err, out.String())
	}
	if st.State != "idle" || st.Number != "+12145551869" || st.Listen != r.addr || st.CertExpires == nil ||
		st.Goroutines == 0 || st.Version == "" || st.UptimeS < 0 {
		t.Fatalf("status %+v", st)
	}
	// A person's status says the same in words.
	out.Reset()
	if code := run([]string{"status", "-config", r.cfgPath}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "state: idle") || !strings.Contains(out.String(), "certificate: expires") {
		t.Fatalf("status: %d\n%s", code, out.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- runCtx(ctx, []string{"events", "-config", r.cfgPath, "--json"}, pw, io.Discard)
		pw.Close()
	}()
	var mu sync.Mutex
	var kinds []string
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var ev phone.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				mu.Lock()
				kinds = append(kinds, string(ev.Kind)+":"+string(ev.State))
				mu.Unlock()
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the stream is subscribed
	c, err := r.sim.Call(context.Background(), r.addr, metasim.CallOptions{From: "+12195550714"})
	if err != nil || c.Status() != 200 {
		t.Fatalf("call: %v %v", err, c)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(strings.Join(kinds, " "), "answered:talking")
	}, "the answered event")
	_ = c.Hangup(context.Background())
	testutil.Eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(strings.Join(kinds, " "), "ended:idle")
	}, "the ended event")
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("events exit %d", code)
	}
	mu.Lock()
	got := strings.Join(kinds, " ")
	mu.Unlock()
	for _, want := range []string{"ringing:ringing", "answering:answering", "answered:talking", "ended:idle"} {
		if !strings.Contains(got, want) {
			t.Fatalf("events %s: no %s", got, want)
		}
	}
}

// TestCallThroughTheDaemonPrintsProgressAndCancels: `waphone call` hands
// the call to the running daemon, prints that it rings, and Ctrl-C (its
// context) cancels it: Meta sees a CANCEL and the phone is idle again.
func TestCallThroughTheDaemonPrintsProgressAndCancels(t *testing.T) {
	r := newCLIRig(t, "button", time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuf
	var errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- runCtx(ctx, []string{"call", "+12195550714", "-config", r.cfgPath}, &out, &errb) }()
	testutil.Eventually(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "ringing") }, "ringing printed")
	cancel()
	if code := <-done; code != 1 || !strings.Contains(errb.String(), "cancelled") {
		t.Fatalf("call exit %d: %s", code, errb.String())
	}
	select {
	case c := <-r.sim.Incoming():
		if c.Status() != 487 {
			t.Fatalf("Meta's INVITE ended %d, want 487 after a CANCEL", c.Status())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Meta saw no CANCEL")
	}
	var st bytes.Buffer
	testutil.Eventually(t, 5*time.Second, func() bool {
		st.Reset()
		run([]string{"status", "-config", r.cfgPath}, &st, io.Discard)
		return strings.Contains(st.String(), "state: idle")
	}, "the phone idle again")
}

// TestHelp: `waphone help CMD` and `waphone CMD -h` describe the command
// and exit 0; an unknown command is a usage error.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help", "call"}, {"call", "-h"}, {"status", "--help"}, {"help", "run"}, {"help"}, {"help", "version"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || !strings.Contains(out.String(), "usage: waphone") {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"help", "call"}, &out, &errb); !strings.Contains(out.String(), "-config") || !strings.Contains(out.String(), "BSUID") {
		t.Fatalf("help call: %d\n%s", code, out.String())
	}
	if code := run([]string{"help", "frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("help for an unknown command: exit %d", code)
	}
	if code := run([]string{"call", "-bogus"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage: waphone call") {
		t.Fatalf("bad flag: exit %d %s", code, errb.String())
	}
	for name := range commands {
		if name == "help" {
			continue
		}
		out.Reset()
		if code := run([]string{"help", name}, &out, &errb); code != 0 || !strings.Contains(out.String(), "usage: waphone "+name) {
			t.Errorf("help %s: exit %d %s", name, code, out.String())
		}
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
