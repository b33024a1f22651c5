package board

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// The call button of most office headsets (Jabra, Poly/Plantronics, EPOS,
// Logitech) is the HID Telephony page's Hook Switch, which the kernel's
// hid-input maps to no key: it only reaches /dev/hidrawN. There we read
// the raw input reports, and write the LED page's Off-Hook, Ring and Mute
// back: many headsets expect the host to echo Off-Hook, or their own hook
// state drifts from the phone's.

// headsetState is what the phone tells the headset.
type headsetState struct{ OffHook, Ringing, Muted bool }

var errShortReport = errors.New("short HID report")

// hidDevice is one attached /dev/hidrawN.
type hidDevice struct {
	path, name string
	layout     *hidLayout
	rw         io.ReadWriter

	mu   sync.Mutex
	last map[uint32]uint32 // the last value of each input usage

	writeFailed bool // only touched by driveHeadset
}

func newHIDDevice(path, name string, l *hidLayout, rw io.ReadWriter) *hidDevice {
	return &hidDevice{path: path, name: name, layout: l, rw: rw, last: map[uint32]uint32{}}
}

// handleReport decodes one input report (what one read of hidraw returns:
// the report ID first when the descriptor uses IDs) and emits the presses.
// Hook Switch is an on/off state on most headsets (1 = off-hook asked,
// 0 = on-hook asked): each change is one press of the call button. As a
// relative (momentary) field, and for Phone Mute always, a press is a
// 0→1 edge: headsets send Phone Mute as 1 then 0 for every press, muting
// and unmuting alike, and the kernel's KEY_MICMUTE counts it the same way.
func (d *hidDevice) handleReport(rep []byte, emit func(Event)) error {
	if len(rep) == 0 {
		return fmt.Errorf("%w: empty", errShortReport)
	}
	data, id := rep, uint8(0)
	if d.layout.ReportIDs {
		id, data = rep[0], rep[1:]
	}
	var short error
	for _, u := range []uint32{usageHookSwitch, usagePhoneMute} {
		f, ok := d.layout.In[u]
		if !ok || f.ReportID != id {
			continue
		}
		v, ok := f.value(data)
		if !ok {
			short = fmt.Errorf("%w: report %d has %d data bytes, the field ends at bit %d", errShortReport, id, len(data), f.Offset+f.Size)
			continue
		}
		d.mu.Lock()
		was := d.last[u] != 0
		d.last[u] = v
		d.mu.Unlock()
		on := v != 0
		fire := on && !was
		if u == usageHookSwitch && !f.Relative {
			fire = on != was
		}
		if fire {
			kind := Hook
			if u == usagePhoneMute {
				kind = Mute
			}
			emit(Event{Kind: kind, Source: "hidraw", At: time.Now()})
		}
	}
	return short
}

// readReports reads input reports until r fails. Each read of hidraw
// returns one whole report.
func (d *hidDevice) readReports(r io.Reader, emit func(Event), log *slog.Logger) error {
	buf := make([]byte, 16384) // the kernel's largest HID report
	shorts := 0
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if herr := d.handleReport(buf[:n], emit); herr != nil {
				shorts++
				level := slog.LevelDebug
				if shorts == 1 {
					level = slog.LevelWarn
				}
				log.Log(context.Background(), level, "headset HID report ignored", "device", d.path, "err", herr, "count", shorts)
			}
		}
		if err != nil {
			return err
		}
	}
}

