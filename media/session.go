package media

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hraban/opus"
)

const (
	frameDur = 20 * time.Millisecond
	// Meta drops a call that stays silent for about 20 s at the start.
	startNoMediaLimit = 20 * time.Second
)

// Session is the media of one call. Create it with Offer or Answer.
//
// Its parts, each with one job: the transport (chosen by negotiation),
// the send loop (sender.go, dtmf.go), the receiver that transports hand
// packets to (receiver.go, jitter.go), the play tick the send loop runs
// after each packet (player.go) and the quality figures (rtcp.go).
type Session struct {
	cfg   Config
	log   *slog.Logger
	tr    transport
	local localDesc
	rx    receiver
	q     quality

	mu        sync.Mutex
	localSDP  []byte
	offerer   bool
	remote    *remoteDesc
	codec     string
	started   bool
	stopped   bool
	startedAt time.Time
	cancel    context.CancelFunc
	err       error
	dtmfQueue []byte // events waiting to be sent

	muted     atomic.Bool
	sent      atomic.Uint64
	firstSent atomic.Pointer[time.Time]
	// Unix nanoseconds of the send and play loops' latest ticks: a loop
	// stuck (in a device read, say) stops its beat, and Beat tells the watchdog.
	sendBeat, playBeat atomic.Int64
	concealed, fec     atomic.Uint64 // frames the player concealed; of those, rebuilt from FEC

	wg   sync.WaitGroup // the send loop (which also plays)
	done chan struct{}
}

// newSession makes a session without a transport; negotiation adds one.
func newSession(cfg Config) (*Session, error) {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("media: random session id: %w", err)
	}
	s := &Session{
		cfg:  cfg,
		log:  cfg.logger(),
		done: make(chan struct{}),
		// Stay well inside int64 for picky parsers.
		local: localDesc{sessID: binary.BigEndian.Uint64(id[:]) >> 2},
	}
	s.rx.init(s.log, cfg.OnDTMF, &s.q)
	return s, nil
}

// LocalSDP returns our SDP. It never changes during the session, so a
// re-INVITE is answered with the same bytes (same o= version, RFC 3264 §8).
func (s *Session) LocalSDP() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.localSDP)
}

// SetMute sends encoded silence instead of the source while on; the packet
// stream never pauses (Meta hangs up on silence gaps, and no DTX either).
func (s *Session) SetMute(m bool) { s.muted.Store(m) }

// Beat is the time of the older of the send and play loops' latest
// ticks (both tick every 20 ms while the session runs), zero before Start
// and after the session ended. The watchdog uses it to tell a wedged
// media loop from a quiet call.
func (s *Session) Beat() time.Time {
	select {
	case <-s.done:
		return time.Time{}
	default:
	}
	a, b := s.sendBeat.Load(), s.playBeat.Load()
	if a == 0 || b == 0 {
		return time.Time{}
	}
	return time.Unix(0, min(a, b))
}

// Done is closed when the session ended (Close, ctx cancel, no-media timeout).
func (s *Session) Done() <-chan struct{} { return s.done }

// Err tells why the session ended: nil after Close, ErrNoMedia on timeout,
// the context's error on cancellation.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session and waits for its goroutines; it is idempotent.
func (s *Session) Close() error {
	s.stop(nil)
	<-s.done
	return nil
}

// stop ends the session once; the first caller's reason wins. Start holds
// s.mu while it launches goroutines, so wg.Wait below never races wg.Add.
func (s *Session) stop(err error) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped, s.err = true, err
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if err != nil {
		s.log.Info("media session ended", "err", err)
	}
	go func() {
		s.tr.close() // ends the transport's readers
		s.wg.Wait()
		close(s.done)
	}()
}

// Stats returns a snapshot of the counters.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	st := Stats{Codec: s.codec}
	s.mu.Unlock()
	if t := s.firstSent.Load(); t != nil {
		st.FirstSentAt = *t
	}
	st.RemoteAddr = s.tr.remoteAddr()
	st.PacketsSent = s.sent.Load()
	st.Concealed, st.FECRecovered = s.concealed.Load(), s.fec.Load()
	st.ConcealedMs = st.Concealed * 20
	s.rx.stats(&st)
	s.q.mu.Lock()
	st.JitterMs, st.RTTMs = s.q.jitter*1000/SampleRate, s.q.rttMs
	st.LossPercent = float64(s.q.remoteLoss) * 100 / 256
	s.q.mu.Unlock()
	if st.PacketsReceived > 0 {
		// Our own view of loss counts too: what we could not play.
		local := 0.0
		if exp := st.PacketsReceived + st.PacketsLost; exp > 0 {
			local = float64(st.PacketsLost) * 100 / float64(exp)
		}
		st.MOS = math.Round(mos(st.RTTMs, st.JitterMs, max(local, st.LossPercent))*100) / 100
	}
	return st
}

// Start runs the media: it sends the first SRTP packet at once (Meta waits
// for the business to send first; with DTLS, the moment the handshake
// completes), then a frame every 20 ms. From the peer's first
// authenticated packet on, sink gets one frame every 20 ms (decoded,
// concealed, or silence on a long gap). It does not block. src or sink may
// be nil (silence / discard). The session ends on Close, ctx cancellation,
// the no-media timeout or a failed ICE/DTLS handshake; see Done and Err.
func (s *Session) Start(ctx context.Context, src Source, sink Sink) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return errors.New("media: session closed")
	case s.started:
		return errors.New("media: session already started")
	case s.remote == nil:
		return errors.New("media: no remote description (SetAnswer not called)")
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("media: start: %w", ctx.Err())
	default:
	}
	// Our reports must name the SSRC our packets carry, or the peer's
	// reception blocks never match us: no RTT, no remote loss for the encoder.
	tx, err := newSender(s.remote, s.tr.ssrc(), s.cfg.OpusComplexity)
	if err != nil {
		return err
	}
	dec, err := opus.NewDecoder(SampleRate, 1)
	if err != nil {
		return fmt.Errorf("media: opus decoder: %w", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	if err := s.tr.start(runCtx, s.stop); err != nil {
		cancel()
		return err
	}
	s.q.setOurSSRC(tx.ssrc)
	s.cancel, s.started, s.startedAt = cancel, true, time.Now()
	s.wg.Add(1)
	po := &playout{s: s, p: &player{dec: dec, lastN: FrameSamples}, sink: sink}
	s.rx.out.Store(po)
	go s.sendLoop(runCtx, ctx, src, tx, po)
	s.log.Info("media started", "remote", s.tr.remoteAddr(), "codec", s.codec)
	return nil
}

// logEvery logs the 1st, 2nd, 4th, 8th... occurrence of a recurring problem.
func logEvery(n uint64) bool { return n&(n-1) == 0 }
