package audio

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gen2brain/malgo"

	"github.com/waphone/waphone/internal/dsp"
	"github.com/waphone/waphone/internal/testutil"
)

func TestRingUnderrunOverrun(t *testing.T) {
	r := NewRing(1000) // rounds up to 1024
	in := make([]int16, 600)
	for i := range in {
		in[i] = int16(i + 1)
	}
	r.Write(in)
	out := make([]int16, 800)
	r.Read(out)
	if out[0] != 1 || out[599] != 600 || out[600] != 0 || r.Underruns() != 1 {
		t.Fatalf("underrun: %v %v %v, %d", out[0], out[599], out[600], r.Underruns())
	}
	// Lap the reader: the oldest samples go.
	for i := 0; i < 3; i++ {
		r.Write(in)
	}
	r.Read(out)
	if r.Overruns() != 1 {
		t.Fatalf("overrun not handled: %d", r.Overruns())
	}
	if b := r.Buffered(); b != 1024-800 {
		t.Fatalf("buffered %d", b)
	}
	r.Reset()
	if r.Buffered() != 0 {
		t.Fatal("reset left samples")
	}
}

func TestMalgoNullBackendQuirk(t *testing.T) {
	// If this fails, malgo fixed its enumeration: drop BackendNull and use malgo's.
	if ctx, err := malgo.InitContext([]malgo.Backend{malgo.BackendNull}, malgo.ContextConfig{}, nil); err == nil {
		_ = ctx.Uninit()
		ctx.Free()
		t.Log("malgo.BackendNull works now; BackendNull may be obsolete")
	}
	ctx, err := malgo.InitContext([]malgo.Backend{BackendNull}, malgo.ContextConfig{}, nil)
	if err != nil {
		t.Fatalf("miniaudio's null backend via Backend(14): %v", err)
	}
	_ = ctx.Uninit()
	ctx.Free()
}

// TestHeadsetNullBackendRealTime drives the real malgo path at real-time
// pace on the Null backend, then unplugs and replugs it through the seam
// the device's stop callback uses.
func TestHeadsetNullBackendRealTime(t *testing.T) {
	h, err := OpenHeadset(HeadsetConfig{Backends: []malgo.Backend{BackendNull}, PeriodMs: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if !h.Plugged() {
		t.Fatal("null device not open")
	}
	src, sink := h.Source(), h.Sink()
	tone := NewTone(440, 0.3)
	frame := make([]int16, FrameSamples)
	start := time.Now()
	for i := 0; i < 50; i++ { // one second of 20 ms frames
		_ = tone.ReadFrame(frame)
		_ = sink.WriteFrame(frame)
		_ = src.ReadFrame(frame)
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 20 * time.Millisecond)))
	}
	st := h.Stats()
	// 10 ms periods: about 100 callbacks a second (the null device's clock is loose).
	if st.Callbacks < 50 || st.Callbacks > 200 {
		t.Fatalf("%d callbacks in 1 s, want about 100", st.Callbacks)
	}
	if st.Buffered > SampleRate/10 {
		t.Fatalf("playback ring grew to %d samples", st.Buffered)
	}
	// Unplug: the stop callback fires; the source gives silence meanwhile.
	h.stopped <- struct{}{}
	deadline := time.Now().Add(2 * time.Second)
	for h.Stats().Unplugs == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if h.Stats().Unplugs != 1 {
		t.Fatal("unplug not noticed")
	}
	_ = src.ReadFrame(frame)
	// Replug: back within 2 s without a restart.
	deadline = time.Now().Add(2500 * time.Millisecond)
	for !h.Plugged() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !h.Plugged() {
		t.Fatal("device not reopened within 2 s")
	}
}

// TestHeadsetRenewsContextForNewCard: a card appearing while unplugged
// makes the reopen use a new sound-system context (alsa-lib's per-card
// configuration is read again); the device then runs on the new context.
func TestHeadsetRenewsContextForNewCard(t *testing.T) {
	h, err := OpenHeadset(HeadsetConfig{Backends: []malgo.Backend{BackendNull}, PeriodMs: 10})
	if err != nil {
		t.Fatal(err)
	}
	// The watch goroutine stops first: this test plays its part.
	close(h.done)
	h.wg.Wait()
	defer func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.dev != nil {
			closeDevice(h.dev)
		}
		_ = h.ctx.Uninit()
		h.ctx.Free()
	}()
	h.unplugged("test")
	old := h.ctx
	if err := h.start(true); err != nil {
		t.Fatalf("reopen on a renewed context: %v", err)
	}
	if h.ctx == old {
		t.Fatal("the context was not renewed")
	}
	before := h.Stats().Callbacks
	deadline := time.Now().Add(2 * time.Second)
	for h.Stats().Callbacks < before+10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := h.Stats().Callbacks - before; got < 10 {
		t.Fatalf("%d device callbacks after the reopen, want a running device", got)
	}
	// A plugged device keeps its context: renewing under it would free
	// the configuration it runs on.
	cur, dev := h.ctx, h.dev
	if err := h.start(true); err != nil {
		t.Fatalf("start on an open device: %v", err)
	}
	if h.ctx != cur || h.dev != dev {
		t.Fatal("start replaced the context or device under an open device")
	}
	if names, err := h.Devices(); err != nil || len(names) == 0 {
		t.Fatalf("devices on the renewed context: %v %v", names, err)
	}
}

