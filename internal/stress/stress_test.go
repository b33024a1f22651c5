//go:build stress

package stress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/testutil"

	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
)

const (
	host     = "meta-voip.example.com"
	number   = "12145551869"
	password = "stress-meta-password"

	netnsEnv = "WAPHONE_STRESS_NETNS" // set inside the namespace we made
	binEnv   = "WAPHONE_STRESS_BIN"   // the daemon built outside it

	metaCalls = 5                // Meta's calls per phase
	phaseLen  = 12 * time.Second // each attack's length (past the 10 s first-message limit)
)

// TestStress runs the attacks. Where a user+network namespace can be made
// (root or unprivileged user namespaces), the whole run happens in a fresh
// one: loopback only, and a whole IPv6 /64 on lo for the attackers. Else
// it runs on the host's loopback and skips the IPv6 part.
func TestStress(t *testing.T) {
	bin := os.Getenv(binEnv)
	if bin == "" {
		bin = buildDaemon(t)
	}
	if os.Getenv(netnsEnv) == "" {
		if ok := runInNetns(t, bin); ok {
			return
		}
		t.Log("no network namespace here: running on the host's loopback, without the IPv6 /64 attack")
	} else {
		setupNetns(t)
	}
	run(t, bin, os.Getenv(netnsEnv) != "")
}

func buildDaemon(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "waphone")
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-tags", "nolibopusfile", "-o", bin, "./cmd/waphone")
	build.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building waphone: %v\n%s", err, out)
	}
	return bin
}

func runInNetns(t *testing.T, bin string) bool {
	if _, err := exec.LookPath("unshare"); err != nil {
		return false
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return false
	}
	ns := []string{"--user", "--map-root-user", "--net", "--"}
	if err := exec.Command("unshare", append(ns, "true")...).Run(); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", append(ns, os.Args[0], "-test.run=^TestStress$", "-test.v", "-test.count=1", "-test.timeout=8m")...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1", binEnv+"="+bin)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr // the report, as it comes
	if err := cmd.Run(); err != nil {
		t.Fatalf("the stress run in the namespace failed: %v", err)
	}
	return true
}

var v6Prefix = "2001:db8:64:1::" // documentation range, only inside the namespace

