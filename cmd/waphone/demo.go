//go:build !nodemo

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/internal/dsp"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

// demoBuilt: this build has the demo (not built with -tags nodemo).
const demoBuilt = true

const (
	demoBusiness = "+12145551869"
	demoUser     = "+12195550714"
	demoHost     = "meta-voip.example.com"
	ourTone      = 440.0
	metaTone     = 1000.0
)

// recorders hands out one in-memory sink per call so the demo can check
// what the phone would have played into the headset.
type recorders struct {
	mu   sync.Mutex
	last *audio.Recorder
}

func (r *recorders) open() (phone.AudioSink, error) {
	rec := audio.NewRecorder(audio.SampleRate * 30)
	r.mu.Lock()
	r.last = rec
	r.mu.Unlock()
	return rec, nil
}

func (r *recorders) samples() []int16 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		return nil
	}
	return r.last.Samples()
}

// cmdDemo runs one call each way between waphone and metasim on loopback,
// a tone each way, and checks each tone arrives. Nothing leaves the machine.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	talk := fs.Duration("talk", 2*time.Second, "how long each call talks")
	verbose := fs.Bool("v", false, "log SIP and media details")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ca, err := testpki.NewCA("waphone demo CA")
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := ca.Issue(demoHost)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "waphone-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	certFile, keyFile, err := testpki.WriteFiles(dir, certPEM, keyPEM)
	if err != nil {
		return err
	}
	secret := make([]byte, 12)
	_, _ = rand.Read(secret)
	password := hex.EncodeToString(secret)

	var failed []string
	for _, mode := range []string{"sdes", "dtls"} {
		f, err := demoMode(ctx, mode, *talk, log, ca, certFile, keyFile, password, stdout)
		if err != nil {
			return err
		}
		failed = append(failed, f...)
	}
	if len(failed) > 0 {
		return fmt.Errorf("demo failed: %d check(s): %v", len(failed), failed)
	}
	fmt.Fprintln(stdout, "demo ok: both directions, SDES and DTLS, connected, authenticated and carried audio")
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func waitIdle(ctx context.Context, p *phone.Phone) {
	deadline := time.Now().Add(5 * time.Second)
	for p.Status().State != phone.Idle && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

func toneIn(pcm []int16, hz float64) error {
	ok, ratio := dsp.DetectTone(pcm, audio.SampleRate, hz)
	if !ok {
		return fmt.Errorf("not detected in %d ms of audio (tone ratio %.2f)", len(pcm)*1000/audio.SampleRate, ratio)
	}
	return nil
}

func firstFromUs(ms metasim.MediaStats) error {
	if ms.FirstRecvAt.IsZero() {
		return errors.New("metasim received no media")
	}
	if !ms.FirstSentAt.IsZero() && ms.FirstSentAt.Before(ms.FirstRecvAt) {
		return errors.New("metasim sent before it heard from us")
	}
	return nil
}

func boolErr(ok bool, msg string) error {
	if ok {
		return nil
	}
	return errors.New(msg)
}

// demoMode runs one call each way with one kind of media.
func demoMode(ctx context.Context, mode string, talk time.Duration, log *slog.Logger, ca *testpki.CA,
	certFile, keyFile, password string, stdout io.Writer) ([]string, error) {
	sim, err := metasim.Start(ctx, metasim.Config{
		BusinessNumber: demoBusiness, BusinessHost: demoHost, Password: password,
		BusinessRoots: ca.Pool(), ToneHz: metaTone, NoMediaTimeout: 10 * time.Second, KeyExchange: mode,
		Logger: log.With("side", "metasim"),
	})
	if err != nil {
		return nil, fmt.Errorf("starting metasim: %w", err)
	}
	defer sim.Close()

	cfg := config.Default()
	cfg.SIP.Hostname, cfg.SIP.Number = demoHost, demoBusiness
	cfg.SIP.Listen = "127.0.0.1:0"
	cfg.SIP.GatewayAddr = sim.Addr()
	cfg.Media.KeyExchange, cfg.Media.BindAddress, cfg.Media.RTPPorts = mode, "127.0.0.1", "20000-20999"
	cfg.Phone.Answer = "auto"
	recs := &recorders{}
	d, err := newDaemon(cfg, log.With("side", "waphone"), daemonOptions{
		password:     func() (string, error) { return password, nil },
		gatewayRoots: sim.CA().Pool(),
		capture:      func() (phone.AudioSource, error) { return audio.NewTone(ourTone, 0.3), nil },
		playback:     recs.open,
		listen:       true,
	})
	if err != nil {
		return nil, err
	}
	defer d.close()
	certs, err := sip.NewCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	d.serve(sctx, certs.Certificate)
	target := d.ln.Addr().String()

	media := map[string]string{"sdes": "SDES-SRTP Opus", "dtls": "DTLS-SRTP + ICE Opus (Meta's default)"}[mode]
	fmt.Fprintf(stdout, "waphone demo, %s: metasim (Meta's gateway, emulated) at %s, waphone at %s, both on loopback\n", media, sim.Addr(), target)
	var failed []string
	check := func(name string, err error) {
		if err != nil {
			failed = append(failed, mode+": "+name)
			fmt.Fprintf(stdout, "  FAIL %s: %v\n", name, err)
		} else {
			fmt.Fprintf(stdout, "  ok   %s\n", name)
		}
	}

	// 1. A WhatsApp user calls the business.
	fmt.Fprintf(stdout, "1. user-initiated call (Meta → waphone), %s:\n", media)
	in, err := sim.Call(ctx, target, metasim.CallOptions{From: demoUser, Username: "demo_user", UserID: "US.13491208655302741918"})
	switch {
	case err != nil:
		check("call answered", err)
	case in.Status() != 200:
		check("call answered", fmt.Errorf("got %d", in.Status()))
	default:
		check(fmt.Sprintf("digest challenge answered, call answered (%v → %d)", in.Provisional(), in.Status()), nil)
		sleep(ctx, talk)
		check("Meta hangs up (BYE)", in.Hangup(ctx))
		waitIdle(ctx, d.phone)
		check(fmt.Sprintf("waphone's %v Hz tone heard on Meta's side", ourTone), toneIn(in.Recorded(), ourTone))
		check(fmt.Sprintf("Meta's %v Hz tone heard in waphone's earpiece", metaTone), toneIn(recs.samples(), metaTone))
		ms := in.MediaStats()
		check("waphone sent the first SRTP packet", firstFromUs(ms))
	}

	// 2. The business calls a WhatsApp user.
	fmt.Fprintf(stdout, "2. business-initiated call (waphone → Meta), %s:\n", media)
	if err := d.phone.Call(ctx, demoUser); err != nil {
		check("call answered", err)
	} else {
		check("Meta's 407 answered, call answered", nil)
		var out *metasim.Call
		select {
		case out = <-sim.Incoming():
		case <-time.After(5 * time.Second):
		}
		sleep(ctx, talk)
		check("waphone hangs up (BYE)", d.phone.Hangup())
		waitIdle(ctx, d.phone)
		if out == nil {
			check("metasim saw the call", errors.New("no call arrived"))
		} else {
			select {
			case <-out.Done():
			case <-time.After(5 * time.Second):
			}
			check("Meta received the BYE", boolErr(out.EndedBy() == "business", "ended by "+out.EndedBy()))
			check(fmt.Sprintf("waphone's %v Hz tone heard on Meta's side", ourTone), toneIn(out.Recorded(), ourTone))
			check(fmt.Sprintf("Meta's %v Hz tone heard in waphone's earpiece", metaTone), toneIn(recs.samples(), metaTone))
			check("waphone sent the first SRTP packet", firstFromUs(out.MediaStats()))
		}
	}
	return failed, nil
}
