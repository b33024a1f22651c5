// Command waphone is a WhatsApp Business Calling desk phone: Meta's SIP
// peer and the phone in one binary.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/internal/control"
	"github.com/waphone/waphone/internal/sdnotify"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

// Stamped by the Makefile (-ldflags -X).
var (
	version = "dev"
	commit  = "unknown"
)

const defaultConfig = "/etc/waphone/waphone.toml"

func usage(w io.Writer) {
	fmt.Fprint(w, `waphone: a WhatsApp Business Calling desk phone (SIP over TLS, SRTP, Opus)

usage:
  waphone run -config FILE          run the phone (the daemon)
  waphone demo                      a demo call each way against a built-in Meta emulator
  waphone call [-config FILE] +NUMBER
                                    call a WhatsApp user (through the daemon if it runs)
  waphone permission [-config FILE] [--request [-text T | -template NAME -lang CODE]] +NUMBER|BSUID
                                    may we call this user now (Meta's call permissions); ask them
  waphone init [-config FILE] [flags]
                                    first run: ask for (or take as flags) hostname, number,
                                    certificate, headset, button, password; write it all; run doctor
  waphone dtmf [-config FILE | -socket PATH] DIGITS
                                    send DTMF (0-9 * # A-D) on the call in progress
  waphone answer|hangup|mute|status [-config FILE | -socket PATH]
                                    drive the running daemon over its control socket
                                    (members of the waphone group may; only the socket is read)
  waphone setup -config FILE [--dry-run|--show|--reset-password]
                                    configure the number's SIP settings at Meta, store the password
  waphone check-tls -config FILE    check the certificate against sip.hostname
  waphone example-config            print a commented config with every key
  waphone doctor -config FILE       check everything a working phone needs
  waphone history [-config FILE] [--json] [--since 24h|2006-01-02]
                                    the call log
  waphone version

exit status: 0 ok, 1 failed, 2 bad usage or config
`)
}

func main() {
	// sipgo logs some connection bookkeeping (e.g. "TCP ref went negative"
	// when a connection closes at shutdown) through its package-wide logger;
	// keep that to real errors unless someone debugs. Set once, before any
	// sipgo goroutine runs.
	quietSipgo()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = cmdRun(ctx, rest, stderr)
	case "demo":
		err = cmdDemo(ctx, rest, stdout, stderr)
	case "call":
		err = cmdCall(ctx, rest, stdout, stderr)
	case "dtmf":
		err = cmdDTMF(ctx, rest, stdout, stderr)
	case "permission":
		err = cmdPermission(ctx, rest, stdout, stderr)
	case "answer", "hangup", "mute", "status":
		err = cmdControl(ctx, cmd, rest, stdout, stderr)
	case "doctor":
		err = asUnitSeesCredentials(rest, func() error { return cmdDoctor(ctx, rest, stdout, stderr) })
	case "init":
		err = cmdInit(ctx, rest, os.Stdin, stdout, stderr)
	case "history":
		err = cmdHistory(rest, stdout, stderr)
	case "setup":
		err = cmdSetup(ctx, rest, stdout, stderr)
	case "check-tls":
		err = cmdCheckTLS(rest, stdout, stderr)
	case "edge-config": // fleet.go
		err = cmdEdgeConfig(rest, stdout, stderr)
	case "example-config":
		fmt.Fprint(stdout, config.Example())
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "waphone %s (commit %s)\n", version, commit)
	case "help", "-h", "--help":
		usage(stdout)
	default:
		fmt.Fprintf(stderr, "waphone: unknown command %q\n\n", cmd)
		usage(stderr)
		return 2
	}
	if err == nil {
		return 0
	}
	var ce *sip.CallError
	switch {
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		return 2
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "waphone %s: %v\n", cmd, err)
		return 1
	case errors.As(err, new(configError)):
		fmt.Fprintf(stderr, "waphone %s: %v\n", cmd, err)
		return 2
	}
	fmt.Fprintf(stderr, "waphone %s: %v\n", cmd, err)
	return 1
}

type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

