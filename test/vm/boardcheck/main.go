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
		// The guest is emulated and Meta's encoder is not under test:
		// the cheapest one leaves the CPU to waphone and snd-aloop.
		OpusComplexity: 1,
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
