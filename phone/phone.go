// Package phone is the call controller: one state machine per call that
// joins signaling (sip), media, audio and, later, the board. It owns the
// policy: auto-answer or wait for the button, ring timeout, busy.
package phone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/media"
	"github.com/waphone/waphone/sip"
)

// State of the phone (of its one call).
type State string

const (
	Idle     State = "idle"
	Ringing  State = "ringing"  // inbound call waiting for an answer
	Dialing  State = "dialing"  // our INVITE is out
	Ringback State = "ringback" // the far end rings
	Talking  State = "talking"
)

// AudioSource is the capture side (headset mic, tone, WAV).
type AudioSource interface {
	ReadFrame(pcm []int16) error
	Close() error
}

// AudioSink is the playback side (headset earpiece, WAV, recorder).
type AudioSink interface {
	WriteFrame(pcm []int16) error
	Close() error
}

// Dialer is what phone needs from signaling to place calls.
type Dialer interface {
	Dial(ctx context.Context, number string, sdp []byte, progress sip.Progress) (*sip.OutboundCall, error)
}

// Config is the phone's policy and its audio ends.
type Config struct {
	Answer          string // "auto" or "button"
	AutoAnswerDelay time.Duration
	RingTimeout     time.Duration // 0 = 60 s
	SpeedDial       string        // a long press while idle calls this number ("" = off)
	// NoEarlyMedia turns off the 183 with our SDP while ringing (on by
	// default: ICE/DTLS then complete before the answer, no clipped words).
	NoEarlyMedia bool
	Media        media.Config
	Capture      func() (AudioSource, error)
	Playback     func() (AudioSink, error)
	// Ringer is where an incoming call rings (a speaker); nil = Playback.
	Ringer func() (AudioSink, error)
	// OnEvent, if set, sees every event as it happens (tests, the demo).
	OnEvent func(Event)
	// DeviceStatus, if set, adds the sound device's state to Status (plugged, xruns).
	DeviceStatus func() any
	// OnCallEnd, if set, gets every call's summary once it ended (call history).
	OnCallEnd func(CallSummary)
	Logger    *slog.Logger
}

// Event is one transition or notable thing, for status and logs.
type Event struct {
	At     time.Time    `json:"at"`
	State  State        `json:"state"`
	What   string       `json:"what"`
	Detail string       `json:"detail,omitempty"`
	Call   sip.CallInfo `json:"call"`
}

// Phone holds at most one call at a time.
type Phone struct {
	cfg    Config
	log    *slog.Logger
	dialer Dialer

	mu      sync.Mutex
	cur     *call
	history []Event
	last    *CallSummary
	wg      sync.WaitGroup
}

// CallSummary is what is left of a call when it ends (the end-of-call line).
type CallSummary struct {
	Direction string        `json:"direction"`
	Info      sip.CallInfo  `json:"info"`
	Start     time.Time     `json:"start"`
	Answered  time.Time     `json:"answered,omitempty"`
	End       time.Time     `json:"end"`
	Duration  time.Duration `json:"duration"`
	EndedBy   string        `json:"ended_by"`
	Reason    string        `json:"reason,omitempty"`
	Media     *media.Stats  `json:"media,omitempty"`
}

