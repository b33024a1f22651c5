package media

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hraban/opus"
)

const (
	// When maxaveragebitrate is absent: plenty for wideband/fullband voice.
	defaultBitrate = 32000
	// Expected loss we tell the encoder so that in-band FEC is really used.
	fecLossPerc = 10
)

// sender owns everything the 20 ms send path touches, allocated once (the
// send goroutine only). It builds plain RTP; the transport protects it.
type sender struct {
	enc    *opus.Encoder
	pt     uint8
	dtmfPT int // -1: the peer takes no telephone-event
	seq    uint16
	ts     uint32
	ssrc   uint32
	first  bool
	pcm    [FrameSamples]int16
	pkt    [maxPayload]byte

	srcErrs, sendErrs uint64 // for logEvery
}

// newSender builds the send path for the peer's description; ssrc 0 picks
// a random one.
func newSender(rd *remoteDesc, ssrc uint32, complexity int) (*sender, error) {
	enc, err := newEncoder(parseOpusFmtp(rd.opus.fmtp), complexity)
	if err != nil {
		return nil, err
	}
	var r [10]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("media: random rtp ids: %w", err)
	}
	tx := &sender{
		enc: enc, pt: rd.opusPT, dtmfPT: rd.dtmfPT, first: true,
		ssrc: binary.BigEndian.Uint32(r[0:]), ts: binary.BigEndian.Uint32(r[4:]),
		// Random start seq, but low enough that the ROC does not roll soon
		// after start (some receivers mis-guess an early rollover).
		seq: binary.BigEndian.Uint16(r[8:]) & 0x7fff,
	}
	if ssrc != 0 {
		tx.ssrc = ssrc
	}
	return tx, nil
}

// newEncoder applies the peer's fmtp limits (RFC 7587 §6.1) and our
// complexity (1-10; 0 = DefaultOpusComplexity).
func newEncoder(p opusParams, complexity int) (*opus.Encoder, error) {
	enc, err := opus.NewEncoder(SampleRate, 1, opus.AppVoIP)
	if err != nil {
		return nil, fmt.Errorf("media: opus encoder: %w", err)
	}
	br := p.maxAverageBitrate
	if br <= 0 {
		br = defaultBitrate
	}
	br = min(max(br, 6000), 510000)
	var errs []error
	check := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	if complexity <= 0 {
		complexity = DefaultOpusComplexity()
	}
	check("complexity", enc.SetComplexity(min(complexity, 10)))
	check("bitrate", enc.SetBitrate(br))
	check("max bandwidth", enc.SetMaxBandwidth(maxBandwidth(p.maxPlaybackRate)))
	check("dtx", enc.SetDTX(false)) // Meta hangs up on silent gaps; mute sends coded silence
	check("fec", enc.SetInBandFEC(p.useInbandFEC))
	if p.useInbandFEC {
		// libopus only spends bits on FEC if told to expect loss.
		check("loss perc", enc.SetPacketLossPerc(fecLossPerc))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("media: opus encoder: %w", err)
	}
	return enc, nil
}

// maxBandwidth is the widest Opus bandwidth a maxplaybackrate allows.
func maxBandwidth(rate int) opus.Bandwidth {
	switch {
	case rate <= 0:
	case rate <= 8000:
		return opus.Narrowband
	case rate <= 12000:
		return opus.Mediumband
	case rate <= 16000:
		return opus.Wideband
	case rate <= 24000:
		return opus.SuperWideband
	}
	return opus.Fullband
}

// frame encodes pcm into a plain RTP packet; the result aliases t.pkt.
func (t *sender) frame(pcm []int16) ([]byte, error) {
	n, err := t.enc.Encode(pcm, t.pkt[12:len(t.pkt):len(t.pkt)])
	if err != nil {
		return nil, fmt.Errorf("opus encode: %w", err)
	}
	b := t.pkt[:12+n]
	b[0] = 0x80
	b[1] = t.pt
	if t.first {
		b[1] |= 0x80 // marker: start of the stream
	}
	binary.BigEndian.PutUint16(b[2:], t.seq)
	binary.BigEndian.PutUint32(b[4:], t.ts)
	binary.BigEndian.PutUint32(b[8:], t.ssrc)
	t.first = false
	t.seq++
	t.ts += FrameSamples
	return b, nil
}

