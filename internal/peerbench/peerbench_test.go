//go:build benchpeers

package peerbench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/testpki"
)

const (
	business = "+12145551869"
	caller   = "+12195550714"
	password = "bench-meta-secret"
)

// talk is how long each measured call talks (WAPHONE_BENCH_TALK, e.g. "20s").
func talk() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("WAPHONE_BENCH_TALK")); err == nil && d > 0 {
		return d
	}
	return 20 * time.Second
}

const idleWindow = 5 * time.Second

type result struct {
	name                 string
	cpu                  time.Duration // answerer CPU during the talk window
	idleCPU              time.Duration // answerer CPU during idleWindow before the call
	talk                 time.Duration
	idleRSS, peakRSS     int64   // kB
	wakeups              float64 // context switches per call-second, all threads
	setup                time.Duration
	offerFmtp, answerSDP string
}

func TestBenchPeers(t *testing.T) {
	for _, tool := range []string{"baresip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (Debian: apt-get install baresip-core): cannot measure", tool)
		}
	}
	bin := os.Getenv("WAPHONE_BIN")
	if bin == "" {
		t.Fatal("WAPHONE_BIN is not set (make bench-peers builds bin/waphone and sets it)")
	}
	ca, err := testpki.NewCA("bench CA")
	if err != nil {
		t.Fatal(err)
	}
	bs := measure(t, "baresip", ca, func(dir string) (int, *exec.Cmd) { return baresipAnswerer(t, dir, ca) })
	wa := measure(t, "waphone", ca, func(dir string) (int, *exec.Cmd) { return waphoneAnswerer(t, dir, bin, ca) })
	for _, r := range []result{bs, wa} {
		t.Logf("%-8s cpu %6.1f ms/call-s (idle %4.1f ms/s)   rss idle %5.1f MB peak %5.1f MB   setup %6.1f ms",
			r.name, perSecond(r), float64(r.idleCPU.Microseconds())/1000/idleWindow.Seconds(), float64(r.idleRSS)/1024, float64(r.peakRSS)/1024, float64(r.setup.Microseconds())/1000)
	}
	for _, r := range []result{bs, wa} {
		t.Logf("%-8s context switches %5.0f /call-s", r.name, r.wakeups)
	}
	t.Logf("waphone/baresip: cpu %.2fx   peak rss %.2fx   setup %.2fx   context switches %.2fx",
		perSecond(wa)/perSecond(bs), float64(wa.peakRSS)/float64(bs.peakRSS), float64(wa.setup)/float64(bs.setup), wa.wakeups/bs.wakeups)
	t.Logf("caller's opus fmtp: %q; waphone's answer: %s", bs.offerFmtp, wa.answerSDP)
}

func perSecond(r result) float64 {
	return float64(r.cpu.Microseconds()) / 1000 / r.talk.Seconds()
}

