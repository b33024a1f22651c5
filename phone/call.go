package phone

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/media"
	"github.com/waphone/waphone/sip"
)

// input is one Input with what came with it.
type input struct {
	in     Input
	number string            // InDialCmd
	digits string            // InDTMFCmd
	by     string            // who ended the call (InCancel, InRemoteBye, InFailed)
	reason string            // why (InFailed, InMediaFailed)
	err    error             // InFailed: the error our INVITE met
	oc     *sip.OutboundCall // InAnswered to our INVITE
	detail string            // InRingback: "180 Ringing"
	reply  chan result       // keys and commands wait for what their input did
}

// result is what an input did, for the key or command that sent it.
type result struct {
	action Action
	state  State // the state the input met
	muted  bool  // after DoToggleMute
	call   *call // a call that DoDial/DoSpeedDial started
	err    error
}

// answerTimeout bounds the wait for the ACK of our 200 OK (sip retransmits
// and gives up after 64·T1 = 32 s itself; this is a backstop).
const answerTimeout = 40 * time.Second

// byeTimeout bounds a BYE's transaction when we hang up.
const byeTimeout = 10 * time.Second

// busyToneFor is how long a refused outbound call plays the busy tone.
const busyToneFor = 2 * time.Second

// call is one call. Its loop (run) is the only goroutine that changes it;
// the fields Status reads are written under the phone's lock.
type call struct {
	dir   string
	start time.Time

	// Under Phone.mu (written by the loop only).
	state    State
	info     sip.CallInfo
	answered time.Time
	muted    bool
	sess     *media.Session

	inputs  chan input    // keys and commands
	results chan input    // the call's own workers (answer, dial) and progress
	done    chan struct{} // closed once the call is over and the phone idle again

	// Outbound: started is closed once the call talks or ended (startErr).
	number   string
	started  chan struct{}
	startErr error

	// Loop-only.
	ic         *sip.InboundCall
	oc         *sip.OutboundCall
	sc         *sip.Call       // the dialog, once there is one to watch
	sig        <-chan struct{} // the dialog's Done
	mediaDone  <-chan struct{} // the session's Done, once media runs
	answerSDP  []byte
	ringT      Timer
	autoT      Timer
	stopTone   func()
	ctx        context.Context // the call's life: media and workers
	cancel     context.CancelFunc
	workers    sync.WaitGroup
	src        AudioSource
	sink       AudioSink
	endedBy    string
	endReason  string
	ringbackOn bool
}

func newCall(dir string, st State, info sip.CallInfo) *call {
	ctx, cancel := context.WithCancel(context.Background())
	return &call{dir: dir, start: time.Now(), state: st, info: info,
		inputs: make(chan input, 4), results: make(chan input, 8), done: make(chan struct{}),
		started: make(chan struct{}), stopTone: func() {}, ctx: ctx, cancel: cancel}
}

// post is how a worker hands the loop its news; a call that already ended
// no longer listens.
func (c *call) post(in input) {
	select {
	case c.results <- in:
	case <-c.done:
	}
}

func (c *call) end(by, reason string) {
	if c.endedBy == "" {
		c.endedBy, c.endReason = by, reason
	}
}

func timerC(t Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C()
}

// run is the call's loop: it runs the first action, then every input
// through Decide, until the call is over.
func (p *Phone) run(c *call, first Action) {
	defer p.wg.Done()
	defer p.finish(c)
	p.act(c, first, input{})
	closing := p.closing
	for c.endedBy == "" {
		var in input
		select {
		case in = <-c.inputs:
		case in = <-c.results:
		case <-timerC(c.ringT):
			c.ringT, in = nil, input{in: InRingTimeout}
		case <-timerC(c.autoT):
			c.autoT, in = nil, input{in: InAutoAnswer}
		case <-c.sig:
			c.sig, in = nil, dialogEnded(c.sc)
		case <-c.mediaDone:
			c.mediaDone, in = nil, mediaFailed(c.sess)
		case <-closing:
			closing, in = nil, input{in: InHangupCmd}
		}
		p.step(c, in)
	}
}

