package board

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func blackwire(t *testing.T) *hidLayout {
	t.Helper()
	l, err := parseReportDescriptor(loadHex(t, "hid-plantronics-blackwire-3220-telephony.hex"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestHIDInputReports(t *testing.T) {
	d := newHIDDevice("hidraw3", "Blackwire", blackwire(t), nil)
	var got []Kind
	emit := func(e Event) {
		if e.Source != "hidraw" {
			t.Errorf("source %q", e.Source)
		}
		got = append(got, e.Kind)
	}
	for _, r := range [][]byte{
		{0x08, 0x02}, // Hook Switch 0→1: answer
		{0x08, 0x02}, // repeated state: nothing
		{0x08, 0x03}, // Phone Mute (relative) 0→1: mute
		{0x08, 0x02}, // Mute released: nothing
		{0x08, 0x06}, // Flash: not a key of ours
		{0x08, 0x00}, // Hook Switch 1→0: hang up
		{0x09, 0x01}, // a report we do not read
	} {
		if err := d.handleReport(r, emit); err != nil {
			t.Fatalf("report %x: %v", r, err)
		}
	}
	want := []Kind{Hook, Mute, Hook}
	if !equalKinds(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// Short and empty reports are errors, not panics, and change nothing.
	for _, r := range [][]byte{{0x08}, {}} {
		if err := d.handleReport(r, emit); !errors.Is(err, errShortReport) {
			t.Fatalf("report %x: err %v", r, err)
		}
	}
	if len(got) != 3 {
		t.Fatalf("a short report made events: %v", got)
	}
	// Without report IDs, the data starts at the first byte.
	apple, _ := parseReportDescriptor(loadHex(t, "hid-apple-headset-remote-telephony.hex"))
	apple.In[usageHookSwitch] = hidField{Usage: usageHookSwitch, Offset: 2, Size: 1} // pretend Flash is the hook
	da := newHIDDevice("x", "x", apple, nil)
	got = nil
	for _, r := range [][]byte{{0x04}, {0x00}} {
		if err := da.handleReport(r, emit); err != nil {
			t.Fatal(err)
		}
	}
	if !equalKinds(got, []Kind{Hook, Hook}) {
		t.Fatalf("no report IDs: %v", got)
	}
}

func equalKinds(a, b []Kind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// bufRW records what is written.
type bufRW struct{ bytes.Buffer }

func (b *bufRW) Read([]byte) (int, error) { return 0, io.EOF }

func TestHIDOutputReports(t *testing.T) {
	var w bufRW
	d := newHIDDevice("hidraw3", "Blackwire", blackwire(t), &w)
	if err := d.setState(headsetState{OffHook: true, Muted: true}); err != nil {
		t.Fatal(err)
	}
	// Blackwire: Mute LED is report 9, Off-Hook 0x17, Ring 0x18, one bit each.
	if want := []byte{0x09, 0x01, 0x17, 0x01, 0x18, 0x00}; !bytes.Equal(w.Bytes(), want) {
		t.Fatalf("wrote %x, want %x", w.Bytes(), want)
	}
	w.Reset()
	_ = d.setState(headsetState{Ringing: true})
	if want := []byte{0x09, 0x00, 0x17, 0x00, 0x18, 0x01}; !bytes.Equal(w.Bytes(), want) {
		t.Fatalf("wrote %x, want %x", w.Bytes(), want)
	}
	// Off-Hook written by us moves the hook: the headset's next press
	// (Hook Switch 1→0 after a desk-button answer) is a change.
	_ = d.setState(headsetState{OffHook: true})
	var got []Kind
	_ = d.handleReport([]byte{0x08, 0x00}, func(e Event) { got = append(got, e.Kind) })
	if !equalKinds(got, []Kind{Hook}) {
		t.Fatalf("hang-up after a host off-hook: %v", got)
	}
	// A headset without LEDs: nothing written, no error.
	h540, _ := parseReportDescriptor(loadHex(t, "hid-logitech-h540-consumer.hex"))
	w.Reset()
	if err := newHIDDevice("x", "x", h540, &w).setState(headsetState{OffHook: true}); err != nil || w.Len() != 0 {
		t.Fatalf("no LEDs: %v %x", err, w.Bytes())
	}
}

// fakeHidrawSys makes /sys/class/hidraw/hidrawN/device/{uevent,report_descriptor}.
func fakeHidrawSys(t *testing.T, nodes map[string]struct {
	name string
	desc []byte
}) string {
	t.Helper()
	sys := t.TempDir()
	for node, n := range nodes {
		d := filepath.Join(sys, node, "device")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		uevent := "DRIVER=hid-generic\nHID_ID=0003:0000047F:0000C056\nHID_NAME=" + n.name + "\nHID_PHYS=usb-0000:01:00.0-1.3/input3\n"
		if err := os.WriteFile(filepath.Join(d, "uevent"), []byte(uevent), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "report_descriptor"), n.desc, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sys
}

type node = struct {
	name string
	desc []byte
}

func TestFindHidraw(t *testing.T) {
	bw := loadHex(t, "hid-plantronics-blackwire-3220-telephony.hex")
	sys := fakeHidrawSys(t, map[string]node{
		"hidraw0": {"Logitech USB Receiver", loadHex(t, "hid-logitech-h540-consumer.hex")},                  // "logitech" matches auto; no Telephony page
		"hidraw4": {"Dell KB216 Wired Keyboard", bw[:20]},                                                   // not a headset name: its descriptor is not even read
		"hidraw1": {"Logitech Inc Logitech USB Headset H540", loadHex(t, "hid-logitech-h540-consumer.hex")}, // no Telephony page
		"hidraw2": {"Plantronics Plantronics Blackwire 3220 Series", bw},
		"hidraw3": {"GN Audio A/S Jabra Evolve2 30", bw[:40]}, // a broken descriptor
	})
	dev, name, l, problems := findHidraw(sys, "/dev", "auto")
	if dev != "/dev/hidraw2" || name != "Plantronics Plantronics Blackwire 3220 Series" || l == nil || !l.telephony() {
		t.Fatalf("auto: %q %q %v", dev, name, l)
	}
	if len(problems) != 0 {
		t.Fatalf("problems before the match: %v", problems)
	}
	if dev, _, _, problems := findHidraw(sys, "/dev", "jabra"); dev != "" || len(problems) != 1 {
		t.Fatalf("broken descriptor: %q %v", dev, problems)
	}
	if dev, _, _, _ := findHidraw(sys, "/dev", "H540"); dev != "" {
		t.Fatalf("attached to a headset without a Telephony page: %q", dev)
	}
	if dev, _, _, _ := findHidraw(sys, "/dev", "Sennheiser"); dev != "" {
		t.Fatalf("found a headset that is not there: %q", dev)
	}
	if hidName([]byte("HID_ID=1\nHID_NAME= Jabra Link 380 \n")) != "Jabra Link 380" || hidName([]byte("X=1")) != "" {
		t.Fatal("hidName")
	}
}

// TestProbeHeadsetButton: what doctor says about the headset's call
// button: none, a broken descriptor, a node waphone may not open, a usable one.
func TestProbeHeadsetButton(t *testing.T) {
	bw := loadHex(t, "hid-plantronics-blackwire-3220-telephony.hex")
	sys := fakeHidrawSys(t, map[string]node{
		"hidraw2": {"Plantronics Plantronics Blackwire 3220 Series", bw},
		"hidraw3": {"GN Audio A/S Jabra Evolve2 30", bw[:40]},
	})
	dev := t.TempDir()
	if found, _, err := probeHeadsetButton(sys, dev, "Sennheiser"); found || err != nil {
		t.Fatalf("nothing plugged in: %v %v", found, err)
	}
	if found, _, err := probeHeadsetButton(sys, dev, "jabra"); found || err == nil {
		t.Fatalf("broken descriptor: %v %v", found, err)
	}
	// The node is not there (as when udev gave it to root only, we cannot open it).
	if found, desc, err := probeHeadsetButton(sys, dev, "blackwire"); !found || err == nil || !strings.Contains(desc, "hidraw2") {
		t.Fatalf("unopenable node: %v %q %v", found, desc, err)
	}
	if err := os.WriteFile(filepath.Join(dev, "hidraw2"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if found, desc, err := probeHeadsetButton(sys, dev, "auto"); !found || err != nil || !strings.Contains(desc, "Blackwire") {
		t.Fatalf("usable node: %v %q %v", found, desc, err)
	}
}

// seqpacket is a connected pair that keeps message boundaries, as
// /dev/hidraw does: one read, one report. Closing one end is an unplug.
func seqpacket(t *testing.T) (dev, headset *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skip("no SOCK_SEQPACKET here:", err)
	}
	for _, fd := range fds {
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	return os.NewFile(uintptr(fds[0]), "hidraw-fake"), os.NewFile(uintptr(fds[1]), "headset-fake")
}

// readOutputs reads n output reports the board wrote to the headset.
func readOutputs(t *testing.T, h *os.File, n int) [][]byte {
	t.Helper()
	var out [][]byte
	buf := make([]byte, 64)
	_ = h.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(out) < n {
		k, err := h.Read(buf)
		if err != nil {
			t.Fatalf("after %x: %v", out, err)
		}
		out = append(out, append([]byte(nil), buf[:k]...))
	}
	return out
}

func nextEvent(t *testing.T, b *Board) Event {
	t.Helper()
	select {
	case e := <-b.events:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	return Event{}
}

// TestHIDWatchAttachReadWriteReplug runs the real watcher on a fake sysfs,
// with a SOCK_SEQPACKET pair standing in for /dev/hidraw2.
func TestHIDWatchAttachReadWriteReplug(t *testing.T) {
	sys := fakeHidrawSys(t, map[string]node{
		"hidraw2": {"Plantronics Plantronics Blackwire 3220 Series", loadHex(t, "hid-plantronics-blackwire-3220-telephony.hex")},
	})
	b := &Board{log: quietLog(), events: make(chan Event, 16), hsKick: make(chan struct{}, 1)}
	headsets := make(chan *os.File, 2)
	opened := make(chan string, 4)
	open := func(path string) (io.ReadWriteCloser, error) {
		dev, h := seqpacket(t)
		opened <- path
		headsets <- h
		return dev, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { b.watchHID(ctx, sys, "/dev", "auto", open); done <- struct{}{} }()
	go func() { b.driveHeadset(ctx); done <- struct{}{} }()

	if p := <-opened; p != "/dev/hidraw2" {
		t.Fatalf("opened %q", p)
	}
	h := <-headsets
	// On attach the board tells the headset the phone's state: idle.
	if got := readOutputs(t, h, 3); !bytes.Equal(bytes.Join(got, nil), []byte{0x09, 0, 0x17, 0, 0x18, 0}) {
		t.Fatalf("on attach: %x", got)
	}
	b.SetHeadsetState(false, true, false) // ringing
	if got := readOutputs(t, h, 3); !bytes.Equal(got[2], []byte{0x18, 0x01}) {
		t.Fatalf("ringing: %x", got)
	}
	_, _ = h.Write([]byte{0x08, 0x02}) // the call button: off-hook
	if e := nextEvent(t, b); e.Kind != Hook || e.Source != "hidraw" {
		t.Fatalf("got %+v", e)
	}
	b.SetHeadsetState(true, false, false) // the phone answered: echo Off-Hook
	if got := readOutputs(t, h, 3); !bytes.Equal(got[1], []byte{0x17, 0x01}) {
		t.Fatalf("off-hook: %x", got)
	}
	_, _ = h.Write([]byte{0x08, 0x03}) // mute pressed
	_, _ = h.Write([]byte{0x08, 0x02}) // and released
	_, _ = h.Write([]byte{0x08})       // a short report: logged, ignored
	_, _ = h.Write([]byte{0x08, 0x00}) // the call button: on-hook
	if e := nextEvent(t, b); e.Kind != Mute {
		t.Fatalf("got %+v", e)
	}
	if e := nextEvent(t, b); e.Kind != Hook {
		t.Fatalf("got %+v", e)
	}

	_ = h.Close() // unplugged
	if p := <-opened; p != "/dev/hidraw2" {
		t.Fatalf("re-opened %q", p)
	}
	h2 := <-headsets
	if got := readOutputs(t, h2, 3); !bytes.Equal(got[1], []byte{0x17, 0x01}) {
		t.Fatalf("after replug the headset is told the state again: %x", got)
	}
	_, _ = h2.Write([]byte{0x08, 0x00}) // on-hook: a change from the echoed off-hook
	if e := nextEvent(t, b); e.Kind != Hook {
		t.Fatalf("after replug: %+v", e)
	}
	cancel()
	for range 2 {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("watcher did not stop")
		}
	}
	_ = h2.Close()
}

func TestHIDWatchUnreadableAndGone(t *testing.T) {
	sys := fakeHidrawSys(t, map[string]node{
		"hidraw0": {"Plantronics Blackwire", loadHex(t, "hid-plantronics-blackwire-3220-telephony.hex")},
	})
	var logs bytes.Buffer
	b := &Board{log: slog.New(slog.NewTextHandler(&logs, nil)), events: make(chan Event, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	b.watchHID(ctx, sys, t.TempDir(), "auto", openHidraw) // the /dev node does not exist
	if !bytes.Contains(logs.Bytes(), []byte("not readable")) {
		t.Fatalf("log: %s", logs.String())
	}
}

func TestEvdevAndHidrawCountOnce(t *testing.T) {
	b := &Board{log: quietLog(), events: make(chan Event, 8)}
	now := time.Now()
	b.emit(Event{Kind: Mute, Source: "evdev", At: now})
	b.emit(Event{Kind: Mute, Source: "hidraw", At: now.Add(3 * time.Millisecond)}) // the same press: KEY_MICMUTE and Phone Mute
	b.emit(Event{Kind: Hook, Source: "hidraw", At: now.Add(5 * time.Millisecond)})
	b.emit(Event{Kind: Hook, Source: "hidraw", At: now.Add(6 * time.Millisecond)}) // two changes of the hook: two presses
	b.emit(Event{Kind: Mute, Source: "hidraw", At: now.Add(time.Second)})          // a later press
	var got []Kind
	for len(b.events) > 0 {
		got = append(got, (<-b.events).Kind)
	}
	if !equalKinds(got, []Kind{Mute, Hook, Hook, Mute}) {
		t.Fatalf("got %v", got)
	}
}