func setupNetns(t *testing.T) {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Flags&net.FlagLoopback == 0 {
		t.Fatalf("%s is set but this is not a fresh network namespace", netnsEnv)
	}
	cmds := [][]string{{"link", "set", "lo", "up"}}
	for i := 1; i <= 64; i++ {
		cmds = append(cmds, []string{"-6", "addr", "add", fmt.Sprintf("%s%x/128", v6Prefix, i), "dev", "lo", "nodad"})
	}
	for _, c := range cmds {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
}

type daemon struct {
	cmd     *exec.Cmd
	log     *syncBuffer
	cfgFile string
	addr    string // where attackers and Meta connect (127.0.0.1:port)
	port    int
	ca      *testpki.CA
	bin     string
}

func startDaemon(t *testing.T, bin string, dualStack bool) *daemon {
	dir := t.TempDir()
	ca, err := testpki.NewCA("stress CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(host)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := testpki.WriteFiles(dir, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "sip-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	if dualStack {
		listen = fmt.Sprintf("[::]:%d", port) // only inside the namespace: nothing but lo there
	}
	// sip.allow empty: the Internet case, every stranger may connect.
	cfg := fmt.Sprintf(`[sip]
hostname = %q
listen = %q
cert_file = %q
key_file = %q
number = "+%s"
password_file = %q
[media]
key_exchange = "sdes"
bind_address = "127.0.0.1"
rtp_ports = "31200-31300"
[audio]
capture = "tone:440"
playback = "null"
[phone]
answer = "auto"
control_socket = %q
[log]
level = "info"
`, host, listen, certFile, keyFile, number, pwFile, filepath.Join(dir, "control.sock"))
	cfgFile := filepath.Join(dir, "waphone.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &daemon{log: &syncBuffer{}, cfgFile: cfgFile, addr: fmt.Sprintf("127.0.0.1:%d", port), port: port, ca: ca, bin: bin}
	d.cmd = exec.Command(bin, "run", "-config", cfgFile)
	d.cmd.Env = append(os.Environ(), "GOTRACEBACK=all") // SIGQUIT at the end dumps every goroutine
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			_ = d.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("waphone log (tail):\n%s", tail(d.log.String(), 60))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waphone never listened on %s:\n%s", d.addr, d.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d
}

// mem reads the daemon's resident set and its peak from /proc.
func (d *daemon) mem() (rssKiB, peakKiB, threads int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return -1, -1, -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rssKiB = n
		case "VmHWM:":
			peakKiB = n
		case "Threads:":
			threads = n
		}
	}
	return
}

func (d *daemon) status(t *testing.T) string {
	out, err := exec.Command(d.bin, "status", "-config", d.cfgFile).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("status: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// goroutines ends the daemon with SIGQUIT and counts the goroutines in
// the runtime's dump.
func (d *daemon) goroutines(t *testing.T) int {
	mark := len(d.log.String())
	_ = d.cmd.Process.Signal(syscall.SIGQUIT)
	done := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-done
	}
	// "goroutine 7 gp=0x… m=nil [select]:"; goroutine 0 is a thread's scheduler, not one of ours.
	return len(regexp.MustCompile(`(?m)^goroutine [1-9]\d* `).FindAllStringIndex(d.log.String()[mark:], -1))
}

// metaCall is one user-initiated call from a fresh metasim (so a fresh TLS
// connection from 127.0.0.1: it must get a seat), answered 150–300 ms after
// the 407 like Meta's retry. It returns the setup time (INVITE to 200 OK).
func metaCall(ctx context.Context, d *daemon) (time.Duration, error) {
	sim, err := metasim.Start(ctx, metasim.Config{
		BusinessNumber: "+" + number, BusinessHost: host, Password: password, BusinessRoots: d.ca.Pool(),
	})
	if err != nil {
		return 0, err
	}
	defer sim.Close()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	call, err := sim.Call(cctx, d.addr, metasim.CallOptions{AuthDelay: time.Duration(150+rand.IntN(151)) * time.Millisecond})
	setup := time.Since(start)
	if err != nil {
		return setup, err
	}
	if call.Status() != 200 || !call.Challenged() {
		return setup, fmt.Errorf("status %d, challenged %v; want 200 after a 407", call.Status(), call.Challenged())
	}
	time.Sleep(300 * time.Millisecond) // a little media
	if err := call.Hangup(cctx); err != nil {
		return setup, fmt.Errorf("hangup: %w", err)
	}
	// The phone takes one call at a time: let it go back to idle.
	time.Sleep(200 * time.Millisecond)
	return setup, nil
}

// metaCalls places n calls one after another and reports their setup times.
func metaCallsDuring(t *testing.T, ctx context.Context, d *daemon, phase string, n int) []time.Duration {
	var setups []time.Duration
	for i := 0; i < n; i++ {
		setup, err := metaCall(ctx, d)
		if err != nil {
			t.Errorf("%s: Meta's call %d failed after %s: %v", phase, i+1, setup.Round(time.Millisecond), err)
			continue
		}
		setups = append(setups, setup)
	}
	return setups
}

func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var parts []string
	for _, d := range s {
		parts = append(parts, d.Round(time.Millisecond).String())
	}
	return fmt.Sprintf("min %s median %s max %s (%s)", s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond),
		s[len(s)-1].Round(time.Millisecond), strings.Join(parts, " "))
}