// New makes an idle phone. SetDialer wires outbound calls.
func New(cfg Config) *Phone {
	if cfg.RingTimeout == 0 {
		cfg.RingTimeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Media.Logger == nil {
		cfg.Media.Logger = cfg.Logger
	}
	return &Phone{cfg: cfg, log: cfg.Logger}
}

// SetDialer sets the signaling used for outbound calls (the endpoint is
// built after the phone because the phone is its handler).
func (p *Phone) SetDialer(d Dialer) { p.dialer = d }

// call is one call's state machine.
type call struct {
	dir      string
	state    State
	info     sip.CallInfo
	start    time.Time
	answered time.Time
	answerC  chan struct{} // closed by Answer()
	hangupC  chan struct{} // closed by Hangup()
	aOnce    sync.Once
	hOnce    sync.Once
	sess     *media.Session
	muted    bool
}

func (p *Phone) emit(c *call, what, detail string) {
	ev := Event{At: time.Now(), What: what, Detail: detail}
	p.mu.Lock()
	if c != nil {
		ev.State, ev.Call = c.state, c.info
	} else {
		ev.State = Idle
	}
	p.history = append(p.history, ev)
	if len(p.history) > 64 {
		p.history = p.history[len(p.history)-64:]
	}
	p.mu.Unlock()
	if p.cfg.OnEvent != nil {
		p.cfg.OnEvent(ev)
	}
}

func (p *Phone) setState(c *call, s State, what, detail string) {
	p.mu.Lock()
	c.state = s
	p.mu.Unlock()
	p.emit(c, what, detail)
}

// IncomingCall is the sip.Handler entry: Meta offers an authenticated call.
func (p *Phone) IncomingCall(ic *sip.InboundCall) {
	info := ic.Info()
	p.mu.Lock()
	busy := p.cur != nil
	p.mu.Unlock()
	if busy {
		p.log.Info("busy: rejecting a second call", "call", info)
		go func() { _ = ic.Reject(486, "Busy Here") }()
		p.emit(nil, "rejected-busy", info.Remote)
		return
	}
	var cref callRef
	sess, answer, err := media.Answer(p.mediaConfig(&cref), ic.Offer())
	if err != nil {
		code, reason := 488, "Not Acceptable Here"
		var ne *media.NegotiationError
		if errors.As(err, &ne) {
			code, reason = ne.Status, ne.Reason
		}
		p.log.Warn("cannot take the call's media", "call", info, "err", err)
		go func() { _ = ic.Reject(code, reason) }()
		p.emit(nil, "rejected-media", err.Error())
		return
	}
	c := &call{dir: "inbound", state: Ringing, info: info, start: time.Now(),
		answerC: make(chan struct{}), hangupC: make(chan struct{}), sess: sess}
	p.mu.Lock()
	if p.cur != nil { // lost a race with another INVITE
		p.mu.Unlock()
		_ = sess.Close()
		go func() { _ = ic.Reject(486, "Busy Here") }()
		return
	}
	p.cur = c
	p.mu.Unlock()
	cref.set(c)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.runInbound(c, ic, answer)
	}()
}

func (p *Phone) runInbound(c *call, ic *sip.InboundCall, answer []byte) {
	var endedBy, reason string
	defer func() { p.finish(c, endedBy, reason) }()
	if err := ic.Ringing(); err != nil {
		p.log.Warn("sending 180 failed", "err", err)
	}
	p.emit(c, "ringing", c.info.Remote)
	if !p.cfg.NoEarlyMedia {
		if err := ic.Progress(answer); err != nil {
			p.log.Warn("sending 183 with early SDP failed", "err", err)
		}
	}
	ringer := p.cfg.Ringer
	if ringer == nil {
		ringer = p.cfg.Playback
	}
	stopRing := func() {}
	if p.cfg.Answer != "auto" || p.cfg.AutoAnswerDelay > 0 {
		stopRing = p.playTone(ringer, audio.RingCadence)
	}
	defer stopRing()

	var autoC <-chan time.Time
	if p.cfg.Answer == "auto" {
		t := time.NewTimer(p.cfg.AutoAnswerDelay)
		defer t.Stop()
		autoC = t.C
	}
	ringT := time.NewTimer(p.cfg.RingTimeout)
	defer ringT.Stop()
	select {
	case <-autoC:
	case <-c.answerC:
	case <-ringT.C:
		_ = ic.Reject(480, "Temporarily Unavailable")
		endedBy, reason = "missed", "ring timeout"
		return
	case <-c.hangupC:
		_ = ic.Reject(603, "Decline")
		endedBy, reason = sip.EndRejected, "declined"
		return
	case <-ic.Done():
		endedBy, reason = ic.Ended()
		return
	}
	stopRing() // CANCEL, timeout and answer all stop the ring at once
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	err := ic.Answer(ctx, answer)
	cancel()
	if err != nil {
		endedBy, reason = sip.EndFailed, err.Error()
		if by, r := ic.Ended(); by != "" {
			endedBy, reason = by, r
		}
		return
	}
	endedBy, reason = p.talk(c, &ic.Call, nil)
}

