package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/board"
	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/graph"
	"github.com/waphone/waphone/internal/acmecert"
)

// cmdDoctor checks everything a working phone needs and prints one
// pass/warn/fail line each, with what to do. Exit status 1 on any FAIL.
func cmdDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("doctor", stderr)
	path := fs.String("config", defaultConfig, "config file (TOML)")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	r := &tlsReport{}
	cfg, err := config.Load(*path)
	if err != nil {
		r.bad("config %s: %v", *path, err)
		return fmtReport(stdout, r)
	}
	r.ok("config %s is valid", *path)
	diagnose(ctx, r, cfg, checkHeadset)
	return fmtReport(stdout, r)
}

// diagnose is the doctor's report for a loaded config. headset checks the
// sound device (doctor opens it; the running daemon, which holds it open,
// reports what it sees).
func diagnose(ctx context.Context, r *tlsReport, cfg config.Config, headset func(*tlsReport, config.Config)) {
	if cfg.Fleet.Enabled() {
		checkFleet(ctx, r, cfg) // fleet.go: the fleet certificates and the edge instead
	} else {
		checkDirect(ctx, r, cfg)
	}

	r.ok("SRTP key exchange for our calls: %s (Meta's offers choose their own)", cfg.Media.KeyExchange)
	checkClock(r, time.Now())

	headset(r, cfg)
	checkSetup(r, cfg)

	if want := cfg.Board.HeadsetKeys; want != "off" {
		switch found, desc, err := board.ProbeHeadsetButton(want); {
		case err != nil && found:
			r.warn("headset call button %s not usable: %v (the udev rule 60-waphone-headset.rules covers Jabra, Poly, EPOS, Yealink, C-Media; add your headset's vendor id)", desc, err)
		case err != nil:
			r.warn("%v", err)
		case found:
			r.ok("headset call button: %s", desc)
		default:
			r.ok("no headset with a HID call button plugged in (board.headset_keys = %q)", want)
		}
	}

	if chip := cfg.Board.Chip; chip != "" {
		dev := chip
		if !strings.HasPrefix(dev, "/") {
			dev = filepath.Join("/dev", chip)
		}
		if _, err := os.Stat(dev); err != nil {
			r.bad("GPIO chip %s: %v (board.chip; `ls /dev/gpiochip*`)", dev, err)
		} else {
			r.ok("GPIO chip %s present", dev)
		}
	} else {
		r.ok("no GPIO configured (board.chip is empty)")
	}

	if g := cfg.Graph; g.TokenFile != "" && g.PhoneNumberID != "" {
		checkGraph(ctx, r, cfg)
	} else {
		r.warn("Graph API not configured: cannot compare Meta's settings with the config")
	}

	if cfg.Fleet.Enabled() {
		// A desk does not listen: sip.allow does not apply.
	} else if len(cfg.SIP.Allow) == 0 {
		r.warn("sip.allow is empty: anyone may open TLS connections (fill it with Meta's webhook IP ranges)")
	} else {
		r.ok("sip.allow has %d entries", len(cfg.SIP.Allow))
	}
}

// checkSetup warns about a phone that would run but not work as a desk
// phone: calls answered into silence, a call nobody can answer, a WAV file
// that is not there, a state directory it cannot write.
func checkSetup(r *tlsReport, cfg config.Config) {
	capSpec, _ := cfg.Audio.CaptureSpec() // config.Load has checked them
	playSpec, _ := cfg.Audio.PlaybackSpec()
	switch {
	case capSpec.Kind == audio.KindNull && cfg.Phone.Answer == "auto":
		r.warn("audio.capture = \"null\" with phone.answer = \"auto\": every call is answered and the caller hears silence (set capture to your headset: \"default\" or \"device:NAME\")")
	case capSpec.Kind == audio.KindNull:
		r.warn("audio.capture = \"null\": callers will hear silence (set it to your headset)")
	}
	if playSpec.Kind == audio.KindNull {
		r.warn("audio.playback = \"null\": you will not hear the caller")
	}
	for _, sp := range []struct {
		key  string
		spec audio.Spec
	}{{"audio.capture", capSpec}, {"audio.playback", playSpec}} {
		if sp.spec.Kind != audio.KindWAV {
			continue
		}
		if sp.key == "audio.capture" {
			if _, err := os.Stat(sp.spec.Path); err != nil {
				r.bad("%s: %v (the WAV file to play to callers)", sp.key, err)
			}
		} else if err := unix.Access(filepath.Dir(sp.spec.Path), unix.W_OK); err != nil {
			r.bad("%s: cannot write beside %s: %v", sp.key, sp.spec.Path, err)
		}
	}
	if cfg.Phone.Answer == "button" && cfg.Board.ButtonLine == "" && (cfg.Board.HeadsetKeys == "off" || cfg.Board.HeadsetKeys == "") {
		r.warn("phone.answer = \"button\" but there is no button (board.button_line) and headset keys are off: calls can only be answered with `waphone answer`")
	}
	dir := stateDir(cfg)
	existing := dir // the directory, or the nearest parent it would be made in
	for {
		if _, err := os.Stat(existing); err == nil || filepath.Dir(existing) == existing {
			break
		}
		existing = filepath.Dir(existing)
	}
	fi, err := os.Stat(existing)
	if err == nil && !fi.IsDir() {
		err = errors.New("not a directory")
	}
	if err == nil {
		err = unix.Access(existing, unix.W_OK)
	}
	switch {
	case err != nil:
		r.warn("state directory %s: %s is not writable: %v (the call history cannot be kept)", dir, existing, err)
	case existing != dir:
		r.ok("state directory %s will be created", dir)
	default:
		r.ok("state directory %s is writable", dir)
	}
}

