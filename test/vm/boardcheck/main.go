//go:build linux

// Command boardcheck runs inside the board VM (test/vm, `make check-board`):
// it plays Meta (internal/metasim) toward a running `waphone run` and works
// the phone's board through real kernel drivers — the button and LED on a
// gpio-sim chip, the headset's sound on snd-aloop, its call button and
// LEDs on a uhid device carrying a real headset's HID descriptor, its keys
// on a uinput device — checking what the phone does with each. Every check
// prints its time. Exit status 1 if any failed.
//
// -mode direct starts waphone itself (as root, no udev); -mode systemd
// drives the waphone.service that the shipped unit starts.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
)

const (
	ourTone  = 440.0  // into the headset's microphone
	metaTone = 1000.0 // what Meta's side plays
	minSNR   = 20.0   // dB, both ways
)

type runner struct {
	start  time.Time
	failed []string
	n      int
}

// check runs one check and prints it with the time since the start and
// how long it took.
func (r *runner) check(name string, f func() (string, error)) bool {
	t0 := time.Now()
	detail, err := f()
	r.n++
	el := time.Since(r.start).Seconds()
	took := time.Since(t0).Seconds()
	if detail != "" {
		detail = ": " + detail
	}
	if err != nil {
		r.failed = append(r.failed, name)
		fmt.Printf("FAIL [%6.1fs +%5.1fs] %s%s: %v\n", el, took, name, detail, err)
		return false
	}
	fmt.Printf("ok   [%6.1fs +%5.1fs] %s%s\n", el, took, name, detail)
	return true
}

func (r *runner) section(s string) { fmt.Printf("---- %s\n", s) }

type env struct {
	r     *runner
	ctx   context.Context
	mode  string
	sim   *metasim.Sim
	gpio  *gpioSim
	phone *phoneProc
	hs    *headsetSide
	loop  string
	data  string
	// aloopWedged: snd-aloop's unbind is stuck (the card is still open):
	// no more sound checks.
	aloopWedged bool
}

func main() {
	mode := flag.String("mode", "direct", "direct: start waphone here; systemd: drive waphone.service")
	bin := flag.String("waphone", "/usr/bin/waphone", "the waphone binary (direct mode)")
	loop := flag.String("loop", "plughw:Loopback,1,0", "the loopback side the test plays into and records from")
	data := flag.String("testdata", "/payload/testdata", "directory with the HID descriptors (board/testdata)")
	deadline := flag.Duration("deadline", 10*time.Minute, "give up (and print waphone's log) after this long")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := &runner{start: time.Now()}
	e := &env{r: r, ctx: ctx, mode: *mode, loop: *loop, data: *data, phone: &phoneProc{mode: *mode, bin: *bin}}
	// A check that hangs (a blocked driver call) must not hang CI.
	timer := time.AfterFunc(*deadline, func() {
		fmt.Printf("ABORT [%6.1fs] boardcheck did not finish within %v\n", time.Since(r.start).Seconds(), *deadline)
		fmt.Println("---- waphone's log (last 80 lines)")
		fmt.Println(e.phone.logTail(80))
		os.Exit(1)
	})
	defer timer.Stop()
	err := e.run()
	if e.hs != nil {
		e.hs.stop()
	}
	if e.phone != nil {
		if len(r.failed) > 0 || err != nil {
			fmt.Println("---- waphone's log (last 80 lines)")
			fmt.Println(e.phone.logTail(80))
		}
		e.phone.stop()
	}
	if e.sim != nil {
		_ = e.sim.Close()
	}
	if err != nil {
		fmt.Printf("ABORT [%6.1fs] %v\n", time.Since(r.start).Seconds(), err)
		os.Exit(1)
	}
	fmt.Printf("boardcheck (%s): %d checks, %d failed, %.1f s\n", *mode, r.n, len(r.failed), time.Since(r.start).Seconds())
	if len(r.failed) > 0 {
		for _, f := range r.failed {
			fmt.Println("  failed:", f)
		}
		os.Exit(1)
	}
}

