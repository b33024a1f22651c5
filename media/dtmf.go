package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// RFC 4733 telephone-events, sent by the send loop (sender.go). Sending is interleaved with the 20 ms audio
// clock: while an event plays, each tick sends an event packet instead of
// an Opus one (same SSRC and sequence space, the RTP timestamp frozen at
// the event's start), then three end packets, then audio resumes.

const (
	dtmfEventMs  = 100 // tone length
	dtmfVolume   = 10  // -10 dBm0
	dtmfEndCopys = 3   // end packets are sent three times (RFC 4733 §2.5.1.4)
)

const dtmfDigits = "0123456789*#ABCD"

func dtmfDigit(event byte) rune {
	if int(event) < len(dtmfDigits) {
		return rune(dtmfDigits[event])
	}
	return 0
}

// SendDTMF queues digits (0-9 * # A-D) to send as RFC 4733 events.
func (s *Session) SendDTMF(digits string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.remote == nil || s.remote.dtmfPT < 0 {
		return errors.New("media: the peer did not negotiate telephone-event")
	}
	for _, d := range strings.ToUpper(digits) {
		i := strings.IndexRune(dtmfDigits, d)
		if i < 0 {
			return fmt.Errorf("media: %q is not a DTMF digit (0-9 * # A-D)", d)
		}
		s.dtmfQueue = append(s.dtmfQueue, byte(i))
	}
	return nil
}

// dtmfState is the event being sent (send goroutine only).
type dtmfState struct {
	active bool
	event  byte
	ts     uint32 // frozen RTP timestamp of the event
	ticks  int    // 20 ms packets sent for this event
	ends   int    // end packets sent
	gap    int    // silent ticks left between digits
	pkt    [16]byte
}

// nextDTMF returns the next telephone-event packet to send instead of
// audio, or nil when no event is playing.
func (s *Session) nextDTMF(t *sender, st *dtmfState) []byte {
	if !st.active {
		if st.gap > 0 {
			st.gap--
			return nil
		}
		s.mu.Lock()
		if len(s.dtmfQueue) == 0 {
			s.mu.Unlock()
			return nil
		}
		st.event, s.dtmfQueue = s.dtmfQueue[0], s.dtmfQueue[1:]
		s.mu.Unlock()
		st.active, st.ts, st.ticks, st.ends = true, t.ts, 0, 0
	}
	st.ticks++
	end := st.ticks*20 >= dtmfEventMs
	duration := uint16(min(st.ticks*160, 0xffff)) // telephone-event/8000 units
	b := st.pkt[:16]
	b[0] = 0x80
	b[1] = byte(t.dtmfPT)
	if st.ticks == 1 {
		b[1] |= 0x80 // marker: start of an event
	}
	binary.BigEndian.PutUint16(b[2:], t.seq)
	binary.BigEndian.PutUint32(b[4:], st.ts)
	binary.BigEndian.PutUint32(b[8:], t.ssrc)
	b[12] = st.event
	b[13] = dtmfVolume
	if end {
		b[13] |= 0x80
		st.ends++
		st.ticks-- // end packets repeat the final duration
		if st.ends == dtmfEndCopys {
			st.active, st.gap = false, 2
		}
	}
	binary.BigEndian.PutUint16(b[14:], duration)
	t.seq++
	return b
}
