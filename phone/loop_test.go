package phone_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waphone/waphone/board"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testutil"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

// eventually polls cond until it holds, or fails the test after 5 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, cond, "%s", what)
}

// fakeClock's timers fire only when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	d       time.Duration
	c       chan time.Time
	mu      sync.Mutex
	stopped bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (f *fakeClock) NewTimer(d time.Duration) phone.Timer {
	t := &fakeTimer{d: d, c: make(chan time.Time, 1)}
	f.mu.Lock()
	f.timers = append(f.timers, t)
	f.mu.Unlock()
	return t
}

// fire fires every live timer made for d and says how many there were.
func (f *fakeClock) fire(d time.Duration) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, t := range f.timers {
		t.mu.Lock()
		if t.d == d && !t.stopped {
			t.stopped = true
			t.c <- time.Now()
			n++
		}
		t.mu.Unlock()
	}
	return n
}

// armed says whether a live timer for d exists.
func (f *fakeClock) armed(d time.Duration) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.timers {
		t.mu.Lock()
		live := t.d == d && !t.stopped
		t.mu.Unlock()
		if live {
			return true
		}
	}
	return false
}

// TestRingTimeoutOnTheTestsClock: the ring timeout is the phone's timer,
// which the test fires: the unanswered call gets 480 and is logged as
// missed, with no 60 s wait.
func TestRingTimeoutOnTheTestsClock(t *testing.T) {
	clk := &fakeClock{}
	r := newRig(t, rigOpts{answer: "button", clock: clk})
	c, err := r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user, ReturnOnRinging: true})
	if err != nil {
		t.Fatal(err)
	}
	r.waitState(t, phone.Ringing)
	eventually(t, "the ring timer", func() bool { return clk.armed(phone.DefaultRingTimeout) })
	if n := clk.fire(phone.DefaultRingTimeout); n != 1 {
		t.Fatalf("%d ring timers", n)
	}
	<-c.Done()
	if c.Status() != 480 {
		t.Fatalf("status %d, want 480", c.Status())
	}
	if last := r.lastEnd(t); last.EndedBy != "missed" {
		t.Fatalf("summary %+v, want missed", last)
	}
}

// TestButtonAndAutoAnswerAtOnce: the auto-answer timer, the desk button and
// `waphone answer` all arrive while the call rings. One of them answers,
// the others are told they were ignored, and the call talks (run with
// -race: the state has one owner).
func TestButtonAndAutoAnswerAtOnce(t *testing.T) {
	clk := &fakeClock{}
	const delay = 3 * time.Second
	r := newRig(t, rigOpts{answer: "auto", autoDelay: delay, clock: clk})
	for round := 0; round < 3; round++ {
		c, err := r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user, ReturnOnRinging: true})
		if err != nil {
			t.Fatal(err)
		}
		r.waitState(t, phone.Ringing)
		eventually(t, "the auto-answer timer", func() bool { return clk.armed(delay) })
		var wg sync.WaitGroup
		var answered [2]bool
		wg.Add(3)
		go func() { defer wg.Done(); clk.fire(delay) }()
		go func() {
			defer wg.Done()
			a, err := r.phone.Press(phone.InShortPress)
			answered[0] = err == nil && a == phone.DoAnswer
		}()
		go func() { defer wg.Done(); answered[1] = r.phone.Answer() == nil }()
		wg.Wait()
		if answered[0] && answered[1] {
			t.Fatal("the button and the answer command both answered")
		}
		if err := c.WaitAnswer(context.Background()); err != nil || c.Status() != 200 {
			t.Fatalf("call: %v, status %d", err, c.Status())
		}
		r.waitState(t, phone.Talking)
		for _, code := range c.Provisional() {
			if code >= 200 {
				t.Fatalf("provisional %d", code)
			}
		}
		_ = c.Hangup(context.Background())
		r.waitState(t, phone.Idle)
	}
}

// fakeFront records what the desk shows.
type fakeFront struct {
	keys chan board.Event

	mu      sync.Mutex
	led     []board.Pattern
	headset []headsetShown
	resends int
	volume  []float64
}

type headsetShown struct{ offHook, ringing, muted bool }

func newFakeFront() *fakeFront { return &fakeFront{keys: make(chan board.Event, 8)} }

