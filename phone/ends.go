package phone

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/media"
)

// openAudio opens the call's capture and playback ends; either may fail
// alone (a missing headset), and the call goes on with what there is.
func (p *Phone) openAudio() (AudioSource, AudioSink, error) {
	var src AudioSource
	var sink AudioSink
	var errs []error
	if p.cfg.Capture != nil {
		s, err := p.cfg.Capture()
		if err != nil {
			errs = append(errs, fmt.Errorf("capture: %w", err))
		} else {
			src = s
		}
	}
	if p.cfg.Playback != nil {
		s, err := p.cfg.Playback()
		if err != nil {
			errs = append(errs, fmt.Errorf("playback: %w", err))
		} else {
			sink = s
		}
	}
	return src, sink, errors.Join(errs...)
}

// playTone writes a tone cadence into a sink at real-time pace until the
// returned stop is called (stop waits for the sink to be closed).
func (p *Phone) playTone(open func() (AudioSink, error), segs []audio.Segment) (stop func()) {
	if open == nil {
		return func() {}
	}
	sink, err := open()
	if err != nil {
		p.log.Warn("cannot play a tone", "err", err)
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer sink.Close()
		tone := audio.NewCadence(segs, 0.25)
		frame := make([]int16, audio.FrameSamples)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				_ = tone.ReadFrame(frame)
				if err := sink.WriteFrame(frame); err != nil {
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
		})
	}
}

// busyTone plays the busy tone for a moment after a refused call; the
// phone is already idle meanwhile.
func (p *Phone) busyTone() {
	stop := p.playTone(p.cfg.Playback, audio.BusyCadence)
	t := p.clock.NewTimer(busyToneFor)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer stop()
		defer t.Stop()
		select {
		case <-t.C():
		case <-p.closing:
		}
	}()
}

type silence struct{}

func (silence) ReadFrame(pcm []int16) error {
	clear(pcm)
	return nil
}

type discard struct{}

func (discard) WriteFrame([]int16) error { return nil }

// mediaConfig is the per-call media config: received DTMF becomes an event.
func (p *Phone) mediaConfig() media.Config {
	mc := p.cfg.Media
	mc.OnDTMF = func(d rune) { p.emit(EvDTMFReceived, string(d)) }
	return mc
}

// logEnd writes the end-of-call line.
func (p *Phone) logEnd(sum *CallSummary) {
	attrs := []any{"direction", sum.Direction, "call", sum.Info, "ended_by", sum.EndedBy, "duration", sum.Duration}
	if sum.Reason != "" {
		attrs = append(attrs, "reason", sum.Reason)
	}
	if m := sum.Media; m != nil {
		attrs = append(attrs, "rtp_sent", m.PacketsSent, "rtp_received", m.PacketsReceived,
			"rtp_lost", m.PacketsLost, "srtp_auth_failures", m.AuthFailures, "concealed_ms", m.ConcealedMs,
			"jitter_ms", math.Round(m.JitterMs*10)/10, "rtt_ms", math.Round(m.RTTMs*10)/10, "mos", m.MOS)
	}
	p.log.Info("call ended", attrs...)
}