// step runs one input through the table.
func (p *Phone) step(c *call, in input) {
	action, next := Decide(c.state, in.in)
	p.log.Debug("call input", "input", in.in, "state", c.state, "action", action, "next", next)
	res := result{action: action, state: c.state}
	if next != Idle && next != c.state {
		p.mu.Lock()
		c.state = next
		p.mu.Unlock()
	}
	if next == Idle && in.reply != nil {
		in.reply <- res // the hang-up is taken; the key need not wait for the BYE
		in.reply = nil
	}
	res.muted, res.err = p.act(c, action, in)
	if next == Idle {
		c.end(sip.EndFailed, fmt.Sprintf("%s in %s", in.in, res.state)) // every Idle action names its own end first
	}
	if in.reply != nil {
		in.reply <- res
	}
}

// dialogEnded turns the dialog's end into an input.
func dialogEnded(sc *sip.Call) input {
	by, reason := sc.Ended()
	switch by {
	case sip.EndCancelled, sip.EndAnsweredElsewhere: // a fleet's other desk took it: not missed
		return input{in: InCancel, by: by, reason: reason}
	case sip.EndRemoteBye:
		return input{in: InRemoteBye, by: by, reason: reason}
	}
	return input{in: InFailed, by: by, reason: reason}
}

func mediaFailed(s *media.Session) input {
	reason := "media ended"
	if err := s.Err(); err != nil {
		reason = "media: " + err.Error()
	}
	return input{in: InMediaFailed, reason: reason}
}

// act runs an action. It returns what a key or command wants to know.
func (p *Phone) act(c *call, a Action, in input) (muted bool, err error) {
	switch a {
	case DoNothing:
	case DoRing:
		p.ring(c)
	case DoAnswer:
		p.answer(c)
	case DoDecline:
		p.reject(c, 603, "Decline", sip.EndRejected, "declined")
	case DoReject480:
		p.reject(c, 480, "Temporarily Unavailable", "missed", "ring timeout")
	case DoDial:
		p.dial(c)
	case DoRingback:
		p.emit(EvRingback, in.detail)
		if !c.ringbackOn {
			c.ringbackOn = true
			c.stopTone = p.playTone(p.cfg.Playback, audio.RingbackCadence)
		}
	case DoCancel:
		c.cancel() // the dial worker sends CANCEL; finish BYEs a 200 that crossed it
		c.end(sip.EndCancelled, "hung up before the answer")
	case DoTalk:
		if err := p.talk(c, in); err != nil {
			p.step(c, input{in: InMediaFailed, reason: "media: " + err.Error()})
		}
	case DoBye:
		p.bye(c, in.reason)
	case DoEnd:
		p.ended(c, in)
	case DoToggleMute:
		p.mu.Lock()
		c.muted = !c.muted
		muted = c.muted
		p.mu.Unlock()
		c.sess.SetMute(muted)
		p.emit(map[bool]EventKind{true: EvMuted, false: EvUnmuted}[muted], "")
	case DoSendDTMF:
		if err = c.sess.SendDTMF(in.digits); err == nil {
			p.emit(EvDTMFSent, in.digits)
		}
	default: // DoRejectBusy, DoSpeedDial: phone-level, never a call's
		p.log.Error("phone: action not for a call", "action", a)
	}
	return muted, err
}