func modprobe(args ...string) error {
	out, err := exec.Command("modprobe", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("modprobe %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func kernelRelease() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "?"
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

func (e *env) run() error {
	r := e.r
	r.section(fmt.Sprintf("setup (kernel %s, mode %s)", kernelRelease(), e.mode))
	// snd-aloop stays out until waphone runs: a card that appears later
	// must be picked up.
	_ = exec.Command("modprobe", "-r", "snd-aloop").Run()
	for _, m := range []string{"gpio-sim", "uhid", "uinput", "hid-generic", "evdev"} {
		if err := modprobe(m); err != nil {
			return err
		}
	}
	var err error
	if !r.check("1. gpio-sim chip with lines GPIO17 (button) and GPIO27 (LED)", func() (string, error) {
		e.gpio, err = newGPIOSim("waphone")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s on %s, board.chip = %q", e.gpio.ChipName, e.gpio.DevName, e.gpio.ChipName), nil
	}) {
		return errors.New("no GPIO chip")
	}
	if e.mode == "systemd" {
		_ = exec.Command("udevadm", "settle").Run()
		r.check("5. /dev/"+e.gpio.ChipName+" belongs to group gpio, mode 0660 (shipped 60-waphone-gpio.rules)", func() (string, error) {
			return nodeGroup("/dev/"+e.gpio.ChipName, "gpio")
		})
	}

	ca, err := testpki.NewCA("boardcheck CA")
	if err != nil {
		return err
	}
	secret := make([]byte, 12)
	_, _ = rand.Read(secret)
	password := hex.EncodeToString(secret)
	e.sim, err = metasim.Start(e.ctx, metasim.Config{
		BusinessNumber: business, BusinessHost: bizHost, Password: password, CA: ca,
		BusinessRoots: ca.Pool(), ToneHz: metaTone, KeyExchange: "dtls",
	})
	if err != nil {
		return fmt.Errorf("metasim: %w", err)
	}
	if err := writeConfig(e.mode, e.sim.Addr(), password, e.gpio.ChipName, ca); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if !r.check("waphone starts with no sound card present (audio.capture = device:Loopback)", func() (string, error) {
		if err := e.phone.start(); err != nil {
			return "", err
		}
		st, err := waitStatus(e.ctx, 60*time.Second, "idle", inState("idle"))
		if err != nil {
			return "", err
		}
		if st.Audio == nil || st.Audio.Plugged {
			return "", fmt.Errorf("audio status %+v, want a headset that is not plugged", st.Audio)
		}
		return fmt.Sprintf("metasim (Meta) at %s, pid %d", e.sim.Addr(), e.phone.pid()), nil
	}) {
		return errors.New("waphone did not start")
	}
	if e.mode == "systemd" {
		e.checkService()
	}
	r.check("1. the button's line is held high by waphone's pull-up (active low, not pressed)", func() (string, error) {
		v, err := e.gpio.value(17)
		if err != nil {
			return "", err
		}
		if v != 1 {
			return "", fmt.Errorf("sim_gpio17 value %d", v)
		}
		return "", nil
	})

	r.section("2. sound: snd-aloop as the headset (ALSA via malgo)")
	r.check("2. a card plugged in after waphone started is picked up", func() (string, error) {
		if err := modprobe("snd-aloop"); err != nil {
			return "", err
		}
		st, err := waitStatus(e.ctx, 20*time.Second, "headset plugged", func(st status) bool { return st.Audio != nil && st.Audio.Plugged })
		if err != nil {
			return "", fmt.Errorf("%w\n%s\nwaphone's log on its headset:\n%s", err, alsaState(), e.phone.logGrep("headset", "alsa", "audio"))
		}
		return fmt.Sprintf("device %q", st.Audio.Device), nil
	})
	e.callGPIOAndSound()
	e.callBounce()
	e.speedDial()

	r.section("3. headset call button and LEDs (uhid + hidraw)")
	e.hidHeadset()
	r.section("4. headset keys (uinput + evdev)")
	e.evdevKeys()
	return nil
}

// alsaState is what /proc/asound says about every open substream.
func alsaState() string {
	var b strings.Builder
	files, _ := filepath.Glob("/proc/asound/card*/pcm*/sub*/hw_params")
	for _, f := range files {
		hp, _ := os.ReadFile(f)
		if strings.TrimSpace(string(hp)) == "closed" {
			continue
		}
		st, _ := os.ReadFile(filepath.Join(filepath.Dir(f), "status"))
		fmt.Fprintf(&b, "%s: %s | %s\n", strings.TrimPrefix(filepath.Dir(f), "/proc/asound/"),
			strings.Join(strings.Fields(string(hp)), " "), strings.Join(strings.Fields(string(st)), " "))
	}
	if b.Len() == 0 {
		return "no open ALSA substream"
	}
	return b.String()
}

// cpuTicks is a process's user+system CPU time in clock ticks (1/100 s).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces): state is field 3.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	var u, s int64
	fmt.Sscan(f[11], &u)
	fmt.Sscan(f[12], &s)
	return u + s
}

// sndHolders lists the processes with /dev/snd nodes open.
func sndHolders() string {
	var out []string
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		t, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(t, "/dev/snd/") {
			continue
		}
		pid := strings.Split(fd, "/")[2]
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		out = append(out, fmt.Sprintf("%s(%s):%s", strings.TrimSpace(string(comm)), pid, t))
	}
	if len(out) == 0 {
		return "nobody"
	}
	return strings.Join(out, " ")
}

// nodeGroup checks a device node's group and mode.
func nodeGroup(path, group string) (string, error) {
	out, err := exec.Command("stat", "-L", "-c", "%G %a", path).Output()
	if err != nil {
		return "", fmt.Errorf("stat %s: %w", path, err)
	}
	got := strings.TrimSpace(string(out))
	if got != group+" 660" {
		return "", fmt.Errorf("%s is %q, want %q", path, got, group+" 660")
	}
	return got, nil
}

// checkService: the shipped unit's user, groups and sandbox.
func (e *env) checkService() {
	e.r.check("5. waphone.service runs as user waphone with groups audio, gpio, input", func() (string, error) {
		pid := e.phone.pid()
		uid, groups, err := procIDs(pid)
		if err != nil {
			return "", err
		}
		out, _ := exec.Command("id", "-u", "waphone").Output()
		if strings.TrimSpace(string(out)) != uid {
			return "", fmt.Errorf("pid %d runs as uid %s", pid, uid)
		}
		for _, g := range []string{"audio", "gpio", "input"} {
			out, err := exec.Command("getent", "group", g).Output()
			if err != nil {
				return "", fmt.Errorf("group %s: %w", g, err)
			}
			gid := strings.Split(strings.TrimSpace(string(out)), ":")[2]
			found := false
			for _, x := range groups {
				found = found || x == gid
			}
			if !found {
				return "", fmt.Errorf("pid %d lacks group %s (%s): %v", pid, g, gid, groups)
			}
		}
		dp, _ := exec.Command("systemctl", "show", "-p", "DevicePolicy", "-p", "DeviceAllow", "--value", "waphone.service").Output()
		return fmt.Sprintf("uid %s, groups %v; %s", uid, groups, strings.Join(strings.Fields(string(dp)), " ")), nil
	})
}

// ring places Meta's call and waits until waphone rings.
func (e *env) ring(name string) (*metasim.Call, error) {
	c, err := e.sim.Call(e.ctx, "127.0.0.1:5061", metasim.CallOptions{From: caller, ReturnOnRinging: true, Username: name})
	if err != nil {
		return nil, err
	}
	if _, err := waitStatus(e.ctx, 30*time.Second, "ringing", inState("ringing")); err != nil {
		return c, err
	}
	return c, nil
}

// answered waits for the 200 OK at Meta's side and the phone talking.
func (e *env) answered(c *metasim.Call) error {
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if err := c.WaitAnswer(ctx); err != nil {
		return err
	}
	if c.Status() != 200 {
		return fmt.Errorf("the answer at Meta was %d", c.Status())
	}
	_, err := waitStatus(e.ctx, 30*time.Second, "talking", inState("talking"))
	return err
}

// hungUp waits for waphone's BYE at Meta's side and the phone idle.
func (e *env) hungUp(c *metasim.Call) error {
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
		return errors.New("the call did not end within 30 s")
	}
	if by := c.EndedBy(); by != "business" {
		return fmt.Errorf("the call was ended by %s, not waphone", by)
	}
	_, err := waitStatus(e.ctx, 30*time.Second, "idle", inState("idle"))
	return err
}

