// Package dsp has the small signal checks the tests and the demo use to
// prove that audio crossed a call: a Goertzel tone detector and RMS.
package dsp

import "math"

// Goertzel returns the power of pcm at hz (squared magnitude of that DFT bin).
func Goertzel(pcm []int16, sampleRate, hz float64) float64 {
	if len(pcm) == 0 {
		return 0
	}
	w := 2 * math.Pi * hz / sampleRate
	coeff := 2 * math.Cos(w)
	var s1, s2 float64
	for _, x := range pcm {
		s0 := float64(x) + coeff*s1 - s2
		s2, s1 = s1, s0
	}
	return s1*s1 + s2*s2 - coeff*s1*s2
}

// ToneRatio is the share (0..1) of pcm's power that sits at hz. A pure
// sine at hz gives about 1; silence, noise or another tone about 0.
func ToneRatio(pcm []int16, sampleRate, hz float64) float64 {
	n := len(pcm)
	if n == 0 {
		return 0
	}
	var energy float64
	for _, x := range pcm {
		energy += float64(x) * float64(x)
	}
	if energy == 0 {
		return 0
	}
	// For a sine of amplitude A over N samples, |X(k)|² ≈ (A·N/2)² and the
	// energy is A²·N/2, so 2·|X|²/(N·energy) ≈ 1. Leakage only lowers it.
	r := 2 * Goertzel(pcm, sampleRate, hz) / (float64(n) * energy)
	return math.Min(r, 1)
}

// RMS is the root mean square of pcm, in sample units.
func RMS(pcm []int16) float64 {
	if len(pcm) == 0 {
		return 0
	}
	var e float64
	for _, x := range pcm {
		e += float64(x) * float64(x)
	}
	return math.Sqrt(e / float64(len(pcm)))
}

// silenceFloor is the RMS below which a block counts as silence (about -60 dBFS).
const silenceFloor = 32

// DetectTone reports whether pcm carries a tone at hz: in 20 ms blocks,
// skipping silent ones (a call starts and ends with silence), at least
// 200 ms of audible blocks must exist and 80% of them must be the tone.
// ratio is the mean tone ratio over the audible blocks.
func DetectTone(pcm []int16, sampleRate, hz float64) (ok bool, ratio float64) {
	block := int(sampleRate / 50)
	if block <= 0 {
		return false, 0
	}
	var audible, toned int
	var sum float64
	for i := 0; i+block <= len(pcm); i += block {
		b := pcm[i : i+block]
		if RMS(b) < silenceFloor {
			continue
		}
		audible++
		r := ToneRatio(b, sampleRate, hz)
		sum += r
		if r > 0.5 {
			toned++
		}
	}
	if audible == 0 {
		return false, 0
	}
	ratio = sum / float64(audible)
	return audible*block >= int(sampleRate/5) && toned*5 >= audible*4, ratio
}

// Oscillator makes a sine by rotating a phasor: a few multiplies a sample
// where math.Sin costs tens of floating-point operations, which matters on
// an emulated CPU (the board VM), where each one is a helper call.
type Oscillator struct {
	amp, c, s, x, y float64
}

// NewOscillator is a sine at hz for sampleRate, peak amp (sample units),
// starting at phase 0.
func NewOscillator(hz, sampleRate, amp float64) *Oscillator {
	w := 2 * math.Pi * hz / sampleRate
	return &Oscillator{amp: amp, c: math.Cos(w), s: math.Sin(w), x: 1}
}

// Fill writes the next len(pcm) samples.
func (o *Oscillator) Fill(pcm []int16) {
	for i := range pcm {
		pcm[i] = int16(o.amp * o.y)
		o.x, o.y = o.x*o.c-o.y*o.s, o.x*o.s+o.y*o.c
	}
	// Rounding drifts the phasor's length; put it back on the unit circle.
	r := 1 / math.Sqrt(o.x*o.x+o.y*o.y)
	o.x, o.y = o.x*r, o.y*r
}