func (f *fakeFront) Events() <-chan board.Event { return f.keys }
func (f *fakeFront) SetLED(p board.Pattern) {
	f.mu.Lock()
	f.led = append(f.led, p)
	f.mu.Unlock()
}
func (f *fakeFront) SetHeadsetState(offHook, ringing, muted bool) {
	f.mu.Lock()
	f.headset = append(f.headset, headsetShown{offHook, ringing, muted})
	f.mu.Unlock()
}
func (f *fakeFront) ResendHeadsetState() {
	f.mu.Lock()
	f.resends++
	f.mu.Unlock()
}
func (f *fakeFront) SetVolume(v float64) {
	f.mu.Lock()
	f.volume = append(f.volume, v)
	f.mu.Unlock()
}

func (f *fakeFront) lastLED() board.Pattern {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.led) == 0 {
		return -1
	}
	return f.led[len(f.led)-1]
}

func (f *fakeFront) lastHeadset() headsetShown {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.headset) == 0 {
		return headsetShown{}
	}
	return f.headset[len(f.headset)-1]
}

// shown returns how many LED and headset updates there were.
func (f *fakeFront) shown() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.led), len(f.headset)
}

func startDesk(t *testing.T, r *rig, f *fakeFront, fault bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&phone.Desk{Phone: r.phone, Front: f, Speaker: f, Fault: fault, Logger: logger()}).Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "the desk's first picture", func() bool { n, _ := f.shown(); return n > 0 })
}

// TestBusyRejectLeavesTheDeskAlone: a second call rejected busy (486)
// while the first one talks must not touch the LED or the headset: the
// event it makes carries the first call's state.
func TestBusyRejectLeavesTheDeskAlone(t *testing.T) {
	var mu sync.Mutex
	var busyEvents []phone.Event
	r := newRig(t, rigOpts{onEvent: func(ev phone.Event) {
		if ev.Kind == phone.EvRejectedBusy {
			mu.Lock()
			busyEvents = append(busyEvents, ev)
			mu.Unlock()
		}
	}})
	f := newFakeFront()
	startDesk(t, r, f, false)
	ctx := context.Background()
	c1, err := r.sim.Call(ctx, r.target, metasim.CallOptions{From: user})
	if err != nil || c1.Status() != 200 {
		t.Fatalf("first call: %v", err)
	}
	r.waitState(t, phone.Talking)
	eventually(t, "LED on", func() bool { return f.lastLED() == board.On })
	leds, hs := f.shown()
	for i := 0; i < 3; i++ {
		c2, err := r.sim.Call(ctx, r.target, metasim.CallOptions{From: "+447700900123"})
		if err != nil || c2.Status() != 486 {
			t.Fatalf("second call: %v %v", err, c2)
		}
	}
	eventually(t, "three busy events", func() bool { mu.Lock(); defer mu.Unlock(); return len(busyEvents) == 3 })
	mu.Lock()
	for _, ev := range busyEvents {
		if ev.State != phone.Talking {
			t.Errorf("busy event says %s while the first call talks", ev.State)
		}
	}
	mu.Unlock()
	time.Sleep(100 * time.Millisecond) // let the desk see the events
	f.mu.Lock()
	for _, p := range f.led[leds:] {
		if p != board.On {
			t.Errorf("LED went to %v during the call", p)
		}
	}
	for _, h := range f.headset[hs:] {
		if !h.offHook || h.ringing || h.muted {
			t.Errorf("headset told %+v during the call", h)
		}
	}
	f.mu.Unlock()
	if r.phone.Status().State != phone.Talking {
		t.Fatal("the first call was disturbed")
	}
	_ = c1.Hangup(ctx)
	r.waitState(t, phone.Idle)
	eventually(t, "LED off", func() bool { return f.lastLED() == board.Off })
	if h := f.lastHeadset(); h.offHook {
		t.Fatal("headset left off-hook after the call")
	}
}

// TestIdleHookKeyResendsHeadsetState: a headset's call key while idle is
// ignored by the policy, so the desk tells the headset the phone's state
// again (it toggled its own hook state); the desk button does not.
func TestIdleHookKeyResendsHeadsetState(t *testing.T) {
	r := newRig(t, rigOpts{})
	f := newFakeFront()
	startDesk(t, r, f, false)
	f.keys <- board.Event{Kind: board.ShortPress, Source: "gpio", At: time.Now()}
	f.keys <- board.Event{Kind: board.Hook, Source: "hidraw", At: time.Now()}
	eventually(t, "a resend", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.resends > 0 })
	time.Sleep(50 * time.Millisecond)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resends != 1 {
		t.Fatalf("%d resends, want 1 (for the hook key only)", f.resends)
	}
}