// talk runs the media of an answered call until either side ends it.
// started, if not nil, is closed once media runs (or the call failed).
func (p *Phone) talk(c *call, sc *sip.Call, started chan struct{}) (endedBy, reason string) {
	signal := func() {}
	if started != nil {
		var once sync.Once
		signal = func() { once.Do(func() { close(started) }) }
		defer signal()
	}
	src, sink, err := p.openAudio()
	if err != nil {
		// A missing device must not cost the call: carry on with silence.
		p.log.Error("audio unavailable; the call continues without it", "err", err)
	}
	defer func() {
		if src != nil {
			_ = src.Close()
		}
		if sink != nil {
			_ = sink.Close()
		}
	}()
	var msrc media.Source = silence{}
	var msink media.Sink = discard{}
	if src != nil {
		msrc = src
	}
	if sink != nil {
		msink = sink
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.sess.Start(ctx, msrc, msink); err != nil {
		hctx, hc := context.WithTimeout(context.Background(), 10*time.Second)
		_ = sc.Hangup(hctx)
		hc()
		return sip.EndFailed, "media: " + err.Error()
	}
	p.mu.Lock()
	c.answered = time.Now()
	c.info = sc.Info()
	p.mu.Unlock()
	p.setState(c, Talking, "answered", "")
	signal()

	// Meta's BYE adds the call duration; keep the freshest call info.
	defer func() {
		p.mu.Lock()
		c.info = sc.Info()
		p.mu.Unlock()
	}()
	select {
	case <-sc.Done():
		return sc.Ended()
	case <-c.hangupC:
	case <-c.sess.Done():
		reason = "media ended"
		if err := c.sess.Err(); err != nil {
			reason = "media: " + err.Error()
		}
		p.log.Warn("media stopped; hanging up", "reason", reason)
	}
	hctx, hc := context.WithTimeout(context.Background(), 10*time.Second)
	defer hc()
	bye := sc.Hangup
	if reason != "" { // media failed: say so in the BYE's Reason
		bye = func(ctx context.Context) error { return sc.HangupFailed(ctx, reason) }
	}
	if err := bye(hctx); err != nil {
		p.log.Warn("BYE failed", "err", err)
	}
	by, _ := sc.Ended()
	if reason == "" {
		return by, ""
	}
	return by, reason
}

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

// finish closes media, logs the end-of-call line and returns to idle.
func (p *Phone) finish(c *call, endedBy, reason string) {
	if c.sess != nil {
		_ = c.sess.Close()
	}
	end := time.Now()
	p.mu.Lock()
	sum := &CallSummary{Direction: c.dir, Info: c.info, Start: c.start, Answered: c.answered, End: end,
		EndedBy: endedBy, Reason: reason}
	if !c.answered.IsZero() {
		sum.Duration = end.Sub(c.answered).Round(time.Millisecond)
		if c.sess != nil {
			st := c.sess.Stats()
			sum.Media = &st
		}
	}
	p.last = sum
	if p.cur == c {
		p.cur = nil
	}
	p.mu.Unlock()
	attrs := []any{"direction", c.dir, "call", c.info, "ended_by", endedBy, "duration", sum.Duration}
	if reason != "" {
		attrs = append(attrs, "reason", reason)
	}
	if sum.Media != nil {
		m := sum.Media
		attrs = append(attrs, "rtp_sent", m.PacketsSent, "rtp_received", m.PacketsReceived,
			"rtp_lost", m.PacketsLost, "srtp_auth_failures", m.AuthFailures, "concealed_ms", m.ConcealedMs,
			"jitter_ms", math.Round(m.JitterMs*10)/10, "rtt_ms", math.Round(m.RTTMs*10)/10, "mos", m.MOS)
	}
	p.log.Info("call ended", attrs...)
	if p.cfg.OnCallEnd != nil {
		p.cfg.OnCallEnd(*sum)
	}
	p.emit(nil, "ended", endedBy)
}

// Answer answers a ringing call (the button, `waphone answer`).
func (p *Phone) Answer() error {
	p.mu.Lock()
	c := p.cur
	p.mu.Unlock()
	if c == nil || c.state != Ringing {
		return errors.New("no call is ringing")
	}
	c.aOnce.Do(func() { close(c.answerC) })
	return nil
}

// Hangup ends the current call: BYE when talking, decline when ringing,
// CANCEL when dialing.
func (p *Phone) Hangup() error {
	p.mu.Lock()
	c := p.cur
	p.mu.Unlock()
	if c == nil {
		return errors.New("no call to hang up")
	}
	c.hOnce.Do(func() { close(c.hangupC) })
	return nil
}

// Call places a business-initiated call. It returns once the call is
// answered (the call then runs on) or has failed.
func (p *Phone) Call(ctx context.Context, number string) error {
	if p.dialer == nil {
		return errors.New("phone: no signaling configured")
	}
	c := &call{dir: "outbound", state: Dialing, info: sip.CallInfo{Remote: number, DurationSec: -1},
		start: time.Now(), answerC: make(chan struct{}), hangupC: make(chan struct{})}
	p.mu.Lock()
	if p.cur != nil {
		p.mu.Unlock()
		return errors.New("phone is busy with another call")
	}
	p.cur = c
	p.mu.Unlock()
	p.emit(c, "dialing", number)

	var cref callRef
	cref.set(c)
	sess, offer, err := media.Offer(p.mediaConfig(&cref))
	if err != nil {
		p.finish(c, sip.EndFailed, err.Error())
		return fmt.Errorf("preparing media: %w", err)
	}
	p.mu.Lock()
	c.sess = sess
	p.mu.Unlock()
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // a hangup while dialing cancels the INVITE
		select {
		case <-c.hangupC:
			cancel()
		case <-dctx.Done():
		}
	}()
	stopRingback := func() {}
	var rbOnce sync.Once
	oc, err := p.dialer.Dial(dctx, number, offer, func(code int, reason string) {
		if code == 180 || code == 183 {
			p.setState(c, Ringback, "ringback", fmt.Sprintf("%d %s", code, reason))
			rbOnce.Do(func() { stopRingback = p.playTone(p.cfg.Playback, audio.RingbackCadence) })
		}
	})
	stopRingback()
	if err != nil {
		var ce *sip.CallError
		if errors.As(err, &ce) {
			// Busy or refused: two seconds of busy tone tell the user.
			stopBusy := p.playTone(p.cfg.Playback, audio.BusyCadence)
			time.AfterFunc(2*time.Second, stopBusy)
			p.finish(c, sip.EndRejected, ce.Error())
		} else {
			p.finish(c, sip.EndFailed, err.Error())
		}
		return err
	}
	if err := sess.SetAnswer(oc.Answer()); err != nil {
		hctx, hc := context.WithTimeout(context.Background(), 10*time.Second)
		_ = oc.Hangup(hctx)
		hc()
		p.finish(c, sip.EndFailed, err.Error())
		return fmt.Errorf("gateway's SDP answer: %w", err)
	}
	p.mu.Lock()
	c.info = oc.Info()
	p.mu.Unlock()
	started := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		endedBy, reason := p.talk(c, &oc.Call, started)
		p.finish(c, endedBy, reason)
	}()
	<-started
	return nil
}

