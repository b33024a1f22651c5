package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	ssip "github.com/emiago/sipgo/sip"
	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/board"
	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/internal/acmecert"
	"github.com/waphone/waphone/internal/logging"
	"github.com/waphone/waphone/media"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

// daemon is the wired phone: signaling, media policy and audio ends. It is
// shared by `run`, `call` (standalone) and `demo`.
type daemon struct {
	cfg   config.Config
	log   *slog.Logger
	phone *phone.Phone
	ep    *sip.Endpoint
	ln    net.Listener
	wg    sync.WaitGroup
	// headset is the sound device when audio.capture names one.
	headset *audio.Headset
	ringer  *audio.Headset
	board   *board.Board
	history *history.Store
	// fleetDone is closed when a fleet desk has unregistered (fleet.go).
	fleetDone chan struct{}
}

func stateDir(cfg config.Config) string {
	if dir := os.Getenv("STATE_DIRECTORY"); dir != "" {
		return strings.SplitN(dir, ":", 2)[0]
	}
	return cfg.State.Dir
}

// record appends a finished call to the history (fsynced).
func (d *daemon) record(sum phone.CallSummary) {
	if d.history == nil {
		return
	}
	if err := d.history.Finish(historyRecord(sum)); err != nil {
		d.log.Error("call history not written", "err", err)
	}
}

// callUp notes the call in progress, so that a power cut leaves a trace.
func (d *daemon) callUp(sum phone.CallSummary) {
	if d.history == nil {
		return
	}
	if err := d.history.Begin(historyRecord(sum)); err != nil {
		d.log.Error("call in progress not noted in the history", "err", err)
	}
}

func historyRecord(sum phone.CallSummary) history.Record {
	in := sum.Info
	rec := history.Record{
		Direction: sum.Direction, Remote: in.Remote, Username: in.Username, WACID: in.WACID,
		UserID: in.UserID, ParentUserID: in.ParentUserID, CTAPayload: in.CTAPayload, DeeplinkPayload: in.DeeplinkPayload,
		Start: sum.Start, Answered: sum.Answered, End: sum.End, Duration: sum.Duration,
		EndedBy: sum.EndedBy, Reason: sum.Reason,
	}
	if in.DurationSec > 0 {
		rec.MetaDurationSec = in.DurationSec
	}
	if sum.Media != nil {
		rec.Quality = sum.Media
	}
	return rec
}

// openBoard starts the button, LED and headset keys and joins them to the
// phone (phone.Desk) until ctx ends. Faults leave the phone working.
func (d *daemon) openBoard(ctx context.Context) {
	b, err := board.Open(board.Config{
		Chip: d.cfg.Board.Chip, ButtonLine: d.cfg.Board.ButtonLine, LedLine: d.cfg.Board.LedLine,
		HeadsetKeys: d.cfg.Board.HeadsetKeys, Logger: d.log.With("component", "board"),
	})
	d.board = b
	desk := &phone.Desk{Phone: d.phone, Front: b, Fault: err != nil, Logger: d.log.With("component", "desk")}
	if d.headset != nil {
		desk.Speaker = d.headset
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		desk.Run(ctx)
	}()
}

// daemonOptions are the seams the demo uses instead of files on disk.
type daemonOptions struct {
	password     func() (string, error)
	gatewayRoots *x509.CertPool
	playback     func() (phone.AudioSink, error)
	capture      func() (phone.AudioSource, error)
	listen       bool
}

func mediaConfig(cfg config.Config, log *slog.Logger) (media.Config, error) {
	mc := media.Config{KeyExchange: cfg.Media.KeyExchange, STUN: cfg.Media.STUN, OpusComplexity: cfg.Media.OpusComplexity, Logger: log}
	var err error
	if mc.PortMin, mc.PortMax, err = cfg.Media.PortRange(); err != nil {
		return mc, fmt.Errorf("media.rtp_ports %w", err)
	}
	if mc.BindIP, err = cfg.Media.BindIP(); err != nil {
		return mc, fmt.Errorf("media.bind_address %w", err)
	}
	if mc.AdvertiseIP, err = cfg.Media.PublicIP(); err != nil {
		return mc, fmt.Errorf("media.public_address %w", err)
	}
	return mc, nil
}