// checkDirect checks what Meta needs of a phone it reaches directly: the
// SIP password, the public certificate, the TLS listener.
func checkDirect(ctx context.Context, r *tlsReport, cfg config.Config) {
	if pwPath := cfg.SIP.PasswordFile; pwPath == "" {
		r.bad("sip.password_file is not set (fix: `waphone setup` fetches Meta's SIP password)")
	} else if _, err := config.ReadPassword(pwPath); err != nil {
		r.bad("SIP password: %v", err)
	} else {
		r.ok("SIP password file readable and private")
	}

	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	switch {
	case cfg.TLS.ACME:
		checkACME(ctx, r, cfg, roots)
	case cfg.SIP.CertFile != "":
		c := checkCertFiles(cfg.SIP.CertFile, cfg.SIP.KeyFile, cfg.SIP.Hostname, roots, time.Now())
		r.lines, r.fail = append(r.lines, c.lines...), r.fail || c.fail
	default:
		r.bad("sip.cert_file is not set: Meta needs a certificate for %s", cfg.SIP.Hostname)
	}

	_, port, _ := net.SplitHostPort(cfg.SIP.Listen)
	local := net.JoinHostPort("127.0.0.1", port)
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", local,
		&tls.Config{ServerName: cfg.SIP.Hostname, InsecureSkipVerify: true}); err != nil { // the cert is checked above
		r.bad("nothing answers TLS on %s: %v (is `waphone run` running?)", local, err)
	} else {
		c.Close()
		r.ok("waphone answers TLS on port %s", port)
	}
}

// checkHeadset opens the sound device the audio specs name, as the daemon
// would, and says whether it is there.
func checkHeadset(r *tlsReport, cfg config.Config) {
	capSpec, _ := cfg.Audio.CaptureSpec() // config.Load has checked both
	playSpec, _ := cfg.Audio.PlaybackSpec()
	hc, ok := audio.HeadsetFor(capSpec, playSpec)
	if !ok {
		r.ok("audio.capture %q and audio.playback %q name no sound device: nothing to find", cfg.Audio.Capture, cfg.Audio.Playback)
		return
	}
	hc.Logger = slog.New(slog.DiscardHandler) // the report says it, once
	h, err := audio.OpenHeadset(hc)
	switch {
	case err != nil:
		r.bad("sound system: %v", err)
		return
	case !h.Plugged():
		r.bad("headset (capture %q, playback %q) not found (plug it in; `aplay -l` lists sound cards)", hc.Capture, hc.Playback)
	default:
		r.ok("headset found: %s", h.Stats().Device)
	}
	_ = h.Close()
}

// checkClock fails on an unsynchronised clock: a Pi has no RTC and boots
// in 1970, where every certificate looks invalid.
func checkClock(r *tlsReport, now time.Time) {
	if now.Year() < 2024 {
		r.bad("the clock says %s: TLS cannot work (fix: network time; is systemd-timesyncd running?)", now.Format(time.RFC3339))
		return
	}
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	switch {
	case err != nil:
		r.warn("cannot read the clock's sync state: %v", err)
	case state == unix.TIME_ERROR || tx.Status&unix.STA_UNSYNC != 0:
		r.warn("the clock is not synchronised (timedatectl; systemd-timesyncd)")
	default:
		r.ok("the clock is synchronised")
	}
}