// Status is the phone as `waphone status` shows it.
type Status struct {
	State    State         `json:"state"`
	Call     *sip.CallInfo `json:"call,omitempty"`
	Since    time.Time     `json:"since,omitempty"`
	Media    *media.Stats  `json:"media,omitempty"`
	Muted    bool          `json:"muted,omitempty"`
	Audio    any           `json:"audio,omitempty"`
	LastCall *CallSummary  `json:"last_call,omitempty"`
	Events   []Event       `json:"events"`
}

// Status reports the current state, call and media figures.
func (p *Phone) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Status{State: Idle, LastCall: p.last}
	if p.cfg.DeviceStatus != nil {
		st.Audio = p.cfg.DeviceStatus()
	}
	st.Events = append(st.Events, p.history...)
	if c := p.cur; c != nil {
		st.State = c.state
		info := c.info
		st.Call = &info
		st.Since = c.start
		st.Muted = c.muted
		if c.state == Talking && c.sess != nil {
			ms := c.sess.Stats()
			st.Media = &ms
		}
	}
	return st
}

// Check says whether the phone is alive, for the service watchdog: it
// takes the phone's lock (a phone wedged on it blocks here, and the
// pings stop), and during a call it wants the media loops to have ticked
// within stall (they tick every 20 ms; one stuck in a device read does not).
func (p *Phone) Check(stall time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.cur
	if c == nil || c.sess == nil {
		return nil
	}
	if beat := c.sess.Beat(); !beat.IsZero() {
		if d := time.Since(beat); d > stall {
			return fmt.Errorf("media loop of call %s stalled for %s", c.info.WACID, d.Round(time.Millisecond))
		}
	}
	return nil
}