// waitTones waits until both directions carry their tone: ours at Meta's
// side of the call, Meta's at the headset's earpiece (the loopback).
func (e *env) waitTones(c *metasim.Call, timeout time.Duration) (string, error) {
	var up, down float64
	for end := time.Now().Add(timeout); ; time.Sleep(250 * time.Millisecond) {
		up = snrDB(tailOf(c.Recorded(), time.Second), ourTone)
		down = -60.0
		if e.hs != nil {
			down = snrDB(e.hs.tail(time.Second), metaTone)
		}
		if up >= minSNR && down >= minSNR {
			return fmt.Sprintf("mic→Meta %.0f Hz at %.1f dB, Meta→earpiece %.0f Hz at %.1f dB", ourTone, up, metaTone, down), nil
		}
		if time.Now().After(end) {
			diag := alsaState()
			if e.hs != nil {
				diag += "\naplay/arecord: " + e.hs.stderr()
			}
			return "", fmt.Errorf("after %v: mic→Meta %.0f Hz at %.1f dB, Meta→earpiece %.0f Hz at %.1f dB (want ≥ %.0f dB)\n%s",
				timeout, ourTone, up, metaTone, down, minSNR, diag)
		}
	}
}

func (e *env) ledIs(want string, d time.Duration) (string, error) {
	time.Sleep(150 * time.Millisecond) // the LED is driven on a 50 ms tick
	on, off, changes, err := e.gpio.sampleLED(27, d)
	if err != nil {
		return "", err
	}
	got := fmt.Sprintf("%d samples on, %d off, %d changes in %v", on, off, changes, d)
	switch {
	case want == "off" && on == 0, want == "on" && off == 0, want == "blink" && on > 0 && off > 0 && changes >= 2:
		return got, nil
	}
	return "", fmt.Errorf("LED not %s: %s", want, got)
}