func run(t *testing.T, bin string, inNetns bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Minute)
	defer cancel()
	d := startDaemon(t, bin, inNetns)
	report := func(format string, args ...any) { t.Logf(format, args...) }

	base := metaCallsDuring(t, ctx, d, "baseline", 3)
	rss0, peak0, thr0 := d.mem()
	report("baseline (no attack): Meta setup %s; daemon RSS %d KiB, peak %d KiB, %d threads", summary(base), rss0, peak0, thr0)

	// (a) unauthenticated INVITEs from 64 addresses in 64 /24s, and from 64
	// addresses of one /24; then from 64 addresses of one IPv6 /64.
	var srcs []string
	for i := 0; i < 64; i++ {
		srcs = append(srcs, fmt.Sprintf("127.100.%d.1", i), fmt.Sprintf("127.99.0.%d", i+1))
	}
	phase(t, ctx, d, "(a) INVITE flood, 128 IPv4 sources", func(stop <-chan struct{}) string {
		return inviteFlood(d, srcs, stop)
	})
	if inNetns {
		var v6 []string
		for i := 1; i <= 64; i++ {
			v6 = append(v6, fmt.Sprintf("%s%x", v6Prefix, i))
		}
		phase(t, ctx, d, "(a6) INVITE flood, 64 addresses of one IPv6 /64", func(stop <-chan struct{}) string {
			return inviteFloodTo(d, v6, fmt.Sprintf("[::1]:%d", d.port), stop)
		})
	} else {
		report("(a6) skipped: no network namespace to hold an IPv6 /64 on loopback")
	}
	// (b) 200 slow or half-open connections from 200 addresses.
	phase(t, ctx, d, "(b) 200 slow/half-open connections", func(stop <-chan struct{}) string {
		return slowConns(d, 200, stop)
	})
	// (c) wrong digests with real nonces from 10 addresses.
	phase(t, ctx, d, "(c) wrong digests from 10 addresses", func(stop <-chan struct{}) string {
		return wrongDigests(d, 10, stop)
	})
	// All of them at once.
	phase(t, ctx, d, "(abc) all attacks at once", func(stop <-chan struct{}) string {
		var wg sync.WaitGroup
		res := make([]string, 3)
		for i, f := range []func() string{
			func() string { return inviteFlood(d, srcs, stop) },
			func() string { return slowConns(d, 200, stop) },
			func() string { return wrongDigests(d, 10, stop) },
		} {
			wg.Add(1)
			go func() { defer wg.Done(); res[i] = f() }()
		}
		wg.Wait()
		return strings.Join(res, "; ")
	})

	// Settle: attack connections end, the first-message limit closes the rest.
	time.Sleep(12 * time.Second)
	after := metaCallsDuring(t, ctx, d, "after", 2)
	rss1, peak1, thr1 := d.mem()
	report("after the attacks: Meta setup %s", summary(after))
	report("daemon RSS %d KiB → %d KiB, peak %d KiB → %d KiB, threads %d → %d", rss0, rss1, peak0, peak1, thr0, thr1)
	report("waphone status:\n%s", d.status(t))
	logText := d.log.String()
	n := d.goroutines(t)
	report("daemon goroutines after (SIGQUIT dump): %d", n)
	report("daemon log over the whole run: %d lines; by message: %s", strings.Count(logText, "\n"), logHistogram(logText))
	seen := map[string]bool{}
	for _, line := range strings.Split(logText, "\n") {
		if m := regexp.MustCompile(`level=ERROR msg=("[^"]*"|\S+)`).FindStringSubmatch(line); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			report("first ERROR line of its kind: %s", line)
		}
	}
	if strings.Contains(d.log.String(), "panic:") {
		t.Error("the daemon panicked")
	}
}

// phase runs attack until phaseLen passes while Meta places its calls,
// and reports both.
func phase(t *testing.T, ctx context.Context, d *daemon, name string, attack func(stop <-chan struct{}) string) {
	stop := make(chan struct{})
	res := make(chan string, 1)
	start := time.Now()
	go func() { res <- attack(stop) }()
	time.Sleep(time.Second) // the attack is in full swing
	setups := metaCallsDuring(t, ctx, d, name, metaCalls)
	if rest := phaseLen - time.Since(start); rest > 0 {
		time.Sleep(rest)
	}
	close(stop)
	out := <-res
	rss, peak, thr := d.mem()
	t.Logf("%s over %s: %s\n    Meta's %d calls: setup %s\n    daemon RSS %d KiB, peak %d KiB, %d threads",
		name, time.Since(start).Round(100*time.Millisecond), out, metaCalls, summary(setups), rss, peak, thr)
}

func attackerTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, ServerName: host, MinVersion: tls.VersionTLS12} // an attacker does not care who answers
}

func dialFrom(src, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: timeout}
	return d.Dial("tcp", addr)
}

func invite(src, id string, extra string) string {
	h := src
	if strings.Contains(src, ":") {
		h = "[" + src + "]"
	}
	return fmt.Sprintf("INVITE sip:+%[1]s@%[2]s;transport=tls SIP/2.0\r\n"+
		"Via: SIP/2.0/TLS %[3]s:5061;branch=z9hG4bK%[4]s\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:+12195550714@wa.meta.vc>;tag=%[4]s\r\n"+
		"To: <sip:+%[1]s@%[2]s>\r\n"+
		"Call-ID: flood-%[4]s\r\n"+
		"CSeq: 1 INVITE\r\n"+
		"Contact: <sip:+12195550714@%[3]s:5061;transport=tls>\r\n"+
		"%[5]sContent-Length: 0\r\n\r\n", number, host, h, id, extra)
}

