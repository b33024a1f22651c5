package board

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux input event codes (linux/input-event-codes.h) that headsets send.
const (
	evKey          = 0x01
	keyVolumeDown  = 114
	keyVolumeUp    = 115
	keyPlayPause   = 164 // many USB headsets' call button
	keyPhone       = 169
	keyMicMute     = 248
	keyPickupPhone = 0x1bd
	keyHangupPhone = 0x1be
)

// The kernel ignores a headset's HID "Hook Switch" usage: hidraw.go reads
// it from /dev/hidraw. The keys above are what arrives on evdev.
var keyKinds = map[uint16]Kind{
	keyPlayPause: Hook, keyPhone: Hook, keyPickupPhone: Hook, keyHangupPhone: Hook,
	keyMicMute: Mute, keyVolumeUp: VolumeUp, keyVolumeDown: VolumeDown,
}

// eventSize is sizeof(struct input_event): a struct timeval then
// type, code and value; 24 bytes on 64-bit, 16 on 32-bit ARM.
var eventSize = int(unsafe.Sizeof(unix.Timeval{})) + 8

// parseKeys reads input events from r until it fails, emitting key presses.
func parseKeys(r io.Reader, emit func(Event)) error {
	buf := make([]byte, eventSize*16)
	for {
		n, err := io.ReadAtLeast(r, buf, eventSize)
		for off := 0; off+eventSize <= n; off += eventSize {
			ev := buf[off+eventSize-8 : off+eventSize]
			typ := binary.LittleEndian.Uint16(ev[0:2])
			code := binary.LittleEndian.Uint16(ev[2:4])
			value := int32(binary.LittleEndian.Uint32(ev[4:8]))
			if typ != evKey || value != 1 { // presses only: not releases (0) or repeats (2)
				continue
			}
			if kind, ok := keyKinds[code]; ok {
				emit(Event{Kind: kind, Source: "evdev", At: time.Now()})
			}
		}
		if err != nil {
			return err
		}
	}
}

// headsetNames are what "auto" looks for in an input device's name.
var headsetNames = []string{"headset", "headphone", "usb audio", "jabra", "plantronics", "poly", "logitech", "sennheiser", "epos"}

// findKeys returns the event device whose name matches want ("auto" uses
// headsetNames), scanning sysfs (sysDir = /sys/class/input).
func findKeys(sysDir, devDir, want string) (dev, name string) {
	entries, _ := filepath.Glob(filepath.Join(sysDir, "event*"))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(e, "device", "name"))
		if err != nil {
			continue
		}
		n := strings.TrimSpace(string(b))
		if nameMatches(n, want) {
			return filepath.Join(devDir, filepath.Base(e)), n
		}
	}
	return "", ""
}

// nameMatches is the headset_keys rule, for evdev and hidraw alike:
// "auto" looks for headsetNames, anything else is a name substring.
func nameMatches(name, want string) bool {
	ln := strings.ToLower(name)
	if want == "auto" {
		for _, h := range headsetNames {
			if strings.Contains(ln, h) {
				return true
			}
		}
		return false
	}
	return strings.Contains(ln, strings.ToLower(want))
}

// readUntilDone runs read, which blocks reading f, and closes f when ctx
// ends so that the read returns. f is closed on return either way.
func readUntilDone(ctx context.Context, f io.Closer, read func() error) error {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = f.Close() // unblocks the read
		case <-done:
		}
	}()
	err := read()
	close(done)
	_ = f.Close()
	return err
}

// watchKeys attaches to the headset's keys, and again after every replug.
func watchKeys(ctx context.Context, sysDir, devDir, want string, emit func(Event), log *slog.Logger) {
	changed, err := devChanges(ctx, devDir)
	if err != nil {
		log.Warn("headset keys: no device notifications", "err", err)
	}
	for {
		if dev, name := findKeys(sysDir, devDir, want); dev != "" {
			if f, err := os.Open(dev); err != nil {
				log.Warn("headset keys found but not readable (is waphone in the input group?)", "device", dev, "err", err)
			} else {
				log.Info("headset keys attached", "device", dev, "name", name)
				err := readUntilDone(ctx, f, func() error { return parseKeys(f, emit) })
				if ctx.Err() != nil {
					return
				}
				log.Warn("headset keys gone; will re-attach when it is back", "device", dev, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
