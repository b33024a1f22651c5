//go:build linux

// Section 3: the headset's call button and LEDs through uhid and hidraw.

package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/waphone/waphone/internal/metasim"
)

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
		tail := c.RecordedTail(time.Second)
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
