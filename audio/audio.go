// Package audio is the phone's ear and mouth: sources that give 20 ms
// frames of 48 kHz mono PCM and sinks that take them. This file has the
// device-free ones (tone, WAV, null, in-memory recorder); the headset via
// malgo (headset.go) plugs in behind the same two interfaces, and spec.go
// parses and opens the audio.* config grammar. The tone cadences (ring,
// ringback, busy) are in tones.go.
package audio

import (
	"math"
	"sync"
)

// SampleRate and FrameSamples fix the frame every source and sink exchanges.
const (
	SampleRate   = 48000
	FrameSamples = 960 // 20 ms mono
)

// Source fills one frame; it never blocks for long.
type Source interface {
	ReadFrame(pcm []int16) error
	Close() error
}

// Sink takes one frame.
type Sink interface {
	WriteFrame(pcm []int16) error
	Close() error
}

// Tone is a continuous sine, phase-continuous across frames.
type Tone struct {
	step, phase, amp float64
}

// NewTone makes a sine at hz with amplitude 0..1 of full scale.
func NewTone(hz, amplitude float64) *Tone {
	return &Tone{step: 2 * math.Pi * hz / SampleRate, amp: amplitude * 32767}
}

// ReadFrame writes the next len(pcm) samples of the sine.
func (t *Tone) ReadFrame(pcm []int16) error {
	for i := range pcm {
		pcm[i] = int16(t.amp * math.Sin(t.phase))
		t.phase += t.step
		if t.phase > 2*math.Pi {
			t.phase -= 2 * math.Pi
		}
	}
	return nil
}

// Close does nothing.
func (t *Tone) Close() error { return nil }

// Null is silence as a source and a bottomless sink.
type Null struct{}

// ReadFrame gives silence.
func (Null) ReadFrame(pcm []int16) error {
	clear(pcm)
	return nil
}

// WriteFrame discards.
func (Null) WriteFrame([]int16) error { return nil }

// Close does nothing.
func (Null) Close() error { return nil }

// Recorder keeps what it is given in memory, up to a cap (tests, the demo).
type Recorder struct {
	mu  sync.Mutex
	max int
	buf []int16
}

// NewRecorder keeps at most maxSamples samples (the oldest are kept).
func NewRecorder(maxSamples int) *Recorder { return &Recorder{max: maxSamples} }

// WriteFrame appends pcm while there is room.
func (r *Recorder) WriteFrame(pcm []int16) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if room := r.max - len(r.buf); room > 0 {
		r.buf = append(r.buf, pcm[:min(room, len(pcm))]...)
	}
	return nil
}

// Samples returns a copy of what was recorded.
func (r *Recorder) Samples() []int16 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int16(nil), r.buf...)
}

// Close does nothing; the samples stay readable.
func (r *Recorder) Close() error { return nil }