// TestDeskFollowsTheCall: LED blinks while ringing, is on in the call and
// off after; the headset rings, goes off-hook, shows the phone's mute; the
// headset's keys answer, mute and hang up; volume keys set the speaker.
func TestDeskFollowsTheCall(t *testing.T) {
	r := newRig(t, rigOpts{answer: "button"})
	f := newFakeFront()
	startDesk(t, r, f, true)
	if f.lastLED() != board.FastBlink {
		t.Fatalf("a faulty board's idle LED is %v, want fast blink", f.lastLED())
	}
	ctx := context.Background()
	c, err := r.sim.Call(ctx, r.target, metasim.CallOptions{From: user, ReturnOnRinging: true})
	if err != nil {
		t.Fatal(err)
	}
	r.waitState(t, phone.Ringing)
	eventually(t, "blink", func() bool { return f.lastLED() == board.Blink })
	if h := f.lastHeadset(); !h.ringing || h.offHook {
		t.Fatalf("ringing headset shown %+v", h)
	}
	f.keys <- board.Event{Kind: board.Hook, Source: "hidraw", At: time.Now()}
	if err := c.WaitAnswer(ctx); err != nil || c.Status() != 200 {
		t.Fatalf("answer by hook key: %v %d", err, c.Status())
	}
	r.waitState(t, phone.Talking)
	eventually(t, "LED on", func() bool { return f.lastLED() == board.On })
	f.keys <- board.Event{Kind: board.Mute, Source: "evdev", At: time.Now()}
	eventually(t, "headset mute", func() bool { return f.lastHeadset().muted })
	if !r.phone.Status().Muted {
		t.Fatal("phone not muted")
	}
	f.keys <- board.Event{Kind: board.VolumeUp, Source: "evdev", At: time.Now()}
	f.keys <- board.Event{Kind: board.VolumeDown, Source: "evdev", At: time.Now()}
	f.keys <- board.Event{Kind: board.VolumeDown, Source: "evdev", At: time.Now()}
	eventually(t, "volume", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.volume) == 3 })
	f.mu.Lock()
	if v := f.volume; v[0] != 1.125 || v[1] != 1 || v[2] != 0.875 {
		t.Errorf("volume steps %v", v)
	}
	f.mu.Unlock()
	f.keys <- board.Event{Kind: board.Hook, Source: "hidraw", At: time.Now()}
	if last := r.lastEnd(t); last.EndedBy != sip.EndLocalBye {
		t.Fatalf("hook key while talking: %+v", last)
	}
	eventually(t, "idle LED", func() bool { return f.lastLED() == board.FastBlink })
	if h := f.lastHeadset(); h.offHook || h.muted || h.ringing {
		t.Fatalf("idle headset shown %+v", h)
	}
}

// TestCallCancelledByItsContext: ending Call's context while the far end
// rings (Ctrl-C on `waphone call`) CANCELs the INVITE.
func TestCallCancelledByItsContext(t *testing.T) {
	r := newRig(t, rigOpts{answerDelay: 30 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.phone.Call(ctx, user) }()
	r.waitState(t, phone.Ringback)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Call returned %v, want context.Canceled", err)
	}
	requireCancelled(t, r)
	if last := r.lastEnd(t); last.EndedBy != sip.EndCancelled {
		t.Fatalf("summary %+v", last)
	}
}

// TestHangupWhileDialing: the hang-up key while our INVITE rings CANCELs
// it, and Call reports the call ended before the answer.
func TestHangupWhileDialing(t *testing.T) {
	r := newRig(t, rigOpts{answerDelay: 30 * time.Second})
	errc := make(chan error, 1)
	go func() { errc <- r.phone.Call(context.Background(), user) }()
	r.waitState(t, phone.Ringback)
	if a, err := r.phone.Press(phone.InShortPress); err != nil || a != phone.DoCancel {
		t.Fatalf("press while ringback: %s %v (status %+v, last call %+v)", a, err, r.phone.Status().State, r.phone.Status().LastCall)
	}
	if err := <-errc; err == nil {
		t.Fatal("Call succeeded after a hang-up")
	}
	requireCancelled(t, r)
	if last := r.lastEnd(t); last.EndedBy != sip.EndCancelled {
		t.Fatalf("summary %+v", last)
	}
}

