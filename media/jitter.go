package media

// Jitter buffer: a ring of packets indexed by RTP sequence number, popped
// once per playout tick. It does no decoding and reads no clock, so tests can
// drive it packet by packet.
//
// Policy:
//   - (re)buffer until the target depth is queued (1-6 packets, adapted to
//     the measured interarrival jitter), then play one per pop;
//   - a missing packet with later ones queued is lost: the caller conceals it,
//     with FEC from the following packet when that one is already here;
//   - an empty buffer is an underrun: the caller conceals, and playout waits
//     for jbTarget packets again, then resumes at the oldest queued packet
//     (absorbs delay spikes; the frames in between were concealed already);
//   - latency is trimmed by dropping the oldest packet when the queue stays
//     above the target for jbTrimAfter pops (a stall, or the sender's clock
//     running fast), or down to target+1 at once above jbMaxDepth;
//   - duplicates and packets behind the playout point are dropped; jumps
//     beyond the ring (sender restart) resynchronise.
const (
	jbSize      = 32 // ring slots: 640 ms of 20 ms frames
	jbTarget    = 1  // 20 ms buffered before playout starts, at low jitter
	jbMaxDepth  = 8  // 160 ms: drop oldest above this at once
	jbTrimAfter = 25 // 500 ms of surplus before dropping one packet
	maxPayload  = 1500
)

type popKind int

const (
	popEmpty   popKind = iota // underrun/buffering: nothing to play
	popFrame                  // out holds the packet for this slot
	popLost                   // packet missing, nothing to recover it from: PLC
	popLostFEC                // packet missing, out holds the NEXT packet: decode its FEC
)

type pushResult int

const (
	pushOK pushResult = iota
	pushDuplicate
	pushLate
	pushTooBig
)

type jbSlot struct {
	valid bool
	seq   uint16
	n     int
	data  [maxPayload]byte
}

type jitterBuffer struct {
	slots     [jbSize]jbSlot
	init      bool   // next is meaningful
	played    bool   // a packet was popped since the last reset
	next      uint16 // sequence number of the next slot to play
	count     int
	buffering bool
	surplus   int // consecutive pops with count > target
	dropped   uint64
	target    int // packets buffered before playout; adapts to jitter (0 = jbTarget)
}

// setTarget adapts the playout depth to the measured interarrival jitter:
// about two jitters plus a margin, between 20 and 120 ms. On a LAN or
// loopback (jitter under 5 ms) that is one packet: the tick's own phase
// against arrivals already gives up to 20 ms of slack.
func (j *jitterBuffer) setTarget(jitterMs float64) {
	t := int((2*jitterMs + 10 + 19) / 20)
	if jitterMs >= 2 {
		t = max(t, 2) // a spread that crosses a tick now and then
	}
	j.target = max(jbTarget, min(t, 6))
}

func (j *jitterBuffer) tgt() int {
	if j.target == 0 {
		return jbTarget
	}
	return j.target
}

func (j *jitterBuffer) reset(seq uint16) {
	for i := range j.slots {
		j.slots[i].valid = false
	}
	j.init, j.played, j.next, j.count, j.buffering, j.surplus = true, false, seq, 0, true, 0
}

// push stores a copy of payload.
func (j *jitterBuffer) push(seq uint16, payload []byte) pushResult {
	if len(payload) > maxPayload {
		return pushTooBig
	}
	if !j.init {
		j.reset(seq)
	}
	d := int(int16(seq - j.next))
	switch {
	case d < -jbSize:
		// Far behind anything recent: the sender restarted its sequence.
		j.reset(seq)
	case d < 0:
		// Before playout starts, reordered first packets just move the start back.
		if j.played || !j.fitsFrom(seq) {
			return pushLate
		}
		j.next = seq
	case d >= jbSize:
		if d > 4*jbSize {
			j.reset(seq) // big jump forward: discontinuity, start over
		} else {
			j.advanceTo(seq - jbSize + 1) // keep the newest packets
		}
	}
	s := &j.slots[seq%jbSize]
	if s.valid {
		if s.seq == seq {
			return pushDuplicate
		}
		j.count-- // stale slot (cannot normally happen): overwrite
	}
	s.valid, s.seq, s.n = true, seq, copy(s.data[:], payload)
	j.count++
	return pushOK
}

// fitsFrom reports whether all queued packets stay in the ring if playout
// started at seq.
func (j *jitterBuffer) fitsFrom(seq uint16) bool {
	for i := range j.slots {
		s := &j.slots[i]
		if s.valid && int(uint16(s.seq-seq)) >= jbSize {
			return false
		}
	}
	return true
}

// advanceTo drops everything before seq.
func (j *jitterBuffer) advanceTo(seq uint16) {
	for j.next != seq {
		j.dropSlot(j.next)
		j.next++
	}
}

func (j *jitterBuffer) dropSlot(seq uint16) {
	s := &j.slots[seq%jbSize]
	if s.valid && s.seq == seq {
		s.valid = false
		j.count--
		j.dropped++
	}
}

// lowest returns the oldest queued sequence number (count > 0).
func (j *jitterBuffer) lowest() uint16 {
	best, bestD := j.next, 1<<30
	for i := range j.slots {
		s := &j.slots[i]
		if d := int(int16(s.seq - j.next)); s.valid && d < bestD {
			best, bestD = s.seq, d
		}
	}
	return best
}

// ready reports whether pop would now give a packet, not a gap or nothing:
// the packet due is here (while playing), or the target depth is (while
// buffering).
func (j *jitterBuffer) ready() bool {
	if !j.init || j.count == 0 {
		return false
	}
	if j.buffering {
		return j.count >= j.tgt()
	}
	s := &j.slots[j.next%jbSize]
	return s.valid && s.seq == j.next
}

// pop returns what to play for the next 20 ms (one packet's worth). out must
// hold maxPayload bytes; n is the payload length copied into it.
func (j *jitterBuffer) pop(out []byte) (kind popKind, n int) {
	if !j.init {
		return popEmpty, 0
	}
	if j.count == 0 {
		j.buffering, j.surplus = true, 0
		return popEmpty, 0
	}
	if j.buffering {
		if j.count < j.tgt() {
			return popEmpty, 0
		}
		// Slots skipped while we waited were concealed in real time already.
		j.buffering = false
		j.next = j.lowest()
	}
	if j.count > j.tgt() {
		j.surplus++
	} else {
		j.surplus = 0
	}
	switch {
	case j.count > jbMaxDepth: // burst: cut the latency at once
		for j.count > j.tgt()+1 {
			j.dropSlot(j.next)
			j.next++
		}
		j.surplus = 0
	case j.surplus >= jbTrimAfter: // steady surplus (clock drift): one at a time
		j.dropSlot(j.next)
		j.next++
		j.surplus = 0
	}
	s := &j.slots[j.next%jbSize]
	if s.valid && s.seq == j.next {
		n = copy(out, s.data[:s.n])
		s.valid = false
		j.count--
		j.next++
		j.played = true
		return popFrame, n
	}
	// Gap: this one is lost (later packets are queued, count > 0).
	j.next++
	j.played = true
	if s2 := &j.slots[j.next%jbSize]; s2.valid && s2.seq == j.next {
		return popLostFEC, copy(out, s2.data[:s2.n])
	}
	return popLost, 0
}