// ring takes the offer's media, sends 180 (and 183 with our SDP), rings
// and starts the ring and auto-answer timers.
func (p *Phone) ring(c *call) {
	ic := c.ic
	sess, answer, err := media.Answer(p.mediaConfig(), ic.Offer())
	if err != nil {
		code, reason := 488, "Not Acceptable Here"
		var ne *media.NegotiationError
		if errors.As(err, &ne) {
			code, reason = ne.Status, ne.Reason
		}
		p.log.Warn("cannot take the call's media", "call", c.info, "err", err)
		p.reject(c, code, reason, sip.EndRejected, "media: "+err.Error())
		return
	}
	p.mu.Lock()
	c.sess = sess
	p.mu.Unlock()
	c.answerSDP = answer
	c.sc, c.sig = &ic.Call, ic.Done()
	if err := ic.Ringing(); err != nil {
		p.log.Warn("sending 180 failed", "err", err)
	}
	p.emit(EvRinging, c.info.Remote)
	if !p.cfg.NoEarlyMedia {
		if err := ic.Progress(answer); err != nil {
			p.log.Warn("sending 183 with early SDP failed", "err", err)
		}
	}
	pol := p.policy()
	if pol.Answer == "auto" {
		c.autoT = p.clock.NewTimer(pol.AutoAnswerDelay)
	}
	if pol.Answer != "auto" || pol.AutoAnswerDelay > 0 {
		ringer := p.cfg.Ringer
		if ringer == nil {
			ringer = p.cfg.Playback
		}
		c.stopTone = p.playTone(ringer, audio.RingCadence)
	}
	c.ringT = p.clock.NewTimer(pol.RingTimeout)
}

func (p *Phone) stopTimers(c *call) {
	for _, t := range []Timer{c.ringT, c.autoT} {
		if t != nil {
			t.Stop()
		}
	}
	c.ringT, c.autoT = nil, nil
}

// answer stops the ring and sends our 200 OK; the ACK (or its absence)
// comes back as an input.
func (p *Phone) answer(c *call) {
	p.stopTimers(c)
	c.stopTone()
	p.emit(EvAnswering, "")
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		ctx, cancel := context.WithTimeout(c.ctx, answerTimeout)
		defer cancel()
		if err := c.ic.Answer(ctx, c.answerSDP); err != nil {
			in := dialogEnded(&c.ic.Call)
			if in.by == "" {
				in.by, in.reason = sip.EndFailed, err.Error()
			}
			c.post(in)
			return
		}
		c.post(input{in: InAnswered})
	}()
}

func (p *Phone) reject(c *call, code int, reason, by, why string) {
	p.stopTimers(c)
	c.stopTone()
	if err := c.ic.Reject(code, reason); err != nil {
		p.log.Warn("rejecting the call failed", "code", code, "err", err)
	}
	c.end(by, why)
}

// dial prepares our offer and sends the INVITE from a worker; its
// progress and its outcome come back as inputs.
func (p *Phone) dial(c *call) {
	p.emit(EvDialing, c.number)
	sess, offer, err := media.Offer(p.mediaConfig())
	if err != nil {
		c.startErr = fmt.Errorf("preparing media: %w", err)
		c.end(sip.EndFailed, err.Error())
		return
	}
	p.mu.Lock()
	c.sess = sess
	p.mu.Unlock()
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		oc, err := p.dialer.Dial(c.ctx, c.number, offer, func(code int, reason string) {
			if code == 180 || code == 183 {
				c.post(input{in: InRingback, detail: fmt.Sprintf("%d %s", code, reason)})
			}
		})
		if err != nil {
			in := input{in: InFailed, by: sip.EndFailed, reason: err.Error(), err: err}
			var ce *sip.CallError
			if errors.As(err, &ce) {
				in.by, in.reason = sip.EndRejected, ce.Error()
				if ce.NoPermission() {
					in.reason = fmt.Sprintf("no call permission from the WhatsApp user (ask with `waphone permission --request %s`): %s", c.number, ce.Error())
					p.log.Warn("the WhatsApp user has not allowed this business to call them", "to", c.number, "status", ce.Status)
				}
			}
			c.post(in)
			return
		}
		c.post(input{in: InAnswered, oc: oc})
	}()
}

// talk brings media and the audio ends up: the call is talking.
func (p *Phone) talk(c *call, in input) error {
	c.stopTone()
	if c.dir == "outbound" {
		c.oc = in.oc
		c.sc, c.sig = &in.oc.Call, in.oc.Done()
		if err := c.sess.SetAnswer(in.oc.Answer()); err != nil {
			return fmt.Errorf("gateway's SDP answer: %w", err)
		}
	}
	src, sink, err := p.openAudio()
	if err != nil {
		// A missing device must not cost the call: carry on with silence.
		p.log.Error("audio unavailable; the call continues without it", "err", err)
	}
	c.src, c.sink = src, sink
	var msrc media.Source = silence{}
	var msink media.Sink = discard{}
	if src != nil {
		msrc = src
	}
	if sink != nil {
		msink = sink
	}
	if err := c.sess.Start(c.ctx, msrc, msink); err != nil {
		return err
	}
	c.mediaDone = c.sess.Done()
	p.mu.Lock()
	c.answered = time.Now()
	c.info = c.sc.Info()
	p.mu.Unlock()
	p.emit(EvAnswered, "")
	if p.cfg.OnCallUp != nil {
		p.cfg.OnCallUp(c.summary(time.Time{}))
	}
	close(c.started)
	return nil
}

