package audio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gen2brain/malgo"
)

// BackendNull is miniaudio's Null backend. malgo v0.11.24's own
// malgo.BackendNull is off by one against the bundled miniaudio (which has
// ma_backend_custom before ma_backend_null), so it selects no backend; a
// test fails if upstream fixes or shifts this.
const BackendNull = malgo.Backend(14)

// HeadsetConfig chooses the device.
type HeadsetConfig struct {
	// Capture and Playback match device names by substring; "" or
	// "default" is the system default.
	Capture, Playback string
	// Backends to try; nil = the platform's (ALSA on the Pi).
	Backends []malgo.Backend
	// PeriodMs is the callback period: 10 or 20 ms.
	PeriodMs int
	// Monitor, if set, sees every block played, on the device thread: it
	// must neither block nor allocate (level meters, tests).
	Monitor func(played []int16)
	Logger  *slog.Logger
}

// Headset is a USB headset (or any sound card) as one duplex stream at
// 48 kHz mono S16. miniaudio converts from whatever the device really does
// (16/44.1 kHz, stereo). It outlives calls: unplugged, it reads silence and
// retries every second until the device is back.
type Headset struct {
	cfg  HeadsetConfig
	log  *slog.Logger
	capt *Ring
	play *Ring

	mu      sync.Mutex
	ctx     *malgo.AllocatedContext
	dev     *malgo.Device
	name    atomic.Pointer[string] // the open (or last) device; lock-free for Stats
	plugged atomic.Bool
	gain    atomic.Uint32 // playback gain in 1/1024 units
	frames  atomic.Uint64
	unplugs atomic.Uint64
	stopped chan struct{} // signalled by the device's stop callback
	stalled atomic.Bool   // tests: the callback does nothing, as on a card that vanished
	micPeak atomic.Uint32 // the loudest captured sample lately (decays each callback)
	done    chan struct{}
	wg      sync.WaitGroup
}

// HeadsetStats is what status shows about the audio device.
type HeadsetStats struct {
	Device          string `json:"device"`
	Plugged         bool   `json:"plugged"`
	Callbacks       uint64 `json:"callbacks"`
	CaptureOverrun  uint64 `json:"capture_overruns"`
	CaptureUnderrun uint64 `json:"capture_underruns"`
	PlayOverrun     uint64 `json:"playback_overruns"`
	PlayUnderrun    uint64 `json:"playback_underruns"`
	Buffered        int    `json:"playback_buffered_samples"`
	Unplugs         uint64 `json:"unplugs"`
}

// OpenHeadset starts the device. A missing device is not an error: the
// headset reports Plugged() == false, gives silence, and keeps looking.
func OpenHeadset(cfg HeadsetConfig) (*Headset, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PeriodMs == 0 {
		cfg.PeriodMs = 10
	}
	h := &Headset{
		cfg: cfg, log: cfg.Logger,
		// 200 ms each way: room for scheduling hiccups, bounded latency.
		capt: NewRing(SampleRate / 5), play: NewRing(SampleRate / 5),
		stopped: make(chan struct{}, 1), done: make(chan struct{}),
	}
	h.gain.Store(1024)
	alsaMessages.use(h.log)
	ctx, err := malgo.InitContext(cfg.Backends, malgo.ContextConfig{}, nil)
	if err != nil {
		return nil, fmt.Errorf("audio: no sound system: %w", err)
	}
	h.ctx = ctx
	if err := h.start(false); err != nil {
		h.log.Warn("headset not available; calls use silence until it is plugged in", errAttrs(err)...)
	}
	h.wg.Add(1)
	go h.watch()
	return h, nil
}

func findDevice(ctx *malgo.AllocatedContext, kind malgo.DeviceType, want string) (unsafe.Pointer, string, error) {
	if want == "" || want == "default" {
		return nil, "default", nil
	}
	infos, err := ctx.Devices(kind)
	if err != nil {
		return nil, "", fmt.Errorf("listing devices: %w", err)
	}
	var names []string
	for i := range infos {
		name := infos[i].Name()
		names = append(names, name)
		if strings.Contains(strings.ToLower(name), strings.ToLower(want)) {
			return infos[i].ID.Pointer(), name, nil
		}
	}
	return nil, "", fmt.Errorf("no device matching %q (have %q)", want, names)
}

