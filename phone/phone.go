// Package phone is the call controller: it joins signaling (sip), media,
// the audio ends and the desk (board) around one state machine per call.
//
// Every call has one loop goroutine that owns its state. Everything that
// can happen to a call (a key, a control command, a SIP event, a media
// failure, a timer) reaches that loop as an Input, goes through Decide's
// policy table, and the Action the table returns is what runs. Nothing
// else changes a call's state. Status and events read the state under the
// phone's lock, which the loop takes for every write.
package phone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/waphone/waphone/media"
	"github.com/waphone/waphone/sip"
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

// DefaultRingTimeout is how long an unanswered call rings before it is
// logged as missed (480), when Config.RingTimeout is zero.
const DefaultRingTimeout = 60 * time.Second

// Config is the phone's policy and its audio ends.
type Config struct {
	Answer          string // "auto" or "button"
	AutoAnswerDelay time.Duration
	RingTimeout     time.Duration // 0 = DefaultRingTimeout
	SpeedDial       string        // a long press while idle calls this number ("" = off)
	// NoEarlyMedia turns off the 183 with our SDP while ringing (on by
	// default: ICE/DTLS then complete before the answer, no clipped words).
	NoEarlyMedia bool
	Media        media.Config
	Capture      func() (AudioSource, error)
	Playback     func() (AudioSink, error)
	// Ringer is where an incoming call rings (a speaker); nil = Playback.
	Ringer func() (AudioSink, error)
	// OnEvent, if set, sees every event in order as it happens (tests, the
	// demo). It runs on the call's loop: it must not call the Phone.
	OnEvent func(Event)
	// DeviceStatus, if set, adds the sound device's state to Status (plugged, xruns).
	DeviceStatus func() any
	// OnCallUp, if set, gets the summary so far of a call that just began
	// talking (so that a call cut off by a power failure leaves a trace).
	OnCallUp func(CallSummary)
	// OnCallEnd, if set, gets every call's summary once it ended (call history).
	OnCallEnd func(CallSummary)
	// Clock makes the ring-timeout, auto-answer and busy-tone timers; nil = real time.
	Clock  Clock
	Logger *slog.Logger
}

// Phone holds at most one call at a time.
type Phone struct {
	cfg     Config
	log     *slog.Logger
	clock   Clock
	dialer  Dialer
	closing chan struct{} // closed by Close: calls hang up, new ones are refused
	close   sync.Once
	wg      sync.WaitGroup // call loops and tones
	dropped atomic.Uint64  // events a slow subscriber missed

	evMu sync.Mutex // orders events: taken before mu, never inside it

	mu      sync.Mutex
	cur     *call
	pol     Policy // what SetPolicy last said; a call reads it as it starts ringing
	history []Event
	last    *CallSummary
	subs    []chan Event
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
		cfg.RingTimeout = DefaultRingTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Media.Logger == nil {
		cfg.Media.Logger = cfg.Logger
	}
	clock := cfg.Clock
	if clock == nil {
		clock = realClock{}
	}
	return &Phone{cfg: cfg, log: cfg.Logger, clock: clock, closing: make(chan struct{}),
		pol: Policy{Answer: cfg.Answer, AutoAnswerDelay: cfg.AutoAnswerDelay, RingTimeout: cfg.RingTimeout, SpeedDial: cfg.SpeedDial}}
}

// Policy is the part of the config that may change while the phone runs
// (SIGHUP, the console's settings): how calls are answered.
type Policy struct {
	Answer          string // "auto" or "button"
	AutoAnswerDelay time.Duration
	RingTimeout     time.Duration // 0 = DefaultRingTimeout
	SpeedDial       string
}

// SetPolicy changes how calls are answered from the next call that rings
// on; a call in progress keeps the policy it started with.
func (p *Phone) SetPolicy(pol Policy) {
	if pol.RingTimeout == 0 {
		pol.RingTimeout = DefaultRingTimeout
	}
	p.mu.Lock()
	p.pol = pol
	p.mu.Unlock()
}

func (p *Phone) policy() Policy {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pol
}

// SetDialer sets the signaling used for outbound calls (the endpoint is
// built after the phone because the phone is its handler).
func (p *Phone) SetDialer(d Dialer) { p.dialer = d }

// IncomingCall is the sip.Handler entry: Meta offers an authenticated call.
func (p *Phone) IncomingCall(ic *sip.InboundCall) {
	info := ic.Info()
	p.mu.Lock()
	select {
	case <-p.closing:
		p.mu.Unlock()
		_ = ic.Reject(503, "Service Unavailable")
		return
	default:
	}
	action, _ := Decide(p.stateLocked(), InIncoming)
	if action == DoRing {
		c := newCall("inbound", Ringing, info)
		c.ic = ic
		p.cur = c
		p.wg.Add(1)
		p.mu.Unlock()
		go p.run(c, DoRing)
		return
	}
	p.mu.Unlock()
	// DoRejectBusy: the call in progress is not touched, nor its state.
	p.log.Info("busy: rejecting a second call", "call", info)
	if err := ic.Reject(486, "Busy Here"); err != nil {
		p.log.Warn("sending 486 failed", "err", err)
	}
	p.emit(EvRejectedBusy, info.Remote)
}

func (p *Phone) stateLocked() State {
	if p.cur == nil {
		return Idle
	}
	return p.cur.state
}

// request is an input from outside the call's loop (a key, a command),
// for the current call or, with none, for the idle phone.
func (p *Phone) request(in input) result {
	p.mu.Lock()
	c := p.cur
	if c == nil {
		defer p.mu.Unlock()
		return p.idleLocked(in)
	}
	p.mu.Unlock()
	return p.send(c, in)
}

