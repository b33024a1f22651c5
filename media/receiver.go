package media

import (
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// receiver takes the peer's packets from the transport, whichever it is:
// audio into the jitter buffer, telephone-events to OnDTMF, RTCP to the
// quality figures, and every packet into the counters behind Stats.
// Transports call it from their reading goroutines.
type receiver struct {
	log    *slog.Logger
	onDTMF func(rune)
	q      *quality
	epoch  time.Time                    // lastRecv counts from here
	pts    atomic.Pointer[payloadTypes] // set by negotiation; nil before
	out    atomic.Pointer[playout]      // set by Start: plays what arrives in time

	lastRecv  atomic.Int64 // time.Since(epoch)+1 of the last authenticated packet, 0 = none
	firstRecv atomic.Pointer[time.Time]

	recv, rtcpRecv, dtmf, unknownPT atomic.Uint64
	authFail, malformed, dups, late atomic.Uint64

	mu  sync.Mutex // seq and jb: the readers, the player, our reports, Stats
	seq seqTracker
	jb  jitterBuffer
}

// payloadTypes are the numbers a stream's audio and telephone-events may
// carry.
type payloadTypes struct {
	opus [2]uint8
	dtmf [2]int // -1: none
}

func (r *receiver) init(log *slog.Logger, onDTMF func(rune), q *quality) {
	r.log, r.onDTMF, r.q, r.epoch = log, onDTMF, q, time.Now()
}

// rtpStream is the state of one inbound stream (its reader goroutine only).
type rtpStream struct {
	pts payloadTypes
	// last telephone-event seen, to report each event once
	lastEventTS uint32
	haveEvent   bool
	lastSSRC    uint32
	haveSSRC    bool
}

// newStream starts a stream with the negotiated payload types; nil if
// there is no remote description.
func (r *receiver) newStream() *rtpStream {
	p := r.pts.Load()
	if p == nil {
		return nil
	}
	return &rtpStream{pts: *p}
}

// rtp takes one authenticated RTP packet: audio into the jitter buffer,
// telephone-events counted and reported, anything else ignored. from is
// zero if the transport does not know it.
func (r *receiver) rtp(st *rtpStream, h *rtp.Header, payload []byte, from netip.AddrPort) {
	r.recv.Add(1)
	r.alive(from)
	isOpus := h.PayloadType == st.pts.opus[0] || h.PayloadType == st.pts.opus[1]
	switch {
	case isOpus:
		r.audio(st, h, payload)
	case int(h.PayloadType) == st.pts.dtmf[0] || int(h.PayloadType) == st.pts.dtmf[1]:
		r.noteSeq(h)
		r.telephoneEvent(st, h, payload)
	default:
		r.noteSeq(h)
		if n := r.unknownPT.Add(1); logEvery(n) {
			r.log.Debug("ignoring rtp with unknown payload type", "pt", h.PayloadType, "count", n)
		}
	}
}

// noteSeq counts a non-audio packet towards loss when it shares the audio
// stream's SSRC (DTMF shares its sequence space); a stray SSRC must not
// reset the statistics.
func (r *receiver) noteSeq(h *rtp.Header) {
	r.mu.Lock()
	if r.seq.init && h.SSRC == r.seq.ssrc {
		r.seq.update(h.SSRC, h.SequenceNumber)
	}
	r.mu.Unlock()
}

func (r *receiver) audio(st *rtpStream, h *rtp.Header, payload []byte) {
	r.q.onRTPArrival(h, time.Now())
	r.mu.Lock()
	r.seq.update(h.SSRC, h.SequenceNumber)
	if st.haveSSRC && h.SSRC != st.lastSSRC {
		r.jb.init = false // new stream: start the buffer over
	}
	res := r.jb.push(h.SequenceNumber, payload)
	r.mu.Unlock()
	st.lastSSRC, st.haveSSRC = h.SSRC, true
	if po := r.out.Load(); po != nil && res == pushOK {
		po.arrived(r)
	}
	switch res {
	case pushDuplicate:
		r.dups.Add(1)
	case pushLate:
		r.late.Add(1)
	case pushTooBig:
		r.malformed.Add(1)
	}
}

// telephoneEvent reports an RFC 4733 event once, at its first packet: one
// event is one RTP timestamp, which retransmitted end packets and the
// long-event updates share.
func (r *receiver) telephoneEvent(st *rtpStream, h *rtp.Header, payload []byte) {
	r.dtmf.Add(1)
	if len(payload) < 4 || (st.haveEvent && h.Timestamp == st.lastEventTS) {
		return
	}
	st.haveEvent, st.lastEventTS = true, h.Timestamp
	if d := dtmfDigit(payload[0]); d != 0 {
		r.log.Info("DTMF received", "digit", string(d))
		if r.onDTMF != nil {
			r.onDTMF(d)
		}
	}
}

// rtcp takes one authenticated compound RTCP packet (pkts may be empty if
// it did not parse: it still counts as a sign of life).
func (r *receiver) rtcp(pkts []rtcp.Packet, from netip.AddrPort) {
	r.rtcpRecv.Add(1)
	r.q.onRTCPPackets(pkts, time.Now())
	r.alive(from)
}

// alive records an authenticated packet for the no-media timeout.
func (r *receiver) alive(from netip.AddrPort) {
	if r.lastRecv.Swap(int64(time.Since(r.epoch))+1) != 0 {
		return
	}
	now := time.Now()
	r.firstRecv.CompareAndSwap(nil, &now)
	if from.IsValid() {
		r.log.Info("first media packet received", "from", from.String())
	} else {
		r.log.Info("first media packet received")
	}
}

// idle is how long ago the last authenticated packet came; ok is false
// before the first one.
func (r *receiver) idle() (d time.Duration, ok bool) {
	last := r.lastRecv.Load()
	if last == 0 {
		return 0, false
	}
	return time.Since(r.epoch) - time.Duration(last-1), true
}

// unprotectFailed counts a packet that failed SRTP/SRTCP: a replay, or a
// forgery (or a peer with the wrong key).
func (r *receiver) unprotectFailed(err error, from netip.AddrPort, isRTCP bool) {
	if isDuplicate(err) {
		r.dups.Add(1)
		return
	}
	if n := r.authFail.Add(1); logEvery(n) {
		r.log.Warn("srtp unprotect failed", "from", from.String(), "rtcp", isRTCP, "err", err, "count", n)
	}
}

func isDuplicate(err error) bool {
	// pion's duplicate error is unexported; its text is stable API-wise.
	return err != nil && strings.Contains(err.Error(), "duplicated")
}

// malformedPacket counts a datagram that is not RTP at all.
func (r *receiver) malformedPacket(from netip.AddrPort, n int) {
	if c := r.malformed.Add(1); logEvery(c) {
		r.log.Debug("dropping non-RTP packet", "from", from.String(), "len", n, "count", c)
	}
}

// stats fills the receive side of st.
func (r *receiver) stats(st *Stats) {
	if t := r.firstRecv.Load(); t != nil {
		st.FirstReceivedAt = *t
	}
	r.mu.Lock()
	st.PacketsLost = r.seq.lost()
	st.BufferMs = r.jb.tgt() * 20
	r.mu.Unlock()
	st.PacketsReceived, st.RTCPReceived = r.recv.Load(), r.rtcpRecv.Load()
	st.AuthFailures = r.authFail.Load() + r.malformed.Load()
	st.Duplicates, st.Late, st.UnknownPT = r.dups.Load(), r.late.Load(), r.unknownPT.Load()
	st.TelephoneEvents = r.dtmf.Load()
}

// seqTracker computes RFC 3550 cumulative loss for the current SSRC.
type seqTracker struct {
	init     bool
	ssrc     uint32
	base     uint16
	maxSeq   uint16
	cycles   uint64
	received uint64
	prevLost uint64 // loss of earlier SSRCs
}

func (t *seqTracker) update(ssrc uint32, seq uint16) {
	if !t.init || ssrc != t.ssrc {
		prev := t.lost()
		*t = seqTracker{init: true, ssrc: ssrc, base: seq, maxSeq: seq, prevLost: prev}
	} else if d := seq - t.maxSeq; d != 0 && d < 0x8000 {
		if seq < t.maxSeq {
			t.cycles += 1 << 16
		}
		t.maxSeq = seq
	}
	t.received++
}

func (t *seqTracker) lost() uint64 {
	if !t.init {
		return t.prevLost
	}
	expected := t.cycles + uint64(t.maxSeq) - uint64(t.base) + 1
	if t.received >= expected {
		return t.prevLost
	}
	return t.prevLost + expected - t.received
}
