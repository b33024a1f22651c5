package audio

import (
	"testing"

	"github.com/waphone/waphone/internal/dsp"
)

func TestCadences(t *testing.T) {
	c := NewCadence(RingbackCadence, 0.3)
	pcm := make([]int16, SampleRate*5) // one whole cycle
	for i := 0; i < len(pcm); i += FrameSamples {
		_ = c.ReadFrame(pcm[i : i+FrameSamples])
	}
	if ok, _ := dsp.DetectTone(pcm[:SampleRate], SampleRate, 425); !ok {
		t.Fatal("ringback: no 425 Hz in its first second")
	}
	if dsp.RMS(pcm[SampleRate+FrameSamples:]) > 1 {
		t.Fatal("ringback: not silent in its pause")
	}
	ring := NewCadence(RingCadence, 0.3)
	f := make([]int16, FrameSamples*10)
	_ = ring.ReadFrame(f)
	if dsp.ToneRatio(f, SampleRate, 400) < 0.2 || dsp.ToneRatio(f, SampleRate, 450) < 0.2 {
		t.Fatal("ring: want 400 and 450 Hz")
	}
}

func BenchmarkCadence(b *testing.B) {
	c := NewCadence(RingCadence, 0.3)
	f := make([]int16, FrameSamples)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = c.ReadFrame(f)
	}
}
