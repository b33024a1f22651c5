//go:build linux

// Section 4: the headset's keys through uinput and evdev.

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/waphone/waphone/internal/metasim"
)

const uinputName = "Jabra Evolve 20 MS (uinput)"

// levelSettles waits up to 10 s for the earpiece's level over the last
// half second to satisfy ok in two readings in a row, and returns it.
func (e *env) levelSettles(ok func(dBFS float64) bool) (float64, error) {
	var l float64
	hits := 0
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if l = levelDB(e.hs.tail(500 * time.Millisecond)); ok(l) {
			if hits++; hits == 2 {
				return l, nil
			}
		} else {
			hits = 0
		}
	}
	return l, fmt.Errorf("still %.1f dBFS after 10 s", l)
}

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
			// The change reaches the loopback's far side after the
			// playback ring and arecord's buffer, longer on a slow guest:
			// wait for the level to settle, not for a fixed time.
			l1, err := e.levelSettles(func(l float64) bool { d := l0 - l; return d >= 4.5 && d <= 7.5 })
			if err != nil {
				return "", fmt.Errorf("volume down ×4 from %.1f dBFS, want about 6 dB less: %w", l0, err)
			}
			for range 4 {
				if err := u.tap(keyVolumeUp); err != nil {
					return "", err
				}
			}
			// ±0.75 dB: three taps of four would leave it 1.2 dB short.
			l2, err := e.levelSettles(func(l float64) bool { d := l - l0; return d >= -0.75 && d <= 0.75 })
			if err != nil {
				return "", fmt.Errorf("volume up ×4 from %.1f dBFS did not restore %.1f dBFS: %w", l1, l0, err)
			}
			got := fmt.Sprintf("%.1f → %.1f → %.1f dBFS", l0, l1, l2)
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
