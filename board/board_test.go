package board

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestButtonClassification(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name  string
		edges []struct {
			down bool
			at   time.Duration
		}
		want []Kind
	}{
		{"short", edges(true, 0, false, 200*ms), []Kind{ShortPress}},
		{"long", edges(true, 0, false, 1200*ms), []Kind{LongPress}},
		{"exactly one second is long", edges(true, 0, false, 1000*ms), []Kind{LongPress}},
		{"bounce is ignored", edges(true, 0, false, 5*ms), nil},
		{"release without press", edges(false, 10*ms), nil},
		{"double press edge", edges(true, 0, true, 50*ms, false, 300*ms), []Kind{ShortPress}},
		{"two presses", edges(true, 0, false, 100*ms, true, 500*ms, false, 1600*ms), []Kind{ShortPress, LongPress}},
	}
	for _, c := range cases {
		var b Button
		var got []Kind
		for _, e := range c.edges {
			if k, ok := b.Edge(e.down, e.at); ok {
				got = append(got, k)
			}
		}
		if len(got) != len(c.want) || (len(got) > 0 && got[len(got)-1] != c.want[len(c.want)-1]) || (len(got) > 0 && got[0] != c.want[0]) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func edges(a ...any) []struct {
	down bool
	at   time.Duration
} {
	var out []struct {
		down bool
		at   time.Duration
	}
	for i := 0; i+1 < len(a); i += 2 {
		out = append(out, struct {
			down bool
			at   time.Duration
		}{a[i].(bool), asDuration(a[i+1])})
	}
	return out
}

// fakeLine records what the LED was set to.
type fakeLine struct {
	mu     sync.Mutex
	values []int
	fail   bool
}

func (f *fakeLine) SetValue(v int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return syscall.EIO
	}
	f.values = append(f.values, v)
	return nil
}
func (f *fakeLine) Close() error { return nil }
func (f *fakeLine) got() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.values...)
}

func TestLEDPatterns(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		p    Pattern
		at   time.Duration
		want int
	}{{Off, 0, 0}, {On, 0, 1}, {On, 777 * ms, 1}, {Blink, 100 * ms, 1}, {Blink, 600 * ms, 0}, {FastBlink, 50 * ms, 1}, {FastBlink, 150 * ms, 0}} {
		if v := ledValue(c.p, c.at); v != c.want {
			t.Errorf("pattern %d at %v: %d", c.p, c.at, v)
		}
	}
	led := &fakeLine{}
	b := &Board{log: slog.New(slog.NewTextHandler(io.Discard, nil)), events: make(chan Event, 1), led: led, ledKick: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.driveLED(ctx); close(done) }()
	b.SetLED(On)
	time.Sleep(60 * time.Millisecond)
	b.SetLED(FastBlink)
	time.Sleep(450 * time.Millisecond)
	cancel()
	<-done
	v := led.got()
	if len(v) < 4 || v[0] != 1 || v[len(v)-1] != 0 {
		t.Fatalf("LED values %v: want on, then blinking, then off at close", v)
	}
	// A dead LED line is logged and dropped; nothing panics.
	led.fail = true
	b2 := &Board{log: b.log, led: led, ledKick: make(chan struct{}, 1)}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	b2.SetLED(On)
	b2.driveLED(ctx2)
	if b2.led != nil {
		t.Fatal("failing LED line kept")
	}
}

func inputEvent(typ, code uint16, value int32) []byte {
	b := make([]byte, eventSize)
	binary.LittleEndian.PutUint16(b[eventSize-8:], typ)
	binary.LittleEndian.PutUint16(b[eventSize-6:], code)
	binary.LittleEndian.PutUint32(b[eventSize-4:], uint32(value))
	return b
}