func newDaemon(cfg config.Config, log *slog.Logger, opt daemonOptions) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log}
	defer func() {
		if err != nil { // what was opened before the failure must not stay open
			d.closeDevices()
		}
	}()
	password := opt.password
	if password == nil && cfg.Fleet.Enabled() {
		password = func() (string, error) { return "", errors.New("a fleet desk has no Meta password: the edge holds it") }
	}
	if password == nil {
		// Read on every use so that a new password (setup --reset-password)
		// is picked up without a restart; read once now to fail early.
		path := cfg.SIP.PasswordFile
		password = func() (string, error) { return config.ReadPassword(path) }
		if _, err := password(); err != nil {
			return nil, err
		}
	}
	// nil leaves the system roots to crypto/tls, which loads them on the
	// first dial to Meta: an answer-only phone never holds the ~140 CA
	// certificates (about 2 MB parsed at start, 0.5 MB kept).
	roots := opt.gatewayRoots
	if roots == nil {
		if f := cfg.SIP.GatewayCAFile; f != "" {
			var err error
			if roots, err = x509.SystemCertPool(); err != nil {
				roots = x509.NewCertPool()
			}
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("sip.gateway_ca_file: %w", err)
			}
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("sip.gateway_ca_file %s: no PEM certificate in it", f)
			}
		}
	}
	mc, err := mediaConfig(cfg, log)
	if err != nil {
		return nil, err
	}
	capture, playback := opt.capture, opt.playback
	if capture == nil || playback == nil {
		capSpec, err := cfg.Audio.CaptureSpec()
		if err != nil {
			return nil, fmt.Errorf("audio.capture %w", err)
		}
		playSpec, err := cfg.Audio.PlaybackSpec()
		if err != nil {
			return nil, fmt.Errorf("audio.playback %w", err)
		}
		if capture != nil {
			capSpec = audio.Spec{} // the seam replaces it: open no device for it
		}
		if playback != nil {
			playSpec = audio.Spec{}
		}
		ends, err := audio.OpenEnds(capSpec, playSpec, log.With("component", "audio"))
		if err != nil {
			return nil, err
		}
		d.headset = ends.Headset
		if capture == nil {
			capture = func() (phone.AudioSource, error) { return ends.Source() }
		}
		if playback == nil {
			playback = func() (phone.AudioSink, error) { return ends.Sink() }
		}
	}
	var ringer func() (phone.AudioSink, error)
	if spec, ok, err := cfg.Audio.RingerSpec(); err != nil {
		return nil, fmt.Errorf("audio.ringer %w", err)
	} else if ok {
		// A separate speaker is its own device, beside the headset.
		ends, err := audio.OpenEnds(audio.Spec{}, spec, log.With("component", "ringer"))
		if err != nil {
			return nil, err
		}
		d.ringer = ends.Headset
		ringer = func() (phone.AudioSink, error) { return ends.Sink() }
	}
	d.phone = phone.New(phone.Config{
		Answer: cfg.Phone.Answer, AutoAnswerDelay: cfg.Phone.AutoAnswerDelay.Duration,
		RingTimeout: cfg.Phone.RingTimeout.Duration, SpeedDial: cfg.Phone.SpeedDial, Media: mc,
		// A fleet rings every desk at once: each 183 with SDP would start
		// media toward Meta from every desk, so fleet desks ring with 180 only.
		NoEarlyMedia: !cfg.Phone.EarlyMedia || cfg.Fleet.Enabled(),
		Capture:      capture, Playback: playback, Ringer: ringer, Logger: log,
		OnCallEnd: d.record,
		OnCallUp:  d.callUp,
		DeviceStatus: func() any {
			if d.headset == nil {
				return nil
			}
			return d.headset.Stats()
		},
	})
	allow, err := sip.ParseAllow(cfg.SIP.Allow)
	if err != nil {
		return nil, err
	}
	sc := sip.Config{
		Hostname: cfg.SIP.Hostname, Number: cfg.SIP.Number, Password: password,
		Gateway: cfg.SIP.Gateway, GatewayAddr: cfg.SIP.GatewayAddr, GatewayRoots: roots,
		Allow: allow, UserAgent: "waphone/" + version, Logger: log,
	}
	if cfg.Fleet.Enabled() {
		if sc.Fleet, err = fleetSIP(cfg.Fleet, log); err != nil {
			return nil, err
		}
	} else if opt.listen {
		d.ln, err = listenSIP(cfg.SIP.Listen)
		if err != nil {
			return nil, err
		}
		sc.ContactPort = d.ln.Addr().(*net.TCPAddr).Port
	}
	if d.ep, err = sip.New(sc, d.phone); err != nil {
		return nil, err
	}
	d.phone.SetDialer(d.ep)
	return d, nil
}

// listenSIP listens for SIP over TLS. "0.0.0.0:P" means every address,
// IPv6 included: Meta connects over IPv6 in the guide's samples.
func listenSIP(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("sip.listen %q: %w", addr, err)
	}
	network := "tcp"
	if host == "0.0.0.0" || host == "" || host == "::" {
		host = "" // dual-stack socket
	}
	ln, err := net.Listen(network, net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("sip.listen %s: %w", addr, err)
	}
	return ln, nil
}