// start opens the device. renew first replaces the sound-system context:
// alsa-lib reads its configuration once, and the per-card part of it
// (the hints for hw:CARD=…, front:…) only for the cards present then, so a
// headset plugged in after start would stay invisible ("cannot find card")
// to a context made before it.
func (h *Headset) start(renew bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dev != nil {
		return nil // open already; a second device would leak the first
	}
	if renew {
		ctx, err := malgo.InitContext(h.cfg.Backends, malgo.ContextConfig{}, nil)
		if err != nil {
			return fmt.Errorf("audio: renewing the sound system: %w", err)
		}
		// The old context's Uninit frees alsa-lib's global configuration
		// (snd_config_update_free_global), so the new context's first
		// probe reads it again, with today's cards.
		_ = h.ctx.Uninit()
		h.ctx.Free()
		h.ctx = ctx
	}
	capID, capName, err := findDevice(h.ctx, malgo.Capture, h.cfg.Capture)
	if err != nil {
		return err
	}
	playID, _, err := findDevice(h.ctx, malgo.Playback, h.cfg.Playback)
	if err != nil {
		return err
	}
	dc := malgo.DefaultDeviceConfig(malgo.Duplex)
	dc.SampleRate = SampleRate
	dc.PeriodSizeInMilliseconds = uint32(h.cfg.PeriodMs)
	dc.Capture.Format, dc.Capture.Channels, dc.Capture.DeviceID = malgo.FormatS16, 1, capID
	dc.Playback.Format, dc.Playback.Channels, dc.Playback.DeviceID = malgo.FormatS16, 1, playID
	cb := malgo.DeviceCallbacks{
		Data: h.callback,
		Stop: func() {
			select {
			case h.stopped <- struct{}{}:
			default:
			}
		},
	}
	// Exclusive first: ALSA's shared default goes through dmix/dsnoop,
	// which impose their own periods (1024 frames, a 341 ms buffer seen on
	// snd-aloop) instead of our 10 ms. A device another program holds, or
	// a backend without exclusive mode, falls back to shared.
	dc.Capture.ShareMode, dc.Playback.ShareMode = malgo.Exclusive, malgo.Exclusive
	dev, err := malgo.InitDevice(h.ctx.Context, dc, cb)
	if err != nil {
		dc.Capture.ShareMode, dc.Playback.ShareMode = malgo.Shared, malgo.Shared
		var serr error
		if dev, serr = malgo.InitDevice(h.ctx.Context, dc, cb); serr != nil {
			hint := ""
			if errors.Is(serr, malgo.ErrInvalidOperation) {
				// miniaudio's name for EPERM; the usual cause is a
				// sandbox denying its device thread's scheduling call.
				hint = " (EPERM: does a seccomp filter deny sched_setparam? the shipped unit allows it)"
			}
			return fmt.Errorf("opening %s: %w (exclusive: %v)%s", capName, serr, err, hint)
		}
		h.log.Debug("headset opened shared (exclusive refused)", "device", capName, "err", err)
	}
	if err := dev.Start(); err != nil {
		dev.Uninit()
		return fmt.Errorf("starting %s: %w", capName, err)
	}
	h.dev = dev
	h.name.Store(&capName)
	h.plugged.Store(true)
	h.log.Info("headset open", "device", capName, "rate", dev.SampleRate())
	return nil
}

// callback runs on miniaudio's thread: no locks, no allocation.
func (h *Headset) callback(out, in []byte, frames uint32) {
	if h.stalled.Load() {
		return
	}
	h.frames.Add(1)
	if n := len(in) / 2; n > 0 {
		pcm := unsafe.Slice((*int16)(unsafe.Pointer(&in[0])), n)
		h.capt.Write(pcm)
		peak := h.micPeak.Load() * 15 / 16 // about 150 ms to fall 20 dB at 10 ms periods
		for _, v := range pcm {
			if a := uint32(max(int32(v), -int32(v))); a > peak {
				peak = a
			}
		}
		h.micPeak.Store(peak)
	}
	if n := len(out) / 2; n > 0 {
		pcm := unsafe.Slice((*int16)(unsafe.Pointer(&out[0])), n)
		h.play.Read(pcm)
		if g := h.gain.Load(); g != 1024 {
			for i, v := range pcm {
				s := int32(v) * int32(g) >> 10
				pcm[i] = int16(max(-32768, min(32767, s)))
			}
		}
		if h.cfg.Monitor != nil {
			h.cfg.Monitor(pcm)
		}
	}
}

