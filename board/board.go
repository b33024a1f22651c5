// Package board is the phone's physical front: the desk button and the LED
// on GPIO (the kernel's character device, via go-gpiocdev) and the keys of
// a USB headset (evdev, and hidraw for the Telephony page's Hook Switch the
// kernel does not map). It turns presses into Events and shows a Pattern.
// Every piece is optional: a missing chip or headset leaves the rest working.
package board

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Kind of key event.
type Kind string

const (
	ShortPress Kind = "short-press"
	LongPress  Kind = "long-press" // held ≥ LongPressAfter
	Hook       Kind = "hook"       // a headset's call key: acts like a short press
	Mute       Kind = "mute"
	VolumeUp   Kind = "volume-up"
	VolumeDown Kind = "volume-down"
)

// Event is one key event.
type Event struct {
	Kind   Kind
	Source string // "gpio", "evdev" or "hidraw"
	At     time.Time
}

// Pattern is what the LED shows.
type Pattern int

const (
	Off       Pattern = iota // idle
	On                       // in a call
	Blink                    // ringing: 0.5 s on, 0.5 s off
	FastBlink                // error or unconfigured: 0.1 s on, 0.1 s off
)

// OutputLine is the LED's line (go-gpiocdev's *Line satisfies it).
type OutputLine interface {
	SetValue(int) error
	Close() error
}

// Config says which lines to use.
type Config struct {
	Chip        string // "" = no GPIO
	ButtonLine  string // name ("GPIO17") or offset ("17"); "" = none
	LedLine     string
	HeadsetKeys string // "auto", "off", or a substring of the input device's name
	Logger      *slog.Logger
}

// Board delivers events and drives the LED until Close.
type Board struct {
	log    *slog.Logger
	events chan Event
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pattern Pattern
	led     OutputLine
	closers []func() error

	hid     *hidDevice    // the attached headset hidraw node, if any
	headset headsetState  // what SetHeadsetState last said
	hsKick  chan struct{} // wakes driveHeadset
	ledKick chan struct{} // wakes driveLED: the pattern changed
	lastKey map[Kind]Event
}

// dedupWindow: one press of a headset key that reaches us both through
// evdev and hidraw (Phone Mute is KEY_MICMUTE too) counts once.
const dedupWindow = 250 * time.Millisecond

// Open starts what is configured. Faults (a missing chip, a busy line) are
// logged and returned joined, but the Board works with what is left.
func Open(cfg Config) (*Board, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Board{log: cfg.Logger, events: make(chan Event, 16), cancel: cancel, hsKick: make(chan struct{}, 1), ledKick: make(chan struct{}, 1)}
	var errs []error
	if cfg.Chip != "" {
		if err := b.openGPIO(cfg); err != nil {
			errs = append(errs, err)
			b.log.Error("GPIO unavailable; the button/LED will not work", "chip", cfg.Chip, "err", err)
		}
	}
	if cfg.HeadsetKeys != "off" && cfg.HeadsetKeys != "" {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			watchKeys(ctx, "/sys/class/input", "/dev/input", cfg.HeadsetKeys, b.emit, b.log)
		}()
		b.wg.Add(2)
		go func() {
			defer b.wg.Done()
			b.watchHID(ctx, "/sys/class/hidraw", "/dev", cfg.HeadsetKeys, openHidraw)
		}()
		go func() {
			defer b.wg.Done()
			b.driveHeadset(ctx)
		}()
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.driveLED(ctx)
	}()
	return b, errors.Join(errs...)
}

// Events delivers key events; it is closed by Close.
func (b *Board) Events() <-chan Event { return b.events }

// SetLED changes the LED's pattern.
func (b *Board) SetLED(p Pattern) {
	b.mu.Lock()
	b.pattern = p
	b.mu.Unlock()
	select {
	case b.ledKick <- struct{}{}:
	default: // a wake-up is pending already
	}
}

func (b *Board) emit(ev Event) {
	if ev.Kind == Hook || ev.Kind == Mute {
		b.mu.Lock()
		last, seen := b.lastKey[ev.Kind]
		dup := seen && last.Source != ev.Source && ev.At.Sub(last.At) < dedupWindow
		if !dup {
			if b.lastKey == nil {
				b.lastKey = map[Kind]Event{}
			}
			b.lastKey[ev.Kind] = ev
		}
		b.mu.Unlock()
		if dup {
			b.log.Debug("key event seen twice (evdev and hidraw): counted once", "kind", ev.Kind, "source", ev.Source)
			return
		}
	}
	select {
	case b.events <- ev:
	default:
		b.log.Warn("key event dropped: nobody reads them", "kind", ev.Kind)
	}
}

// ledValue is the LED's value for a pattern at time t since start.
func ledValue(p Pattern, t time.Duration) int {
	switch p {
	case On:
		return 1
	case Blink:
		if t%time.Second < 500*time.Millisecond {
			return 1
		}
	case FastBlink:
		if t%(200*time.Millisecond) < 100*time.Millisecond {
			return 1
		}
	}
	return 0
}

// driveLED sets the LED line when the pattern changes and, while it
// blinks, at each edge: no wake-ups at all while the LED is steady (most of
// a desk phone's life), which a fixed ticker would spend 20 times a second.
func (b *Board) driveLED(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	start, last := time.Now(), -1
	for {
		b.mu.Lock()
		led, p := b.led, b.pattern
		b.mu.Unlock()
		now := time.Now()
		if led != nil {
			if v := ledValue(p, now.Sub(start)); v != last {
				if err := led.SetValue(v); err != nil {
					b.log.Error("LED line failed; LED off from now on", "err", err)
					b.mu.Lock()
					b.led = nil
					b.mu.Unlock()
				} else {
					last = v
				}
			}
		}
		var wake <-chan time.Time
		if d := untilEdge(p, now.Sub(start)); d > 0 && led != nil {
			timer.Reset(d)
			wake = timer.C
		}
		select {
		case <-ctx.Done():
			b.mu.Lock()
			if b.led != nil {
				_ = b.led.SetValue(0)
			}
			b.mu.Unlock()
			return
		case <-b.ledKick:
		case <-wake:
		}
		if !timer.Stop() {
			select { // drain a fire we did not take, or the next Reset misfires
			case <-timer.C:
			default:
			}
		}
	}
}

// untilEdge is how long after t the pattern's value next changes; 0 for a
// steady pattern.
func untilEdge(p Pattern, t time.Duration) time.Duration {
	half := time.Duration(0)
	switch p {
	case Blink:
		half = 500 * time.Millisecond
	case FastBlink:
		half = 100 * time.Millisecond
	default:
		return 0
	}
	return half - t%half
}

// Close stops everything and closes Events.
func (b *Board) Close() error {
	b.cancel()
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, c := range b.closers {
		errs = append(errs, c())
	}
	close(b.events)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("board: %w", err)
	}
	return nil
}
