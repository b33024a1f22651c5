package dsp

import (
	"math"
	"math/rand/v2"
	"testing"
)

func sine(hz, amp float64, n int) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(amp * 32767 * math.Sin(2*math.Pi*hz*float64(i)/48000))
	}
	return out
}

func TestDetectTone(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	noise := make([]int16, 48000)
	for i := range noise {
		noise[i] = int16(rng.IntN(20000) - 10000)
	}
	wobble := sine(440, 0.3, 48000)
	for i := range wobble { // amplitude variation like a codec's
		wobble[i] = int16(float64(wobble[i]) * (0.6 + 0.4*math.Sin(float64(i)/3000)))
	}
	withSilence := append(make([]int16, 24000), sine(440, 0.3, 24000)...)
	cases := []struct {
		name string
		pcm  []int16
		hz   float64
		want bool
	}{
		{"pure 440", sine(440, 0.3, 48000), 440, true},
		{"quiet 440", sine(440, 0.01, 48000), 440, true},
		{"440 with amplitude wobble", wobble, 440, true},
		{"silence then 440", withSilence, 440, true},
		{"silence", make([]int16, 48000), 440, false},
		{"noise", noise, 440, false},
		{"1000 when looking for 440", sine(1000, 0.3, 48000), 440, false},
		{"too short", sine(440, 0.3, 4800), 440, false},
		{"empty", nil, 440, false},
	}
	for _, c := range cases {
		if got, r := DetectTone(c.pcm, 48000, c.hz); got != c.want {
			t.Errorf("%s: detected=%v (ratio %.3f), want %v", c.name, got, r, c.want)
		}
	}
}

func TestToneRatio(t *testing.T) {
	if r := ToneRatio(sine(1000, 0.5, 960), 48000, 1000); r < 0.95 {
		t.Fatalf("pure tone ratio %.3f", r)
	}
	if r := ToneRatio(sine(1000, 0.5, 960), 48000, 440); r > 0.05 {
		t.Fatalf("other tone ratio %.3f", r)
	}
	if r := ToneRatio(make([]int16, 960), 48000, 440); r != 0 {
		t.Fatalf("silence ratio %.3f", r)
	}
	if rms := RMS([]int16{3, -3, 3, -3}); rms != 3 {
		t.Fatalf("RMS %v", rms)
	}
}

// The oscillator matches math.Sin sample for sample (within rounding) over
// a minute of 20 ms frames, so its phasor neither drifts in phase nor in
// amplitude.
func TestOscillatorMatchesSin(t *testing.T) {
	const rate, hz, amp = 48000.0, 440.0, 0.3 * 32767
	o := NewOscillator(hz, rate, amp)
	frame := make([]int16, 960)
	n := 0
	for range 3000 {
		o.Fill(frame)
		for _, v := range frame {
			want := amp * math.Sin(2*math.Pi*hz*float64(n)/rate)
			if d := math.Abs(float64(v) - want); d > 2 {
				t.Fatalf("sample %d: %d, want %.1f", n, v, want)
			}
			n++
		}
	}
	if r := ToneRatio(frame, rate, hz); r < 0.99 {
		t.Errorf("tone ratio of the last frame %.3f", r)
	}
}