func loadConfig(fs *flag.FlagSet, args []string) (config.Config, error) {
	path := fs.String("config", defaultConfig, "config file (TOML)")
	if err := fs.Parse(args); err != nil {
		return config.Config{}, errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return cfg, configError{err}
	}
	return cfg, nil
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log.Level)
	getCert, err := certSource(ctx, cfg, log)
	if err != nil {
		return configError{err}
	}
	d, err := newDaemon(cfg, log, daemonOptions{listen: true})
	if err != nil {
		return configError{err}
	}
	defer d.close()
	if d.history, err = history.Open(stateDir(cfg)); err != nil {
		log.Error("call history unavailable; calls will not be logged to disk", "err", err)
	} else {
		keepHistory(ctx, d.history, log)
		if w := cfg.Webhook; w.Listen != "" {
			if _, err := startWebhooks(ctx, w.Listen, w.Path, w.VerifyTokenFile, w.AppSecretFile, getCert, d.history, log); err != nil {
				return configError{err}
			}
		}
	}
	ctl, err := control.Listen(cfg.Phone.ControlSocket, statusWithGuard{d.phone, d.ep}, log)
	if err != nil {
		return err
	}
	d.serve(ctx, getCert)
	d.openBoard(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctl.Serve(ctx)
	}()
	log.Info("waphone running", "version", version, "number", cfg.SIP.Number, "answer", cfg.Phone.Answer,
		"capture", cfg.Audio.Capture, "playback", cfg.Audio.Playback)
	// systemd: READY only now that TLS listens and the audio spec opened.
	notify := sdnotify.FromEnv()
	if err := notify.Ready(); err != nil {
		log.Warn("telling systemd we are ready failed", "err", err)
	}
	watchdog(ctx, notify, d.phone, log)
	<-ctx.Done()
	log.Info("shutting down")
	_ = notify.Stopping()
	<-done
	return nil
}

