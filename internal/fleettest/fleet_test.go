//go:build fleet

package fleettest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/dsp"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/internal/testutil"
)

const (
	number     = "+12145551869"
	publicName = "sip.fleet.example"  // the business's SIP host at "Meta": on the edge's public certificate
	deskName   = "edge.fleet.example" // the edge's desk port, on its fleet-CA certificate
	metaPass   = "fleet-meta-password"
	user       = "+12195550714"
	metaToneHz = 1000
)

// fleet is the whole set-up on loopback.
type fleet struct {
	t       *testing.T
	bin     string
	dir     string
	metaCA  *testpki.CA
	fleetCA *testpki.CA
	meta    *metasim.Sim
	edge    *edge
	desks   []*desk
}

func TestFleet(t *testing.T) {
	if _, err := exec.LookPath("kamailio"); err != nil {
		testutil.Missing(t, "kamailio not installed (apt-get install kamailio kamailio-tls-modules)")
	}
	f := newFleet(t)
	f.edge.start(t)
	for i, tone := range []int{440, 550, 660} {
		f.desks = append(f.desks, f.startDesk(fmt.Sprintf("desk%d", i+1), i+1, tone, f.fleetCA))
	}
	f.waitRegistered(3, 20*time.Second)
	ctx := context.Background()

	t.Run("wrong password gets 403", func(t *testing.T) {
		c, err := f.meta.Call(ctx, f.edge.metaAddr, metasim.CallOptions{From: user, Password: "not-the-password"})
		if err != nil {
			t.Fatal(err)
		}
		if c.Status() != 403 {
			t.Fatalf("status %d, want 403", c.Status())
		}
		f.wantStates(t, "idle", 0, 1, 2)
	})

	t.Run("all ring, one answers, audio both ways, Meta hangs up", func(t *testing.T) {
		c := f.ringAll(t)
		answered := time.Now()
		f.desks[1].ctl(t, "answer")
		if err := waitAnswer(c); err != nil {
			t.Fatal(err)
		}
		if c.Status() != 200 {
			t.Fatalf("status %d", c.Status())
		}
		// The others stop ringing (the edge CANCELs them).
		f.waitStates(t, "idle", 10*time.Second, 0, 2)
		t.Logf("the other desks were idle %s after the answer", time.Since(answered).Round(time.Millisecond))
		if st := f.desks[1].state(t); st != "talking" {
			t.Fatalf("desk2 is %s", st)
		}
		time.Sleep(2 * time.Second) // audio both ways
		if ok, r := dsp.DetectTone(c.Recorded(), 48000, 550); !ok {
			t.Fatalf("Meta did not hear desk2's 550 Hz tone (ratio %.2f)", r)
		}
		if err := c.Hangup(ctx); err != nil {
			t.Fatal(err)
		}
		f.waitStates(t, "idle", 10*time.Second, 1)
		f.desks[1].wantHeard(t, metaToneHz)
		for _, i := range []int{0, 2} {
			rec := f.desks[i].lastCall(t)
			t.Logf("%s history: ended_by=%q reason=%q", f.desks[i].name, rec.EndedBy, rec.Reason)
			if !strings.Contains(rec.EndedBy+rec.Reason, "elsewhere") {
				t.Errorf("%s: history says %q (%q), want answered elsewhere", f.desks[i].name, rec.EndedBy, rec.Reason)
			}
		}
		if rec := f.desks[1].lastCall(t); rec.EndedBy != "remote-bye" {
			t.Errorf("desk2 history: %+v", rec)
		}
	})

	t.Run("a desk hangs up", func(t *testing.T) {
		c := f.ringAll(t)
		f.desks[0].ctl(t, "answer")
		if err := waitAnswer(c); err != nil {
			t.Fatal(err)
		}
		f.waitStates(t, "idle", 10*time.Second, 1, 2)
		f.desks[0].ctl(t, "hangup")
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("Meta did not see the desk's BYE")
		}
		if by := c.EndedBy(); by != "business" {
			t.Fatalf("ended by %q", by)
		}
		f.waitStates(t, "idle", 10*time.Second, 0)
	})

	t.Run("a busy desk does not ring", func(t *testing.T) {
		first := f.ringAll(t)
		f.desks[0].ctl(t, "answer")
		if err := waitAnswer(first); err != nil {
			t.Fatal(err)
		}
		f.waitStates(t, "idle", 10*time.Second, 1, 2)
		second, err := f.meta.Call(ctx, f.edge.metaAddr, metasim.CallOptions{From: "+12195550715", ReturnOnRinging: true})
		if err != nil {
			t.Fatal(err)
		}
		f.waitStates(t, "ringing", 10*time.Second, 1, 2)
		if st := f.desks[0].state(t); st != "talking" {
			t.Fatalf("the busy desk is %s", st)
		}
		f.desks[2].ctl(t, "answer")
		if err := waitAnswer(second); err != nil || second.Status() != 200 {
			t.Fatalf("second call: %d %v", second.Status(), err)
		}
		f.waitStates(t, "idle", 10*time.Second, 1)
		_ = first.Hangup(ctx)
		_ = second.Hangup(ctx)
		f.waitStates(t, "idle", 10*time.Second, 0, 1, 2)
	})

	t.Run("a desk calls out as the business", func(t *testing.T) {
		f.deskCalls(t, f.meta, 2, 660)
	})

	t.Run("a killed desk does not stop the others", func(t *testing.T) {
		d := f.desks[2]
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
		c, err := f.meta.Call(ctx, f.edge.metaAddr, metasim.CallOptions{From: user, ReturnOnRinging: true})
		if err != nil {
			t.Fatal(err)
		}
		f.waitStates(t, "ringing", 10*time.Second, 0, 1)
		f.desks[1].ctl(t, "answer")
		if err := waitAnswer(c); err != nil || c.Status() != 200 {
			t.Fatalf("call with a dead desk: %d %v", c.Status(), err)
		}
		_ = c.Hangup(ctx)
		f.waitStates(t, "idle", 10*time.Second, 0, 1)
		f.desks[2] = f.startDesk(d.name, 3, 660, f.fleetCA)
		f.waitRegistered(3, 20*time.Second)
	})

	t.Run("a desk with a certificate from another CA is refused", func(t *testing.T) {
		rogueCA, err := testpki.NewCA("rogue CA")
		if err != nil {
			t.Fatal(err)
		}
		d := f.startDesk("rogue", 4, 770, rogueCA)
		if !testutil.Poll(20*time.Second, func() bool { return strings.Contains(d.log.String(), "registration at the edge failed") }) {
			t.Fatalf("the rogue desk never failed to register:\n%s", tail(d.log.String(), 20))
		}
		if n := f.edge.registered(t); n != 3 {
			t.Fatalf("%d desks registered, want the 3 real ones", n)
		}
		d.stop()
	})

	t.Run("certificate swap without a restart (kamcmd tls.reload)", func(t *testing.T) {
		if out, err := exec.Command("kamcmd", "-s", "unix:"+f.edge.ctl, "tls.reload").CombinedOutput(); err != nil {
			t.Fatalf("kamcmd tls.reload: %v: %s", err, out)
		}
		c := f.ringAll(t)
		if err := c.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		f.waitStates(t, "idle", 10*time.Second, 0, 1, 2)
	})

	t.Run("edge restart: desks register again and ring", func(t *testing.T) {
		f.edge.stop(t)
		start := time.Now()
		f.edge.start(t)
		f.waitRegistered(3, 60*time.Second)
		t.Logf("FIGURE re-register after edge restart: all 3 desks back %s after the edge was started again", time.Since(start).Round(time.Millisecond))
		c := f.ringAll(t)
		if err := c.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		f.waitStates(t, "idle", 10*time.Second, 0, 1, 2)
	})

	t.Run("figures", func(t *testing.T) {
		f.figures(t)
	})

	t.Run("a gateway certificate for another name is refused", func(t *testing.T) {
		impostor, err := metasim.Start(ctx, metasim.Config{
			Hostname: "impostor.example", CA: f.metaCA, BusinessHost: publicName, BusinessNumber: number,
			Password: metaPass, BusinessRoots: f.metaCA.Pool(),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer impostor.Close()
		f.edge.stop(t)
		f.edge.render(t, impostor.Addr())
		f.edge.start(t)
		f.waitRegistered(3, 60*time.Second)
		out, err := f.desks[0].run(40*time.Second, "call", user)
		if err == nil {
			t.Fatalf("the call through an impostor gateway went up: %s", out)
		}
		select {
		case c := <-impostor.Incoming():
			t.Fatalf("the impostor got an authenticated call (status %d)", c.Status())
		default:
		}
		if !strings.Contains(f.edge.log.String(), "is not wa.meta.vc") {
			t.Fatalf("the edge did not say why it dropped the reply:\n%s", tail(f.edge.log.String(), 30))
		}
		t.Logf("desk's call failed as it should: %s", strings.TrimSpace(out))
		f.edge.stop(t)
		f.edge.render(t, f.meta.Addr())
		f.edge.start(t)
	})
}

// ringAll places Meta's call and waits until every desk rings.
func (f *fleet) ringAll(t *testing.T) *metasim.Call {
	t.Helper()
	c, err := f.meta.Call(context.Background(), f.edge.metaAddr, metasim.CallOptions{From: user, ReturnOnRinging: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status() >= 300 {
		t.Fatalf("Meta's call got %d", c.Status())
	}
	f.waitStates(t, "ringing", 10*time.Second, 0, 1, 2)
	return c
}

// deskCalls has desk i place a call; Meta (sim) must see the business
// number, and the edge must have answered its double challenge.
func (f *fleet) deskCalls(t *testing.T, sim *metasim.Sim, i int, tone float64) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		out, err := f.desks[i].run(30*time.Second, "call", user)
		if err != nil {
			err = fmt.Errorf("%v: %s", err, out)
		}
		done <- err
	}()
	var c *metasim.Call
	select {
	case c = <-sim.Incoming():
	case <-time.After(20 * time.Second):
		t.Fatal("Meta got no call from the desk")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	req := c.Request()
	if from := req.From(); from == nil || from.Address.User != number {
		t.Fatalf("Meta saw From %v, want the business number", req.From())
	}
	pa := req.GetHeader("Proxy-Authorization")
	if pa == nil || !strings.Contains(pa.Value(), "username=\"12145551869\"") {
		t.Fatalf("Meta's challenge was not answered by the edge: %v", pa)
	}
	t.Logf("the edge answered Meta's SHA-256+MD5 challenge with: %.80s…", pa.Value())
	if c.Status() != 200 {
		t.Fatalf("status %d", c.Status())
	}
	heard := func() bool { ok, _ := dsp.DetectTone(c.Recorded(), 48000, tone); return ok }
	if !testutil.Poll(10*time.Second, heard) {
		_, r := dsp.DetectTone(c.Recorded(), 48000, tone)
		t.Fatalf("Meta did not hear the desk's %.0f Hz (ratio %.2f, %d samples)", tone, r, len(c.Recorded()))
	}
	time.Sleep(time.Second) // and Meta's tone reaches the desk
	if err := c.Hangup(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.waitStates(t, "idle", 10*time.Second, i)
	f.desks[i].wantHeard(t, metaToneHz)
}

func waitAnswer(c *metasim.Call) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return c.WaitAnswer(ctx)
}

func newFleet(t *testing.T) *fleet {
	f := &fleet{t: t, bin: buildWaphone(t), dir: t.TempDir()}
	var err error
	if f.metaCA, err = testpki.NewCA("public CA"); err != nil {
		t.Fatal(err)
	}
	if f.fleetCA, err = testpki.NewCA("fleet CA"); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&syncBuffer{}, nil))
	f.meta, err = metasim.Start(context.Background(), metasim.Config{
		CA: f.metaCA, BusinessHost: publicName, BusinessNumber: number, Password: metaPass,
		BusinessRoots: f.metaCA.Pool(), Challenge: metasim.ChallengeSHA256AndMD5, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.meta.Close() })
	f.edge = newEdge(t, f)
	return f
}