const aloopDriver = "/sys/bus/platform/drivers/snd_aloop"

func (e *env) callGPIOAndSound() {
	r := e.r
	var c *metasim.Call
	if !r.check("1. Meta calls: waphone rings (answer = button)", func() (string, error) {
		var err error
		c, err = e.ring("gpio")
		return "", err
	}) {
		return
	}
	r.check("1. LED blinks while ringing", func() (string, error) { return e.ledIs("blink", 2500*time.Millisecond) })
	if !r.check("1. a button press (gpio-sim pull-down 150 ms) answers", func() (string, error) {
		if err := e.gpio.press(17, 150*time.Millisecond, false); err != nil {
			return "", err
		}
		return "", e.answered(c)
	}) {
		return
	}
	r.check("1. LED on in the call", func() (string, error) { return e.ledIs("on", time.Second) })
	r.check(fmt.Sprintf("2. tones both ways through snd-aloop and the call, ≥ %.0f dB", minSNR), func() (string, error) {
		var err error
		if e.hs, err = startHeadsetSide(e.loop, ourTone); err != nil {
			return "", err
		}
		return e.waitTones(c, 20*time.Second)
	})
	r.check("2. unplug (unbind snd_aloop.0) mid-call: waphone sees it, the call goes on", func() (string, error) {
		// The far side goes first: a real unplug takes it away too, and
		// snd-aloop's unbind waits until every user closed the card.
		if e.hs != nil {
			e.hs.stop()
			e.hs = nil
		}
		// An unbind of a card nobody gives up blocks for good (in D
		// state): only unplug a card waphone holds and will let go of.
		before, _ := getStatus(e.ctx)
		if before.Audio == nil || !before.Audio.Plugged {
			e.aloopWedged = true
			return "", errors.New("nothing to unplug: waphone never had the card open")
		}
		unbound := make(chan error, 1)
		go func() { unbound <- writeFile(filepath.Join(aloopDriver, "unbind"), "snd_aloop.0") }()
		cpu0 := cpuTicks(e.phone.pid())
		st, err := waitStatus(e.ctx, 20*time.Second, "headset unplugged", func(st status) bool { return st.Audio != nil && !st.Audio.Plugged })
		if err != nil {
			// What the device thread did meanwhile: its callback count.
			cb := "?"
			if before.Audio != nil && st.Audio != nil {
				cb = fmt.Sprintf("%d → %d", before.Audio.Callbacks, st.Audio.Callbacks)
			}
			e.aloopWedged = true
			if crash := e.phone.crashLog(); crash != "" {
				return "", fmt.Errorf("%w: waphone crashed on the unplug:\n%s", err, crash)
			}
			cpu := float64(cpuTicks(e.phone.pid())-cpu0) / 100
			return "", fmt.Errorf("%w; over those 20 s waphone's device callbacks went %s and it used %.1f s of CPU; unbind still blocked; /dev/snd held by: %s",
				err, cb, cpu, sndHolders())
		}
		select {
		case err := <-unbound:
			if err != nil {
				return "", err
			}
		case <-time.After(20 * time.Second):
			e.aloopWedged = true
			return "", fmt.Errorf("unbind still blocked 20 s after waphone saw the unplug: the card is held open by %s", sndHolders())
		}
		time.Sleep(2 * time.Second)
		if st, err = getStatus(e.ctx); err != nil || st.State != "talking" {
			return "", fmt.Errorf("after the unplug the phone is %q (%v)", st.State, err)
		}
		return fmt.Sprintf("unplugs %d, still talking", st.Audio.Unplugs), nil
	})
	if !e.aloopWedged {
		r.check("2. replug (bind): audio back both ways without a restart", func() (string, error) {
			if err := writeFile(filepath.Join(aloopDriver, "bind"), "snd_aloop.0"); err != nil {
				return "", err
			}
			if _, err := waitStatus(e.ctx, 20*time.Second, "headset back", func(st status) bool { return st.Audio != nil && st.Audio.Plugged }); err != nil {
				return "", err
			}
			var err error
			if e.hs, err = startHeadsetSide(e.loop, ourTone); err != nil {
				return "", err
			}
			return e.waitTones(c, 20*time.Second)
		})
	} else {
		r.check("2. replug (bind): audio back both ways without a restart", func() (string, error) {
			return "", errors.New("not run: the unplug left snd-aloop's unbind blocked (the rest runs without sound checks)")
		})
	}
	r.check("1. a button press in the call hangs up", func() (string, error) {
		if err := e.gpio.press(17, 150*time.Millisecond, false); err != nil {
			return "", err
		}
		return "", e.hungUp(c)
	})
	r.check("1. LED off when idle", func() (string, error) { return e.ledIs("off", time.Second) })
}

