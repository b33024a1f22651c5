package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/control"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/internal/testutil"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/settings"
)

// cliRig is a real `waphone run` (in-process) with metasim as Meta.
type cliRig struct {
	cfgPath, sock, addr string
	sim                 *metasim.Sim
}

func newCLIRig(t *testing.T, answer string, answerDelay time.Duration, extra ...string) *cliRig {
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
` + strings.ReplaceAll(strings.Join(extra, "\n"), "$DIR", dir)
	_ = os.WriteFile(r.cfgPath, []byte(cfg), 0o644)
	t.Setenv("STATE_DIRECTORY", "")
	done := make(chan error, 1)
	go func() { done <- cmdRun(ctx, []string{"-config", r.cfgPath}, io.Discard) }()
	// A dial, not a stat: the socket file exists from bind(), a moment
	// before listen(), and a client in that moment is refused.
	testutil.Eventually(t, 10*time.Second, func() bool {
		c, err := net.Dial("unix", r.sock)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, "the control socket")
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

type syncBuf = testutil.Buffer

// TestSIGHUPReloadsWithoutDroppingTheCall: a call is up; the answer mode
// is changed in the file and SIGHUP sent. The daemon lives on, the call
// goes on, and the next call follows the new mode (it rings instead of
// being answered).
func TestSIGHUPReloadsWithoutDroppingTheCall(t *testing.T) {
	r := newCLIRig(t, "auto", 0)
	ctx := context.Background()
	c1, err := r.sim.Call(ctx, r.addr, metasim.CallOptions{From: "+12195550714"})
	if err != nil || c1.Status() != 200 {
		t.Fatalf("first call: %v %v", err, c1)
	}
	raw, _ := os.ReadFile(r.cfgPath)
	_ = os.WriteFile(r.cfgPath, []byte(strings.Replace(string(raw), `answer = "auto"`, `answer = "button"`, 1)), 0o644)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case <-c1.Done():
		t.Fatal("SIGHUP dropped the call")
	default:
	}
	var st bytes.Buffer
	if code := run([]string{"status", "-config", r.cfgPath}, &st, io.Discard); code != 0 || !strings.Contains(st.String(), "state: talking") {
		t.Fatalf("after SIGHUP: %d %s", code, st.String())
	}
	_ = c1.Hangup(ctx)
	testutil.Eventually(t, 5*time.Second, func() bool {
		st.Reset()
		run([]string{"status", "-config", r.cfgPath}, &st, io.Discard)
		return strings.Contains(st.String(), "state: idle")
	}, "idle after the first call")
	c2, err := r.sim.Call(ctx, r.addr, metasim.CallOptions{From: "+12195550714", ReturnOnRinging: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if c2.Status() != 0 {
		t.Fatalf("the second call got %d: the new answer mode (button) was not applied", c2.Status())
	}
	var out bytes.Buffer
	if code := run([]string{"answer", "-config", r.cfgPath}, &out, io.Discard); code != 0 {
		t.Fatalf("answer: %d", code)
	}
	if err := c2.WaitAnswer(ctx); err != nil || c2.Status() != 200 {
		t.Fatalf("answered by command: %v %d", err, c2.Status())
	}
	_ = c2.Hangup(ctx)
}

// TestConsoleSettingsApplyAtStart: the console's override file wins over
// waphone.toml when the daemon starts.
func TestConsoleSettingsApplyAtStart(t *testing.T) {
	cfg := config.Default()
	dir := t.TempDir()
	cfg.State.Dir = dir
	t.Setenv("STATE_DIRECTORY", "")
	_ = os.WriteFile(filepath.Join(dir, settings.FileName), []byte("[phone]\nanswer = \"button\"\nring_timeout = \"45s\"\n"), 0o600)
	got, err := withOverrides(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Phone.Answer != "button" || got.Phone.RingTimeout.Duration != 45*time.Second || got.Audio.Capture != cfg.Audio.Capture {
		t.Fatalf("overrides not applied: %+v", got.Phone)
	}
	_ = os.WriteFile(filepath.Join(dir, settings.FileName), []byte("[phone]\nanswer = \"sometimes\"\n"), 0o600)
	if _, err := withOverrides(cfg); err == nil {
		t.Fatal("a bad override file accepted")
	}
}

// TestDaemonStartsItsSurfaces: [web] and [metrics] in the config start the
// console (HTTPS, login page) and /metrics with the daemon.
func TestDaemonStartsItsSurfaces(t *testing.T) {
	l1, _ := net.Listen("tcp", "127.0.0.1:0")
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	web, metricsAddr := l1.Addr().String(), l2.Addr().String()
	_, _ = l1.Close(), l2.Close()
	dir := t.TempDir()
	pw := filepath.Join(dir, "admin")
	_ = os.WriteFile(pw, []byte("hunter2\n"), 0o600)
	newCLIRig(t, "auto", 0, "[web]", `listen = "`+web+`"`, `password_file = "`+pw+`"`, "[metrics]", `listen = "`+metricsAddr+`"`)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the console's own certificate
	var res *http.Response
	testutil.Eventually(t, 10*time.Second, func() bool {
		var err error
		res, err = hc.Get("https://" + web + "/")
		return err == nil
	}, "the console listening") // it starts just after the control socket

	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(strings.ToLower(string(body)), "password") {
		t.Fatalf("console %d:\n%.300s", res.StatusCode, body)
	}
	res, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "waphone_") {
		t.Fatalf("metrics:\n%.300s", body)
	}
}
