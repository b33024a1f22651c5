package interop

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/metasim"
)

// TestInteropSipvicious attacks the real waphone daemon with SIPVicious OSS
// (Debian's sipvicious 0.3.3: svmap, svwar, svcrack) the way a scanner on
// the Internet would, then checks that Meta can still call.
//
// The OSS tools speak SIP over UDP only (they refuse tls://), so socat
// bridges each attacker source: UDP on 127.0.0.1 in, TLS to waphone out,
// bound to its own loopback address. The attacker is 127.0.0.2 and is
// inside sip.allow (the worst case: a scanner the allow-list does not stop);
// 127.0.0.3 is a second attacker used as a control; Meta (metasim) calls
// from 127.0.0.1.
//
// What SIPVicious 0.3.3 does against waphone, read from its source
// (/usr/share/sipvicious/sipvicious):
//   - svcrack -m INVITE does handle 407: it sends Proxy-Authorization with
//     qop=auth, cnonce and nc, and asks for a fresh challenge (an INVITE
//     without credentials) after each 403, so waphone's single-use nonces do
//     not stop it.
//   - svcrack puts no user in the Request-URI (sip:HOST), which waphone
//     answers with 404 before any challenge; svcrack then gives up ("User
//     not found"). The attacks below pass --requesturi to get past that.
//   - svcrack only reports a password on 200 OK. Its INVITE has no SDP, so a
//     correct guess gets 488 from waphone, which svcrack logs as "We got an
//     unknown response" and still ends with "found nothing". Its verdict
//     alone therefore proves nothing: the control run (real password 3rd,
//     from 127.0.0.3) shows that a correct guess is noticed (488 instead of
//     403), and the attack run shows the throttle stops the guessing long
//     before the real password's turn.
//   - Once throttled, every INVITE from the source gets 403, challenges
//     included; svcrack then loops forever sending unauthenticated INVITEs
//     and never takes another password, so it is stopped with SIGINT (it
//     prints its results on ^C).
func TestInteropSipvicious(t *testing.T) {
	for _, tool := range []string{"svmap", "svwar", "svcrack", "socat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian: apt-get install sipvicious socat)", tool)
		}
	}
	const attackerIP, controlIP = "127.0.0.2", "127.0.0.3"
	for _, ip := range []string{attackerIP, controlIP} {
		c, err := net.ListenPacket("udp", ip+":0")
		if err != nil {
			t.Skipf("cannot bind loopback address %s (needs Linux's 127.0.0.0/8 on lo): %v", ip, err)
		}
		c.Close()
	}

	dir := t.TempDir()
	df := newDaemonFiles(t, dir, "sipvicious CA")
	bin, ca, certFile, keyFile, pwFile := df.bin, df.ca, df.certFile, df.keyFile, df.pwFile
	sipPort := freePort(t)
	sipAddr := fmt.Sprintf("127.0.0.1:%d", sipPort)
	cfg := fmt.Sprintf(`[sip]
hostname = %q
listen = %q
cert_file = %q
key_file = %q
number = "+%s"
password_file = %q
allow = ["127.0.0.0/8"]
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
level = "debug"
`, host, sipAddr, certFile, keyFile, number, pwFile, filepath.Join(dir, "control.sock"))
	cfgFile := filepath.Join(dir, "waphone.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	daemonLog, daemonDone := runDaemon(t, ctx, bin, cfgFile, sipAddr)

	attacker := svBridge(t, sipPort, attackerIP)
	control := svBridge(t, sipPort, controlIP)
	home := t.TempDir() // the tools keep sessions under $HOME/.sipvicious
	bridgeTarget := func(b *svBridgeProc) []string {
		return []string{"-p", fmt.Sprint(b.port), "-P", fmt.Sprint(freeUDPPort(t)), "-x", "127.0.0.1", "127.0.0.1"}
	}

	t.Run("svmap finds the endpoint", func(t *testing.T) {
		mark := len(attacker.log.String())
		out, err := svRun(ctx, home, 20*time.Second, nil, "svmap", append([]string{"-v", "-b", "127.0.0.1"}, bridgeTarget(attacker)...)...)
		wire := attacker.log.String()[mark:]
		t.Logf("svmap:\n%s", out)
		if err != nil {
			t.Errorf("svmap: %v", err)
		}
		row := regexp.MustCompile(fmt.Sprintf(`(?m)^\| 127\.0\.0\.1:%d\s+\| (.*?)\s+\|$`, attacker.port)).FindStringSubmatch(out)
		if row == nil {
			t.Fatalf("svmap did not list the endpoint\nwire:\n%s", wire)
		}
		if !regexp.MustCompile(`(?m)^OPTIONS sip:`).MatchString(wire) || !regexp.MustCompile(`(?m)^SIP/2\.0 200 OK`).MatchString(wire) {
			t.Errorf("no OPTIONS answered 200 on the wire:\n%s", wire)
		}
		// waphone's OPTIONS answer carries neither User-Agent nor Server, so
		// svmap names no product; only Allow hints at what it is.
		t.Logf("svmap fingerprint (User-Agent column): %q", row[1])
		if got := svProbe(t, attackerIP, sipAddr, ca.Pool()); !strings.HasPrefix(got, "SIP/2.0 407") {
			t.Errorf("after svmap, an INVITE got %q, want a 407 challenge", got)
		}
	})

	t.Run("svwar INVITE enumeration", func(t *testing.T) {
		exts := []string{"100", "101", "200", "1000", "1001", "admin", "operator",
			"2145551869", "12145551868", "12145551870", number, "+" + number}
		extFile := filepath.Join(dir, "extensions.txt")
		if err := os.WriteFile(extFile, []byte(strings.Join(exts, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		mark := len(attacker.log.String())
		out, err := svRun(ctx, home, 25*time.Second, nil, "svwar", append([]string{"-v", "--force", "-m", "INVITE", "-d", extFile}, bridgeTarget(attacker)...)...)
		wire := attacker.log.String()[mark:]
		t.Logf("svwar:\n%s", out)
		if err != nil {
			t.Errorf("svwar: %v", err)
		}
		// Every response svwar got, by the extension in its To header.
		statusOf := map[string]string{}
		toUser := regexp.MustCompile(`(?m)^To: [^<]*<sip:([^@>]+)@`)
		for _, msg := range svMessages(wire) {
			if !strings.HasPrefix(msg, "SIP/2.0 ") {
				continue
			}
			if m := toUser.FindStringSubmatch(msg); m != nil {
				statusOf[m[1]] = msg[len("SIP/2.0 "):len("SIP/2.0 123")]
			}
		}
		found := map[string]string{}
		for _, m := range regexp.MustCompile(`(?m)^\| (\S+)\s+\| (reqauth|noauth|weird)\s+\|$`).FindAllStringSubmatch(out, -1) {
			found[m[1]] = m[2]
		}
		t.Logf("svwar reported %v; responses on the wire: %v", found, statusOf)
		// Every extension, the business number included, is challenged the
		// same way before waphone looks at the Request-URI, so svwar can
		// single out nothing. (svwar 0.3.3 gives up at the first 407 to an
		// INVITE, even with --force: it has no "proxy-auth for everything"
		// case, and calls it an unknown response.)
		if len(found) > 0 || !strings.Contains(out, "found nothing") {
			t.Errorf("svwar distinguished extensions %v: every INVITE must get the same 407", found)
		}
		for ext, st := range statusOf {
			if st != "407" {
				t.Errorf("extension %q got %s, want the same 407 as every other", ext, st)
			}
		}
		if len(statusOf) == 0 {
			t.Error("svwar got no answer at all")
		}
	})

	// svcrack's dictionaries: the real password is 3rd for the control and
	// 20th for the attack, after waphone's limit of 5 failures a minute.
	dict := func(name string, realAt int) string {
		var words []string
		for i := 1; i <= 22; i++ {
			if i == realAt {
				words = append(words, password)
			} else {
				words = append(words, fmt.Sprintf("guess%02d", i))
			}
		}
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(strings.Join(words, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	crackArgs := func(b *svBridgeProc, dictFile string) []string {
		return append([]string{"-vvv", "-m", "INVITE", "-u", number, "-d", dictFile,
			"--requesturi", fmt.Sprintf("sip:%s@127.0.0.1", number)}, bridgeTarget(b)...)
	}
	tried := func(out string) []string {
		var pw []string
		for _, m := range regexp.MustCompile(`(?m)^DEBUG:ASipOfRedWine:trying (.*)$`).FindAllStringSubmatch(out, -1) {
			pw = append(pw, m[1])
		}
		return pw
	}
	count := func(s, re string) int { return len(regexp.MustCompile(re).FindAllStringIndex(s, -1)) }

	t.Run("svcrack control: a correct guess is noticed", func(t *testing.T) {
		mark := len(control.log.String())
		out, err := svRun(ctx, home, 20*time.Second, func(out string) bool {
			return strings.Contains(out, "unknown response") || strings.Contains(out, "no more passwords")
		}, "svcrack", crackArgs(control, dict("control.txt", 3))...)
		wire := control.log.String()[mark:]
		if err != nil {
			t.Errorf("svcrack: %v", err)
		}
		pw := tried(out)
		t.Logf("svcrack tried %q; responses: %d×407, %d×403, %d×488", pw,
			count(wire, `(?m)^SIP/2\.0 407 `), count(wire, `(?m)^SIP/2\.0 403 `), count(wire, `(?m)^SIP/2\.0 488 `))
		if count(wire, `(?m)^Proxy-Authorization: Digest username="`+number+`"`) == 0 {
			t.Fatalf("svcrack never answered the 407:\n%s\nwire:\n%s", out, wire)
		}
		// The 3rd guess passes the digest check; waphone then refuses the
		// INVITE for lack of SDP. svcrack does not call that a success.
		if len(pw) < 3 || pw[2] != password || count(wire, `(?m)^SIP/2\.0 488 `) != 1 {
			t.Errorf("want the 3rd guess (the real password) to pass authentication (488 for the missing SDP)\n%s\nwire:\n%s", out, wire)
		}
		if n := svFailures(daemonLog.String(), controlIP); n != 2 {
			t.Errorf("waphone logged %d failed authentications from %s, want 2", n, controlIP)
		}
	})

	t.Run("svcrack is throttled", func(t *testing.T) {
		mark := len(attacker.log.String())
		start := time.Now()
		out, err := svRun(ctx, home, 20*time.Second, func(out string) bool {
			if strings.Contains(out, "unknown response") || strings.Contains(out, "no more passwords") {
				return true // the throttle did not hold: stop and report
			}
			// Throttled: the failures stopped at the limit and svcrack keeps
			// getting 403 without any further digest check.
			fails := svFailures(daemonLog.String(), attackerIP)
			return fails >= 5 && count(attacker.log.String()[mark:], `(?m)^SIP/2\.0 403 `) >= fails+50
		}, "svcrack", crackArgs(attacker, dict("attack.txt", 20))...)
		wire := attacker.log.String()[mark:]
		if err != nil {
			t.Errorf("svcrack: %v", err)
		}
		pw := tried(out)
		fails := svFailures(daemonLog.String(), attackerIP)
		n407, n403 := count(wire, `(?m)^SIP/2\.0 407 `), count(wire, `(?m)^SIP/2\.0 403 `)
		t.Logf("svcrack ran %s, tried %d passwords %q; waphone checked %d digests (logged failures), "+
			"answered %d×407 and %d×403 (%d of them without checking); svcrack's verdict: %s",
			time.Since(start).Round(time.Millisecond), len(pw), pw, fails, n407, n403, n403-fails, svVerdict(out))
		if strings.Contains(out, "The password for") || strings.Contains(out, "| Password") || !strings.Contains(out, "found nothing") {
			t.Errorf("svcrack claims a password:\n%s", out)
		}
		for _, p := range pw {
			if p == password {
				t.Errorf("svcrack got to try the real password (20th)")
			}
		}
		if count(wire, `(?m)^SIP/2\.0 488 `) != 0 {
			t.Error("a guess passed authentication")
		}
		if fails != 5 {
			// 5 is the limit; attempts are booked before they are checked,
			// so concurrent guesses cannot overrun it.
			t.Errorf("waphone checked %d digests from %s, want the throttle to stop it at 5", fails, attackerIP)
		}
		if n403-fails < 50 {
			t.Errorf("only %d INVITEs were refused without a check: no throttling seen", n403-fails)
		}
		// After the attack the attacker's source is refused outright, even
		// its challenges, while other sources are still challenged.
		if got := svProbe(t, attackerIP, sipAddr, ca.Pool()); !strings.HasPrefix(got, "SIP/2.0 403") {
			t.Errorf("INVITE from the throttled %s got %q, want 403", attackerIP, got)
		}
		if got := svProbe(t, "127.0.0.1", sipAddr, ca.Pool()); !strings.HasPrefix(got, "SIP/2.0 407") {
			t.Errorf("INVITE from 127.0.0.1 got %q, want a 407 challenge", got)
		}
	})

	if strings.Contains(daemonLog.String(), "incoming call") {
		t.Error("an attacker's INVITE reached the phone (incoming call logged)")
	}

	t.Run("Meta still calls from another source", func(t *testing.T) {
		sim, err := metasim.Start(ctx, metasim.Config{
			BusinessNumber: "+" + number, BusinessHost: host, Password: password, BusinessRoots: ca.Pool(),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sim.Close()
		callCtx, callCancel := context.WithTimeout(ctx, 15*time.Second)
		defer callCancel()
		call, err := sim.Call(callCtx, sipAddr, metasim.CallOptions{From: "+12195550714"})
		if err != nil {
			t.Fatalf("metasim call: %v", err)
		}
		if call.Status() != 200 || !call.Challenged() {
			t.Fatalf("metasim call: status %d, challenged %v; want 200 after a 407", call.Status(), call.Challenged())
		}
		if err := call.Hangup(callCtx); err != nil {
			t.Errorf("hangup: %v", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(daemonLog.String(), "call ended") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		log := daemonLog.String()
		for _, want := range []string{"incoming call", call.WACID(), "call ended"} {
			if !strings.Contains(log, want) {
				t.Errorf("waphone log lacks %q", want)
			}
		}
	})

	select {
	case <-daemonDone:
		t.Fatal("waphone exited during the attack")
	default:
	}
	log := daemonLog.String()
	if strings.Contains(log, "panic") || strings.Contains(log, password) {
		t.Fatal("waphone log has a panic or the password")
	}
}

// svBridgeProc is one socat: UDP on 127.0.0.1:port in, TLS to waphone out
// from src. log is socat's -v transcript of everything it relayed.
type svBridgeProc struct {
	port int
	log  *syncBuffer
}

func svBridge(t *testing.T, sipPort int, src string) *svBridgeProc {
	t.Helper()
	b := &svBridgeProc{port: freeUDPPort(t), log: &syncBuffer{}}
	// -T: the per-peer children quit when idle. verify=0: an attacker does
	// not care who it talks to.
	cmd := exec.Command("socat", "-v", "-T", "15",
		fmt.Sprintf("UDP-LISTEN:%d,bind=127.0.0.1,fork", b.port),
		fmt.Sprintf("OPENSSL:127.0.0.1:%d,verify=0,bind=%s", sipPort, src))
	cmd.Stderr = b.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // fork children with it, ended together
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		_ = cmd.Wait()
	})
	// Wait until socat listens: its UDP port is then taken.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", b.port))
		if err != nil {
			return b
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("socat never listened on udp 127.0.0.1:%d\n%s", b.port, b.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// svRun runs a SIPVicious tool until it exits, stop says so, or max passes;
// then it sends SIGINT, on which the tools print their results and exit.
func svRun(ctx context.Context, home string, max time.Duration, stop func(string) bool, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(max)
wait:
	for {
		select {
		case err := <-done:
			return out.String(), err
		case <-tick.C:
			if stop != nil && stop(out.String()) {
				break wait
			}
		case <-timeout:
			break wait
		}
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("%s ignored SIGINT", name)
	}
}

// svFailures counts waphone's log lines for digest checks that failed for src.
func svFailures(log, src string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "failed digest authentication") && strings.Contains(line, "remote="+src+":") {
			n++
		}
	}
	return n
}

// svMessages splits a socat -v transcript into the messages it relayed.
func svMessages(transcript string) []string {
	var msgs []string
	for _, part := range regexp.MustCompile(`(?m)^[<>] \d{4}/\d\d/\d\d [^\n]*length=\d+[^\n]*\n`).Split(transcript, -1) {
		if part = strings.TrimSpace(part); part != "" {
			msgs = append(msgs, part)
		}
	}
	return msgs
}

// svVerdict is svcrack's closing result line.
func svVerdict(out string) string {
	for _, s := range []string{"found nothing", "cracked users"} {
		if strings.Contains(out, s) {
			return s
		}
	}
	return "none"
}

// svProbe sends one INVITE without credentials over TLS from src and returns
// the status line of waphone's answer.
func svProbe(t *testing.T, src, addr string, roots *x509.CertPool) string {
	t.Helper()
	d := &tls.Dialer{
		NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second},
		Config:    &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12},
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Errorf("probe from %s: %v", src, err)
		return ""
	}
	defer conn.Close()
	id := fmt.Sprintf("%x", time.Now().UnixNano())
	_, err = fmt.Fprintf(conn, "INVITE sip:+%[1]s@%[2]s;transport=tls SIP/2.0\r\n"+
		"Via: SIP/2.0/TLS %[3]s:5061;branch=z9hG4bK%[4]s\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:probe@%[3]s>;tag=%[4]s\r\n"+
		"To: <sip:+%[1]s@%[2]s>\r\n"+
		"Call-ID: probe-%[4]s\r\n"+
		"CSeq: 1 INVITE\r\n"+
		"Contact: <sip:probe@%[3]s:5061;transport=tls>\r\n"+
		"Content-Length: 0\r\n\r\n", number, host, src, id)
	if err != nil {
		t.Errorf("probe from %s: %v", src, err)
		return ""
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Errorf("probe from %s: no answer: %v", src, err)
	}
	return strings.TrimSpace(line)
}