func (e *env) callBounce() {
	r := e.r
	var c *metasim.Call
	if !r.check("1. bounce: a press with contact chatter (7 edges in ~4 ms) answers once", func() (string, error) {
		var err error
		if c, err = e.ring("bounce"); err != nil {
			return "", err
		}
		if err := e.gpio.press(17, 200*time.Millisecond, true); err != nil {
			return "", err
		}
		if err := e.answered(c); err != nil {
			return "", err
		}
		// A second press out of the chatter would have hung up again.
		time.Sleep(3 * time.Second)
		st, err := getStatus(e.ctx)
		if err != nil {
			return "", err
		}
		if st.State != "talking" {
			return "", fmt.Errorf("3 s after one bouncy press the phone is %q: the chatter counted as more than one press", st.State)
		}
		return "still talking 3 s later", nil
	}) {
		return
	}
	r.check("1. bounce: a chattering press in the call hangs up", func() (string, error) {
		if err := e.gpio.press(17, 200*time.Millisecond, true); err != nil {
			return "", err
		}
		return "", e.hungUp(c)
	})
}

func (e *env) speedDial() {
	var out *metasim.Call
	if !e.r.check("1. a long press (1.5 s) while idle dials phone.speed_dial", func() (string, error) {
		if err := e.gpio.press(17, 1500*time.Millisecond, false); err != nil {
			return "", err
		}
		select {
		case out = <-e.sim.Incoming():
		case <-time.After(30 * time.Second):
			return "", errors.New("no call reached Meta within 30 s")
		}
		if to := out.Request().Recipient.User; to != speedDial {
			return "", fmt.Errorf("waphone called %q, want %q", to, speedDial)
		}
		if _, err := waitStatus(e.ctx, 30*time.Second, "talking", inState("talking")); err != nil {
			return "", err
		}
		return "INVITE to " + speedDial + ", talking", nil
	}) {
		return
	}
	e.r.check("1. a short press hangs the speed-dial call up", func() (string, error) {
		if err := e.gpio.press(17, 150*time.Millisecond, false); err != nil {
			return "", err
		}
		return "", e.hungUp(out)
	})
}

