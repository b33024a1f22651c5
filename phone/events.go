package phone

import (
	"time"

	"github.com/waphone/waphone/sip"
)

// EventKind names what happened, as status pages and scripts see it.
type EventKind string

const (
	EvRinging      EventKind = "ringing"       // an inbound call rings here
	EvAnswering    EventKind = "answering"     // our 200 OK is out
	EvAnswered     EventKind = "answered"      // media is up, the call is talking
	EvDialing      EventKind = "dialing"       // our INVITE is out
	EvRingback     EventKind = "ringback"      // the far end rings
	EvEnded        EventKind = "ended"         // back to idle; Detail says who ended it
	EvRejectedBusy EventKind = "rejected-busy" // a second call got 486; Detail is its caller
	EvMuted        EventKind = "muted"         // the microphone is muted
	EvUnmuted      EventKind = "unmuted"       // and unmuted again
	EvDTMFReceived EventKind = "dtmf-received" // a digit from the far end
	EvDTMFSent     EventKind = "dtmf-sent"     // digits we sent
)

// Event is one transition or notable thing. State is the phone's state
// after it (a rejected second call leaves the first call's state), and
// Muted the microphone's, so that a display needs nothing but the last
// event to be right.
type Event struct {
	At     time.Time    `json:"at"`
	Kind   EventKind    `json:"kind"`
	State  State        `json:"state"`
	Muted  bool         `json:"muted,omitempty"`
	Detail string       `json:"detail,omitempty"`
	Call   sip.CallInfo `json:"call"`
}

// eventLog is how many recent events Status keeps.
const eventLog = 64

// emit records an event with the phone's current state and hands it to
// OnEvent and every subscriber, in the order the states changed.
func (p *Phone) emit(kind EventKind, detail string) {
	p.evMu.Lock()
	defer p.evMu.Unlock()
	p.mu.Lock()
	ev := Event{At: time.Now(), Kind: kind, State: Idle, Detail: detail}
	if c := p.cur; c != nil {
		ev.State, ev.Call, ev.Muted = c.state, c.info, c.muted
	}
	p.history = append(p.history, ev)
	if len(p.history) > eventLog {
		p.history = p.history[len(p.history)-eventLog:]
	}
	subs := p.subs
	p.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- ev:
		default:
			p.dropped.Add(1) // a slow subscriber loses events, never the call its time
		}
	}
	if p.cfg.OnEvent != nil {
		p.cfg.OnEvent(ev)
	}
}

// Subscribe returns a channel of every event from now on (buffered n; a
// subscriber that falls behind loses events, counted in Status) and the
// function that ends the subscription.
func (p *Phone) Subscribe(n int) (<-chan Event, func()) {
	ch := make(chan Event, n)
	p.evMu.Lock()
	p.mu.Lock()
	p.subs = append(p.subs, ch)
	p.mu.Unlock()
	p.evMu.Unlock()
	var done bool
	return ch, func() {
		p.evMu.Lock()
		defer p.evMu.Unlock()
		if done {
			return
		}
		done = true
		p.mu.Lock()
		for i, s := range p.subs {
			if s == ch {
				p.subs = append(p.subs[:i:i], p.subs[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		close(ch)
	}
}