// Reopening a missing device backs off from reopenMin to reopenMax: each
// try makes alsa-lib probe every card. A change in the kernel's list of
// sound cards (a headset plugged in) tries again at once.
const (
	reopenMin = time.Second
	reopenMax = 30 * time.Second
)

// watch notices an unplugged device (miniaudio stops it) and reopens it
// once it is back.
func (h *Headset) watch() {
	defer h.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	wait, next := reopenMin, time.Now().Add(reopenMin)
	cards, renew := soundCards(), false
	lastFrames, still := h.frames.Load(), 0
	for {
		select {
		case <-h.done:
			return
		case <-h.stopped:
			h.unplugged("the device stopped")
			wait, next = reopenMin, time.Now().Add(reopenMin)
		case now := <-t.C:
			if h.plugged.Load() {
				// A card that vanishes (USB unplug) can leave miniaudio's
				// ALSA thread polling an error state for ever, without the
				// stop callback: callbacks that stop coming mean unplugged.
				if f := h.frames.Load(); f != lastFrames {
					lastFrames, still = f, 0
					continue
				}
				if still++; still < stallTicks {
					continue
				}
				still = 0
				h.unplugged("the device stopped calling back")
				wait, next = reopenMin, now.Add(reopenMin)
				continue
			}
			if c := soundCards(); c != cards {
				cards, next, renew = c, now, true // a card came or went: look now, afresh
			}
			if now.Before(next) {
				continue
			}
			err := h.start(renew)
			if err == nil {
				h.log.Info("headset back", "device", h.deviceName())
				wait, renew = reopenMin, false
				continue
			}
			if renew {
				// A card came but is not ours, or cannot be opened: say
				// why once per change, not on every retry.
				h.log.Warn("a sound card appeared but the headset could not be opened", errAttrs(err)...)
				renew = false
			}
			wait = min(2*wait, reopenMax)
			next = now.Add(wait)
		}
	}
}

// stallTicks is how many one-second ticks without a device callback make
// a plugged device count as gone.
const stallTicks = 2

// unplugged closes a device that went away; the call goes on with silence.
func (h *Headset) unplugged(why string) {
	h.mu.Lock()
	if h.dev != nil {
		closeDevice(h.dev)
		h.dev = nil
		// Our own Stop fired the stop callback (before Stop returned): a
		// token left behind would unplug the next device the watch opens.
		select {
		case <-h.stopped:
		default:
		}
	}
	h.mu.Unlock()
	if h.plugged.Swap(false) {
		h.unplugs.Add(1)
		h.log.Warn("headset gone; the call continues with silence", "device", h.deviceName(), "why", why)
	}
}

// errAttrs are the log attributes of a failed open: the error and, when
// there is one, alsa-lib's own last message (often the real cause).
func errAttrs(err error) []any {
	attrs := []any{"err", err}
	if m := alsaMessages.lastMessage(); m != "" {
		attrs = append(attrs, "alsa", m)
	}
	return attrs
}

// closeDevice stops, then frees, a device. Stop first: only ma_device_stop
// writes the ALSA wakeup fd; ma_device_uninit just joins the device thread,
// which on a card torn away (snd_card_disconnect: USB unplug, unbind) spins
// for ever in ma_device_wait__alsa's poll on POLLERR (seen in make
// check-board: Uninit never returned, one core burnt, the watchdog fired).
func closeDevice(dev *malgo.Device) {
	_ = dev.Stop()
	dev.Uninit()
}

