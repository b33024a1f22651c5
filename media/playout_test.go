package media

import (
	"net/netip"
	"testing"

	"github.com/hraban/opus"
	"github.com/pion/rtp"
)

// A packet that comes in time is played on arrival, not at the next tick;
// each 20 ms interval plays exactly one frame; a packet that did not come
// is concealed at the interval's end; and the tone comes out whole.
func TestPlayoutOnArrival(t *testing.T) {
	s, err := newSession(Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := opus.NewEncoder(SampleRate, 1, opus.AppVoIP)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := opus.NewDecoder(SampleRate, 1)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordSink{}
	po := &playout{s: s, p: &player{dec: dec, lastN: FrameSamples}, sink: rec}
	s.rx.out.Store(po)
	st := &rtpStream{pts: payloadTypes{opus: [2]uint8{111, 111}, dtmf: [2]int{-1, -1}}}
	tone := &toneSource{hz: 440}
	pcm := make([]int16, FrameSamples)
	buf := make([]byte, maxPayload)
	from := netip.MustParseAddrPort("127.0.0.1:4000")
	frames := rec.frames
	arrive := func(seq uint16) {
		_ = tone.ReadFrame(pcm)
		n, err := enc.Encode(pcm, buf)
		if err != nil {
			t.Fatal(err)
		}
		h := &rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * FrameSamples, SSRC: 7}
		s.rx.rtp(st, h, buf[:n], from)
	}
	for seq := uint16(0); seq < 100; seq++ {
		before := frames()
		if seq == 60 {
			_ = tone.ReadFrame(pcm) // lost on the way: the tone runs on
		} else {
			arrive(seq)
			if got := frames(); got != before+1 {
				t.Fatalf("packet %d: %d frames played on arrival, want 1", seq, got-before)
			}
		}
		po.tick()
		if got := frames(); got != before+1 {
			t.Fatalf("interval %d: %d frames in all, want 1", seq, got-before)
		}
	}
	if c := s.concealed.Load(); c != 1 {
		t.Fatalf("%d frames concealed, want 1 (the lost packet)", c)
	}
	if snr := blockSNR(rec.last(90*FrameSamples), 440); snr < 20 {
		t.Fatalf("440 Hz at %.1f dB over the rest, want >= 20", snr)
	}
	po.close()
	arrive(100)
	po.tick()
	if got := frames(); got != 100 {
		t.Fatalf("%d frames after close, want 100: a closed playout must leave the sink alone", got)
	}
}