// loadHex reads a board/testdata descriptor: hex bytes, '#' comment lines.
func loadHex(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, f := range strings.Fields(line) {
			v, err := hex.DecodeString(f)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			out = append(out, v...)
		}
	}
	return out, nil
}

// hidrawFor finds the /dev/hidrawN (and /dev/input/eventN, if the kernel
// made one) of the HID device with this name.
func hidrawFor(name string, timeout time.Duration) (hidraw, event string, err error) {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		nodes, _ := filepath.Glob("/sys/class/hidraw/hidraw*")
		for _, n := range nodes {
			ue, err := os.ReadFile(filepath.Join(n, "device", "uevent"))
			if err != nil || !strings.Contains(string(ue), "HID_NAME="+name+"\n") {
				continue
			}
			hidraw = "/dev/" + filepath.Base(n)
			evs, _ := filepath.Glob(filepath.Join(n, "device", "input", "input*", "event*"))
			if len(evs) > 0 {
				event = "/dev/input/" + filepath.Base(evs[0])
			}
			if _, err := os.Stat(hidraw); err == nil {
				return hidraw, event, nil
			}
		}
	}
	return "", "", fmt.Errorf("no hidraw node for %q within %v", name, timeout)
}

const (
	plantronicsName = "Plantronics Blackwire 3220 Series"
	// The Blackwire's Telephony collection: input report 8 (bit 0 Phone
	// Mute, relative; bit 1 Hook Switch); output reports 0x09 LED Mute,
	// 0x17 Off-Hook, 0x18 Ring, one bit each.
	repIn      = 0x08
	bitMute    = 0x01
	bitHook    = 0x02
	outMute    = 0x09
	outOffHook = 0x17
	outRing    = 0x18
)