// Close hangs up any call and waits for its goroutines.
func (p *Phone) Close() {
	_ = p.Hangup()
	p.wg.Wait()
}

type silence struct{}

func (silence) ReadFrame(pcm []int16) error {
	clear(pcm)
	return nil
}

type discard struct{}

func (discard) WriteFrame([]int16) error { return nil }

// Press feeds a key (desk button, headset key) through the policy table.
func (p *Phone) Press(in Input) error {
	p.mu.Lock()
	st := Idle
	if p.cur != nil {
		st = p.cur.state
	}
	p.mu.Unlock()
	action, _ := Decide(st, in)
	p.log.Debug("key", "input", in, "state", st, "action", action)
	switch action {
	case DoAnswer:
		return p.Answer()
	case DoHangup, DoDecline:
		return p.Hangup()
	case DoToggleMute:
		_, err := p.ToggleMute()
		return err
	case DoSpeedDial:
		if p.cfg.SpeedDial == "" {
			return errors.New("no speed-dial number configured")
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			if err := p.Call(ctx, p.cfg.SpeedDial); err != nil {
				p.log.Warn("speed dial failed", "err", err)
			}
		}()
	}
	return nil
}

// ToggleMute mutes or unmutes the microphone of the call in progress.
// Media keeps flowing (encoded silence): Meta drops calls without media.
func (p *Phone) ToggleMute() (muted bool, err error) {
	p.mu.Lock()
	c := p.cur
	if c == nil || c.state != Talking || c.sess == nil {
		p.mu.Unlock()
		return false, errors.New("no call in progress")
	}
	c.muted = !c.muted
	muted = c.muted
	c.sess.SetMute(muted)
	p.mu.Unlock()
	p.emit(c, map[bool]string{true: "muted", false: "unmuted"}[muted], "")
	return muted, nil
}

// callRef lets a media callback name its call before the call exists.
type callRef struct {
	mu sync.Mutex
	c  *call
}

func (r *callRef) set(c *call) { r.mu.Lock(); r.c = c; r.mu.Unlock() }
func (r *callRef) get() *call  { r.mu.Lock(); defer r.mu.Unlock(); return r.c }

// mediaConfig is the per-call media config: received DTMF becomes an event.
func (p *Phone) mediaConfig(ref *callRef) media.Config {
	mc := p.cfg.Media
	mc.OnDTMF = func(d rune) {
		if c := ref.get(); c != nil {
			p.emit(c, "dtmf-received", string(d))
		}
	}
	return mc
}

// SendDTMF sends digits (RFC 4733) on the call in progress.
func (p *Phone) SendDTMF(digits string) error {
	p.mu.Lock()
	c := p.cur
	p.mu.Unlock()
	if c == nil || c.sess == nil {
		return errors.New("no call in progress")
	}
	p.mu.Lock()
	talking := c.state == Talking
	p.mu.Unlock()
	if !talking {
		return errors.New("the call is not answered yet")
	}
	if err := c.sess.SendDTMF(digits); err != nil {
		return err
	}
	p.emit(c, "dtmf-sent", digits)
	return nil
}

// StatusJSON is Status for the control socket.
func (p *Phone) StatusJSON() ([]byte, error) { return json.Marshal(p.Status()) }
