package audio

import (
	"math"
	"time"
)

// Segment is one step of a tone cadence: up to two frequencies summed
// (0 Hz = silence) for a duration.
type Segment struct {
	Hz1, Hz2 float64
	Dur      time.Duration
}

// Cadences the phone plays (UK-style ring, European ringback and busy).
var (
	RingCadence     = []Segment{{400, 450, 400 * time.Millisecond}, {0, 0, 200 * time.Millisecond}, {400, 450, 400 * time.Millisecond}, {0, 0, 2 * time.Second}}
	RingbackCadence = []Segment{{425, 0, time.Second}, {0, 0, 4 * time.Second}}
	BusyCadence     = []Segment{{425, 0, 500 * time.Millisecond}, {0, 0, 500 * time.Millisecond}}
)

// Cadence is a looping tone pattern read frame by frame (the phone plays
// it into a sink); no allocation per frame.
type Cadence struct {
	segs   []Segment
	amp    float64
	seg    int
	left   int // samples left in the current segment
	p1, p2 float64
}

// NewCadence plays segs in a loop at amplitude (0..1).
func NewCadence(segs []Segment, amplitude float64) *Cadence {
	c := &Cadence{segs: segs, amp: amplitude * 32767}
	c.left = c.samples(0)
	return c
}

func (c *Cadence) samples(i int) int { return int(c.segs[i].Dur.Seconds() * SampleRate) }

// ReadFrame fills pcm with the next samples of the cadence.
func (c *Cadence) ReadFrame(pcm []int16) error {
	for i := range pcm {
		for c.left <= 0 {
			c.seg = (c.seg + 1) % len(c.segs)
			c.left = c.samples(c.seg)
		}
		s := c.segs[c.seg]
		var v float64
		if s.Hz1 > 0 {
			v += math.Sin(c.p1)
			c.p1 = math.Mod(c.p1+2*math.Pi*s.Hz1/SampleRate, 2*math.Pi)
		}
		if s.Hz2 > 0 {
			v = (v + math.Sin(c.p2)) / 2
			c.p2 = math.Mod(c.p2+2*math.Pi*s.Hz2/SampleRate, 2*math.Pi)
		}
		pcm[i] = int16(v * c.amp)
		c.left--
	}
	return nil
}