// bye hangs up a talking call; after a media failure the BYE says why.
func (p *Phone) bye(c *call, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), byeTimeout)
	defer cancel()
	var err error
	if reason != "" {
		p.log.Warn("media stopped; hanging up", "reason", reason)
		err = c.sc.HangupFailed(ctx, reason)
	} else {
		err = c.sc.Hangup(ctx)
	}
	if err != nil {
		p.log.Warn("BYE failed", "err", err)
	}
	by, _ := c.sc.Ended()
	c.end(by, reason)
}

// ended: the other side or the network ended the call.
func (p *Phone) ended(c *call, in input) {
	p.stopTimers(c)
	c.stopTone()
	if in.err != nil {
		c.startErr = in.err
		var ce *sip.CallError
		if errors.As(in.err, &ce) {
			p.busyTone() // busy or refused: the user hears it
		}
	}
	by := in.by
	if by == "" {
		by = sip.EndFailed
	}
	c.end(by, in.reason)
}

// finish tears the call down and returns the phone to idle.
func (p *Phone) finish(c *call) {
	p.stopTimers(c)
	c.stopTone()
	c.cancel() // stops media, and a dial still under way (CANCEL)
	p.drainWorkers(c)
	if c.sess != nil {
		_ = c.sess.Close()
	}
	for _, cl := range []interface{ Close() error }{c.src, c.sink} {
		if cl != nil {
			_ = cl.Close()
		}
	}
	end := time.Now()
	p.mu.Lock()
	if c.sc != nil {
		c.info = c.sc.Info() // Meta's BYE adds the call duration
	}
	sum := c.summary(end)
	p.last = &sum
	p.cur = nil
	p.mu.Unlock()
	if c.startErr == nil && c.answered.IsZero() && c.dir == "outbound" {
		c.startErr = fmt.Errorf("call ended before the answer: %s %s", c.endedBy, c.endReason)
	}
	select {
	case <-c.started:
	default:
		close(c.started)
	}
	close(c.done)
	p.logEnd(&sum)
	if p.cfg.OnCallEnd != nil {
		p.cfg.OnCallEnd(sum)
	}
	p.emit(EvEnded, c.endedBy)
}

// drainWorkers waits for the call's workers, reading what they still post
// (they must never block on a full channel). A 200 that crossed our CANCEL
// means the call is up at Meta's end: BYE it.
func (p *Phone) drainWorkers(c *call) {
	idle := make(chan struct{})
	go func() { c.workers.Wait(); close(idle) }()
	for {
		select {
		case in := <-c.results:
			if in.oc != nil && in.oc != c.oc {
				ctx, cancel := context.WithTimeout(context.Background(), byeTimeout)
				if err := in.oc.Hangup(ctx); err != nil {
					p.log.Warn("BYE to an answer that crossed our CANCEL failed", "err", err)
				}
				cancel()
			}
		case <-idle:
			if len(c.results) == 0 {
				return
			}
		}
	}
}

// summary is what is known of the call; end is zero while it is up. The
// caller holds Phone.mu or is the loop.
func (c *call) summary(end time.Time) CallSummary {
	sum := CallSummary{Direction: c.dir, Info: c.info, Start: c.start, Answered: c.answered, End: end,
		EndedBy: c.endedBy, Reason: c.endReason}
	if !c.answered.IsZero() && !end.IsZero() {
		sum.Duration = end.Sub(c.answered).Round(time.Millisecond)
		st := c.sess.Stats()
		sum.Media = &st
	}
	return sum
}
