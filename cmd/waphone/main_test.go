package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/control"
	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/internal/testutil"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "waphone ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
	if code := run(nil, &out, &errb); code != 2 {
		t.Fatalf("no command exit %d", code)
	}
}

// TestDemo runs `waphone demo` in-process: a call each way against metasim.
func TestDemo(t *testing.T) {
	if !demoBuilt {
		t.Skip("built with -tags nodemo")
	}
	var out, errb bytes.Buffer
	code := run([]string{"demo", "-talk", "1s"}, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "demo ok") {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if strings.Contains(out.String(), "FAIL") {
		t.Fatalf("demo reported a failure:\n%s", out.String())
	}
}

func writeCert(t *testing.T, ca *testpki.CA, dir string, notAfter time.Time, names ...string) (string, string) {
	t.Helper()
	c, k, err := ca.IssueExpiring(notAfter, names...)
	if err != nil {
		t.Fatal(err)
	}
	cf, kf, err := testpki.WriteFiles(dir, c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cf, kf
}

func TestCheckCertFiles(t *testing.T) {
	ca, err := testpki.NewCA("check CA")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cases := []struct {
		name     string
		notAfter time.Time
		names    []string
		roots    bool
		fail     bool
		contains string
	}{
		{"good", now.Add(90 * 24 * time.Hour), []string{"sip.example.com"}, true, false, "ok    certificate covers sip.example.com"},
		{"mismatch", now.Add(90 * 24 * time.Hour), []string{"other.example.com"}, true, true, "hostname mismatch"},
		{"expiring", now.Add(5 * 24 * time.Hour), []string{"sip.example.com"}, true, false, "warn  certificate expires in"},
		{"expired", now.Add(-time.Hour), []string{"sip.example.com"}, true, true, "expired"},
		{"untrusted", now.Add(90 * 24 * time.Hour), []string{"sip.example.com"}, false, true, "signed by unknown authority"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cf, kf := writeCert(t, ca, t.TempDir(), c.notAfter, c.names...)
			roots := ca.Pool()
			if !c.roots {
				roots = testpkiEmptyPool()
			}
			r := checkCertFiles(cf, kf, "sip.example.com", roots, now)
			text := strings.Join(r.lines, "\n")
			if r.fail != c.fail || !strings.Contains(text, c.contains) {
				t.Fatalf("fail=%v, report:\n%s", r.fail, text)
			}
		})
	}
	// A key that is not the certificate's.
	dir := t.TempDir()
	cf, _ := writeCert(t, ca, dir, now.Add(time.Hour), "sip.example.com")
	_, kf2 := writeCert(t, ca, t.TempDir(), now.Add(time.Hour), "sip.example.com")
	if r := checkCertFiles(cf, kf2, "sip.example.com", ca.Pool(), now); !r.fail {
		t.Fatal("mismatched key passed")
	}
}

// TestRunDaemonControlSocket starts `waphone run` and drives it like a user.
func TestRunDaemonControlSocket(t *testing.T) {
	dir := t.TempDir()
	ca, _ := testpki.NewCA("run CA")
	cf, kf := writeCert(t, ca, dir, time.Now().Add(time.Hour), "sip.example.com")
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ctl.sock")
	cfgPath := filepath.Join(dir, "waphone.toml")
	cfg := `[sip]
hostname = "sip.example.com"
listen = "127.0.0.1:0"
cert_file = "` + cf + `"
key_file = "` + kf + `"
number = "+12145551869"
password_file = "` + pw + `"
[media]
key_exchange = "sdes"
bind_address = "127.0.0.1"
[phone]
control_socket = "` + sock + `"
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	// A world-readable password file is refused with the reason, exit 2.
	if code := run([]string{"run", "-config", cfgPath}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "chmod 600") {
		t.Fatalf("loose password file: exit %d, %s", code, errb.String())
	}
	if strings.Contains(errb.String(), "secret") {
		t.Fatal("password in the error output")
	}
	if err := os.Chmod(pw, 0o600); err != nil {
		t.Fatal(err)
	}
	// Under systemd: READY=1 and watchdog pings arrive on NOTIFY_SOCKET.
	notifyPath := filepath.Join(dir, "notify.sock")
	notifyConn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notifyConn.Close()
	t.Setenv("NOTIFY_SOCKET", notifyPath)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmdRun(ctx, []string{"-config", cfgPath}, &errb) }()
	seen := map[string]bool{}
	_ = notifyConn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !seen["READY=1"] || !seen["WATCHDOG=1"] {
		buf := make([]byte, 128)
		n, err := notifyConn.Read(buf)
		if err != nil {
			t.Fatalf("notifications so far %v: %v", seen, err)
		}
		seen[string(buf[:n])] = true
	}
	testutil.Eventually(t, 10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil }, "the control socket")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("control socket: %v %v", fi, err)
	}
	out.Reset()
	if code := run([]string{"status", "-config", cfgPath}, &out, &errb); code != 0 || !strings.Contains(out.String(), "state: idle") {
		t.Fatalf("status: %d %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"answer", "-config", cfgPath}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no call is ringing") {
		t.Fatalf("answer with nothing ringing: %d %q", code, errb.String())
	}
	rep, err := control.Do(context.Background(), sock, control.Request{Cmd: "bogus"})
	if err != nil || rep.OK || !strings.Contains(rep.Error, "unknown command") {
		t.Fatalf("bogus command: %+v %v", rep, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatal("control socket left behind")
	}
}

func testpkiEmptyPool() *x509.CertPool { return x509.NewCertPool() }

func TestHistoryRecordAndList(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STATE_DIRECTORY", dir)
	cfgPath := filepath.Join(dir, "waphone.toml")
	_ = os.WriteFile(cfgPath, []byte("[sip]\nhostname = \"sip.example.com\"\nnumber = \"+12145551869\"\n"), 0o644)
	store, err := history.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{history: store, log: newLogger("error")}
	start := time.Now().Add(-time.Minute)
	d.record(phone.CallSummary{Direction: "inbound", Info: sip.CallInfo{Remote: "+12195550714", WACID: "wacid.HBgL", Username: "shopper", DurationSec: 42},
		Start: start, Answered: start.Add(2 * time.Second), End: start.Add(44 * time.Second), Duration: 42 * time.Second, EndedBy: "remote-bye"})
	var out, errb bytes.Buffer
	if code := run([]string{"history", "-config", cfgPath}, &out, &errb); code != 0 || !strings.Contains(out.String(), "wacid.HBgL") || !strings.Contains(out.String(), "42s") {
		t.Fatalf("history: %d\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"history", "-config", cfgPath, "--json", "--since", "1h"}, &out, &errb); code != 0 || !strings.Contains(out.String(), `"meta_duration_s":42`) {
		t.Fatalf("history --json: %d %s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"history", "-config", cfgPath, "--since", "2999-01-01"}, &out, &errb); code != 0 || strings.Contains(out.String(), "wacid") {
		t.Fatalf("history --since future: %s", out.String())
	}
	if code := run([]string{"history", "-config", cfgPath, "--since", "yesterday"}, &out, &errb); code != 2 {
		t.Fatalf("bad --since exit %d", code)
	}
}

func TestDoctor(t *testing.T) {
	dir := t.TempDir()
	ca, _ := testpki.NewCA("doctor CA")
	cf, kf := writeCert(t, ca, dir, time.Now().Add(90*24*time.Hour), "sip.example.com")
	pw := filepath.Join(dir, "pw")
	_ = os.WriteFile(pw, []byte("x\n"), 0o644) // too open: a FAIL
	cfgPath := filepath.Join(dir, "waphone.toml")
	_ = os.WriteFile(cfgPath, []byte(`[sip]
hostname = "sip.example.com"
listen = "127.0.0.1:1"
cert_file = "`+cf+`"
key_file = "`+kf+`"
number = "+12145551869"
password_file = "`+pw+`"
[board]
chip = "gpiochip99"
`), 0o644)
	var out, errb bytes.Buffer
	code := run([]string{"doctor", "-config", cfgPath}, &out, &errb)
	text := out.String()
	for _, want := range []string{"ok    config", "FAIL  SIP password", "ok    certificate covers sip.example.com",
		"signed by unknown authority", "FAIL  nothing answers TLS", "FAIL  GPIO chip /dev/gpiochip99", "warn  sip.allow is empty", "clock"} {
		if !strings.Contains(text, want) {
			t.Errorf("doctor report lacks %q:\n%s", want, text)
		}
	}
	if code != 1 {
		t.Fatalf("exit %d, want 1 on failures", code)
	}
}