func checkGraph(ctx context.Context, r *tlsReport, cfg config.Config) {
	tok, err := config.ReadToken(cfg.Graph.TokenFile)
	if err != nil {
		r.bad("Graph token: %v", err)
		return
	}
	c := &graph.Client{BaseURL: cfg.Graph.BaseURL, Version: cfg.Graph.Version, PhoneNumberID: cfg.Graph.PhoneNumberID, Token: tok}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	s, err := c.Get(ctx, false)
	if err != nil {
		var ge *graph.Error
		if errors.As(err, &ge) {
			r.bad("Graph: %v", ge)
		} else {
			r.bad("Graph unreachable: %v", err)
		}
		return
	}
	if s.Calling.SIP == nil || s.Calling.SIP.Status != "ENABLED" {
		r.bad("SIP is not enabled on the number at Meta (fix: `waphone setup`)")
		return
	}
	found, metaPort := false, 0
	var elsewhere []string
	for _, srv := range s.Calling.SIP.Servers {
		port := srv.EffectivePort()
		if strings.EqualFold(srv.Hostname, cfg.SIP.Hostname) {
			found, metaPort = true, port
		}
		elsewhere = append(elsewhere, net.JoinHostPort(srv.Hostname, strconv.Itoa(port)))
	}
	switch {
	case !found && len(elsewhere) == 0:
		r.bad("Meta has no SIP server for this number (fix: `waphone setup`)")
	case !found:
		r.bad("Meta sends this number's calls to %s, not to %s (fix: `waphone setup`)", strings.Join(elsewhere, ", "), cfg.SIP.Hostname)
	default:
		r.ok("Meta sends this number's calls to %s", cfg.SIP.Hostname)
		if _, p, _ := net.SplitHostPort(cfg.SIP.Listen); p != strconv.Itoa(metaPort) {
			r.warn("Meta dials port %d, waphone listens on %s (fine only if your router forwards %d to it; else `waphone setup`)", metaPort, p, metaPort)
		}
	}
	if have := s.Calling.SRTPKeyExchangeProtocol; have != "" && !strings.EqualFold(have, cfg.Media.KeyExchange) {
		r.warn("Meta's SRTP key exchange is %s, the config says %s", have, strings.ToUpper(cfg.Media.KeyExchange))
	}
}

// checkACME checks a certificate waphone gets by itself: the one cached
// (its chain, name and expiry, as for files), the challenge's port and
// whether the CA answers.
func checkACME(ctx context.Context, r *tlsReport, cfg config.Config, roots *x509.CertPool) {
	challenge := cfg.TLS.Challenge
	cached := acmecert.CachedFile(stateDir(cfg), cfg.SIP.Hostname, challenge)
	if _, err := os.Stat(cached); err != nil {
		r.warn("ACME: no certificate for %s obtained yet (%s); `waphone run` gets one from the CA", cfg.SIP.Hostname, cached)
	} else {
		c := checkCertFiles(cached, cached, cfg.SIP.Hostname, roots, time.Now())
		r.lines, r.fail = append(r.lines, c.lines...), r.fail || c.fail
	}
	switch challenge {
	case "dns-01":
		r.ok("ACME dns-01: tls.dns_hook %q publishes the TXT record; no port needs to be open", cfg.TLS.DNSHook)
	default:
		listen, public := challengeListen(cfg)
		ln, err := net.Listen("tcp", listen)
		switch {
		case err == nil:
			_ = ln.Close()
			r.ok("ACME %s: waphone can listen on %s (forward TCP %s from the internet to it)", challenge, listen, public)
		case errors.Is(err, unix.EADDRINUSE):
			r.ok("ACME %s: %s is in use (by waphone run, or by another server: then the CA cannot reach us)", challenge, listen)
		default:
			r.bad("ACME %s: cannot listen on %s: %v (the unit grants CAP_NET_BIND_SERVICE; run by hand as root, or set tls.challenge_listen)", challenge, listen, err)
		}
	}
	dir := cfg.TLS.CA
	if dir == "" {
		dir = acmecert.LetsEncrypt
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	if cfg.TLS.CAFile != "" {
		if pem, err := os.ReadFile(cfg.TLS.CAFile); err == nil {
			pool := roots.Clone()
			pool.AppendCertsFromPEM(pem)
			hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, dir, nil)
	if res, err := hc.Do(req); err != nil {
		r.warn("ACME CA %s unreachable: %v (renewal will retry)", dir, err)
	} else {
		_ = res.Body.Close()
		if res.StatusCode == http.StatusOK {
			r.ok("ACME CA %s answers", dir)
		} else {
			r.warn("ACME CA %s answered %s", dir, res.Status)
		}
	}
}

// challengeListen is where the tls-alpn-01/http-01 challenge is answered,
// and the public port the CA connects to.
func challengeListen(cfg config.Config) (listen, public string) {
	public = "443"
	if cfg.TLS.Challenge == "http-01" {
		public = "80"
	}
	if cfg.TLS.ChallengeListen != "" {
		return cfg.TLS.ChallengeListen, public
	}
	return ":" + public, public
}