func TestParseKeys(t *testing.T) {
	var stream bytes.Buffer
	stream.Write(inputEvent(evKey, keyPhone, 1))
	stream.Write(inputEvent(evKey, keyPhone, 0)) // release: ignored
	stream.Write(inputEvent(0x00, 0, 0))         // SYN_REPORT
	stream.Write(inputEvent(evKey, keyMicMute, 1))
	stream.Write(inputEvent(evKey, keyVolumeUp, 2)) // repeat: ignored
	stream.Write(inputEvent(evKey, keyVolumeDown, 1))
	stream.Write(inputEvent(evKey, 30 /* KEY_A */, 1)) // not a phone key
	var got []Kind
	err := parseKeys(&stream, func(e Event) { got = append(got, e.Kind) })
	if err != io.EOF {
		t.Fatalf("err %v", err)
	}
	want := []Kind{Hook, Mute, VolumeDown}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func fakeSysfs(t *testing.T, names map[string]string) (string, string) {
	t.Helper()
	sys, dev := t.TempDir(), t.TempDir()
	for ev, name := range names {
		d := filepath.Join(sys, ev, "device")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "name"), []byte(name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sys, dev
}

func TestFindKeys(t *testing.T) {
	sys, dev := fakeSysfs(t, map[string]string{"event0": "Power Button", "event3": "Jabra EVOLVE 20 MS Consumer Control", "event5": "Logi USB Headset H390"})
	if d, n := findKeys(sys, dev, "H390"); d != filepath.Join(dev, "event5") || n != "Logi USB Headset H390" {
		t.Fatalf("by name: %q %q", d, n)
	}
	if d, _ := findKeys(sys, dev, "auto"); d == "" || filepath.Base(d) == "event0" {
		t.Fatalf("auto picked %q", d)
	}
	if d, _ := findKeys(sys, dev, "Sennheiser"); d != "" {
		t.Fatalf("found a headset that is not there: %q", d)
	}
}

// TestKeysReattachAfterReplug reads a headset's events from a FIFO; the
// writer going away is an unplug, and a new writer is the headset back.
func TestKeysReattachAfterReplug(t *testing.T) {
	sys, dev := fakeSysfs(t, map[string]string{"event4": "USB Audio Headset"})
	fifo := filepath.Join(dev, "event4")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	events := make(chan Event, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		watchKeys(ctx, sys, dev, "auto", func(e Event) { events <- e }, slog.New(slog.NewTextHandler(io.Discard, nil)))
		close(done)
	}()
	press := func(code uint16) {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(inputEvent(evKey, code, 1))
		_ = w.Close() // the headset is pulled
	}
	press(keyMicMute)
	if e := <-events; e.Kind != Mute {
		t.Fatalf("got %v", e)
	}
	// Plugged back in: read again after the poll. A press written while
	// the watcher is between its EOF and its close is lost with that old
	// open file (as a key pressed mid-replug would be), so press again
	// until the re-attached watcher sees one.
	deadline := time.Now().Add(10 * time.Second)
	for got := false; !got; {
		if time.Now().After(deadline) {
			t.Fatal("keys not re-attached after replug")
		}
		press(keyPhone)
		select {
		case e := <-events:
			if e.Kind != Hook {
				t.Fatalf("got %v", e)
			}
			got = true
		case <-time.After(time.Second):
		}
	}
	cancel()
	// Unblock a reader waiting in open() on the FIFO.
	if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		w.Close()
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("watcher did not stop")
	}
}

func TestOpenWithoutHardware(t *testing.T) {
	b, err := Open(Config{Chip: "gpiochip99", ButtonLine: "17", LedLine: "27", HeadsetKeys: "off"})
	if err == nil {
		t.Fatal("a missing chip must be reported")
	}
	b.SetLED(Blink) // still usable
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-b.Events(); ok {
		t.Fatal("events not closed")
	}
	none, err := Open(Config{})
	if err != nil {
		t.Fatalf("no GPIO configured is not an error: %v", err)
	}
	_ = none.Close()
}

func asDuration(v any) time.Duration {
	if d, ok := v.(time.Duration); ok {
		return d
	}
	return time.Duration(v.(int))
}
