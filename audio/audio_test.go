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
	src, err := OpenSource("wav:" + path)
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
	for _, ok := range []string{"", "null", "tone:440", "tone:1000@0.1"} {
		if _, err := OpenSource(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"tone:", "tone:abc", "tone:440@2", "wav:", "alsa:hw0", "mic"} {
		if _, err := OpenSource(bad); err == nil || !strings.Contains(err.Error(), "audio.capture") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := OpenSink("speaker"); err == nil || !strings.Contains(err.Error(), "unknown sink") {
		t.Errorf("bad sink: %v", err)
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