// measure runs one call from a fresh baresip caller to the answerer that
// start launches (it returns the answerer's TLS port and its process).
func measure(t *testing.T, name string, ca *testpki.CA, start func(dir string) (int, *exec.Cmd)) result {
	t.Helper()
	r := result{name: name, talk: talk()}
	dir := t.TempDir()
	port, ans := start(dir)
	defer stopProcess(ans)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
	time.Sleep(time.Second) // let start-up settle before "idle"
	i0, err := procCPU(ans.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(idleWindow)
	i1, err := procCPU(ans.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	r.idleCPU = i1 - i0
	if r.idleRSS, err = procStatus(ans.Process.Pid, "VmRSS"); err != nil {
		t.Fatal(err)
	}

	relay := newRelay(t, ca, fmt.Sprintf("127.0.0.1:%d", port))
	defer relay.close()
	cdir := t.TempDir()
	writeCert(t, cdir, ca)
	caFile := filepath.Join(cdir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	acct := fmt.Sprintf("<sip:%s@wa.meta.vc;transport=tls>;regint=0;auth_user=%s;auth_pass=%s;mediaenc=srtp-mand;audio_codecs=opus/48000/2",
		caller, strings.TrimPrefix(business, "+"), password)
	baresipConfig(t, cdir, acct, fmt.Sprintf("sip_cafile %s\nmodule_app menu.so\ndns_server %s\n", caFile, startDNS(t)))
	target := fmt.Sprintf("sip:%s@%s", business, relay.addr())
	quitAfter := int((r.talk + 15*time.Second).Seconds())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl := exec.CommandContext(ctx, "baresip", "-f", cdir, "-t", strconv.Itoa(quitAfter), "-e", "/dial "+target)
	cl.Dir = cdir
	var clog bytes.Buffer
	cl.Stdout, cl.Stderr = &clog, &clog
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cl.Wait() }()

	select {
	case <-relay.answered:
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: no 200 OK within 15 s: cannot measure\ncaller:\n%s", name, clog.String())
	}
	u0, s0, err := procUserSys(ans.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	w0 := procWakeups(ans.Process.Pid)
	time.Sleep(r.talk)
	u1, s1, err := procUserSys(ans.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	r.cpu = u1 + s1 - u0 - s0
	// Context switches are a count, not a time: this noisy machine moves
	// them far less than CPU seconds, and each is a wake-up a small
	// board pays for.
	r.wakeups = float64(procWakeups(ans.Process.Pid)-w0) / r.talk.Seconds()
	if r.peakRSS, err = procStatus(ans.Process.Pid, "VmHWM"); err != nil {
		t.Fatal(err)
	}
	// What the RSS is: anonymous (heap, stacks, C) or file (the binary's pages).
	anon, _ := procStatus(ans.Process.Pid, "RssAnon")
	file, _ := procStatus(ans.Process.Pid, "RssFile")
	threads, _ := procStatus(ans.Process.Pid, "Threads")
	t.Logf("%s in the call: user %v, sys %v; RssAnon %.1f MB, RssFile %.1f MB, %d threads", name, u1-u0, s1-s0, float64(anon)/1024, float64(file)/1024, threads)
	r.setup, r.offerFmtp, r.answerSDP = relay.results()
	if r.setup <= 0 {
		t.Fatalf("%s: setup time not measured", name)
	}
	return r
}

// baresipAnswerer is baresip answering on its own (auto answer).
func baresipAnswerer(t *testing.T, dir string, ca *testpki.CA) (int, *exec.Cmd) {
	writeCert(t, dir, ca)
	acct := "<sip:" + business + "@wa.meta.vc;transport=tls>;regint=0;answermode=auto;mediaenc=srtp-mand;audio_codecs=opus/48000/2"
	port := baresipConfig(t, dir, acct, "")
	cmd := exec.Command("baresip", "-f", dir)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return port, cmd
}

// waphoneAnswerer is the real daemon with the production audio path's
// null devices, a tone as the microphone, auto answer.
func waphoneAnswerer(t *testing.T, dir, bin string, ca *testpki.CA) (int, *exec.Cmd) {
	c, k, err := ca.Issue("localhost.localdomain", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cf, kf, err := testpki.WriteFiles(dir, c, k)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "sip-password")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := fmt.Sprintf(`[sip]
hostname = "localhost.localdomain"
listen = "127.0.0.1:%d"
cert_file = %q
key_file = %q
number = %q
password_file = %q
[media]
key_exchange = "sdes"
bind_address = "127.0.0.1"
rtp_ports = "28000-28999"
%s
[audio]
capture = "tone:440"
playback = "null"
[phone]
answer = "auto"
control_socket = %q
[state]
dir = %q
[log]
level = %q
`, port, cf, kf, business, pw, complexityLine(), filepath.Join(dir, "control.sock"), filepath.Join(dir, "state"), envOr("WAPHONE_BENCH_LOG", "warn"))
	cfgFile := filepath.Join(dir, "waphone.toml")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "-config", cfgFile}
	if p := os.Getenv("WAPHONE_BENCH_CPUPROFILE"); p != "" {
		args = append(args, "-cpuprofile", p)
	}
	if p := os.Getenv("WAPHONE_BENCH_MEMPROFILE"); p != "" {
		args = append(args, "-memprofile", p)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return port, cmd
}

// stopProcess interrupts cmd (the daemon then writes its profiles) and
// kills it if it has not ended within 5 s.
func stopProcess(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// complexityLine sets [media] opus_complexity from WAPHONE_BENCH_COMPLEXITY;
// without it the key is left out (the daemon's default; older builds
// that do not know the key still start).
func complexityLine() string {
	if c := os.Getenv("WAPHONE_BENCH_COMPLEXITY"); c != "" {
		return "opus_complexity = " + c
	}
	return ""
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// baresipConfig writes a baresip config like internal/interop's (SDES on
// 127.0.0.1, a 1000 Hz sine in, /dev/null out) and returns its TLS port
// (libre listens for TLS on sip_listen's port + 1).
func baresipConfig(t *testing.T, dir, acct, extra string) int {
	t.Helper()
	port := freePort(t)
	for freeCheck(port+1) != nil {
		port = freePort(t)
	}
	conf := fmt.Sprintf(`sip_listen 127.0.0.1:%d
sip_certificate %s
sip_transports tls
audio_player aufile,/dev/null
audio_source ausine,1000
audio_alert aufile,/dev/null
module_path /usr/lib/baresip/modules
module opus.so
module ausine.so
module aufile.so
module srtp.so
module_app account.so
rtp_ports 26000-26999
net_interface 127.0.0.1
`, port, filepath.Join(dir, "cert.pem"))
	if os.Getenv("WAPHONE_BENCH_OFFER") != "baresip" {
		// Meta-like Opus: 20 kbps, in-band FEC (what Meta's fmtp asks
		// for, less maxplaybackrate, which baresip cannot offer); both
		// baresips use it, so the baresip answerer encodes the same way.
		conf += "opus_bitrate 20000\nopus_inbandfec yes\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(conf+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte(acct+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return port + 1
}

func writeCert(t *testing.T, dir string, ca *testpki.CA) {
	c, k, err := ca.Issue("wa.meta.vc", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), append(c, k...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// relay passes one TLS connection through to the answerer (TLS again) and
// times the INVITE that carries credentials (or the last INVITE) and the
// 200 OK that answers it, as they cross.
type relay struct {
	ln       net.Listener
	answered chan struct{}
	once     sync.Once

	mu        sync.Mutex
	invite    time.Time
	ok        time.Time
	fmtp, ans string
}

func newRelay(t *testing.T, ca *testpki.CA, upstream string) *relay {
	c, k, err := ca.Issue("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, answered: make(chan struct{})}
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := tls.Dial("tcp", upstream, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
			if err != nil {
				_ = down.Close()
				continue
			}
			go r.pipe(down, up, r.fromCaller)
			go r.pipe(up, down, r.fromAnswerer)
		}
	}()
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }
func (r *relay) close()       { _ = r.ln.Close() }

func (r *relay) pipe(from, to net.Conn, see func([]byte, time.Time)) {
	defer func() { _ = to.Close(); _ = from.Close() }()
	buf := make([]byte, 64<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			see(buf[:n], time.Now())
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *relay) fromCaller(b []byte, at time.Time) {
	if !bytes.HasPrefix(b, []byte("INVITE ")) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ok.IsZero() {
		return
	}
	r.invite, r.fmtp = at, "" // the latest INVITE before the answer: after a 407, the one with credentials
	for _, l := range strings.Split(string(b), "\r\n") {
		if strings.HasPrefix(l, "a=fmtp:") || strings.HasPrefix(l, "a=rtpmap:") {
			r.fmtp += l + " "
		}
	}
}

func (r *relay) fromAnswerer(b []byte, at time.Time) {
	if !bytes.HasPrefix(b, []byte("SIP/2.0 200 ")) || !bytes.Contains(b, []byte(" INVITE\r\n")) {
		return
	}
	r.mu.Lock()
	if r.ok.IsZero() {
		r.ok = at
		for _, l := range strings.Split(string(b), "\r\n") {
			if strings.HasPrefix(l, "a=fmtp:") || strings.HasPrefix(l, "a=rtpmap:") {
				r.ans += l + " "
			}
		}
	}
	r.mu.Unlock()
	r.once.Do(func() { close(r.answered) })
}

func (r *relay) results() (time.Duration, string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.invite.IsZero() || r.ok.IsZero() {
		return 0, r.fmtp, r.ans
	}
	return r.ok.Sub(r.invite), strings.TrimSpace(r.fmtp), strings.TrimSpace(r.ans)
}

// procCPU is utime+stime of pid (/proc/PID/stat fields 14 and 15).
func procCPU(pid int) (time.Duration, error) {
	u, s, err := procUserSys(pid)
	return u + s, err
}

// procUserSys is utime and stime of pid: on this machine (gVisor) a
// syscall's cost lands in stime, so the split says what to cut.
func procUserSys(pid int) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	// The command name may hold spaces: count fields after its ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("cpu of %d: short /proc stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("cpu of %d: bad /proc stat", pid)
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut) * time.Second / hz, time.Duration(st) * time.Second / hz, nil
}

// procStatus is a kB field of /proc/PID/status (VmRSS, VmHWM).
// procWakeups is the voluntary and involuntary context switches of all of
// pid's threads (threads that ended meanwhile are not counted).
func procWakeups(pid int) int64 {
	var n int64
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join(task, "status"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += c
			}
		}
	}
	return n
}

func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("status of %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("status of %d: no %s", pid, field)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeCheck(port int) error {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	return l.Close()
}

func waitTCP(t *testing.T, addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s: cannot measure", addr)
}