// soundCards names the kernel's sound devices ("" where there are none):
// cheap to poll, and silent, unlike a probe through alsa-lib. /dev/snd is
// what the service sees (its ProcSubset=pid hides /proc/asound).
func soundCards() string {
	var b strings.Builder
	entries, _ := os.ReadDir("/dev/snd")
	for _, e := range entries {
		b.WriteString(e.Name())
		b.WriteByte(' ')
	}
	cards, _ := os.ReadFile("/proc/asound/cards")
	b.Write(cards)
	return b.String()
}

// Plugged says whether the device is running.
func (h *Headset) Plugged() bool { return h.plugged.Load() }

// SetVolume sets playback gain, 0..2 (1 = unchanged).
func (h *Headset) SetVolume(v float64) {
	h.gain.Store(uint32(max(0, min(2, v)) * 1024))
}

func (h *Headset) deviceName() string {
	if p := h.name.Load(); p != nil {
		return *p
	}
	return ""
}

// Stats reports the device and ring counters. It takes no lock: status and
// the watchdog's health check read it, and a driver call that hangs under
// h.mu (a card torn away mid-call) must not hang them too.
func (h *Headset) Stats() HeadsetStats {
	return HeadsetStats{Device: h.deviceName(), Plugged: h.plugged.Load(), Callbacks: h.frames.Load(),
		CaptureOverrun: h.capt.Overruns(), CaptureUnderrun: h.capt.Underruns(),
		PlayOverrun: h.play.Overruns(), PlayUnderrun: h.play.Underruns(), Buffered: h.play.Buffered(), Unplugs: h.unplugs.Load()}
}

// MicLevel is the microphone's recent peak, 0 (silence) to 1 (full scale),
// for the console's level meter.
func (h *Headset) MicLevel() float64 { return min(1, float64(h.micPeak.Load())/32767) }

// PlayTestTone plays a one-second 1 kHz tone at -12 dBFS into the earpiece
// (the headset test; not during a call: it shares the playback ring).
func (h *Headset) PlayTestTone(ctx context.Context) error {
	if !h.Plugged() {
		return errors.New("the headset is not plugged in")
	}
	tone := NewTone(1000, 0.25)
	frame := make([]int16, FrameSamples)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for i := 0; i < 50; i++ {
		_ = tone.ReadFrame(frame)
		h.play.Write(frame)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Devices lists the sound devices' names, capture then playback, for the
// settings page (audio.capture = "device:NAME" matches a part of one).
func (h *Headset) Devices() ([]string, error) {
	h.mu.Lock() // start may renew the context
	defer h.mu.Unlock()
	var names []string
	for _, kind := range []malgo.DeviceType{malgo.Capture, malgo.Playback} {
		infos, err := h.ctx.Devices(kind)
		if err != nil {
			return names, fmt.Errorf("listing sound devices: %w", err)
		}
		for i := range infos {
			names = append(names, infos[i].Name())
		}
	}
	return names, nil
}

// Source is the microphone for one call; closing it leaves the device open.
func (h *Headset) Source() Source {
	h.capt.Reset()
	return headsetSource{h}
}

// Sink is the earpiece for one call; closing it leaves the device open.
func (h *Headset) Sink() Sink {
	h.play.Reset()
	return headsetSink{h}
}

type headsetSource struct{ h *Headset }

func (s headsetSource) ReadFrame(pcm []int16) error { s.h.capt.ReadLive(pcm); return nil }
func (s headsetSource) Close() error                { return nil }

// CapturedAt is when the device last delivered audio: the media loop reads
// its frames just after (media.TimedSource).
func (s headsetSource) CapturedAt() time.Time { return s.h.capt.LastWrite() }

type headsetSink struct{ h *Headset }

func (s headsetSink) WriteFrame(pcm []int16) error { s.h.play.WriteLive(pcm); return nil }
func (s headsetSink) Close() error                 { return nil }

// Close stops the device and the watcher.
func (h *Headset) Close() error {
	select {
	case <-h.done:
		return errors.New("headset already closed")
	default:
	}
	close(h.done)
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dev != nil {
		closeDevice(h.dev)
		h.dev = nil
	}
	_ = h.ctx.Uninit()
	h.ctx.Free()
	return nil
}