// requireCancelled: metasim saw our INVITE end with 487 after our CANCEL.
func requireCancelled(t *testing.T, r *rig) {
	t.Helper()
	select {
	case c := <-r.sim.Incoming():
		if c.Status() != 487 || c.EndedBy() != "cancel" {
			t.Fatalf("metasim: status %d, ended by %q; want 487 after a CANCEL", c.Status(), c.EndedBy())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("metasim saw no CANCEL")
	}
}

// TestCallBackByBSUID: a user who reached the business by BSUID only is
// called back by it: the Request-URI and To carry the BSUID, no "+".
func TestCallBackByBSUID(t *testing.T) {
	const bsuid = "US.13491208655302741918"
	r := newRig(t, rigOpts{})
	if err := r.phone.Call(context.Background(), bsuid); err != nil {
		t.Fatal(err)
	}
	var c *metasim.Call
	select {
	case c = <-r.sim.Incoming():
	case <-time.After(5 * time.Second):
		t.Fatal("metasim saw no call")
	}
	inv := c.Request()
	if got := inv.Recipient.String(); got != "sip:"+bsuid+"@wa.meta.vc;transport=tls" {
		t.Fatalf("Request-URI %s", got)
	}
	if to := inv.To().Address.User; to != bsuid {
		t.Fatalf("To user %q", to)
	}
	r.waitState(t, phone.Talking)
	if st := r.phone.Status(); st.Call == nil || st.Call.Remote != bsuid {
		t.Fatalf("status call %+v", st.Call)
	}
	_ = r.phone.Hangup()
	r.waitState(t, phone.Idle)
}

// TestUnACKedAnswerHangsUp: Meta never ACKs our 200. From the moment the
// 200 is out the phone says "answering" (never "ringing"); after 64·T1
// (T1 is short here) sip gives up with a BYE that says why, the call is
// logged as ended for lack of ACK, and the phone is free.
func TestUnACKedAnswerHangsUp(t *testing.T) {
	r := newRig(t, rigOpts{t1: 20 * time.Millisecond})
	c, err := r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user, NoACK: true})
	if err != nil || c.Status() != 200 {
		t.Fatalf("call: %v %v", err, c)
	}
	if st := r.phone.Status().State; st != phone.Answering {
		t.Fatalf("state %s after our 200, want answering", st)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("no BYE after 64·T1")
	}
	bye := c.ByeRequest()
	if bye == nil || bye.GetHeader("Reason") == nil || !strings.Contains(bye.GetHeader("Reason").Value(), "ACK") {
		t.Fatalf("BYE %v: want one whose Reason names the missing ACK", bye)
	}
	if last := r.lastEnd(t); last.EndedBy != sip.EndNoACK {
		t.Fatalf("summary %+v, want ended by %s", last, sip.EndNoACK)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	answering := false
	for _, ev := range r.events {
		answering = answering || ev.Kind == phone.EvAnswering
		if answering && ev.State == phone.Ringing {
			t.Fatalf("event %+v says ringing after the 200", ev)
		}
	}
}

// TestSetPolicyAppliesToTheNextCall: a phone set to wait for the button
// is switched to auto-answer (SIGHUP, the console): the next call is
// answered by itself.
func TestSetPolicyAppliesToTheNextCall(t *testing.T) {
	clk := &fakeClock{}
	r := newRig(t, rigOpts{answer: "button", clock: clk})
	r.phone.SetPolicy(phone.Policy{Answer: "auto", AutoAnswerDelay: time.Second, RingTimeout: 5 * time.Second})
	c, err := r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user, ReturnOnRinging: true})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the auto-answer timer", func() bool { return clk.armed(time.Second) })
	if !clk.armed(5 * time.Second) {
		t.Fatal("the ring timeout is not the new policy's")
	}
	clk.fire(time.Second)
	if err := c.WaitAnswer(context.Background()); err != nil || c.Status() != 200 {
		t.Fatalf("call after SetPolicy(auto): %v %v", err, c.Status())
	}
	_ = c.Hangup(context.Background())
	r.waitState(t, phone.Idle)
	r.phone.SetPolicy(phone.Policy{Answer: "button"})
	c, err = r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user, ReturnOnRinging: true})
	if err != nil {
		t.Fatal(err)
	}
	r.waitState(t, phone.Ringing)
	eventually(t, "the default ring timer", func() bool { return clk.armed(phone.DefaultRingTimeout) })
	clk.fire(phone.DefaultRingTimeout)
	<-c.Done()
	if c.Status() != 480 {
		t.Fatalf("status %d, want 480 (button mode: nobody pressed)", c.Status())
	}
}
