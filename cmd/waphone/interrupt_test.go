package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/internal/testutil"
)

// TestKilledDaemonsCallIsInHistory: a real `waphone run` process takes a
// Meta call and is killed (SIGKILL, as a power cut would stop it) while the
// call is up. The next start records that call as interrupted, with the
// caller and the WACID, and `waphone history` shows it.
func TestKilledDaemonsCallIsInHistory(t *testing.T) {
	if cfg := os.Getenv("WAPHONE_TEST_DAEMON_CONFIG"); cfg != "" {
		os.Exit(run([]string{"run", "-config", cfg}, os.Stderr, os.Stderr))
	}
	dir := t.TempDir()
	ca, _ := testpki.NewCA("kill CA")
	cf, kf := writeCert(t, ca, dir, time.Now().Add(time.Hour), "sip.example.com")
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	state := filepath.Join(dir, "state")
	cfgPath := filepath.Join(dir, "waphone.toml")
	cfg := `[sip]
hostname = "sip.example.com"
listen = "` + addr + `"
cert_file = "` + cf + `"
key_file = "` + kf + `"
number = "+12145551869"
password_file = "` + pw + `"
[media]
key_exchange = "sdes"
bind_address = "127.0.0.1"
[audio]
capture = "tone:440"
playback = "null"
[phone]
answer = "auto"
control_socket = "` + filepath.Join(dir, "ctl.sock") + `"
[state]
dir = "` + state + `"
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STATE_DIRECTORY", "")
	ctx := context.Background()
	sim, err := metasim.Start(ctx, metasim.Config{BusinessNumber: "+12145551869", BusinessHost: "sip.example.com",
		Password: "secret", BusinessRoots: ca.Pool(), Logger: newLogger("error")})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()

	daemon := exec.Command(os.Args[0], "-test.run=^TestKilledDaemonsCallIsInHistory$")
	daemon.Env = append(os.Environ(), "WAPHONE_TEST_DAEMON_CONFIG="+cfgPath, "STATE_DIRECTORY=")
	var logs bytes.Buffer
	daemon.Stderr = &logs
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = daemon.Process.Kill(); _ = daemon.Wait() }()
	waitFor(t, "the daemon's listener", func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	call, err := sim.Call(ctx, addr, metasim.CallOptions{From: "+12195550714", Username: "shopper42"})
	if err != nil || call.Status() != 200 {
		t.Fatalf("call: %v %v\n%s", err, call, logs.String())
	}
	waitFor(t, "the call noted as up", func() bool {
		_, err := os.Stat(filepath.Join(state, "ongoing.json"))
		return err == nil
	})
	_ = daemon.Process.Kill()
	_ = daemon.Wait()

	// The next start: the daemon finds the call and records it.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	var errb bytes.Buffer
	go func() { done <- cmdRun(rctx, []string{"-config", cfgPath}, &errb) }()
	store, _ := history.Open(state)
	waitFor(t, "the interrupted call in the history", func() bool {
		recs, _, _ := store.Read(time.Time{})
		return len(recs) == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := run([]string{"history", "-config", cfgPath, "--json"}, &out, &errb); code != 0 {
		t.Fatalf("history: %d %s", code, errb.String())
	}
	var rec history.Record
	if err := json.Unmarshal([]byte(strings.TrimSpace(out.String())), &rec); err != nil {
		t.Fatalf("history --json %q: %v", out.String(), err)
	}
	if rec.EndedBy != history.EndedInterrupted || rec.WACID != call.WACID() || rec.Remote != "+12195550714" ||
		rec.Username != "shopper42" || rec.Answered.IsZero() {
		t.Fatalf("record %+v", rec)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, cond, "%s", what)
}
