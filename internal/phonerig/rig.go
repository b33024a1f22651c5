// Package phonerig is a real phone on loopback for the surfaces' tests:
// a sip endpoint with a testpki certificate, a phone with real media (a
// 440 Hz tone as the microphone) and metasim as Meta. It is the pattern of
// phone's own test rig, shared so that the web console, metrics and MQTT
// tests drive the same thing a desk runs. Only tests import it.
package phonerig

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/media"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

// The guide's sample business and user.
const (
	Business = "+12145551869"
	User     = "+12195550714"
	Host     = "meta-voip.example.com"
	Password = "meta-generated-password"
)

// Options shape the phone.
type Options struct {
	Answer      string        // "auto" (default) or "button"
	RingTimeout time.Duration // 0 = phone's default
	// OnCallEnd sees each call's summary (the daemon writes history here).
	OnCallEnd func(phone.CallSummary)
	// PortMin is the first RTP port (a range of 1000); 0 = 22000. Tests
	// that run in parallel packages pick different ranges.
	PortMin int
}

// Rig is waphone (sip endpoint + phone + real media) and metasim.
type Rig struct {
	Sim    *metasim.Sim
	EP     *sip.Endpoint
	Phone  *phone.Phone
	Target string // where metasim dials the phone
	CA     *testpki.CA

	mu     sync.Mutex
	events []phone.Event
}

// Logger logs at debug level with -v, else nowhere.
func Logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// New starts the rig; t.Cleanup stops it.
func New(t testing.TB, o Options) *Rig {
	t.Helper()
	if o.Answer == "" {
		o.Answer = "auto"
	}
	if o.PortMin == 0 {
		o.PortMin = 22000
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ca, err := testpki.NewCA("surfaces test CA")
	if err != nil {
		t.Fatal(err)
	}
	log := Logger()
	sim, err := metasim.Start(ctx, metasim.Config{
		BusinessNumber: Business, BusinessHost: Host, Password: Password, BusinessRoots: ca.Pool(),
		ToneHz: 1000, KeyExchange: "sdes", Logger: log.With("side", "metasim"),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &Rig{Sim: sim, CA: ca}
	r.Phone = phone.New(phone.Config{
		Answer: o.Answer, RingTimeout: o.RingTimeout,
		Media:    media.Config{KeyExchange: "sdes", BindIP: net.IPv4(127, 0, 0, 1), PortMin: o.PortMin, PortMax: o.PortMin + 999},
		Capture:  func() (phone.AudioSource, error) { return audio.NewTone(440, 0.3), nil },
		Playback: func() (phone.AudioSink, error) { return audio.Null{}, nil },
		Ringer:   func() (phone.AudioSink, error) { return audio.Null{}, nil },
		OnEvent: func(ev phone.Event) {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		},
		OnCallEnd: o.OnCallEnd,
		Logger:    log.With("side", "waphone"),
	})
	certPEM, keyPEM, err := ca.Issue(Host)
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
	r.EP, err = sip.New(sip.Config{
		Hostname: Host, Number: Business, Password: func() (string, error) { return Password, nil },
		GatewayAddr: sim.Addr(), GatewayRoots: sim.CA().Pool(), ContactPort: ln.Addr().(*net.TCPAddr).Port,
		Logger: log.With("side", "waphone-sip"),
	}, r.Phone)
	if err != nil {
		t.Fatal(err)
	}
	r.Phone.SetDialer(r.EP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.EP.Serve(ctx, ln, sip.ServerTLSConfig(certs.Certificate))
	}()
	r.Target = ln.Addr().String()
	t.Cleanup(func() {
		r.Phone.Close()
		_ = sim.Close()
		cancel()
		<-done
		_ = r.EP.Close()
	})
	return r
}

// Ring makes metasim call the phone and returns once the phone rings
// (metasim's CallOptions.ReturnOnRinging); the call is answered or
// hung up by the test.
func (r *Rig) Ring(t testing.TB, opt metasim.CallOptions) *metasim.Call {
	t.Helper()
	opt.ReturnOnRinging = true
	if opt.From == "" {
		opt.From = User
	}
	c, err := r.Sim.Call(context.Background(), r.Target, opt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// WaitState polls the phone's state (a test helper; the surfaces under
// test use events).
func (r *Rig) WaitState(t testing.TB, want phone.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.Phone.Status().State != want {
		if time.Now().After(deadline) {
			t.Fatalf("phone state %s, want %s", r.Phone.Status().State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Events is every event so far.
func (r *Rig) Events() []phone.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]phone.Event(nil), r.events...)
}
