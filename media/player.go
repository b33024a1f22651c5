package media

import (
	"sync"
	"time"

	"github.com/hraban/opus"
)

const (
	// Largest Opus packet is 120 ms; the decoder sizes its output by cap().
	maxDecodeSamples = SampleRate * 120 / 1000
	// Consecutive underrun frames we conceal before playing plain silence.
	maxPLCRun = 5
)

// player turns jitter-buffer output into exactly one 20 ms frame per tick
// (the play goroutine only).
type player struct {
	dec     *opus.Decoder
	lastN   int // samples of the last decoded packet: PLC/FEC size
	plcRun  int
	decoded bool
	pend    int
	pay     [maxPayload]byte
	pcm     [FrameSamples + maxDecodeSamples]int16
	out     [FrameSamples]int16
}

// playout plays one frame per 20 ms interval, at whichever comes first:
// the arrival of the packet due (the receiver's goroutine, already awake
// for it), or the interval's end (the send loop's tick, which conceals
// what did not come). Playing on arrival, a packet waits for nobody's
// clock: tied to our tick it would wait 0-20 ms, set by how the peer's
// clock happens to fall against ours, for the whole call. The tick's own
// phase stays ours, so two ends never chase each other.
type playout struct {
	mu       sync.Mutex // before receiver.mu
	s        *Session
	p        *player
	sink     Sink
	sinkErrs uint64
	played   bool // this interval has had its frame
	closed   bool // the session stopped: the sink is its owner's again
}

// arrived plays the interval's frame if the packet due is here and the
// interval has not had one.
func (po *playout) arrived(r *receiver) {
	po.mu.Lock()
	defer po.mu.Unlock()
	if po.played || po.closed {
		return
	}
	r.mu.Lock()
	ready := r.jb.ready()
	r.mu.Unlock()
	if ready {
		po.play()
	}
}

// tick ends an interval: its frame is played now if no packet came in
// time (concealed, or silence), and the next interval begins.
func (po *playout) tick() {
	po.mu.Lock()
	defer po.mu.Unlock()
	if !po.played && !po.closed {
		po.play()
	}
	po.played = false
}

func (po *playout) play() {
	s := po.s
	frame, c, f := po.p.next(&s.rx.jb, &s.rx.mu)
	po.played = true
	if c > 0 {
		s.concealed.Add(uint64(c))
		s.fec.Add(uint64(f))
	}
	if po.sink == nil {
		return
	}
	if err := po.sink.WriteFrame(frame); err != nil {
		if po.sinkErrs++; logEvery(po.sinkErrs) {
			s.log.Warn("audio sink failed", "err", err, "count", po.sinkErrs)
		}
	}
}

func (po *playout) close() {
	po.mu.Lock()
	po.closed = true
	po.mu.Unlock()
}

// next produces the next frame; it returns how many packets' worth of audio
// were concealed, and how many of those came from FEC.
func (p *player) next(jb *jitterBuffer, mu *sync.Mutex) (frame []int16, concealed, fec int) {
	for p.pend < FrameSamples {
		mu.Lock()
		kind, n := jb.pop(p.pay[:])
		mu.Unlock()
		if kind == popEmpty {
			if p.decoded && p.plcRun < maxPLCRun {
				p.plcRun++
				p.plc()
				concealed++
			} else {
				clear(p.pcm[p.pend:FrameSamples])
				p.pend = FrameSamples
			}
			break
		}
		p.plcRun = 0
		c, f := p.decode(kind, n)
		concealed += c
		fec += f
	}
	copy(p.out[:], p.pcm[:FrameSamples])
	p.pend = copy(p.pcm[:], p.pcm[FrameSamples:p.pend])
	return p.out[:], concealed, fec
}

// decode appends the audio of one popped slot to p.pcm.
func (p *player) decode(kind popKind, n int) (concealed, fec int) {
	switch kind {
	case popFrame:
		dst := p.pcm[p.pend : p.pend+maxDecodeSamples : p.pend+maxDecodeSamples]
		if m, err := p.dec.Decode(p.pay[:n], dst); err == nil && m > 0 {
			p.pend += m
			p.lastN = m
			p.decoded = true
			return 0, 0
		}
		p.plc() // corrupt payload (authenticated, so a peer bug): conceal
		return 1, 0
	case popLostFEC:
		dst := p.pcm[p.pend : p.pend+p.lastN : p.pend+p.lastN]
		if err := p.dec.DecodeFEC(p.pay[:n], dst); err == nil {
			p.pend += p.lastN
			return 1, 1
		}
		p.plc()
		return 1, 0
	case popLost:
		p.plc()
		return 1, 0
	}
	return 0, 0
}

func (p *player) plc() {
	n := p.lastN
	dst := p.pcm[p.pend : p.pend+n : p.pend+n]
	if !p.decoded || p.dec.DecodePLC(dst) != nil {
		clear(dst)
	}
	p.pend += n
}

// playTick ends this tick's play interval, from the peer's first packet
// on (the send loop calls it right after sending: one timer wake-up per 20
// ms serves both directions). It returns ErrNoMedia when the peer stayed
// silent too long.
func (s *Session) playTick(now time.Time, po *playout) error {
	s.playBeat.Store(now.UnixNano())
	heard, timedOut := s.mediaState(now)
	if timedOut {
		return ErrNoMedia
	}
	if !heard {
		return nil // nothing to play until the peer's first packet
	}
	s.q.mu.Lock()
	jit := s.q.jitter * 1000 / SampleRate
	s.q.mu.Unlock()
	s.rx.mu.Lock()
	s.rx.jb.setTarget(jit)
	s.rx.mu.Unlock()
	po.tick()
	return nil
}

// mediaState tells whether the peer was heard at all, and whether it has
// been silent for longer than the no-media limit: min(20 s, NoMediaTimeout)
// before its first packet, NoMediaTimeout after. Silence before Start does
// not count (a DTLS peer may send while the phone still rings).
func (s *Session) mediaState(now time.Time) (heard, timedOut bool) {
	idle, heard := s.rx.idle()
	timeout := s.cfg.noMediaTimeout()
	if timeout <= 0 {
		return heard, false
	}
	running := now.Sub(s.startedAt)
	if !heard {
		return false, running > min(timeout, startNoMediaLimit)
	}
	return true, min(idle, running) > timeout
}