func cmdControl(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := controlSocketFlags(fs)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := control.Do(cctx, socket(stderr), control.Request{Cmd: cmd})
	if err != nil {
		return err
	}
	if !rep.OK {
		return errors.New(rep.Error)
	}
	if cmd == "status" {
		return printStatus(stdout, rep.Status)
	}
	if cmd == "mute" && rep.Muted != nil {
		fmt.Fprintln(stdout, map[bool]string{true: "muted", false: "unmuted"}[*rep.Muted])
		return nil
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

// statusWithGuard adds the SIP listener's defence counters to the phone's
// status, so that `waphone status` shows an attack the phone never saw.
type statusWithGuard struct {
	*phone.Phone
	ep *sip.Endpoint
}

func (s statusWithGuard) StatusJSON() ([]byte, error) {
	notAllowed, overLimit := s.ep.Refused()
	return json.Marshal(struct {
		phone.Status
		Guard guardStatus `json:"guard"`
	}{s.Phone.Status(), guardStatus{NotAllowed: notAllowed, OverLimit: overLimit, Throttled: s.ep.Throttled()}})
}

type guardStatus struct {
	NotAllowed uint64 `json:"refused_not_allowed"`
	OverLimit  uint64 `json:"refused_over_limit"`
	Throttled  int64  `json:"throttled_invites"`
}

func printStatus(w io.Writer, raw json.RawMessage) error {
	var st struct {
		phone.Status
		Guard *guardStatus `json:"guard"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("status reply: %w", err)
	}
	fmt.Fprintf(w, "state: %s\n", st.State)
	if c := st.Call; c != nil {
		fmt.Fprintf(w, "call: %s since %s\n", c.Remote, st.Since.Format(time.RFC3339))
		for _, kv := range [][2]string{{"wacid", c.WACID}, {"user_id", c.UserID}, {"parent_user_id", c.ParentUserID},
			{"username", c.Username}, {"cta_payload", c.CTAPayload}, {"deeplink_payload", c.DeeplinkPayload}} {
			if kv[1] != "" {
				fmt.Fprintf(w, "  %s: %s\n", kv[0], kv[1])
			}
		}
	}
	if st.Muted {
		fmt.Fprintln(w, "microphone: muted")
	}
	if st.Audio != nil {
		printJSON(w, "audio device", st.Audio)
	}
	if st.Media != nil {
		printJSON(w, "media", st.Media)
	}
	if st.LastCall != nil {
		printJSON(w, "last call", st.LastCall)
	}
	if g := st.Guard; g != nil && (g.NotAllowed+g.OverLimit > 0 || g.Throttled > 0) {
		fmt.Fprintf(w, "refused: %d connections outside sip.allow, %d over the connection limits, %d INVITEs after failed digest answers\n",
			g.NotAllowed, g.OverLimit, g.Throttled)
	}
	return nil
}

// printJSON prints one part of the status as a JSON line (decoded and
// encoded again, so it can only say what phone.Status holds).
func printJSON(w io.Writer, name string, v any) {
	if b, err := json.Marshal(v); err == nil {
		fmt.Fprintf(w, "%s: %s\n", name, b)
	}
}

func cmdCall(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfig, "config file (TOML)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: waphone call [-config FILE] +NUMBER|BSUID")
		return errUsage
	}
	number, err := sip.NormalizeTarget(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "waphone call: %v\n", err)
		return errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return configError{err}
	}
	// Through the daemon when it runs: it owns the headset and the port.
	if _, err := os.Stat(cfg.Phone.ControlSocket); err == nil {
		cctx, cancel := context.WithTimeout(ctx, 100*time.Second)
		defer cancel()
		rep, err := control.Do(cctx, cfg.Phone.ControlSocket, control.Request{Cmd: "call", Number: number})
		if err == nil {
			if !rep.OK {
				return explainCallFailure(errors.New(rep.Error), number)
			}
			fmt.Fprintf(stdout, "answered: the call to %s is up on the phone\n", number)
			return nil
		}
	}
	// Standalone: place the call from this process and stay until it ends.
	log := newLogger(cfg.Log.Level)
	d, err := newDaemon(cfg, log, daemonOptions{})
	if err != nil {
		return configError{err}
	}
	defer d.close()
	if err := d.phone.Call(ctx, number); err != nil {
		return explainCallFailure(err, number)
	}
	fmt.Fprintf(stdout, "answered: talking to %s (Ctrl-C hangs up)\n", number)
	done := ctx.Done()
	for d.phone.Status().State != phone.Idle {
		select {
		case <-done:
			_ = d.phone.Hangup()
			done = nil // hang up once, then wait for the BYE to finish
		case <-time.After(200 * time.Millisecond):
		}
	}
	if last := d.phone.Status().LastCall; last != nil {
		fmt.Fprintf(stdout, "call ended (%s) after %s\n", last.EndedBy, last.Duration)
	}
	return nil
}

// watchdog pings systemd (WATCHDOG=1, half of WatchdogSec=) only while
// the phone passes its health check: its lock can be taken and a call's
// media loops tick. A wedged phone stops the pings and systemd restarts it.
func watchdog(ctx context.Context, n sdnotify.Notifier, p *phone.Phone, log *slog.Logger) {
	every, ok := sdnotify.WatchdogInterval()
	if !ok || !n.Enabled() {
		return
	}
	go pingWhileHealthy(ctx, n, every, func() (string, error) {
		if err := p.Check(every); err != nil {
			return "", err
		}
		return "phone " + string(p.Status().State), nil
	}, log)
}

// pingWhileHealthy runs check every interval and pings when it passes.
// A check that hangs hangs the pings with it, which is the point.
func pingWhileHealthy(ctx context.Context, n sdnotify.Notifier, every time.Duration, check func() (string, error), log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		status, err := check()
		if err != nil {
			log.Error("unhealthy: not pinging the watchdog, systemd will restart waphone", "err", err)
			_ = n.Status("unhealthy: " + err.Error())
			continue
		}
		_ = n.Status(status)
		if err := n.Watchdog(); err != nil {
			log.Warn("watchdog ping failed", "err", err)
		}
	}
}

func cmdHistory(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfig, "config file (TOML)")
	asJSON := fs.Bool("json", false, "one JSON object per call")
	sinceStr := fs.String("since", "", "only calls since a duration ago (24h) or a date (2006-01-02)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return configError{err}
	}
	var since time.Time
	if *sinceStr != "" {
		if d, err := time.ParseDuration(*sinceStr); err == nil {
			since = time.Now().Add(-d)
		} else if t, err := time.ParseInLocation("2006-01-02", *sinceStr, time.Local); err == nil {
			since = t
		} else {
			fmt.Fprintf(stderr, "--since %q: want a duration like 24h or a date like 2026-11-01\n", *sinceStr)
			return errUsage
		}
	}
	store, err := history.Open(stateDir(cfg))
	if err != nil {
		return err
	}
	recs, torn, err := store.Read(since)
	if err != nil {
		return err
	}
	if torn > 0 {
		fmt.Fprintf(stderr, "warning: %d unreadable line(s) skipped in %s (a power cut mid-write)\n", torn, store.Path())
	}
	events, tornWH, err := store.ReadWebhooks(since)
	if err != nil {
		return err
	}
	if tornWH > 0 {
		fmt.Fprintf(stderr, "warning: %d unreadable webhook line(s) skipped (a power cut mid-write)\n", tornWH)
	}
	return printHistory(stdout, recs, events, *asJSON)
}

func cmdDTMF(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dtmf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := controlSocketFlags(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: waphone dtmf [-config FILE | -socket PATH] DIGITS")
		return errUsage
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := control.Do(cctx, socket(stderr), control.Request{Cmd: "dtmf", Digits: fs.Arg(0)})
	if err != nil {
		return err
	}
	if !rep.OK {
		return errors.New(rep.Error)
	}
	fmt.Fprintln(stdout, "sent")
	return nil
}
