package phone_test

import (
	"context"

	"errors"
	"github.com/gen2brain/malgo"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/internal/dsp"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/media"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

const (
	business = "+12145551869"
	user     = "+12195550714"
	host     = "meta-voip.example.com"
	password = "meta-generated-password"
)

// rig is waphone (sip endpoint + phone + real media) and metasim, on loopback.
type rig struct {
	sim    *metasim.Sim
	ep     *sip.Endpoint
	phone  *phone.Phone
	target string

	mu     sync.Mutex
	rec    *audio.Recorder
	events []phone.Event
}

type rigOpts struct {
	answer       string
	ringTimeout  time.Duration
	ourHost      string // our sip.hostname; differs from metasim's BusinessHost for the 403 test
	rejectStatus int
	ringer       *audio.Recorder
	headset      *audio.Headset    // when set, the call's audio goes through it
	dtls         bool              // WebRTC media (DTLS-SRTP + ICE) both ways
	noEarly      bool              // no 183 with SDP while ringing
	capture      phone.AudioSource // instead of a 440 Hz tone
	quiet        bool              // no logs even with -v (soak runs)
	clock        phone.Clock       // the phone's timers (nil: real time)
	autoDelay    time.Duration     // phone.auto_answer_delay
	answerDelay  time.Duration     // metasim's ringing before it answers our calls
	onEvent      func(phone.Event) // besides the rig's own record
	t1           time.Duration     // SIP's T1 (0: 500 ms)
}

func logger() *slog.Logger { return rigLogger(false) }

func rigLogger(quiet bool) *slog.Logger {
	if testing.Verbose() && !quiet {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newRig(t testing.TB, o rigOpts) *rig {
	t.Helper()
	if o.answer == "" {
		o.answer = "auto"
	}
	if o.ourHost == "" {
		o.ourHost = host
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ca, err := testpki.NewCA("phone test CA")
	if err != nil {
		t.Fatal(err)
	}
	sim, err := metasim.Start(ctx, metasim.Config{
		BusinessNumber: business, BusinessHost: host, Password: password, BusinessRoots: ca.Pool(),
		ToneHz: 1000, RejectBusinessCalls: o.rejectStatus, AnswerDelay: o.answerDelay, Logger: rigLogger(o.quiet).With("side", "metasim"),
		KeyExchange: map[bool]string{true: "dtls", false: "sdes"}[o.dtls],
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{sim: sim}
	r.phone = phone.New(phone.Config{
		Answer: o.answer, RingTimeout: o.ringTimeout, NoEarlyMedia: o.noEarly, Clock: o.clock, AutoAnswerDelay: o.autoDelay,
		Media: media.Config{KeyExchange: map[bool]string{true: "dtls", false: "sdes"}[o.dtls], BindIP: net.IPv4(127, 0, 0, 1), PortMin: 21000, PortMax: 21999},
		Capture: func() (phone.AudioSource, error) {
			if o.headset != nil {
				return o.headset.Source(), nil
			}
			if o.capture != nil {
				return o.capture, nil
			}
			return audio.NewTone(440, 0.3), nil
		},
		Playback: func() (phone.AudioSink, error) {
			if o.headset != nil {
				return o.headset.Sink(), nil
			}
			rec := audio.NewRecorder(audio.SampleRate * 20)
			r.mu.Lock()
			r.rec = rec
			r.mu.Unlock()
			return rec, nil
		},
		Ringer: func() (phone.AudioSink, error) {
			if o.ringer == nil {
				return audio.Null{}, nil
			}
			return o.ringer, nil
		},
		OnEvent: func(ev phone.Event) {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
			if o.onEvent != nil {
				o.onEvent(ev)
			}
		},
		Logger: rigLogger(o.quiet).With("side", "waphone"),
	})
	certPEM, keyPEM, err := ca.Issue(o.ourHost)
	if err != nil {
		t.Fatal(err)
	}
	cf, kf, err := testpki.WriteFiles(t.TempDir(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := sip.NewCertReloader(cf, kf, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.ep, err = sip.New(sip.Config{
		Hostname: o.ourHost, Number: business, Password: func() (string, error) { return password, nil },
		GatewayAddr: sim.Addr(), GatewayRoots: sim.CA().Pool(), ContactPort: ln.Addr().(*net.TCPAddr).Port, T1: o.t1,
		Logger: rigLogger(o.quiet).With("side", "waphone-sip"),
	}, r.phone)
	if err != nil {
		t.Fatal(err)
	}
	r.phone.SetDialer(r.ep)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.ep.Serve(ctx, ln, sip.ServerTLSConfig(certs.Certificate))
	}()
	r.target = ln.Addr().String()
	t.Cleanup(func() {
		r.phone.Close()
		_ = sim.Close()
		cancel()
		<-done
		_ = r.ep.Close()
	})
	return r
}

func (r *rig) heard() []int16 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rec == nil {
		return nil
	}
	return r.rec.Samples()
}

func (r *rig) waitState(t testing.TB, want phone.State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.phone.Status().State != want {
		if time.Now().After(deadline) {
			t.Fatalf("phone state %s, want %s", r.phone.Status().State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *rig) lastEnd(t *testing.T) *phone.CallSummary {
	t.Helper()
	r.waitState(t, phone.Idle)
	last := r.phone.Status().LastCall
	if last == nil {
		t.Fatal("no call summary")
	}
	return last
}

func requireTone(t *testing.T, what string, pcm []int16, hz float64) {
	t.Helper()
	if ok, ratio := dsp.DetectTone(pcm, audio.SampleRate, hz); !ok {
		t.Fatalf("%s: %v Hz not detected in %d ms (ratio %.2f)", what, hz, len(pcm)*1000/audio.SampleRate, ratio)
	}
}

func requireFirstFromUs(t *testing.T, ms metasim.MediaStats) {
	t.Helper()
	if ms.FirstRecvAt.IsZero() {
		t.Fatal("metasim received no SRTP from waphone")
	}
	if !ms.FirstSentAt.IsZero() && !ms.FirstRecvAt.Before(ms.FirstSentAt) {
		t.Fatalf("metasim sent at %v before our first packet at %v", ms.FirstSentAt, ms.FirstRecvAt)
	}
}

func TestUserInitiatedCallAudioBothWays(t *testing.T) {
	r := newRig(t, rigOpts{})
	ctx := context.Background()
	c, err := r.sim.Call(ctx, r.target, metasim.CallOptions{
		From: user, UserID: "US.13491208655302741918", Username: "shopper42", CTAPayload: "order-77",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status() != 200 || !c.Challenged() {
		t.Fatalf("status %d challenged=%v, want 200 after a digest challenge", c.Status(), c.Challenged())
	}
	r.waitState(t, phone.Talking)
	st := r.phone.Status()
	if st.Call == nil || st.Call.Username != "shopper42" || st.Call.UserID != "US.13491208655302741918" || st.Call.CTAPayload != "order-77" || st.Call.WACID == "" {
		t.Fatalf("status call info %+v", st.Call)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := c.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	last := r.lastEnd(t)
	if last.EndedBy != sip.EndRemoteBye || last.Info.DurationSec < 0 {
		t.Fatalf("summary %+v: want ended by remote BYE with Meta's duration", last)
	}
	requireTone(t, "Meta hears waphone", c.Recorded(), 440)
	requireTone(t, "waphone hears Meta", r.heard(), 1000)
	requireFirstFromUs(t, c.MediaStats())
	if last.Media == nil || last.Media.PacketsSent < 50 || last.Media.PacketsReceived < 50 {
		t.Fatalf("media stats %+v", last.Media)
	}
}

func TestBusinessInitiatedCallAudioBothWays(t *testing.T) {
	r := newRig(t, rigOpts{})
	ctx := context.Background()
	if err := r.phone.Call(ctx, user); err != nil {
		t.Fatal(err)
	}
	var c *metasim.Call
	select {
	case c = <-r.sim.Incoming():
	case <-time.After(5 * time.Second):
		t.Fatal("metasim saw no call")
	}
	inv := c.Request()
	if got := inv.Recipient.String(); got != "sip:+12195550714@wa.meta.vc;transport=tls" {
		t.Fatalf("Request-URI %s", got)
	}
	if f := inv.From(); f.Address.User != business || f.Address.Host != host {
		t.Fatalf("From %s", f.Value())
	}
	pa := inv.GetHeader("Proxy-Authorization")
	if pa == nil || !strings.Contains(pa.Value(), `username="12145551869"`) || !strings.Contains(pa.Value(), "SHA-256") {
		t.Fatalf("Proxy-Authorization %v: want the business digits answering the SHA-256 challenge", pa)
	}
	r.waitState(t, phone.Talking)
	time.Sleep(1500 * time.Millisecond)
	if err := r.phone.Hangup(); err != nil {
		t.Fatal(err)
	}
	last := r.lastEnd(t)
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("metasim's call did not end")
	}
	if c.EndedBy() != "business" || last.EndedBy != sip.EndLocalBye {
		t.Fatalf("metasim ended by %q, we %q", c.EndedBy(), last.EndedBy)
	}
	requireTone(t, "Meta hears waphone", c.Recorded(), 440)
	requireTone(t, "waphone hears Meta", r.heard(), 1000)
	requireFirstFromUs(t, c.MediaStats())
}

func TestBusinessCallFromWrongHostIs403(t *testing.T) {
	r := newRig(t, rigOpts{ourHost: "other.example.com"})
	err := r.phone.Call(context.Background(), user)
	var ce *sip.CallError
	if !errors.As(err, &ce) || ce.Status != 403 || !strings.Contains(ce.Warning, "does not match any SIP server") {
		t.Fatalf("err %v: want 403 with Meta's Warning", err)
	}
	r.waitState(t, phone.Idle)
}

func TestBusinessCallRejected(t *testing.T) {
	for _, code := range []int{486, 480, 603} {
		r := newRig(t, rigOpts{rejectStatus: code})
		err := r.phone.Call(context.Background(), user)
		var ce *sip.CallError
		if !errors.As(err, &ce) || ce.Status != code {
			t.Fatalf("err %v, want CallError %d", err, code)
		}
		r.waitState(t, phone.Idle)
	}
}

func TestSecondCallIsBusy(t *testing.T) {
	r := newRig(t, rigOpts{})
	ctx := context.Background()
	c1, err := r.sim.Call(ctx, r.target, metasim.CallOptions{From: user})
	if err != nil || c1.Status() != 200 {
		t.Fatalf("first call: %v %v", err, c1)
	}
	r.waitState(t, phone.Talking)
	c2, err := r.sim.Call(ctx, r.target, metasim.CallOptions{From: "+447700900123"})
	if err != nil {
		t.Fatal(err)
	}
	if c2.Status() != 486 {
		t.Fatalf("second call got %d, want 486", c2.Status())
	}
	if r.phone.Status().State != phone.Talking {
		t.Fatal("the first call was disturbed")
	}
	_ = c1.Hangup(ctx)
	r.waitState(t, phone.Idle)
}

func TestWrongPasswordNeverRings(t *testing.T) {
	r := newRig(t, rigOpts{})
	c, err := r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user, Password: "not-it"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status() != 403 {
		t.Fatalf("status %d, want 403", c.Status())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.events {
		if ev.Kind == phone.EvRinging {
			t.Fatal("phone rang for an unauthenticated call")
		}
	}
}

func TestButtonAnswerAndRingTimeout(t *testing.T) {
	r := newRig(t, rigOpts{answer: "button", ringTimeout: 800 * time.Millisecond})
	ctx := context.Background()
	// Nobody presses: 480 after the ring timeout, logged as missed.
	c, err := r.sim.Call(ctx, r.target, metasim.CallOptions{From: user})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status() != 480 {
		t.Fatalf("unanswered call got %d, want 480", c.Status())
	}
	if last := r.lastEnd(t); last.EndedBy != "missed" {
		t.Fatalf("summary %+v, want missed", last)
	}
	// Pressed while ringing: answered.
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if r.phone.Status().State == phone.Ringing {
				_ = r.phone.Answer()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	c, err = r.sim.Call(ctx, r.target, metasim.CallOptions{From: user})
	if err != nil || c.Status() != 200 {
		t.Fatalf("answered call: %v status %d", err, c.Status())
	}
	_ = c.Hangup(ctx)
	r.waitState(t, phone.Idle)
}

func TestCancelWhileRingingStopsTheRing(t *testing.T) {
	r := newRig(t, rigOpts{answer: "button"})
	ctx := context.Background()
	c, err := r.sim.Call(ctx, r.target, metasim.CallOptions{From: user, ReturnOnRinging: true})
	if err != nil {
		t.Fatal(err)
	}
	r.waitState(t, phone.Ringing)
	if err := c.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if last := r.lastEnd(t); last.EndedBy != sip.EndCancelled {
		t.Fatalf("summary %+v, want cancelled", last)
	}
}

func TestButtonPressesAndMute(t *testing.T) {
	r := newRig(t, rigOpts{answer: "button"})
	ctx := context.Background()
	// A short press answers the ringing call.
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && r.phone.Status().State != phone.Ringing {
			time.Sleep(10 * time.Millisecond)
		}
		_, _ = r.phone.Press(phone.InShortPress)
	}()
	c, err := r.sim.Call(ctx, r.target, metasim.CallOptions{From: user})
	if err != nil || c.Status() != 200 {
		t.Fatalf("call: %v %d", err, c.Status())
	}
	r.waitState(t, phone.Talking)
	time.Sleep(800 * time.Millisecond)
	before := len(c.Recorded())
	// The mute key silences the microphone but media keeps flowing.
	if _, err := r.phone.Press(phone.InMuteKey); err != nil {
		t.Fatal(err)
	}
	if !r.phone.Status().Muted {
		t.Fatal("status does not show muted")
	}
	sentBefore := c.MediaStats().PacketsReceived
	time.Sleep(800 * time.Millisecond)
	rec := c.Recorded()
	if c.MediaStats().PacketsReceived < sentBefore+25 {
		t.Fatal("media paused while muted: Meta would drop the call")
	}
	requireTone(t, "before mute", rec[:before], 440)
	tail := rec[len(rec)-audio.SampleRate/4:]
	if rms := dsp.RMS(tail); rms > 100 {
		t.Fatalf("muted audio still loud: RMS %.0f", rms)
	}
	// A short press while talking hangs up.
	if _, err := r.phone.Press(phone.InShortPress); err != nil {
		t.Fatal(err)
	}
	if last := r.lastEnd(t); last.EndedBy != sip.EndLocalBye {
		t.Fatalf("ended by %q", last.EndedBy)
	}
	if a, err := r.phone.Press(phone.InMuteKey); err != nil || a != phone.DoNothing {
		t.Fatalf("mute key while idle must be ignored, got %s %v", a, err)
	}
}

func TestRingToneWhileRinging(t *testing.T) {
	ringer := audio.NewRecorder(audio.SampleRate * 5)
	r := newRig(t, rigOpts{answer: "button", ringTimeout: 700 * time.Millisecond, ringer: ringer})
	c, err := r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user})
	if err != nil || c.Status() != 480 {
		t.Fatalf("%v %d", err, c.Status())
	}
	r.waitState(t, phone.Idle)
	pcm := ringer.Samples()
	if len(pcm) < audio.SampleRate/3 {
		t.Fatalf("only %d samples of ring", len(pcm))
	}
	first := pcm[:audio.SampleRate/5]
	if dsp.ToneRatio(first, audio.SampleRate, 400) < 0.2 || dsp.ToneRatio(first, audio.SampleRate, 450) < 0.2 {
		t.Fatal("the ringer did not ring 400+450 Hz")
	}
	n := len(ringer.Samples())
	time.Sleep(200 * time.Millisecond)
	if len(ringer.Samples()) != n {
		t.Fatal("still ringing after the call ended")
	}
}

// TestCallThroughMalgoNullDevice runs a metasim call whose audio goes
// through the real malgo path (miniaudio's Null backend at real-time pace):
// Meta's 1000 Hz tone must come out of the device callback.
func TestCallThroughMalgoNullDevice(t *testing.T) {
	played := audio.NewRecorder(audio.SampleRate * 10)
	h, err := audio.OpenHeadset(audio.HeadsetConfig{
		Backends: []malgo.Backend{audio.BackendNull}, PeriodMs: 10,
		Monitor: func(pcm []int16) { _ = played.WriteFrame(pcm) },
		Logger:  logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r := newRig(t, rigOpts{headset: h})
	c, err := r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user})
	if err != nil || c.Status() != 200 {
		t.Fatalf("%v %d", err, c.Status())
	}
	time.Sleep(1500 * time.Millisecond)
	_ = c.Hangup(context.Background())
	r.waitState(t, phone.Idle)
	requireTone(t, "the Null device played Meta's tone", played.Samples(), 1000)
	if c.MediaStats().PacketsReceived < 50 {
		t.Fatal("the headset's (silent) microphone did not keep media flowing")
	}
	if st := h.Stats(); st.Callbacks < 100 {
		t.Fatalf("device callbacks %d", st.Callbacks)
	}
}

// TestDTLSCallsBothWays: Meta's default media, WebRTC (ICE-lite + DTLS
// server on Meta's side; full controlling ICE agent + DTLS client on ours).
func TestDTLSCallsBothWays(t *testing.T) {
	r := newRig(t, rigOpts{dtls: true})
	ctx := context.Background()
	c, err := r.sim.Call(ctx, r.target, metasim.CallOptions{From: user})
	if err != nil || c.Status() != 200 {
		t.Fatalf("%v %d", err, c.Status())
	}
	offer, answer := string(c.Request().Body()), string(c.Response().Body())
	if !strings.Contains(offer, "a=ice-lite") || !strings.Contains(offer, "UDP/TLS/RTP/SAVPF") {
		t.Fatalf("metasim's offer is not WebRTC-shaped:\n%s", offer)
	}
	for _, want := range []string{"a=setup:active", "a=fingerprint:sha-256", "typ host", "a=ice-ufrag:"} {
		if !strings.Contains(answer, want) {
			t.Fatalf("our answer lacks %q:\n%s", want, answer)
		}
	}
	r.waitState(t, phone.Talking)
	requireDTLS(t, r)
	time.Sleep(1500 * time.Millisecond)
	_ = c.Hangup(ctx)
	r.waitState(t, phone.Idle)
	requireTone(t, "Meta hears waphone over DTLS-SRTP", c.Recorded(), 440)
	requireTone(t, "waphone hears Meta over DTLS-SRTP", r.heard(), 1000)
	requireFirstFromUs(t, c.MediaStats())

	// Business-initiated: our WebRTC offer, Meta's ICE-lite answer.
	if err := r.phone.Call(ctx, user); err != nil {
		t.Fatal(err)
	}
	out := <-r.sim.Incoming() // metasim answered our WebRTC offer as ICE-lite (its answer fails on an SDES one)
	r.waitState(t, phone.Talking)
	requireDTLS(t, r)
	time.Sleep(1500 * time.Millisecond)
	_ = r.phone.Hangup()
	r.waitState(t, phone.Idle)
	<-out.Done()
	requireTone(t, "Meta hears waphone (outbound DTLS)", out.Recorded(), 440)
	requireTone(t, "waphone hears Meta (outbound DTLS)", r.heard(), 1000)
	requireFirstFromUs(t, out.MediaStats())
}

func requireDTLS(t *testing.T, r *rig) {
	t.Helper()
	if st := r.phone.Status(); st.Media == nil || !strings.Contains(st.Media.Codec, "DTLS-SRTP") {
		t.Fatalf("media is not DTLS-SRTP: %+v", st.Media)
	}
}

// TestEarlyMediaFirstAudioDelay: with the 183 (default) ICE and DTLS finish
// while the phone rings, so the first audio packet follows the 200 OK at
// once; without it they start only at the answer. The delays are logged
// (measurements, not assertions: the machine is noisy).
func TestEarlyMediaFirstAudioDelay(t *testing.T) {
	for _, early := range []bool{true, false} {
		r := newRig(t, rigOpts{dtls: true, answer: "button", noEarly: !early})
		c, d := answerAndTimeFirstAudio(t, r, early)
		t.Logf("early media %v: first audio %v after the 200 OK reached Meta", early, d.Round(time.Millisecond))
		time.Sleep(time.Second)
		_ = c.Hangup(context.Background())
		r.waitState(t, phone.Idle)
		requireTone(t, "Meta hears waphone", c.Recorded(), 440)
	}
}

// answerAndTimeFirstAudio has Meta call, presses the button after a
// human's 700 ms, and returns how long after the 200 OK reached Meta its
// first decrypted media packet came (DTLS-SRTP + ICE when the rig says so).
func answerAndTimeFirstAudio(t testing.TB, r *rig, early bool) (*metasim.Call, time.Duration) {
	go func() {
		r.waitState(t, phone.Ringing)
		time.Sleep(700 * time.Millisecond) // the shop owner reaches for the button
		_, _ = r.phone.Press(phone.InShortPress)
	}()
	c, err := r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user})
	if err != nil || c.Status() != 200 {
		t.Fatalf("%v %d", err, c.Status())
	}
	answered := time.Now()
	if c.EarlyMedia() != early {
		t.Fatalf("early media %v, want %v", c.EarlyMedia(), early)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.MediaStats().FirstRecvAt.IsZero() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	first := c.MediaStats().FirstRecvAt
	if first.IsZero() {
		t.Fatal("no audio")
	}
	return c, first.Sub(answered)
}

// BenchmarkFirstAudioAfterAnswer: DTLS-SRTP + ICE on loopback, the time
// from the 200 OK reaching Meta to Meta's first decrypted media packet,
// with media set up while ringing (183, the default) and without.
// -benchtime 3x or so; it reports ms-after-200 (the mean).
func BenchmarkFirstAudioAfterAnswer(b *testing.B) {
	for _, early := range []bool{true, false} {
		b.Run(map[bool]string{true: "early-media", false: "no-early-media"}[early], func(b *testing.B) {
			r := newRig(b, rigOpts{dtls: true, answer: "button", noEarly: !early})
			var total time.Duration
			for i := 0; i < b.N; i++ {
				c, d := answerAndTimeFirstAudio(b, r, early)
				total += d
				_ = c.Hangup(context.Background())
				r.waitState(b, phone.Idle)
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms-after-200")
		})
	}
}

func TestSendDTMFDuringCall(t *testing.T) {
	r := newRig(t, rigOpts{})
	if err := r.phone.SendDTMF("1"); err == nil {
		t.Fatal("DTMF without a call")
	}
	c, err := r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user})
	if err != nil || c.Status() != 200 {
		t.Fatalf("%v %d", err, c.Status())
	}
	r.waitState(t, phone.Talking)
	if err := r.phone.SendDTMF("123#"); err != nil {
		t.Fatal(err)
	}
	if err := r.phone.SendDTMF("12x"); err == nil {
		t.Fatal("bad digit accepted")
	}
	time.Sleep(time.Second)
	before := c.MediaStats().PacketsReceived
	time.Sleep(300 * time.Millisecond)
	if c.MediaStats().PacketsReceived < before+10 {
		t.Fatal("media stopped after DTMF")
	}
	_ = c.Hangup(context.Background())
	r.waitState(t, phone.Idle)
	found := false
	r.mu.Lock()
	for _, ev := range r.events {
		found = found || (ev.Kind == phone.EvDTMFSent && ev.Detail == "123#")
	}
	r.mu.Unlock()
	if !found {
		t.Fatal("no dtmf-sent event")
	}
}

// stuckSource is a capture device whose read hangs (a wedged driver)
// until released.
type stuckSource struct {
	stuck   atomic.Bool
	release chan struct{}
}

func (s *stuckSource) ReadFrame(pcm []int16) error {
	if s.stuck.Load() {
		<-s.release
	}
	clear(pcm)
	return nil
}

func (s *stuckSource) Close() error { return nil }

// TestCheckSeesAWedgedMediaLoop: the watchdog's health check is fine
// while a call's media loops tick, fails while a device read hangs the
// send loop, and recovers when it returns.
func TestCheckSeesAWedgedMediaLoop(t *testing.T) {
	src := &stuckSource{release: make(chan struct{})}
	r := newRig(t, rigOpts{capture: src})
	if err := r.phone.Check(time.Second); err != nil {
		t.Fatalf("idle phone: %v", err)
	}
	c, err := r.sim.Call(context.Background(), r.target, metasim.CallOptions{From: user})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Hangup(context.Background()) }()
	r.waitState(t, phone.Talking)
	time.Sleep(300 * time.Millisecond)
	if err := r.phone.Check(200 * time.Millisecond); err != nil {
		t.Fatalf("healthy call: %v", err)
	}
	src.stuck.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for r.phone.Check(200*time.Millisecond) == nil {
		if time.Now().After(deadline) {
			t.Fatal("a send loop stuck in ReadFrame still passes the check")
		}
		time.Sleep(50 * time.Millisecond)
	}
	err = r.phone.Check(200 * time.Millisecond)
	if !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("check error %v", err)
	}
	src.stuck.Store(false)
	close(src.release)
	deadline = time.Now().Add(5 * time.Second)
	for r.phone.Check(200*time.Millisecond) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the check did not recover once the read returned")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
