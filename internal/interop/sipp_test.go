// Package interop runs waphone against SIP implementations we did not
// write. sipp (Debian sip-tester) plays Meta's gateway; it is built
// without TLS, so socat terminates TLS in front of it and verifies
// waphone's certificate the way Meta does.
package interop

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/testutil"

	"github.com/waphone/waphone/internal/testpki"
)

const (
	host     = "meta-voip.example.com"
	number   = "12145551869"
	password = "sipp-meta-password"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// syncBuffer collects output written and read at once.
type syncBuffer = testutil.Buffer

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never accepted a connection", addr)
}

func TestInteropSippUserInitiated(t *testing.T) {
	for _, tool := range []string{"sipp", "socat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian: apt-get install sip-tester socat)", tool)
		}
	}
	dir := t.TempDir()
	df := newDaemonFiles(t, dir, "interop CA")
	bin, ca, certFile, keyFile, pwFile := df.bin, df.ca, df.certFile, df.keyFile, df.pwFile
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	sipPort := freePort(t)
	cfg := fmt.Sprintf(`[sip]
hostname = %q
listen = "127.0.0.1:%d"
cert_file = %q
key_file = %q
number = "+%s"
password_file = %q
[media]
key_exchange = "sdes"
bind_address = "127.0.0.1"
rtp_ports = "31000-31100"
[audio]
capture = "tone:440"
playback = "null"
[phone]
answer = "auto"
control_socket = %q
[log]
level = "debug"
`, host, sipPort, certFile, keyFile, number, pwFile, filepath.Join(dir, "control.sock"))
	cfgFile := filepath.Join(dir, "waphone.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	daemonLog, _ := runDaemon(t, ctx, bin, cfgFile, fmt.Sprintf("127.0.0.1:%d", sipPort))

	// socat: plain TCP for sipp on one side, TLS to waphone on the other,
	// verifying waphone's certificate and name like Meta does.
	socatPort := freePort(t)
	socat := exec.CommandContext(ctx, "socat",
		fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", socatPort),
		fmt.Sprintf("OPENSSL:127.0.0.1:%d,cafile=%s,commonname=%s,verify=1", sipPort, caFile, host))
	socatLog := &syncBuffer{}
	socat.Stderr = socatLog
	if err := socat.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = socat.Process.Kill()
		_ = socat.Wait()
	}()
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", socatPort))

	runSipp := func(t *testing.T, scenario, pw string) {
		t.Helper()
		work := t.TempDir()
		cmd := exec.CommandContext(ctx, "sipp",
			"-t", "t1", "-sf", filepath.Join(moduleRoot(t), "internal/interop/testdata", scenario),
			"-m", "1", "-l", "1", "-s", number, "-au", number, "-ap", pw,
			"-i", "127.0.0.1", "-p", fmt.Sprint(freePort(t)), "-mp", fmt.Sprint(freeUDPPort(t)),
			"-timeout", "20s", "-timeout_error", "-nostdin",
			"-cid_str", "outgoing:wacid.%u-%p@%s", // Meta-shaped Call-ID; sipp matches replies by it
			"-trace_err", "-trace_msg",
			fmt.Sprintf("127.0.0.1:%d", socatPort))
		cmd.Dir = work
		out, err := cmd.CombinedOutput()
		if err != nil {
			traces := ""
			files, _ := filepath.Glob(filepath.Join(work, "*"))
			for _, f := range files {
				b, _ := os.ReadFile(f)
				traces += "\n== " + filepath.Base(f) + "\n" + string(b)
			}
			t.Fatalf("sipp %s failed: %v\n%s\n%s\nsocat: %s", scenario, err, out, traces, socatLog.String())
		}
	}

	t.Run("authenticated call answered and hung up by Meta", func(t *testing.T) {
		runSipp(t, "meta_uac.xml", password)
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(daemonLog.String(), "call ended") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		log := daemonLog.String()
		for _, want := range []string{"incoming call", "wacid.SIPP", "sipp_user", "ended_by=remote-bye"} {
			if !strings.Contains(log, want) {
				t.Errorf("waphone log lacks %q", want)
			}
		}
	})
	t.Run("wrong password gets 403", func(t *testing.T) {
		runSipp(t, "meta_uac_wrong_password.xml", "not-the-password")
		if !strings.Contains(daemonLog.String(), "failed digest authentication") {
			t.Error("waphone did not log the failed authentication")
		}
	})
	log := daemonLog.String()
	if strings.Contains(log, "panic") || strings.Contains(log, password) {
		t.Fatal("waphone log has a panic or the password")
	}
}

// daemonFiles is what a test needs to run the real daemon: the waphone
// binary built from this tree, a certificate for host from a fresh CA, and
// the SIP password file (0600), all under dir.
type daemonFiles struct {
	bin, certFile, keyFile, pwFile string
	ca                             *testpki.CA
}

func newDaemonFiles(t *testing.T, dir, caName string) daemonFiles {
	t.Helper()
	f := daemonFiles{bin: filepath.Join(dir, "waphone"), pwFile: filepath.Join(dir, "sip-password")}
	build := exec.Command("go", "build", "-tags", "nolibopusfile", "-o", f.bin, "./cmd/waphone")
	build.Dir = moduleRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building waphone: %v\n%s", err, out)
	}
	var err error
	if f.ca, err = testpki.NewCA(caName); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := f.ca.Issue(host)
	if err != nil {
		t.Fatal(err)
	}
	if f.certFile, f.keyFile, err = testpki.WriteFiles(dir, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// runDaemon starts `waphone run -config cfgFile`, waits until addr takes
// TCP connections, and stops it (SIGINT, then SIGKILL) when the test ends,
// printing its log if the test failed. done closes if the daemon exits.
func runDaemon(t *testing.T, ctx context.Context, bin, cfgFile, addr string) (log *syncBuffer, done <-chan struct{}) {
	t.Helper()
	daemonLog := &syncBuffer{}
	daemon := exec.CommandContext(ctx, bin, "run", "-config", cfgFile)
	daemon.Stdout, daemon.Stderr = daemonLog, daemonLog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	daemonDone := make(chan struct{})
	go func() { _ = daemon.Wait(); close(daemonDone) }()
	t.Cleanup(func() {
		_ = daemon.Process.Signal(os.Interrupt)
		select {
		case <-daemonDone:
		case <-time.After(5 * time.Second):
			_ = daemon.Process.Kill()
			<-daemonDone
		}
		if t.Failed() {
			t.Logf("waphone log:\n%s", daemonLog.String())
		}
	})
	waitTCP(t, addr)
	return daemonLog, daemonDone
}