func (e *env) hidHeadset() {
	r := e.r
	desc, err := loadHex(filepath.Join(e.data, "hid-plantronics-blackwire-3220-telephony.hex"))
	if err != nil {
		r.check("3. Plantronics descriptor", func() (string, error) { return "", err })
		return
	}
	var dev *uhidDevice
	var hidraw string
	if !r.check("3. uhid Plantronics Blackwire 3220 (047f:c056, real descriptor): waphone attaches its hidraw node", func() (string, error) {
		var err error
		if dev, err = newUHID(plantronicsName, 0x047f, 0xc056, desc); err != nil {
			return "", err
		}
		var event string
		if hidraw, event, err = hidrawFor(plantronicsName, 10*time.Second); err != nil {
			hid, _ := filepath.Glob("/sys/bus/hid/devices/*")
			raw, _ := filepath.Glob("/sys/class/hidraw/*")
			dmesg, _ := exec.Command("dmesg").Output()
			lines := strings.Split(strings.TrimSpace(string(dmesg)), "\n")
			if len(lines) > 8 {
				lines = lines[len(lines)-8:]
			}
			return "", fmt.Errorf("%w; HID devices %v, hidraw %v; dmesg:\n%s", err, hid, raw, strings.Join(lines, "\n"))
		}
		if e.mode == "systemd" {
			_ = exec.Command("udevadm", "settle").Run()
			if _, err := nodeGroup(hidraw, "input"); err != nil {
				return "", fmt.Errorf("%w (udev rule for the headset's hidraw node)", err)
			}
		}
		if err := waitOpen(e.phone, hidraw, 15*time.Second); err != nil {
			return "", err
		}
		// Plugged in, the headset is told where the phone is: all off.
		if err := dev.waitOutput(outOffHook, false, 5*time.Second); err != nil {
			return "", err
		}
		extra := ""
		if event != "" {
			extra = ", kernel input device " + event
			if holdsOpen(e.phone.pid(), event) {
				extra += " (open too: Phone Mute is KEY_MICMUTE there)"
			}
		}
		return fmt.Sprintf("%s opened; initial Off-Hook/Ring/Mute reports written (%d)%s", hidraw, dev.outputCount(), extra), nil
	}) {
		if dev != nil {
			_ = dev.destroy()
		}
		return
	}
	defer func() { _ = dev.destroy() }()
	var c *metasim.Call
	if !r.check("3. ringing: waphone writes the Ring output report", func() (string, error) {
		var err error
		if c, err = e.ring("hid"); err != nil {
			return "", err
		}
		return "", dev.waitOutput(outRing, true, 10*time.Second)
	}) {
		return
	}
	if !r.check("3. Hook Switch input report (off-hook) answers; Off-Hook on, Ring off", func() (string, error) {
		if err := dev.input(repIn, bitHook); err != nil {
			return "", err
		}
		if err := e.answered(c); err != nil {
			return "", err
		}
		if err := dev.waitOutput(outOffHook, true, 10*time.Second); err != nil {
			return "", err
		}
		return "", dev.waitOutput(outRing, false, 10*time.Second)
	}) {
		return
	}
	if e.hs != nil {
		r.check("3. in the call: tones both ways", func() (string, error) { return e.waitTones(c, 20*time.Second) })
	}
	r.check("3. Phone Mute press mutes once (hidraw and KEY_MICMUTE counted once); Mute LED on; Meta hears silence", func() (string, error) {
		if err := dev.input(repIn, bitHook|bitMute); err != nil {
			return "", err
		}
		time.Sleep(30 * time.Millisecond)
		if err := dev.input(repIn, bitHook); err != nil {
			return "", err
		}
		if _, err := waitStatus(e.ctx, 10*time.Second, "muted", func(st status) bool { return st.Muted }); err != nil {
			return "", err
		}
		if err := dev.waitOutput(outMute, true, 10*time.Second); err != nil {
			return "", err
		}
		time.Sleep(2 * time.Second)
		st, err := getStatus(e.ctx)
		if err != nil || !st.Muted {
			return "", fmt.Errorf("2 s after one press muted = %v (%v): counted twice?", st.Muted, err)
		}
		tail := tailOf(c.Recorded(), time.Second)
		if snr := snrDB(tail, ourTone); snr > 0 {
			return "", fmt.Errorf("muted, but Meta still hears %.0f Hz at %.1f dB", ourTone, snr)
		}
		return fmt.Sprintf("Meta's last second: %.1f dBFS", levelDB(tail)), nil
	})
	r.check("3. Phone Mute again unmutes; Mute LED off; the tone is back", func() (string, error) {
		if err := dev.input(repIn, bitHook|bitMute); err != nil {
			return "", err
		}
		time.Sleep(30 * time.Millisecond)
		if err := dev.input(repIn, bitHook); err != nil {
			return "", err
		}
		if _, err := waitStatus(e.ctx, 10*time.Second, "unmuted", func(st status) bool { return !st.Muted }); err != nil {
			return "", err
		}
		if err := dev.waitOutput(outMute, false, 10*time.Second); err != nil {
			return "", err
		}
		if e.hs == nil {
			return "", nil
		}
		return e.waitTones(c, 20*time.Second)
	})
	r.check("3. Hook Switch on-hook hangs up; Off-Hook off", func() (string, error) {
		if err := dev.input(repIn, 0); err != nil {
			return "", err
		}
		if err := e.hungUp(c); err != nil {
			return "", err
		}
		return "", dev.waitOutput(outOffHook, false, 10*time.Second)
	})
}

