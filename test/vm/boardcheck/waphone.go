//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/waphone/waphone/control"
	"github.com/waphone/waphone/internal/testpki"
)

const (
	business  = "+12145551869"
	bizHost   = "meta-voip.example.com"
	caller    = "+12195550714"
	speedDial = "+12195550999"
	ctlSocket = "/run/waphone/control.sock"
	etcDir    = "/etc/waphone"
)

// status is the part of `waphone status` the checks read.
type status struct {
	State string `json:"state"`
	Muted bool   `json:"muted"`
	Audio *struct {
		Device    string `json:"device"`
		Plugged   bool   `json:"plugged"`
		Unplugs   uint64 `json:"unplugs"`
		Callbacks uint64 `json:"callbacks"`
	} `json:"audio"`
}

// phoneProc is the waphone under test: started by us (direct) or by
// systemd from the shipped unit (systemd).
type phoneProc struct {
	mode string
	bin  string
	cmd  *exec.Cmd
	log  *os.File
}

// writeConfig writes waphone's config, certificate, Meta's CA and the SIP
// password the way an installed phone has them under /etc/waphone.
func writeConfig(mode, gatewayAddr, password string, chip string, ca *testpki.CA) error {
	if err := os.MkdirAll(etcDir, 0o750); err != nil {
		return err
	}
	certPEM, keyPEM, err := ca.Issue(bizHost)
	if err != nil {
		return err
	}
	pwFile := filepath.Join(etcDir, "sip-password")
	gid := 0
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"fullchain.pem", certPEM, 0o644},
		{"privkey.pem", keyPEM, 0o640},
		{"meta-ca.pem", ca.PEM, 0o644},
		{"sip-password", []byte(password + "\n"), 0o600},
	}
	for _, f := range files {
		p := filepath.Join(etcDir, f.name)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	// The config and key are the waphone user's to read (group waphone),
	// as an installer would leave them; the password is root's
	// (LoadCredential= hands it over).
	if mode == "systemd" {
		g, err := user.LookupGroup("waphone")
		if err != nil {
			return fmt.Errorf("group waphone (systemd-sysusers ran?): %w", err)
		}
		gid, _ = strconv.Atoi(g.Gid)
		for _, d := range []string{etcDir, filepath.Join(etcDir, "privkey.pem")} {
			if err := os.Chown(d, 0, gid); err != nil {
				return err
			}
		}
		pwFile = "sip-password" // from $CREDENTIALS_DIRECTORY
	}
	cfg := fmt.Sprintf(`# written by test/vm/boardcheck
[sip]
hostname = %q
listen = "127.0.0.1:5061"
cert_file = "/etc/waphone/fullchain.pem"
key_file = "/etc/waphone/privkey.pem"
number = %q
password_file = %q
gateway_addr = %q
gateway_ca_file = "/etc/waphone/meta-ca.pem"

[media]
key_exchange = "dtls"
bind_address = "127.0.0.1"
rtp_ports = "20000-20999"

[audio]
capture = "device:Loopback"
playback = "device:Loopback"

[phone]
answer = "button"
ring_timeout = "120s"
control_socket = %q
speed_dial = %q

[board]
chip = %q
button_line = "GPIO17"
led_line = "GPIO27"
headset_keys = "auto"

[log]
level = "debug"
`, bizHost, business, pwFile, gatewayAddr, ctlSocket, speedDial, chip)
	path := filepath.Join(etcDir, "waphone.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o640); err != nil {
		return err
	}
	return os.Chown(path, 0, gid)
}

func (p *phoneProc) start() error {
	if p.mode == "systemd" {
		out, err := exec.Command("systemctl", "start", "waphone.service").CombinedOutput()
		if err != nil {
			return fmt.Errorf("systemctl start waphone: %v: %s", err, out)
		}
		return nil
	}
	var err error
	if p.log, err = os.Create("/tmp/waphone.log"); err != nil {
		return err
	}
	p.cmd = exec.Command(p.bin, "run", "-config", filepath.Join(etcDir, "waphone.toml"))
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("starting waphone: %w", err)
	}
	return nil
}

