package audio

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTonePhaseContinuous(t *testing.T) {
	tone := NewTone(440, 0.5)
	a, b := make([]int16, FrameSamples), make([]int16, FrameSamples)
	_ = tone.ReadFrame(a)
	_ = tone.ReadFrame(b)
	// The step between the last sample of a frame and the first of the next
	// must be like any step inside a frame: no click at frame boundaries.
	maxStep := 0.0
	for i := 1; i < FrameSamples; i++ {
		maxStep = math.Max(maxStep, math.Abs(float64(a[i])-float64(a[i-1])))
	}
	if d := math.Abs(float64(b[0]) - float64(a[FrameSamples-1])); d > maxStep*1.01 {
		t.Fatalf("jump %.0f at frame boundary, max step inside %.0f", d, maxStep)
	}
}

func TestWAVRoundTripAndLoop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.wav")
	sink, err := CreateWAVSink(path)
	if err != nil {
		t.Fatal(err)
	}
	tone := NewTone(1000, 0.4)
	want := make([]int16, 0, 3*FrameSamples)
	for i := 0; i < 3; i++ {
		f := make([]int16, FrameSamples)
		_ = tone.ReadFrame(f)
		want = append(want, f...)
		if err := sink.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	sp, err := ParseSpec("wav:" + path)
	if err != nil {
		t.Fatal(err)
	}
	src, err := sp.OpenSource()
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := make([]int16, 4*FrameSamples) // one frame more: it loops
	for i := 0; i < 4; i++ {
		if err := src.ReadFrame(got[i*FrameSamples : (i+1)*FrameSamples]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sample %d: %d != %d", i, got[i], want[i])
		}
	}
	for i := 0; i < FrameSamples; i++ {
		if got[3*FrameSamples+i] != want[i] {
			t.Fatal("did not loop to the start")
		}
	}
}

func writeWAV(t *testing.T, rate uint32, channels uint16, frames [][2]int16) string {
	t.Helper()
	h := wavHeader(uint32(len(frames)) * 2 * uint32(channels))
	binary.LittleEndian.PutUint16(h[22:], channels)
	binary.LittleEndian.PutUint32(h[24:], rate)
	for _, f := range frames {
		for c := 0; c < int(channels); c++ {
			h = binary.LittleEndian.AppendUint16(h, uint16(f[c]))
		}
	}
	p := filepath.Join(t.TempDir(), "in.wav")
	if err := os.WriteFile(p, h, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWAVStereoDownmixAndRateError(t *testing.T) {
	p := writeWAV(t, 48000, 2, [][2]int16{{100, 300}, {-200, -400}})
	src, err := OpenWAVSource(p)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]int16, 2)
	_ = src.ReadFrame(got)
	src.Close()
	if got[0] != 200 || got[1] != -300 {
		t.Fatalf("downmix %v", got)
	}
	p16 := writeWAV(t, 16000, 1, [][2]int16{{1, 0}})
	if _, err := OpenWAVSource(p16); err == nil || !strings.Contains(err.Error(), "16000") {
		t.Fatalf("16 kHz file: %v", err)
	}
	if _, err := OpenWAVSource(filepath.Join(t.TempDir(), "missing.wav")); err == nil {
		t.Fatal("missing file accepted")
	}
	junk := filepath.Join(t.TempDir(), "junk.wav")
	_ = os.WriteFile(junk, []byte("RIFF\x00\x00\x00\x00WAVEjunk"), 0o644)
	if _, err := OpenWAVSource(junk); err == nil {
		t.Fatal("junk accepted")
	}
}

func TestSpecs(t *testing.T) {
	for in, want := range map[string]Spec{
		"":                 {Kind: KindNull},
		"null":             {Kind: KindNull},
		"tone:440":         {Kind: KindTone, Hz: 440, Amplitude: DefaultToneAmplitude},
		"tone:1000@0.1":    {Kind: KindTone, Hz: 1000, Amplitude: 0.1},
		"wav:/tmp/a.wav":   {Kind: KindWAV, Path: "/tmp/a.wav"},
		"default":          {Kind: KindDevice, Device: "default"},
		"device:USB Audio": {Kind: KindDevice, Device: "USB Audio"},
	} {
		got, err := ParseSpec(in)
		if err != nil || got != want {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", in, got, err, want)
			continue
		}
		if in != "" {
			if back, _ := ParseSpec(got.String()); back != got {
				t.Errorf("%q: String() %q does not parse back", in, got.String())
			}
		}
		if got.Kind != KindDevice {
			if src, err := got.OpenSource(); got.Kind != KindWAV && err != nil {
				t.Errorf("%q: OpenSource: %v", in, err)
			} else if err == nil {
				_ = src.Close()
			}
		}
	}
	for _, bad := range []string{"tone:", "tone:abc", "tone:440@2", "tone:30000", "wav:", "device:", "alsa:hw0", "mic", "null:x", "default:x"} {
		if _, err := ParseSpec(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := ParseSinkSpec("tone:440"); err == nil || !strings.Contains(err.Error(), "source only") {
		t.Errorf("tone as a sink: %v", err)
	}
	if _, err := (Spec{Kind: KindDevice, Device: "default"}).OpenSink(); err == nil {
		t.Error("a device opened per call")
	}
}

func TestHeadsetFor(t *testing.T) {
	dev := Spec{Kind: KindDevice, Device: "Jabra"}
	if _, ok := HeadsetFor(Spec{Kind: KindTone, Hz: 440}, Spec{Kind: KindWAV, Path: "x"}); ok {
		t.Error("no device named, yet a headset")
	}
	if hc, ok := HeadsetFor(Spec{Kind: KindTone, Hz: 440}, dev); !ok || hc.Capture != "default" || hc.Playback != "Jabra" {
		t.Errorf("playback device: %+v %v", hc, ok)
	}
	if hc, ok := HeadsetFor(dev, Spec{}); !ok || hc.Capture != "Jabra" || hc.Playback != "default" {
		t.Errorf("capture device: %+v %v", hc, ok)
	}
}

func TestEndsWithoutDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.wav")
	if _, err := OpenEnds(Spec{Kind: KindWAV, Path: filepath.Join(t.TempDir(), "missing.wav")}, Spec{}, nil); err == nil {
		t.Fatal("a missing capture file waited for the first call")
	}
	e, err := OpenEnds(Spec{Kind: KindTone, Hz: 440, Amplitude: 0.5}, Spec{Kind: KindWAV, Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Headset != nil {
		t.Fatal("a headset without a device spec")
	}
	src, err := e.Source()
	if err != nil {
		t.Fatal(err)
	}
	sink, err := e.Sink()
	if err != nil {
		t.Fatal(err)
	}
	f := make([]int16, FrameSamples)
	_ = src.ReadFrame(f)
	if err := sink.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() < int64(2*FrameSamples) {
		t.Fatalf("recording: %v %v", fi, err)
	}
}

func TestRecorderCap(t *testing.T) {
	r := NewRecorder(1500)
	f := make([]int16, FrameSamples)
	_ = r.WriteFrame(f)
	_ = r.WriteFrame(f)
	if n := len(r.Samples()); n != 1500 {
		t.Fatalf("kept %d samples", n)
	}
}

func BenchmarkToneReadFrame(b *testing.B) {
	tone := NewTone(440, 0.3)
	f := make([]int16, FrameSamples)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = tone.ReadFrame(f)
	}
}
