package audio

import (
	"math"
	"sync/atomic"
	"time"
)

// Ring carries samples between a device callback (one goroutine) and the
// media loop (another) without a lock and without allocating: one writer,
// one reader, atomic indexes and atomic slots. When the writer laps the
// reader the oldest samples are dropped (overrun); when the reader finds
// too few it pads with silence (underrun). Both are counted.
type Ring struct {
	buf       []atomic.Int32
	mask      uint64
	w, r      atomic.Uint64
	overruns  atomic.Uint64
	underruns atomic.Uint64
	rb, wb    latencyBound // the media loop's side: ReadLive's or WriteLive's
	epoch     time.Time    // monotonic: a wall clock stepped by NTP at boot moves nothing
	wrote     atomic.Int64 // time.Since(epoch) at the last Write
	spareLow  atomic.Int64 // least fill left over by a Read since the bound last looked
}

// NewRing holds at least size samples (rounded up to a power of two).
func NewRing(size int) *Ring {
	n := 1
	for n < size {
		n <<= 1
	}
	r := &Ring{buf: make([]atomic.Int32, n), mask: uint64(n - 1), epoch: time.Now()}
	r.spareLow.Store(math.MaxInt64)
	return r
}

// Write appends samples; the writer never blocks.
func (r *Ring) Write(p []int16) {
	w := r.w.Load()
	for i, v := range p {
		r.buf[(w+uint64(i))&r.mask].Store(int32(v))
	}
	r.w.Store(w + uint64(len(p)))
	r.wrote.Store(int64(time.Since(r.epoch)))
}

// LastWrite is when the writer last wrote: for a capture ring, the end of
// the newest audio in it.
func (r *Ring) LastWrite() time.Time { return r.epoch.Add(time.Duration(r.wrote.Load())) }

// Read fills p, padding with silence when the ring runs dry.
func (r *Ring) Read(p []int16) {
	w, rd := r.w.Load(), r.r.Load()
	if size := uint64(len(r.buf)); w-rd > size {
		r.overruns.Add(1)
		rd = w - size
	}
	avail := w - rd
	n := uint64(len(p))
	// Only the bound resets it (a lost race costs one window's trim).
	if spare := int64(avail) - int64(n); spare < r.spareLow.Load() {
		r.spareLow.Store(spare)
	}
	if avail < n {
		r.underruns.Add(1)
		n = avail
		clear(p[n:])
	}
	for i := uint64(0); i < n; i++ {
		p[i] = int16(r.buf[(rd+i)&r.mask].Load())
	}
	r.r.Store(rd + n)
}

// Buffered is how many samples wait to be read (the latency the ring adds).
func (r *Ring) Buffered() int {
	d := r.w.Load() - r.r.Load()
	return int(min(d, uint64(len(r.buf))))
}

// Reset drops everything buffered (e.g. at the start of a call). The media
// loop calls it, before it starts reading with ReadLive or writing with
// WriteLive.
func (r *Ring) Reset() {
	r.r.Store(r.w.Load())
	r.rb, r.wb = latencyBound{}, latencyBound{}
	r.spareLow.Store(math.MaxInt64)
}

// ReadLive is Read for the media loop reading a device's capture: it first
// drops the oldest samples that stayed unread at every read of a window,
// so a stall or a device clock faster than ours cannot add latency for good.
func (r *Ring) ReadLive(p []int16) {
	if d := r.rb.excess(r); d > 0 {
		r.r.Add(uint64(d)) // the reader owns r
	}
	r.Read(p)
}

// WriteLive is Write for the media loop feeding a device's playback: when
// the device found more than it needed at every read of a window, it
// skips that surplus from the start of p (the writer cannot take back what
// it already wrote).
func (r *Ring) WriteLive(p []int16) {
	if d := r.wb.excess(r); d > 0 {
		p = p[min(d, len(p)):]
	}
	r.Write(p)
}

const (
	boundWindow = 50                // calls per decision: 1 s of 20 ms frames
	boundStep   = SampleRate / 400  // 2.5 ms: the first margin, and each raise
	boundMax    = SampleRate / 25   // 40 ms: the largest margin
	boundSlack  = SampleRate / 1000 // 1 ms of hysteresis before a trim
	boundDecay  = SampleRate / 4000 // 0.25 ms off the margin per quiet window...
	boundQuiet  = 30                // ...after this many quiet windows in a row
)

// latencyBound decides, once a window, how much of a ring's fill is
// latency nobody uses: the least a Read left over in the window (the
// reader's own view, so a writer that is late now and then is accounted
// for). A ring filled in 10 ms callbacks and drained in 20 ms frames swings
// by a period, but that least fill only grows through stalls or clock
// drift. The margin kept grows after a window in which the ring ran dry, so
// a device with uneven periods settles instead of clicking, and shrinks
// slowly (0.25 ms a second) after half a minute without.
type latencyBound struct {
	margin  int    // samples kept above the need (0: boundStep)
	n       int    // calls in this window
	under   uint64 // underruns when this window began
	quiet   int    // windows in a row without running dry
	started bool   // a window has begun since Reset: its start was not idle
}

// excess counts one call and, at a window's end, returns how many samples
// to drop.
func (b *latencyBound) excess(r *Ring) int {
	if b.margin == 0 {
		b.margin = boundStep
	}
	if b.n == 0 {
		// The first window starts now: whatever the ring saw before (an
		// idle device reading nothing) is not this call's.
		b.under = r.underruns.Load()
		if !b.started {
			r.spareLow.Store(math.MaxInt64)
			b.started = true
		}
	}
	if b.n++; b.n < boundWindow {
		return 0
	}
	b.n = 0
	low := r.spareLow.Swap(math.MaxInt64)
	if r.underruns.Load() != b.under {
		b.margin = min(b.margin+boundStep, boundMax)
		b.quiet = 0
		return 0
	}
	// Half a minute without running dry gives a little back each window: a
	// burst of load must not keep its latency for the rest of the call,
	// while a hiccup that comes back every few seconds keeps its margin.
	if b.quiet++; b.quiet > boundQuiet {
		b.margin = max(b.margin-boundDecay, boundStep)
	}
	if low != math.MaxInt64 && low > int64(b.margin+boundSlack) {
		return int(low) - b.margin
	}
	return 0
}

// Overruns and Underruns count the drops and the silences.
func (r *Ring) Overruns() uint64  { return r.overruns.Load() }
func (r *Ring) Underruns() uint64 { return r.underruns.Load() }