func inviteFlood(d *daemon, srcs []string, stop <-chan struct{}) string {
	return inviteFloodTo(d, srcs, d.addr, stop)
}

// inviteFloodTo pours unauthenticated INVITEs from each source over its
// own TLS connection, 16 in flight at a time, and counts the 407s.
func inviteFloodTo(d *daemon, srcs []string, addr string, stop <-chan struct{}) string {
	var sent, challenged, other, conns atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; {
				select {
				case <-stop:
					return
				default:
				}
				raw, err := dialFrom(src, addr, 2*time.Second)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				conns.Add(1)
				c := tls.Client(raw, attackerTLS())
				window := make(chan struct{}, 16)
				readDone := make(chan struct{})
				go func() {
					defer close(readDone)
					rd := bufio.NewReader(c)
					for {
						_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
						line, err := rd.ReadString('\n')
						if err != nil {
							return
						}
						if strings.HasPrefix(line, "SIP/2.0 ") {
							if strings.HasPrefix(line, "SIP/2.0 407") {
								challenged.Add(1)
							} else if !strings.HasPrefix(line, "SIP/2.0 100") {
								other.Add(1)
							}
							if !strings.HasPrefix(line, "SIP/2.0 100") {
								select {
								case <-window:
								default:
								}
							}
						}
					}
				}()
			write:
				for {
					select {
					case <-stop:
						break write
					case <-readDone:
						break write
					case window <- struct{}{}:
					}
					seq++
					if _, err := c.Write([]byte(invite(src, fmt.Sprintf("%d-%d-%d", i, seq, rand.Uint32()), ""))); err != nil {
						break
					}
					sent.Add(1)
				}
				_ = c.Close()
				<-readDone
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	return fmt.Sprintf("%d INVITEs sent, %d answered 407 (%.0f/s absorbed), %d other answers, %d connection attempts (sources past the strangers' seats are refused and retry)",
		sent.Load(), challenged.Load(), float64(challenged.Load())/secs, other.Load(), conns.Load())
}

// slowConns holds as many connections as it can from n addresses (n /24s),
// each of three kinds: silent TCP, a TLS ClientHello trickling in, a
// finished handshake with a SIP request trickling in. It reconnects when
// the daemon closes one, and reports how long the daemon held them.
func slowConns(d *daemon, n int, stop <-chan struct{}) string {
	var attempts, refused, held atomic.Int64
	var mu sync.Mutex
	var heldFor []time.Duration
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		src := fmt.Sprintf("127.101.%d.1", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				raw, err := dialFrom(src, d.addr, 2*time.Second)
				if err != nil {
					time.Sleep(200 * time.Millisecond)
					continue
				}
				attempts.Add(1)
				t0 := time.Now()
				closed := make(chan struct{})
				go func() {
					select {
					case <-stop:
						_ = raw.Close()
					case <-closed:
					}
				}()
				switch i % 3 {
				case 0: // silent: wait for the daemon to close
					buf := make([]byte, 1)
					_, _ = raw.Read(buf)
				case 1: // a TLS record header, then one byte a second
					hello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
					for _, b := range hello {
						if _, err := raw.Write([]byte{b}); err != nil {
							break
						}
						if waitOrStop(time.Second, stop) {
							break
						}
					}
					buf := make([]byte, 1)
					_, _ = raw.Read(buf)
				case 2: // a handshake, then a request one byte every 500 ms
					c := tls.Client(raw, attackerTLS())
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					if err := c.Handshake(); err == nil {
						_ = c.SetDeadline(time.Time{})
						msg := invite(src, fmt.Sprintf("slow-%d", i), "")
						for k := 0; k < len(msg); k++ {
							if _, err := c.Write([]byte{msg[k]}); err != nil {
								break
							}
							if waitOrStop(500*time.Millisecond, stop) {
								break
							}
						}
					}
				}
				close(closed)
				_ = raw.Close()
				dur := time.Since(t0)
				if dur < 500*time.Millisecond {
					refused.Add(1) // closed at accept: over the limits
					waitOrStop(200*time.Millisecond, stop)
				} else {
					held.Add(1)
					mu.Lock()
					heldFor = append(heldFor, dur)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	mu.Lock()
	defer mu.Unlock()
	var longest time.Duration
	for _, h := range heldFor {
		longest = max(longest, h)
	}
	return fmt.Sprintf("%d connection attempts, %d refused at once (%.0f/s), %d held then closed by the daemon or at the end (longest %s)",
		attempts.Load(), refused.Load(), float64(refused.Load())/secs, held.Load(), longest.Round(100*time.Millisecond))
}

func waitOrStop(d time.Duration, stop <-chan struct{}) bool {
	select {
	case <-time.After(d):
		return false
	case <-stop:
		return true
	}
}

var challengeRE = regexp.MustCompile(`nonce="([^"]+)", opaque="([^"]+)"`)

// wrongDigests answers real challenges with a wrong password from n
// addresses (n /24s), over and over, and counts the 403s.
func wrongDigests(d *daemon, n int, stop <-chan struct{}) string {
	var challenges, forbidden, conns atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		src := fmt.Sprintf("127.102.%d.1", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; {
				select {
				case <-stop:
					return
				default:
				}
				raw, err := dialFrom(src, d.addr, 2*time.Second)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				conns.Add(1)
				c := tls.Client(raw, attackerTLS())
				rd := bufio.NewReader(c)
				for {
					select {
					case <-stop:
						_ = c.Close()
						return
					default:
					}
					seq++
					id := fmt.Sprintf("wd-%d-%d", i, seq)
					if _, err := c.Write([]byte(invite(src, id, ""))); err != nil {
						break
					}
					status, hdr := readResponse(c, rd)
					if status == 0 {
						break
					}
					if status != 407 {
						forbidden.Add(1) // throttled: refused before any challenge
						continue
					}
					challenges.Add(1)
					m := challengeRE.FindStringSubmatch(hdr)
					if m == nil {
						break
					}
					uri := fmt.Sprintf("sip:+%s@%s", number, host)
					auth := fmt.Sprintf(`Proxy-Authorization: Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", cnonce="c%d", opaque="%s", qop=auth, nc=00000001`+"\r\n",
						number, host, m[1], uri, digest("guess"+strconv.Itoa(seq), m[1], uri, fmt.Sprintf("c%d", seq)), seq, m[2])
					if _, err := c.Write([]byte(invite(src, id+"b", auth))); err != nil {
						break
					}
					if status, _ := readResponse(c, rd); status == 403 {
						forbidden.Add(1)
					} else if status == 0 {
						break
					}
				}
				_ = c.Close()
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	return fmt.Sprintf("%d challenges answered wrong, %d INVITEs refused 403 (%.0f/s), %d connections",
		challenges.Load(), forbidden.Load(), float64(forbidden.Load())/secs, conns.Load())
}

func digest(pass, nonce, uri, cnonce string) string {
	sum := func(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
	ha1 := sum(number + ":" + host + ":" + pass)
	ha2 := sum("INVITE:" + uri)
	return sum(ha1 + ":" + nonce + ":00000001:" + cnonce + ":auth:" + ha2)
}

// readResponse reads one final response (skipping 100) and returns its
// status and header section; 0 on a read error.
func readResponse(c net.Conn, rd *bufio.Reader) (int, string) {
	for {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var head bytes.Buffer
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return 0, ""
			}
			if line == "\r\n" && head.Len() == 0 {
				continue
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		f := strings.Fields(head.String())
		if len(f) < 2 {
			return 0, ""
		}
		code, _ := strconv.Atoi(f[1])
		if code == 100 {
			continue
		}
		return code, head.String()
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects output written and read at once.
type syncBuffer = testutil.Buffer

// logHistogram counts the daemon's log lines by level and message.
func logHistogram(log string) string {
	re := regexp.MustCompile(`level=(\w+) msg=("[^"]*"|\S+)`)
	count := map[string]int{}
	for _, m := range re.FindAllStringSubmatch(log, -1) {
		count[m[1]+" "+m[2]]++
	}
	var keys []string
	for k := range count {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return count[keys[i]] > count[keys[j]] })
	var parts []string
	for i, k := range keys {
		if i == 12 {
			break
		}
		parts = append(parts, fmt.Sprintf("%d× %s", count[k], k))
	}
	return strings.Join(parts, "; ")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