func TestHeadsetMissingDeviceIsNotFatal(t *testing.T) {
	h, err := OpenHeadset(HeadsetConfig{Backends: []malgo.Backend{BackendNull}, Capture: "no-such-headset"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Plugged() {
		t.Fatal("claims a device that does not exist")
	}
	f := make([]int16, FrameSamples)
	f[0] = 7
	if err := h.Source().ReadFrame(f); err != nil || f[0] != 0 {
		t.Fatal("missing headset must read silence")
	}
}

func BenchmarkHeadsetCallback(b *testing.B) {
	h := &Headset{capt: NewRing(SampleRate / 5), play: NewRing(SampleRate / 5)}
	h.gain.Store(1024)
	in := make([]byte, 480*2)
	out := make([]byte, 480*2)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		h.callback(out, in, 480)
	}
}

// BenchmarkRingLatency reports how much audio waits in the playback ring
// between the media loop (20 ms frames) and a 10 ms device callback.
func BenchmarkRingLatency(b *testing.B) {
	r := NewRing(SampleRate / 5)
	frame := make([]int16, FrameSamples)
	period := make([]int16, FrameSamples/2)
	var sum, n int
	for i := 0; i < b.N; i++ {
		r.Write(frame) // media loop: one frame
		for j := 0; j < 2; j++ {
			sum += r.Buffered()
			n++
			r.Read(period) // device: two 10 ms periods
		}
	}
	b.ReportMetric(float64(sum)/float64(n)/float64(SampleRate)*1000, "ms-buffered")
}

// TestHeadsetWhoseCallbacksStopIsUnplugged: a card that vanishes can leave
// miniaudio's ALSA thread spinning without calling the stop callback (seen
// with snd-aloop unbound in a VM); callbacks that stop coming count as an
// unplug, and the device is reopened once it works again.
func TestHeadsetWhoseCallbacksStopIsUnplugged(t *testing.T) {
	h, err := OpenHeadset(HeadsetConfig{Backends: []malgo.Backend{BackendNull}, PeriodMs: 10, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	testutil.Eventually(t, 5*time.Second, func() bool { return h.Plugged() && h.Stats().Callbacks > 10 }, "the device running")
	h.stalled.Store(true)
	testutil.Eventually(t, 6*time.Second, func() bool { return !h.Plugged() }, "the stalled device counted as unplugged")
	if n := h.Stats().Unplugs; n != 1 {
		t.Fatalf("%d unplugs", n)
	}
	h.stalled.Store(false)
	testutil.Eventually(t, 6*time.Second, func() bool { return h.Plugged() }, "the device reopened")
}

// TestHeadsetTestToneAndMicLevel: the console's headset test plays its
// tone out of the device callback (Null backend, real time), and the mic
// meter follows what the device captures (silence on the Null backend).
func TestHeadsetTestToneAndMicLevel(t *testing.T) {
	played := NewRecorder(SampleRate * 3)
	h, err := OpenHeadset(HeadsetConfig{Backends: []malgo.Backend{BackendNull}, PeriodMs: 10, Logger: slog.New(slog.DiscardHandler),
		Monitor: func(pcm []int16) { _ = played.WriteFrame(pcm) }})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	testutil.Eventually(t, 5*time.Second, h.Plugged, "the device running")
	if err := h.PlayTestTone(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the ring drains into the callback
	if ok, ratio := dsp.DetectTone(played.Samples(), SampleRate, 1000); !ok {
		t.Fatalf("no 1 kHz tone out of the device (ratio %.2f)", ratio)
	}
	if l := h.MicLevel(); l != 0 {
		t.Fatalf("mic level %v on a silent (Null) capture", l)
	}
	if names, err := h.Devices(); err != nil || len(names) == 0 {
		t.Fatalf("devices %v %v", names, err)
	}
}