// send hands an input to one call's loop and waits for what it did. A
// call that ended meanwhile ignores it.
func (p *Phone) send(c *call, in input) result {
	in.reply = make(chan result, 1)
	ignored := result{action: DoNothing, state: Idle}
	select {
	case c.inputs <- in:
	case <-c.done:
		return ignored
	}
	select {
	case r := <-in.reply:
		return r
	case <-c.done:
		// An input that ended the call is answered before the call
		// finishes: both may be ready, and select picks either.
		select {
		case r := <-in.reply:
			return r
		default:
			return ignored
		}
	}
}

// idleLocked handles an input while there is no call: only placing one
// does anything.
func (p *Phone) idleLocked(in input) result {
	action, next := Decide(Idle, in.in)
	r := result{action: action, state: Idle}
	switch action {
	case DoSpeedDial:
		in.number = p.pol.SpeedDial
		if in.number == "" {
			r.err = errors.New("no speed-dial number configured")
			return r
		}
	case DoDial:
	default:
		return r
	}
	select {
	case <-p.closing:
		r.err = errors.New("phone is shutting down")
		return r
	default:
	}
	if p.dialer == nil {
		r.err = errors.New("phone: no signaling configured")
		return r
	}
	c := newCall("outbound", next, sip.CallInfo{Remote: in.number, DurationSec: -1})
	c.number = in.number
	p.cur = c
	p.wg.Add(1)
	go p.run(c, DoDial)
	r.state, r.call = next, c
	return r
}

// Press feeds a key (desk button, headset key) through the policy table
// and says what it did: DoNothing when the state ignores the key.
func (p *Phone) Press(in Input) (Action, error) {
	r := p.request(input{in: in})
	p.log.Debug("key", "input", in, "state", r.state, "action", r.action, "err", r.err)
	return r.action, r.err
}

// Answer answers a ringing call (`waphone answer`).
func (p *Phone) Answer() error {
	if r := p.request(input{in: InAnswerCmd}); r.action == DoNothing {
		return fmt.Errorf("no call is ringing (phone is %s)", r.state)
	}
	return nil
}

// Hangup ends the current call: BYE when talking, decline when ringing,
// CANCEL when dialing.
func (p *Phone) Hangup() error {
	if r := p.request(input{in: InHangupCmd}); r.action == DoNothing {
		return fmt.Errorf("no call to hang up (phone is %s)", r.state)
	}
	return nil
}

// ToggleMute mutes or unmutes the microphone of the call in progress.
// Media keeps flowing (encoded silence): Meta drops calls without media.
func (p *Phone) ToggleMute() (muted bool, err error) {
	r := p.request(input{in: InMuteCmd})
	if r.action == DoNothing {
		return false, fmt.Errorf("no call in progress (phone is %s)", r.state)
	}
	return r.muted, r.err
}

// SendDTMF sends digits (RFC 4733) on the call in progress.
func (p *Phone) SendDTMF(digits string) error {
	r := p.request(input{in: InDTMFCmd, digits: digits})
	if r.action == DoNothing {
		return fmt.Errorf("no call in progress (phone is %s)", r.state)
	}
	return r.err
}

// Call places a business-initiated call. It returns once the call is
// answered (the call then runs on) or has failed. Ending ctx before the
// answer hangs up (CANCEL).
func (p *Phone) Call(ctx context.Context, number string) error {
	r := p.request(input{in: InDialCmd, number: number})
	if r.err != nil {
		return r.err
	}
	if r.call == nil {
		return fmt.Errorf("phone is busy with another call (%s)", r.state)
	}
	c := r.call
	select {
	case <-c.started:
		return c.startErr
	case <-ctx.Done():
	}
	// To this call only: the phone may hold another one by now.
	p.send(c, input{in: InHangupCmd})
	<-c.started
	if c.startErr == nil { // answered just before: the hang-up sent a BYE
		return fmt.Errorf("call hung up: %w", ctx.Err())
	}
	return fmt.Errorf("call hung up: %w (%v)", ctx.Err(), c.startErr)
}

// Status is the phone as `waphone status` shows it.
type Status struct {
	State         State         `json:"state"`
	Direction     string        `json:"direction,omitempty"` // of the call in progress
	Call          *sip.CallInfo `json:"call,omitempty"`
	Since         time.Time     `json:"since,omitempty"`
	Answered      time.Time     `json:"answered,omitzero"`
	Media         *media.Stats  `json:"media,omitempty"`
	Muted         bool          `json:"muted,omitempty"`
	Audio         any           `json:"audio,omitempty"`
	LastCall      *CallSummary  `json:"last_call,omitempty"`
	Events        []Event       `json:"events"`
	EventsDropped uint64        `json:"events_dropped,omitempty"`
}

// Status reports the current state, call and media figures.
func (p *Phone) Status() Status {
	st := Status{EventsDropped: p.dropped.Load()}
	if p.cfg.DeviceStatus != nil {
		st.Audio = p.cfg.DeviceStatus()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st.State, st.LastCall = p.stateLocked(), p.last
	st.Events = append(st.Events, p.history...)
	if c := p.cur; c != nil {
		info := c.info
		st.Call, st.Since, st.Muted, st.Direction = &info, c.start, c.muted, c.dir
		st.Answered = c.answered
		if c.state == Talking && c.sess != nil {
			ms := c.sess.Stats()
			st.Media = &ms
		}
	}
	return st
}

// StatusJSON is Status for the control socket.
func (p *Phone) StatusJSON() ([]byte, error) { return json.Marshal(p.Status()) }

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

// Close hangs up any call, refuses new ones and waits for every goroutine
// the phone started.
func (p *Phone) Close() {
	p.close.Do(func() { close(p.closing) })
	p.wg.Wait()
}