const uinputName = "Jabra Evolve 20 MS (uinput)"

// eventFor finds the /dev/input/eventN of the input device with this name.
func eventFor(name string, timeout time.Duration) (string, error) {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		evs, _ := filepath.Glob("/sys/class/input/event*")
		for _, ev := range evs {
			b, err := os.ReadFile(filepath.Join(ev, "device", "name"))
			if err == nil && strings.TrimSpace(string(b)) == name {
				dev := "/dev/input/" + filepath.Base(ev)
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no input device %q within %v", name, timeout)
}

func (e *env) evdevKeys() {
	r := e.r
	var u *uinputDevice
	if !r.check("4. uinput headset keys (KEY_PHONE, KEY_MICMUTE, volume): waphone attaches", func() (string, error) {
		var err error
		if u, err = newUinput(uinputName, 0x0b0e, 0x0300, keyPhone, keyMicMute, keyVolumeUp, keyVolumeDown); err != nil {
			return "", err
		}
		dev, err := eventFor(uinputName, 10*time.Second)
		if err != nil {
			return "", err
		}
		if e.mode == "systemd" {
			_ = exec.Command("udevadm", "settle").Run()
		}
		if err := waitOpen(e.phone, dev, 15*time.Second); err != nil {
			return "", err
		}
		return dev + " opened", nil
	}) {
		if u != nil {
			_ = u.destroy()
		}
		return
	}
	defer func() { _ = u.destroy() }()
	var c *metasim.Call
	if !r.check("4. KEY_PHONE answers a ringing call", func() (string, error) {
		var err error
		if c, err = e.ring("evdev"); err != nil {
			return "", err
		}
		if err := u.tap(keyPhone); err != nil {
			return "", err
		}
		return "", e.answered(c)
	}) {
		return
	}
	r.check("4. KEY_MICMUTE mutes, and again unmutes", func() (string, error) {
		if err := u.tap(keyMicMute); err != nil {
			return "", err
		}
		if _, err := waitStatus(e.ctx, 10*time.Second, "muted", func(st status) bool { return st.Muted }); err != nil {
			return "", err
		}
		if err := u.tap(keyMicMute); err != nil {
			return "", err
		}
		_, err := waitStatus(e.ctx, 10*time.Second, "unmuted", func(st status) bool { return !st.Muted })
		return "", err
	})
	if e.hs != nil {
		r.check("4. KEY_VOLUMEDOWN ×4 lowers the earpiece by 6 dB, KEY_VOLUMEUP ×4 restores it", func() (string, error) {
			if _, err := e.waitTones(c, 20*time.Second); err != nil {
				return "", err
			}
			l0 := levelDB(e.hs.tail(time.Second))
			for range 4 {
				if err := u.tap(keyVolumeDown); err != nil {
					return "", err
				}
			}
			time.Sleep(2 * time.Second)
			l1 := levelDB(e.hs.tail(time.Second))
			for range 4 {
				if err := u.tap(keyVolumeUp); err != nil {
					return "", err
				}
			}
			time.Sleep(2 * time.Second)
			l2 := levelDB(e.hs.tail(time.Second))
			got := fmt.Sprintf("%.1f → %.1f → %.1f dBFS", l0, l1, l2)
			if d := l0 - l1; d < 4.5 || d > 7.5 {
				return "", fmt.Errorf("volume down changed the level by %.1f dB, want about 6 (%s)", d, got)
			}
			if d := l2 - l0; d < -1.5 || d > 1.5 {
				return "", fmt.Errorf("volume up did not restore the level (%s)", got)
			}
			return got, nil
		})
	}
	r.check("4. KEY_PHONE in the call hangs up", func() (string, error) {
		if err := u.tap(keyPhone); err != nil {
			return "", err
		}
		return "", e.hungUp(c)
	})
}