func buildWaphone(t *testing.T) string {
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

func write(t *testing.T, path string, data []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// edge is the Kamailio process and its files.
type edge struct {
	f                  *fleet
	dir                string
	metaAddr, deskAddr string
	ctl                string
	cmd                *exec.Cmd
	log                *syncBuffer
}

func newEdge(t *testing.T, f *fleet) *edge {
	e := &edge{f: f, dir: filepath.Join(f.dir, "edge")}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.metaAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e.deskAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e.ctl = filepath.Join(e.dir, "ctl.sock")
	pub, pubKey, err := f.metaCA.Issue(publicName)
	if err != nil {
		t.Fatal(err)
	}
	fl, flKey, err := f.fleetCA.Issue(deskName)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(e.dir, "fullchain.pem"), pub, 0o644)
	write(t, filepath.Join(e.dir, "privkey.pem"), pubKey, 0o600)
	write(t, filepath.Join(e.dir, "fleet-edge.pem"), fl, 0o644)
	write(t, filepath.Join(e.dir, "fleet-edge.key"), flKey, 0o600)
	write(t, filepath.Join(e.dir, "fleet-ca.pem"), f.fleetCA.PEM, 0o644)
	write(t, filepath.Join(e.dir, "meta-ca.pem"), f.metaCA.PEM, 0o644)
	write(t, filepath.Join(e.dir, "meta-password"), []byte(metaPass+"\n"), 0o600)
	e.render(t, f.meta.Addr())
	return e
}

// render writes edge.toml (Meta at gateway) and runs `waphone edge-config`.
func (e *edge) render(t *testing.T, gateway string) {
	t.Helper()
	toml := fmt.Sprintf(`number = %q
public_name = %q
meta_password_file = %q
[meta]
listen = %q
cert_file = %q
key_file = %q
gateway_addr = %q
ca_file = %q
[desks]
listen = %q
name = %q
cert_file = %q
key_file = %q
ca_file = %q
ring_timeout = "60s"
[kamailio]
dir = %q
ctl_socket = "unix:%s"
log_level = "info"
children = 2
`, number, publicName, filepath.Join(e.dir, "meta-password"), e.metaAddr, filepath.Join(e.dir, "fullchain.pem"),
		filepath.Join(e.dir, "privkey.pem"), gateway, filepath.Join(e.dir, "meta-ca.pem"), e.deskAddr, deskName,
		filepath.Join(e.dir, "fleet-edge.pem"), filepath.Join(e.dir, "fleet-edge.key"), filepath.Join(e.dir, "fleet-ca.pem"),
		e.dir, e.ctl)
	path := write(t, filepath.Join(e.dir, "edge.toml"), []byte(toml), 0o644)
	if out, err := exec.Command(e.f.bin, "edge-config", "-config", path).CombinedOutput(); err != nil {
		t.Fatalf("waphone edge-config: %v\n%s", err, out)
	}
}

func (e *edge) start(t *testing.T) {
	t.Helper()
	if e.log == nil {
		e.log = &syncBuffer{}
		t := e.f.t
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("edge log (tail):\n%s", tail(e.log.String(), 80))
				if p := os.Getenv("FLEET_EDGE_LOG"); p != "" {
					_ = os.WriteFile(p, []byte(e.log.String()), 0o644)
				}
			}
		})
	}
	fmt.Fprintf(e.log, "===== kamailio starting %s\n", time.Now().Format(time.StampMilli))
	run := filepath.Join(e.dir, "run")
	_ = os.MkdirAll(run, 0o755)
	e.cmd = exec.Command("kamailio", "-f", filepath.Join(e.dir, "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "8",
		"-Y", run, "-P", filepath.Join(run, "kamailio.pid"))
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its children die with it
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := e.cmd
	e.f.t.Cleanup(func() { // the whole test's: a subtest's would stop the edge at its end
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
	})
	// Ready once its control socket answers (the ports are bound before
	// the workers are up).
	if !testutil.Poll(20*time.Second, func() bool {
		return exec.Command("kamcmd", "-s", "unix:"+e.ctl, "core.uptime").Run() == nil
	}) {
		t.Fatalf("kamailio did not start:\n%s", tail(e.log.String(), 40))
	}
}

