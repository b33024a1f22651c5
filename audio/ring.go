package audio

import "sync/atomic"

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
}

// NewRing holds at least size samples (rounded up to a power of two).
func NewRing(size int) *Ring {
	n := 1
	for n < size {
		n <<= 1
	}
	return &Ring{buf: make([]atomic.Int32, n), mask: uint64(n - 1)}
}

// Write appends samples; the writer never blocks.
func (r *Ring) Write(p []int16) {
	w := r.w.Load()
	for i, v := range p {
		r.buf[(w+uint64(i))&r.mask].Store(int32(v))
	}
	r.w.Store(w + uint64(len(p)))
}

// Read fills p, padding with silence when the ring runs dry.
func (r *Ring) Read(p []int16) {
	w, rd := r.w.Load(), r.r.Load()
	if size := uint64(len(r.buf)); w-rd > size {
		r.overruns.Add(1)
		rd = w - size
	}
	avail := w - rd
	n := uint64(len(p))
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

// Reset drops everything buffered (e.g. at the start of a call).
func (r *Ring) Reset() { r.r.Store(r.w.Load()) }

// Overruns and Underruns count the drops and the silences.
func (r *Ring) Overruns() uint64  { return r.overruns.Load() }
func (r *Ring) Underruns() uint64 { return r.underruns.Load() }