// certSource is where the SIP listener's certificate comes from: files
// (reloaded when they change) or ACME (obtained and renewed by itself).
func certSource(ctx context.Context, cfg config.Config, log *slog.Logger) (func() (*tls.Certificate, error), error) {
	if cfg.Fleet.Enabled() {
		return nil, nil // a fleet desk does not listen: its certificate is fleet.cert_file, for the edge
	}
	if !cfg.TLS.ACME {
		if cfg.SIP.CertFile == "" {
			return nil, errors.New("sip.cert_file/key_file are not set and [tls] acme is off: Meta needs a certificate for sip.hostname")
		}
		r, err := sip.NewCertReloader(cfg.SIP.CertFile, cfg.SIP.KeyFile, log)
		if err != nil {
			return nil, err
		}
		return r.Certificate, nil
	}
	var hc *http.Client
	if cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		roots, _ := x509.SystemCertPool()
		if roots == nil {
			roots = x509.NewCertPool()
		}
		roots.AppendCertsFromPEM(pem)
		hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	}
	m, err := acmecert.New(acmecert.Config{Hostname: cfg.SIP.Hostname, Email: cfg.TLS.Email, DirectoryURL: cfg.TLS.CA,
		Challenge: cfg.TLS.Challenge, DNSHook: cfg.TLS.DNSHook, StateDir: stateDir(cfg), HTTPClient: hc, Logger: log.With("component", "acme")})
	if err != nil {
		return nil, err
	}
	go func() { _ = m.Prefetch(ctx); m.Renew(ctx) }()
	if cfg.TLS.Challenge == "dns-01" {
		return m.Certificate, nil // no listener: the TXT record proves the name
	}
	listen := cfg.TLS.ChallengeListen
	if listen == "" {
		listen = ":443"
		if cfg.TLS.Challenge == "http-01" {
			listen = ":80"
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("tls.challenge_listen %s: %w", listen, err)
	}
	go func() {
		if err := m.ServeChallenges(ctx, ln); err != nil {
			log.Error("ACME challenges stopped", "err", err)
		}
	}()
	return m.Certificate, nil
}

// serve starts the TLS listener with the certificate source.
func (d *daemon) serve(ctx context.Context, getCert func() (*tls.Certificate, error)) {
	if d.ep.InFleet() {
		d.runFleet(ctx)
		return
	}
	if d.ln == nil {
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.ep.Serve(ctx, d.ln, sip.ServerTLSConfig(getCert)); err != nil {
			d.log.Error("SIP listener stopped", "err", err)
		}
	}()
	d.log.Info("listening for SIP over TLS", "addr", d.ln.Addr().String(), "hostname", d.cfg.SIP.Hostname)
}

func (d *daemon) close() {
	d.phone.Close()
	if d.board != nil {
		_ = d.board.Close()
	}
	d.closeDevices()
	if d.fleetDone != nil {
		<-d.fleetDone // the unregister needs the transports
	}
	_ = d.ep.Close()
	d.wg.Wait()
}

// closeDevices closes the sound devices and the SIP listener.
func (d *daemon) closeDevices() {
	if d.headset != nil {
		_ = d.headset.Close()
	}
	if d.ringer != nil {
		_ = d.ringer.Close()
	}
	if d.ln != nil {
		_ = d.ln.Close()
	}
}

// newLogger builds the slog logger for a level name.
func newLogger(level string) *slog.Logger {
	l, _ := newLevelLogger(level)
	return l
}

// newLevelLogger is newLogger whose level SIGHUP can change.
func newLevelLogger(level string) (*slog.Logger, *slog.LevelVar) {
	v := new(slog.LevelVar)
	v.Set(logLevel(level))
	return slog.New(logging.NewHandler(os.Stderr, v)), v
}

func logLevel(level string) slog.Level {
	switch strings.ToLower(level) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

var errUsage = errors.New("usage")

// quietSipgo: sipgo logs some transport events through its package-level
// logger (not the one we pass in), e.g. harmless "TCP ref went negative"
// at shutdown. Only its errors reach the journal, with their priority.
func quietSipgo() {
	level := slog.LevelError
	if os.Getenv("WAPHONE_SIPGO_DEBUG") != "" {
		level = slog.LevelDebug
	}
	ssip.SetDefaultLogger(slog.New(logging.NewHandler(os.Stderr, level)))
}

// touchEvery is how often a call in progress is marked as still up: after
// a power cut its end is known to within this.
const touchEvery = 30 * time.Second

// keepHistory records a call the last run left in progress as interrupted
// and, until ctx ends, keeps the mark of the current call fresh.
func keepHistory(ctx context.Context, h *history.Store, log *slog.Logger) {
	if rec, err := h.Recover(); err != nil {
		log.Error("reading the call left in progress", "err", err)
	} else if rec != nil {
		log.Warn("the last run stopped during a call; it is in the history as interrupted",
			"remote", rec.Remote, "wacid", rec.WACID, "start", rec.Start, "last_seen", rec.End)
	}
	go func() {
		t := time.NewTicker(touchEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if err := h.Touch(now); err != nil {
					log.Warn("marking the call in progress", "err", err)
				}
			}
		}
	}()
}
