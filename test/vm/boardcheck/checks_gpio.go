//go:build linux

// Sections 1 and 2: the button and LED on gpio-sim, the sound on snd-aloop.

package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/waphone/waphone/internal/metasim"
)

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