func (p *phoneProc) pid() int {
	if p.mode == "systemd" {
		out, err := exec.Command("systemctl", "show", "-p", "MainPID", "--value", "waphone.service").Output()
		if err != nil {
			return 0
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		return n
	}
	if p.cmd != nil && p.cmd.Process != nil {
		return p.cmd.Process.Pid
	}
	return 0
}

// logTail is the end of waphone's log (the journal under systemd).
func (p *phoneProc) logTail(lines int) string {
	if p.mode == "systemd" {
		out, _ := exec.Command("journalctl", "-u", "waphone.service", "--no-pager", "-o", "cat", "-n", strconv.Itoa(lines)).CombinedOutput()
		return string(out)
	}
	b, _ := os.ReadFile("/tmp/waphone.log")
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// logGrep is waphone's log lines that mention one of words (the last 30).
func (p *phoneProc) logGrep(words ...string) string {
	var keep []string
	for _, l := range strings.Split(p.logTail(2000), "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				keep = append(keep, l)
				break
			}
		}
	}
	if len(keep) > 30 {
		keep = keep[len(keep)-30:]
	}
	if len(keep) == 0 {
		return "(no log line mentions " + strings.Join(words, ", ") + ")"
	}
	return strings.Join(keep, "\n")
}

// crashLog is how waphone's last crash began (a Go panic, a fatal signal
// in C, systemd's word on the exit), or "" if it has not crashed.
func (p *phoneProc) crashLog() string {
	ls := strings.Split(p.logTail(5000), "\n")
	for i, l := range ls {
		for _, w := range []string{"panic:", "fatal error:", "SIGSEGV", "SIGBUS", "SIGABRT", "code=dumped", "code=killed", "status=2/"} {
			if strings.Contains(l, w) {
				return strings.Join(ls[i:min(len(ls), i+4)], "\n") + "\n" + goroutinesOf(ls[i:], "waphone/audio", "malgo", "waphone/phone.(*Phone).Check")
			}
		}
	}
	return ""
}

// goroutinesOf is the goroutines of a Go traceback whose stacks mention
// one of words (a hang shows who holds what).
func goroutinesOf(ls []string, words ...string) string {
	var out []string
	for i := 0; i < len(ls); i++ {
		if !strings.HasPrefix(ls[i], "goroutine ") {
			continue
		}
		j := i + 1
		for j < len(ls) && !strings.HasPrefix(ls[j], "goroutine ") && strings.TrimSpace(ls[j]) != "" {
			j++
		}
		block := strings.Join(ls[i:j], "\n")
		for _, w := range words {
			if strings.Contains(block, w) {
				out = append(out, block)
				break
			}
		}
		i = j - 1
	}
	return strings.Join(out, "\n")
}

func (p *phoneProc) stop() {
	if p.mode == "systemd" {
		_ = exec.Command("systemctl", "stop", "waphone.service").Run()
		return
	}
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
		}
	}
}

func getStatus(ctx context.Context) (status, error) {
	var st status
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rep, err := control.Do(cctx, ctlSocket, control.Request{Cmd: "status"})
	if err != nil {
		return st, err
	}
	if !rep.OK {
		return st, errors.New(rep.Error)
	}
	err = json.Unmarshal(rep.Status, &st)
	return st, err
}

// waitStatus polls the control socket until ok(status) or timeout.
func waitStatus(ctx context.Context, timeout time.Duration, what string, ok func(status) bool) (status, error) {
	deadline := time.Now().Add(timeout)
	var st status
	var err error
	for {
		st, err = getStatus(ctx)
		if err == nil && ok(st) {
			return st, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b, _ := json.Marshal(st)
			if err != nil {
				return st, fmt.Errorf("%s: not within %v (status: %v)", what, timeout, err)
			}
			return st, fmt.Errorf("%s: not within %v (status %s)", what, timeout, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func inState(s string) func(status) bool { return func(st status) bool { return st.State == s } }

// holdsOpen reports whether process pid has path open (its fd table).
func holdsOpen(pid int, path string) bool {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if t, err := os.Readlink(fd); err == nil && t == path {
			return true
		}
	}
	return false
}

// waitOpen waits until waphone holds dev open: it attached the device.
func waitOpen(p *phoneProc, dev string, timeout time.Duration) error {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if holdsOpen(p.pid(), dev) {
			return nil
		}
	}
	return fmt.Errorf("waphone (pid %d) did not open %s within %v", p.pid(), dev, timeout)
}

// procIDs is a process's uid and supplementary groups (/proc/PID/status).
func procIDs(pid int) (uid string, groups []string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", nil, err
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(l)); len(f) > 1 {
			switch f[0] {
			case "Uid:":
				uid = f[1]
			case "Groups:":
				groups = f[1:]
			}
		}
	}
	return uid, groups, nil
}
