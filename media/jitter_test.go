package media

import (
	"fmt"
	"testing"
)

// jbPop is one pop's outcome: the kind and, for frames/FEC, the sequence
// number encoded in the payload by push helper below.
type jbPop struct {
	kind popKind
	seq  int // -1 if no payload
}

func (p jbPop) String() string {
	names := map[popKind]string{popEmpty: "empty", popFrame: "frame", popLost: "lost", popLostFEC: "fec"}
	return fmt.Sprintf("%s(%d)", names[p.kind], p.seq)
}

func push(j *jitterBuffer, seq uint16) pushResult {
	return j.push(seq, []byte{byte(seq >> 8), byte(seq)})
}

func pop(j *jitterBuffer) jbPop {
	var out [maxPayload]byte
	k, n := j.pop(out[:])
	if n == 2 {
		return jbPop{k, int(out[0])<<8 | int(out[1])}
	}
	return jbPop{k, -1}
}

func pops(j *jitterBuffer, n int) []string {
	var r []string
	for range n {
		r = append(r, pop(j).String())
	}
	return r
}

func eq(t *testing.T, got []string, want ...string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestJitterInOrder(t *testing.T) {
	var j jitterBuffer
	j.setTarget(5) // 2 packets
	eq(t, pops(&j, 1), "empty(-1)")
	push(&j, 100)
	eq(t, pops(&j, 1), "empty(-1)") // buffering to jbTarget
	push(&j, 101)
	eq(t, pops(&j, 1), "frame(100)")
	push(&j, 102)
	eq(t, pops(&j, 2), "frame(101)", "frame(102)")
}

func TestJitterReorder(t *testing.T) {
	var j jitterBuffer
	push(&j, 10)
	push(&j, 12)
	push(&j, 11) // arrives late but before its slot is played
	push(&j, 14)
	push(&j, 13)
	eq(t, pops(&j, 5), "frame(10)", "frame(11)", "frame(12)", "frame(13)", "frame(14)")
}

func TestJitterReorderedStart(t *testing.T) {
	var j jitterBuffer
	push(&j, 51) // the very first packet overtook its predecessor
	push(&j, 50)
	eq(t, pops(&j, 2), "frame(50)", "frame(51)")
}

func TestJitterDuplicateAndLate(t *testing.T) {
	var j jitterBuffer
	push(&j, 1)
	push(&j, 2)
	if r := push(&j, 2); r != pushDuplicate {
		t.Errorf("duplicate: %v", r)
	}
	eq(t, pops(&j, 1), "frame(1)")
	if r := push(&j, 1); r != pushLate {
		t.Errorf("already played: %v", r)
	}
	push(&j, 3)
	eq(t, pops(&j, 2), "frame(2)", "frame(3)")
}

func TestJitterLossUsesFEC(t *testing.T) {
	var j jitterBuffer
	push(&j, 1)
	push(&j, 2)
	push(&j, 4) // 3 lost; 4's FEC data carries 3
	push(&j, 5)
	eq(t, pops(&j, 4), "frame(1)", "frame(2)", "fec(4)", "frame(4)")
	if r := push(&j, 3); r != pushLate {
		t.Errorf("packet 3 after concealment: %v, want late", r)
	}
	eq(t, pops(&j, 1), "frame(5)")
}

func TestJitterBurstLossPLC(t *testing.T) {
	var j jitterBuffer
	push(&j, 1)
	push(&j, 2)
	push(&j, 6)
	push(&j, 7)
	// 3 and 4 have nothing after them: PLC; 5 is recovered from 6's FEC.
	eq(t, pops(&j, 6), "frame(1)", "frame(2)", "lost(-1)", "lost(-1)", "fec(6)", "frame(6)")
}

func TestJitterSeqWrap(t *testing.T) {
	var j jitterBuffer
	push(&j, 65534)
	push(&j, 65535)
	push(&j, 1) // 0 lost across the wrap
	push(&j, 2)
	eq(t, pops(&j, 5), "frame(65534)", "frame(65535)", "fec(1)", "frame(1)", "frame(2)")
	// Reordering across the wrap.
	var k jitterBuffer
	push(&k, 65535)
	push(&k, 1)
	push(&k, 0)
	eq(t, pops(&k, 3), "frame(65535)", "frame(0)", "frame(1)")
}

func TestJitterUnderrunRebuffers(t *testing.T) {
	var j jitterBuffer
	j.setTarget(5) // 2 packets
	push(&j, 1)
	push(&j, 2)
	eq(t, pops(&j, 3), "frame(1)", "frame(2)", "empty(-1)")
	// A delay spike: 3..5 arrive late together. Playout waits for jbTarget,
	// then resumes at the oldest queued one, nothing is dropped.
	push(&j, 3)
	eq(t, pops(&j, 1), "empty(-1)")
	push(&j, 4)
	push(&j, 5)
	eq(t, pops(&j, 3), "frame(3)", "frame(4)", "frame(5)")
	// Packets lost during an underrun were concealed in real time already:
	// after rebuffering playout skips to the oldest queued packet.
	eq(t, pops(&j, 2), "empty(-1)", "empty(-1)")
	push(&j, 9)
	push(&j, 10)
	eq(t, pops(&j, 2), "frame(9)", "frame(10)")
}

func TestJitterTrimsLatency(t *testing.T) {
	var j jitterBuffer
	for s := uint16(0); s < 20; s++ {
		push(&j, s)
	}
	// Above jbMaxDepth the oldest packets go at once.
	first := pop(&j)
	if first.kind != popFrame || first.seq < 20-jbTarget-2 {
		t.Errorf("first pop %v: latency not trimmed", first)
	}
	// A steady surplus of one packet above target is trimmed slowly.
	var k jitterBuffer
	next := uint16(0)
	for range jbTarget + 2 {
		push(&k, next)
		next++
	}
	drops := 0
	for range 3 * jbTrimAfter {
		before := k.dropped
		pop(&k)
		push(&k, next)
		next++
		drops += int(k.dropped - before)
	}
	if drops == 0 || k.count > jbTarget+1 {
		t.Errorf("surplus not trimmed: drops %d count %d", drops, k.count)
	}
}

func TestJitterResync(t *testing.T) {
	var j jitterBuffer
	push(&j, 1000)
	push(&j, 1001)
	eq(t, pops(&j, 1), "frame(1000)")
	// The sender restarted its sequence far away: start over there.
	push(&j, 30000)
	push(&j, 30001)
	got := pops(&j, 3)
	eq(t, got, "frame(30000)", "frame(30001)", "empty(-1)")
	// Far behind (also a restart).
	push(&j, 5)
	push(&j, 6)
	eq(t, pops(&j, 2), "frame(5)", "frame(6)")
	// Oversized payloads are refused.
	if r := j.push(7, make([]byte, maxPayload+1)); r != pushTooBig {
		t.Errorf("oversized: %v", r)
	}
}

func TestSeqTrackerLoss(t *testing.T) {
	var s seqTracker
	for _, q := range []uint16{65530, 65531, 65533, 65534, 0, 1, 3} {
		s.update(7, q)
	}
	// expected 65530..3 = 10, received 7.
	if l := s.lost(); l != 3 {
		t.Errorf("lost %d, want 3", l)
	}
	s.update(8, 100) // new SSRC: history kept
	s.update(8, 102)
	if l := s.lost(); l != 4 {
		t.Errorf("lost %d, want 4", l)
	}
}

// An hour of a far end whose clock runs 0.1% fast against our sound card:
// the buffer must trim the surplus, never grow without bound.
func TestJitterBufferClockDriftHour(t *testing.T) {
	var j jitterBuffer
	out := make([]byte, maxPayload)
	payload := []byte{1, 2, 3}
	seq := uint16(65000) // wraps many times over the hour
	maxDepth, frames := 0, 3600*50
	for i := 0; i < frames; i++ {
		j.push(seq, payload)
		seq++
		if i%1000 == 999 { // the 0.1% extra packet
			j.push(seq, payload)
			seq++
		}
		j.pop(out)
		maxDepth = max(maxDepth, j.count)
	}
	if maxDepth > jbMaxDepth+1 {
		t.Fatalf("depth reached %d packets", maxDepth)
	}
	if j.count > j.tgt()+2 {
		t.Fatalf("after an hour %d packets queued (target %d)", j.count, j.tgt())
	}
	if j.dropped == 0 {
		t.Fatal("surplus never trimmed")
	}
}

func TestJitterBufferTargetAdapts(t *testing.T) {
	var j jitterBuffer
	for _, c := range []struct {
		jitterMs float64
		want     int
	}{{0, 1}, {1.5, 1}, {2, 2}, {5, 2}, {20, 3}, {40, 5}, {200, 6}} {
		j.setTarget(c.jitterMs)
		if j.tgt() != c.want {
			t.Errorf("jitter %v ms: target %d, want %d", c.jitterMs, j.tgt(), c.want)
		}
	}
}

// At low jitter one packet is buffered: it plays at the first tick after it
// arrives, and a stall that queued more is trimmed back to one.
func TestJitterLowJitterPlaysAtOnce(t *testing.T) {
	var j jitterBuffer
	j.setTarget(0.5)
	push(&j, 100)
	eq(t, pops(&j, 1), "frame(100)")
	push(&j, 101)
	eq(t, pops(&j, 2), "frame(101)", "empty(-1)")
	// A 60 ms stall of our tick: three packets queue, then one arrives per tick.
	push(&j, 102)
	push(&j, 103)
	push(&j, 104)
	seq := uint16(105)
	for range 2 * jbTrimAfter {
		pop(&j)
		push(&j, seq)
		seq++
	}
	if j.count > j.tgt() {
		t.Fatalf("%d packets queued after the stall, want %d", j.count, j.tgt())
	}
	if j.dropped == 0 {
		t.Fatal("the stall's surplus was never trimmed")
	}
}