// setState writes the LED usages the descriptor has (Off-Hook, Ring,
// Mute) as output reports. Once Off-Hook is written the headset's hook
// is where we put it, so the next Hook Switch change counts from there:
// after an answer on the desk button, the headset's press to hang up
// (Hook Switch 1→0) is then a change.
func (d *hidDevice) setState(st headsetState) error {
	if len(d.layout.Out) == 0 {
		return nil
	}
	reps := d.layout.outputReports(map[uint32]bool{usageLEDOffHook: st.OffHook, usageLEDRing: st.Ringing, usageLEDMute: st.Muted})
	ids := make([]uint8, 0, len(reps))
	for id := range reps {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if _, ok := d.layout.Out[usageLEDOffHook]; ok {
		if h, ok := d.layout.In[usageHookSwitch]; ok && !h.Relative {
			d.mu.Lock()
			d.last[usageHookSwitch] = 0
			if st.OffHook {
				d.last[usageHookSwitch] = 1
			}
			d.mu.Unlock()
		}
	}
	for _, id := range ids {
		if _, err := d.rw.Write(reps[id]); err != nil {
			return fmt.Errorf("output report %d: %w", id, err)
		}
	}
	return nil
}

// hidName is HID_NAME from a hidraw node's uevent.
func hidName(uevent []byte) string {
	for line := range strings.SplitSeq(string(uevent), "\n") {
		if v, ok := strings.CutPrefix(line, "HID_NAME="); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// findHidraw returns the first hidraw node (sysDir = /sys/class/hidraw)
// whose HID name matches want, as for the evdev keys, and whose report
// descriptor has a Hook Switch or Phone Mute input. problems lists the
// matching nodes whose descriptor could not be used.
func findHidraw(sysDir, devDir, want string) (dev, name string, layout *hidLayout, problems []string) {
	entries, _ := filepath.Glob(filepath.Join(sysDir, "hidraw*"))
	for _, e := range entries {
		uevent, err := os.ReadFile(filepath.Join(e, "device", "uevent"))
		if err != nil {
			continue
		}
		n := hidName(uevent)
		if n == "" || !nameMatches(n, want) {
			continue
		}
		desc, err := os.ReadFile(filepath.Join(e, "device", "report_descriptor"))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s (%s): %v", filepath.Base(e), n, err))
			continue
		}
		l, err := parseReportDescriptor(desc)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s (%s): %v", filepath.Base(e), n, err))
			continue
		}
		if l.telephony() {
			return filepath.Join(devDir, filepath.Base(e)), n, l, problems
		}
	}
	return "", "", nil, problems
}

// openHidraw opens a hidraw node for reading and, when allowed, writing
// (the LEDs); read-only still gets the keys.
func openHidraw(path string) (io.ReadWriteCloser, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrPermission) {
		if ro, rerr := os.Open(path); rerr == nil {
			return ro, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

// watchHID attaches to the headset's hidraw node, and again after every
// replug. A lasting fault (no permission, a bad descriptor) is logged once.
func (b *Board) watchHID(ctx context.Context, sysDir, devDir, want string, open func(string) (io.ReadWriteCloser, error)) {
	changed, err := devChanges(ctx, devDir)
	if err != nil {
		b.log.Warn("headset call button: no device notifications", "err", err)
	}
	said := ""
	sayOnce := func(msg string, args ...any) {
		if key := msg + fmt.Sprint(args...); key != said {
			said = key
			b.log.Warn(msg, args...)
		}
	}
	for {
		dev, name, layout, problems := findHidraw(sysDir, devDir, want)
		if len(problems) > 0 {
			sayOnce("headset HID report descriptor unusable; its call button will not work", "problems", strings.Join(problems, "; "))
		}
		if dev != "" {
			if f, err := open(dev); err != nil {
				sayOnce("headset call button found but its hidraw node is not readable (udev rule and DeviceAllow=char-hidraw needed)", "device", dev, "err", err)
			} else {
				said = ""
				b.runHID(ctx, newHIDDevice(dev, name, layout, f), f)
				if ctx.Err() != nil {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// runHID reads one attached node until it goes away or ctx ends.
func (b *Board) runHID(ctx context.Context, d *hidDevice, f io.Closer) {
	l := d.layout
	_, hook := l.In[usageHookSwitch]
	_, mute := l.In[usagePhoneMute]
	b.log.Info("headset call button attached (hidraw)", "device", d.path, "name", d.name,
		"hook_switch", hook, "phone_mute", mute, "leds", len(l.Out))
	b.mu.Lock()
	b.hid = d
	b.mu.Unlock()
	b.kickHeadset() // tell the newly plugged headset where the phone is
	err := readUntilDone(ctx, f, func() error {
		err := d.readReports(d.rw, b.emit, b.log)
		b.mu.Lock()
		if b.hid == d { // detached before the node is closed: no LED write to a closed file
			b.hid = nil
		}
		b.mu.Unlock()
		return err
	})
	if ctx.Err() == nil {
		b.log.Warn("headset call button gone; will re-attach when it is back", "device", d.path, "err", err)
	}
}

// SetHeadsetState tells the headset's LEDs (and its hook state) where the
// phone is: off-hook in a call, ringing, muted. It does not block; a
// headset without those LEDs, or none at all, ignores it.
func (b *Board) SetHeadsetState(offHook, ringing, muted bool) {
	b.mu.Lock()
	b.headset = headsetState{OffHook: offHook, Ringing: ringing, Muted: muted}
	b.mu.Unlock()
	b.kickHeadset()
}

// ResendHeadsetState writes the last state again: after the headset's own
// call button was ignored (pressed while idle), it must not stay off-hook.
func (b *Board) ResendHeadsetState() { b.kickHeadset() }

func (b *Board) kickHeadset() {
	select {
	case b.hsKick <- struct{}{}:
	default:
	}
}

// driveHeadset writes the headset state whenever it changes or a headset
// is attached, off the caller's goroutine: a USB write may take a while.
func (b *Board) driveHeadset(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.hsKick:
		}
		b.mu.Lock()
		d, st := b.hid, b.headset
		b.mu.Unlock()
		if d == nil {
			continue
		}
		if err := d.setState(st); err != nil {
			if !d.writeFailed {
				b.log.Warn("headset LEDs not written (is its hidraw node writable?)", "device", d.path, "err", err)
			}
			d.writeFailed = true
		} else {
			d.writeFailed = false
		}
	}
}

// ProbeHeadsetButton is for `waphone doctor`: which hidraw node carries the
// headset's call button (want is board.headset_keys), and whether waphone
// may read and write it. found is false when no headset with a HID
// telephony interface is plugged in.
func ProbeHeadsetButton(want string) (found bool, desc string, err error) {
	return probeHeadsetButton("/sys/class/hidraw", "/dev", want)
}

func probeHeadsetButton(sysDir, devDir, want string) (found bool, desc string, err error) {
	dev, name, _, problems := findHidraw(sysDir, devDir, want)
	if dev == "" {
		if len(problems) > 0 {
			return false, "", fmt.Errorf("headset HID descriptor unusable: %s", strings.Join(problems, "; "))
		}
		return false, "", nil
	}
	desc = dev + " (" + name + ")"
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return true, desc, fmt.Errorf("%s: %w", dev, err)
	}
	_ = f.Close()
	return true, desc, nil
}