// sendLoop sends one packet every 20 ms until ctx ends, and our RTCP
// report on its own schedule; each tick then plays a frame (playTick).
// One goroutine and one pacer (pacer.go) for both directions: on a small board a
// wake-up (timer, futex, scheduler) costs about what a decode does.
func (s *Session) sendLoop(ctx, parent context.Context, src Source, tx *sender, po *playout) {
	defer s.wg.Done()
	defer po.close()
	tick := newPacer(ctx)
	defer func() { tick.close() }() // tick may be replaced
	next := time.Now()
	var dtmf dtmfState
	var lock phaseLock
	timed, _ := src.(TimedSource)
	nextRTCP := next.Add(rtcpFirst)
	for {
		now := time.Now()
		s.sendBeat.Store(now.UnixNano())
		if now.After(nextRTCP) {
			nextRTCP = now.Add(rtcpInterval)
			s.sendRTCP(tx, now)
		}
		s.applyLoss(tx)
		pkt, err := s.nextPacket(tx, src, &dtmf)
		if err == nil {
			err = s.transmit(pkt)
		}
		if err != nil && !errors.Is(err, errNoPath) {
			if ctx.Err() != nil { // the transport closed under us
				s.stop(parent.Err())
				return
			}
			if tx.sendErrs++; logEvery(tx.sendErrs) {
				s.log.Warn("rtp send failed", "to", s.tr.remoteAddr(), "err", err, "count", tx.sendErrs)
			}
		}
		if err := s.playTick(now, po); err != nil {
			s.stop(err)
			return
		}
		var move time.Duration
		if timed != nil {
			move = lock.observe(now.Sub(timed.CapturedAt()))
		}
		next = tx.pace(next.Add(frameDur + move))
		err = tick.wait(ctx, next)
		if err != nil && ctx.Err() == nil {
			// The timerfd failed (it should not): go on with a Go timer.
			s.log.Warn("media tick failed; pacing with a Go timer", "err", err)
			tick.close()
			tick = newTimerPacer()
			err = tick.wait(ctx, next)
		}
		if err != nil {
			s.stop(parent.Err())
			return
		}
	}
}

// nextPacket is this tick's RTP packet: a telephone-event while one plays
// (it replaces the tick's audio; the audio clock runs on), else an Opus
// frame of src, or of silence when muted, without a source or when the
// source fails. The source is read either way, to keep it drained.
func (s *Session) nextPacket(tx *sender, src Source, dtmf *dtmfState) ([]byte, error) {
	pcm := tx.pcm[:]
	if src == nil {
		clear(pcm)
	} else if err := src.ReadFrame(pcm); err != nil {
		clear(pcm)
		if tx.srcErrs++; logEvery(tx.srcErrs) {
			s.log.Warn("audio source failed, sending silence", "err", err, "count", tx.srcErrs)
		}
	}
	if s.muted.Load() {
		clear(pcm) // read anyway: a backlog left in the capture ring would be latency after unmute
	}
	if ev := s.nextDTMF(tx, dtmf); ev != nil {
		tx.ts += FrameSamples
		return ev, nil
	}
	return tx.frame(pcm)
}

// transmit hands pkt to the transport and counts it. No allocation after
// the first packet.
func (s *Session) transmit(pkt []byte) error {
	at := time.Now() // before the write: the peer may answer before it returns
	if err := s.tr.writeRTP(pkt); err != nil {
		return err
	}
	if s.sent.Add(1) == 1 {
		first := at // escapes: declared here, it costs one allocation per call, not per frame
		s.firstSent.Store(&first)
		s.log.Debug("first rtp packet sent", "to", s.tr.remoteAddr())
	}
	return nil
}

// pace returns when the next tick is due. After a stall (suspend, an
// overloaded host) it does not burst the missed frames, but keeps the RTP
// clock honest about the gap.
func (t *sender) pace(next time.Time) time.Time {
	if behind := time.Since(next); behind > 5*frameDur {
		skipped := int(behind / frameDur)
		t.ts += uint32(skipped * FrameSamples)
		next = next.Add(time.Duration(skipped) * frameDur)
	}
	return next
}