func (e *edge) stop(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// registered counts the desks bound to the number at the edge.
func (e *edge) registered(t *testing.T) int {
	out, err := exec.Command("kamcmd", "-s", "unix:"+e.ctl, "ul.dump").CombinedOutput()
	if err != nil {
		return -1
	}
	return strings.Count(string(out), ".desk.invalid")
}

// cpu is the CPU time (user+system) of Kamailio's processes so far.
func (e *edge) cpu(t *testing.T) time.Duration {
	pgid := e.cmd.Process.Pid
	ents, _ := os.ReadDir("/proc")
	var ticks int64
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(raw)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		// fields[2] is the process group, [11] utime, [12] stime (man 5 proc, from field 3 on)
		if len(fields) < 13 || fields[2] != strconv.Itoa(pgid) {
			continue
		}
		u, _ := strconv.ParseInt(fields[11], 10, 64)
		st, _ := strconv.ParseInt(fields[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

func (f *fleet) waitRegistered(n int, within time.Duration) {
	f.t.Helper()
	if !testutil.Poll(within, func() bool { return f.edge.registered(f.t) == n }) {
		var logs strings.Builder
		for _, d := range f.desks {
			fmt.Fprintf(&logs, "--- %s\n%s\n", d.name, tail(d.log.String(), 15))
		}
		f.t.Fatalf("%d desks registered, want %d\nedge:\n%s\n%s", f.edge.registered(f.t), n, tail(f.edge.log.String(), 30), logs.String())
	}
}

// desk is one waphone daemon in fleet mode.
type desk struct {
	f    *fleet
	name string
	dir  string
	cfg  string
	cmd  *exec.Cmd
	log  *syncBuffer
}

func (f *fleet) startDesk(name string, n, toneHz int, ca *testpki.CA) *desk {
	t := f.t
	d := &desk{f: f, name: name, dir: filepath.Join(f.dir, name), log: &syncBuffer{}}
	if err := os.MkdirAll(filepath.Join(d.dir, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(name)
	if err != nil {
		t.Fatal(err)
	}
	certFile := write(t, filepath.Join(d.dir, "desk.pem"), cert, 0o644)
	keyFile := write(t, filepath.Join(d.dir, "desk.key"), key, 0o600)
	caFile := write(t, filepath.Join(d.dir, "fleet-ca.pem"), f.fleetCA.PEM, 0o644)
	// Each desk has its own loopback address, with SDES media. pion's ICE
	// gathers only addresses an interface lists, and lo lists 127.0.0.1
	// alone: the DTLS desk (desk3) uses that one.
	kx, bind := "sdes", fmt.Sprintf("127.0.0.%d", 10+n)
	if n == 3 {
		kx, bind = "dtls", "127.0.0.1"
	}
	cfg := fmt.Sprintf(`[sip]
hostname = %q
number = %q
[media]
key_exchange = %q
bind_address = %q
rtp_ports = "%d-%d"
[audio]
capture = "tone:%d"
playback = "wav:%s"
[phone]
answer = "button"
ring_timeout = "90s"
control_socket = %q
[state]
dir = %q
[log]
level = "debug"
[fleet]
edge = %q
edge_name = %q
edge_ca_file = %q
cert_file = %q
key_file = %q
device = %q
`, publicName, number, kx, bind, 32000+100*n, 32099+100*n, toneHz, filepath.Join(d.dir, "heard.wav"),
		filepath.Join(d.dir, "control.sock"), filepath.Join(d.dir, "state"),
		f.edge.deskAddr, deskName, caFile, certFile, keyFile, name)
	d.cfg = write(t, filepath.Join(d.dir, "waphone.toml"), []byte(cfg), 0o644)
	d.cmd = exec.Command(f.bin, "run", "-config", d.cfg)
	d.cmd.Env = append(os.Environ(), "STATE_DIRECTORY=")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", d.name, tail(d.log.String(), 40))
		}
	})
	return d
}

func (d *desk) stop() {
	if d.cmd.ProcessState != nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-done
	}
}

// run runs a waphone client subcommand against this desk's config.
func (d *desk) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.f.bin, append([]string{args[0], "-config", d.cfg}, args[1:]...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (d *desk) ctl(t *testing.T, cmd string) {
	t.Helper()
	if out, err := d.run(10*time.Second, cmd); err != nil {
		t.Fatalf("waphone %s on %s: %v: %s", cmd, d.name, err, out)
	}
}

func (d *desk) state(t *testing.T) string {
	out, err := d.run(5*time.Second, "status")
	if err != nil {
		return "unreachable"
	}
	for _, l := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(l, "state: "); ok {
			return strings.TrimSpace(s)
		}
	}
	return "?"
}

type record struct {
	EndedBy string `json:"ended_by"`
	Reason  string `json:"reason"`
}

func (d *desk) lastCall(t *testing.T) record {
	t.Helper()
	out, err := d.run(5*time.Second, "history", "--json")
	if err != nil {
		t.Fatalf("history of %s: %v: %s", d.name, err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var r record
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("history of %s: %v: %q", d.name, err, out)
	}
	return r
}

// wantHeard checks the desk's recording of its last call for Meta's tone.
func (d *desk) wantHeard(t *testing.T, hz float64) {
	t.Helper()
	var pcm []int16
	testutil.Poll(5*time.Second, func() bool {
		raw, err := os.ReadFile(filepath.Join(d.dir, "heard.wav"))
		if err != nil || len(raw) < 44 {
			return false
		}
		pcm = make([]int16, (len(raw)-44)/2)
		_ = binary.Read(bytes.NewReader(raw[44:44+2*len(pcm)]), binary.LittleEndian, pcm)
		return len(pcm) > 48000
	})
	if ok, r := dsp.DetectTone(pcm, 48000, hz); !ok {
		t.Fatalf("%s did not hear Meta's %.0f Hz (ratio %.2f, %d samples)", d.name, hz, r, len(pcm))
	}
}

func (f *fleet) wantStates(t *testing.T, want string, idx ...int) {
	t.Helper()
	for _, i := range idx {
		if st := f.desks[i].state(t); st != want {
			t.Fatalf("%s is %s, want %s", f.desks[i].name, st, want)
		}
	}
}

func (f *fleet) waitStates(t *testing.T, want string, within time.Duration, idx ...int) {
	t.Helper()
	for _, i := range idx {
		d := f.desks[i]
		if !testutil.Poll(within, func() bool { return d.state(t) == want }) {
			t.Fatalf("%s is %s, want %s\n%s", d.name, d.state(t), want, tail(d.log.String(), 30))
		}
	}
}

// figures measures what the report asks for: call setup through the edge
// against a phone Meta reaches directly, and the edge's CPU per call.
func (f *fleet) figures(t *testing.T) {
	const n = 20
	ctx := context.Background()
	ringing := func(target string) (time.Duration, error) {
		start := time.Now()
		c, err := f.meta.Call(ctx, target, metasim.CallOptions{From: user, ReturnOnRinging: true})
		if err != nil {
			return 0, err
		}
		took := time.Since(start)
		if c.Status() >= 300 {
			return 0, fmt.Errorf("status %d", c.Status())
		}
		_ = c.Cancel(ctx)
		return took, nil
	}
	var viaEdge []time.Duration
	cpu0 := f.edge.cpu(t)
	for range n {
		d, err := ringing(f.edge.metaAddr)
		if err != nil {
			t.Fatal(err)
		}
		viaEdge = append(viaEdge, d)
		f.waitStates(t, "idle", 10*time.Second, 0, 1, 2)
	}
	cpu := f.edge.cpu(t) - cpu0

	direct := f.startDirect(t)
	var viaDirect []time.Duration
	for range n {
		d, err := ringing(direct.addr)
		if err != nil {
			t.Fatal(err)
		}
		viaDirect = append(viaDirect, d)
		if !testutil.Poll(10*time.Second, func() bool { return direct.state(t) == "idle" }) {
			t.Fatal("the direct phone did not go idle")
		}
	}
	me, md := median(viaEdge), median(viaDirect)
	t.Logf("FIGURE setup (INVITE to first 180, metasim's clock, %d calls each, 3 desks): through the edge median %s, direct median %s, ratio %.2f",
		n, me.Round(100*time.Microsecond), md.Round(100*time.Microsecond), float64(me)/float64(md))
	t.Logf("FIGURE edge CPU: %s for %d ringing+cancelled calls to 3 desks = %s per call (/proc utime+stime of all Kamailio processes, 10 ms ticks)",
		cpu, n, cpu/n)
}

type directPhone struct {
	*desk
	addr string
}

// startDirect runs one waphone Meta reaches directly (no edge), with the
// same media and answer policy, for the setup-time comparison.
func (f *fleet) startDirect(t *testing.T) *directPhone {
	d := &desk{f: f, name: "direct", dir: filepath.Join(f.dir, "direct"), log: &syncBuffer{}}
	_ = os.MkdirAll(filepath.Join(d.dir, "state"), 0o755)
	cert, key, err := f.metaCA.Issue(publicName)
	if err != nil {
		t.Fatal(err)
	}
	certFile := write(t, filepath.Join(d.dir, "cert.pem"), cert, 0o644)
	keyFile := write(t, filepath.Join(d.dir, "key.pem"), key, 0o600)
	pw := write(t, filepath.Join(d.dir, "pw"), []byte(metaPass+"\n"), 0o600)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := fmt.Sprintf(`[sip]
hostname = %q
number = %q
listen = %q
cert_file = %q
key_file = %q
password_file = %q
[media]
bind_address = "127.0.0.20"
rtp_ports = "33000-33099"
[audio]
capture = "tone:440"
[phone]
answer = "button"
early_media = false
control_socket = %q
[state]
dir = %q
`, publicName, number, addr, certFile, keyFile, pw, filepath.Join(d.dir, "control.sock"), filepath.Join(d.dir, "state"))
	d.cfg = write(t, filepath.Join(d.dir, "waphone.toml"), []byte(cfg), 0o644)
	d.cmd = exec.Command(f.bin, "run", "-config", d.cfg)
	d.cmd.Env = append(os.Environ(), "STATE_DIRECTORY=")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	if !testutil.Poll(20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("direct phone did not start:\n%s", tail(d.log.String(), 30))
	}
	return &directPhone{desk: d, addr: addr}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
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

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
