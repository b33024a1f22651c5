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
	"github.com/waphone/waphone/control"
	"github.com/waphone/waphone/history"
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

func main() {
	// sipgo logs some connection bookkeeping (e.g. "TCP ref went negative"
	// when a connection closes at shutdown) through its package-wide logger;
	// keep that to real errors unless someone debugs. Set once, before any
	// sipgo goroutine runs.
	quietSipgo()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runCtx(ctx, args, stdout, stderr)
}

// runCtx runs one command until it ends or ctx does (Ctrl-C, SIGTERM).
func runCtx(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
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
	case "answer", "hangup", "mute", "status", "events":
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
		v, c := buildVersion()
		fmt.Fprintf(stdout, "waphone %s (commit %s)\n", v, c)
	case "help", "-h", "--help":
		return cmdHelp(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "waphone: unknown command %q\n\n", cmd)
		usage(stderr)
		return 2
	}
	if err == nil {
		return 0
	}
	var ce *sip.CallError
	var he helpError
	switch {
	case errors.As(err, &he):
		printCommandHelp(stdout, he.fs)
		return 0
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

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	trace := fs.Bool("sip-trace", false, "log every SIP message sent and received, secrets masked (as [log] sip_trace)")
	path := fs.String("config", defaultConfig, "config file (TOML)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	memProfile := fs.String("memprofile", "", "write a heap profile to this file at shutdown")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	base, err := config.Load(*path)
	if err != nil {
		return configError{err}
	}
	cfg, err := withOverrides(base) // the console's saved settings
	if err != nil {
		return configError{err}
	}
	log, level := newLevelLogger(cfg.Log.Level)
	if *trace || cfg.Log.SIPTrace {
		traceSIP(log)
	}
	applyRuntime(cfg.Runtime, log)
	stopProfiles, err := startProfiles(*cpuProfile, *memProfile, log)
	if err != nil {
		return err
	}
	defer stopProfiles()
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
	ctl, err := control.Listen(cfg.Phone.ControlSocket, d.controlled(getCert), log)
	if err != nil {
		return err
	}
	d.serve(ctx, getCert)
	d.openBoard(ctx)
	surfacesDone, err := startSurfaces(ctx, d.surfaces(base, getCert))
	if err != nil {
		return configError{err}
	}
	defer surfacesDone()
	go reloadOnHangup(ctx, d, *path, level)
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
	writeGoroutines(*memProfile, log)
	log.Info("shutting down")
	_ = notify.Stopping()
	<-done
	return nil
}

func cmdControl(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	fs := newFlags(cmd, stderr)
	socket := controlSocketFlags(fs)
	asJSON := new(bool)
	if cmd == "status" || cmd == "events" {
		asJSON = fs.Bool("json", false, "print JSON (documented in docs/control.md) instead of text")
	}
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		printCommandHelp(stderr, fs)
		return errUsage
	}
	if cmd == "events" {
		return followEvents(ctx, socket(stderr), *asJSON, stdout)
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
	switch {
	case cmd == "status" && *asJSON:
		_, err := fmt.Fprintf(stdout, "%s\n", rep.Status)
		return err
	case cmd == "status":
		return printStatus(stdout, rep.Status)
	case cmd == "mute" && rep.Muted != nil:
		fmt.Fprintln(stdout, map[bool]string{true: "muted", false: "unmuted"}[*rep.Muted])
		return nil
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

// followEvents prints the daemon's events until ctx ends (Ctrl-C).
func followEvents(ctx context.Context, socket string, asJSON bool, stdout io.Writer) error {
	enc := json.NewEncoder(stdout)
	_, err := control.Stream(ctx, socket, control.Request{Cmd: "events"}, func(ev phone.Event) {
		if asJSON {
			_ = enc.Encode(ev)
			return
		}
		printEvent(stdout, ev)
	})
	if errors.Is(err, context.Canceled) {
		return nil // Ctrl-C is how one stops following
	}
	return err
}

func cmdCall(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("call", stderr)
	path := fs.String("config", defaultConfig, "config file (TOML)")
	if err := parseArgs(fs, args); err != nil {
		return err
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
		rep, err := control.Stream(cctx, cfg.Phone.ControlSocket, control.Request{Cmd: "call", Number: number}, func(ev phone.Event) {
			switch ev.Kind {
			case phone.EvDialing:
				fmt.Fprintf(stdout, "calling %s ...\n", number)
			case phone.EvRingback:
				fmt.Fprintf(stdout, "ringing (%s)\n", ev.Detail)
			}
		})
		if errors.Is(err, context.Canceled) {
			return errors.New("cancelled: the phone hung up the call")
		}
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
	events, stop := d.phone.Subscribe(16)
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for ev := range events {
			if ev.Kind == phone.EvRingback {
				fmt.Fprintf(stdout, "ringing (%s)\n", ev.Detail)
			}
		}
	}()
	fmt.Fprintf(stdout, "calling %s ...\n", number)
	err = d.phone.Call(ctx, number)
	stop()
	<-printed
	if err != nil {
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

// reloadOnHangup reloads the config on SIGHUP until ctx ends (instead of
// the signal's default: death).
func reloadOnHangup(ctx context.Context, d *daemon, path string, level *slog.LevelVar) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := d.reload(path, level); err != nil {
				d.log.Error("SIGHUP: the config has an error; nothing changed", "err", err)
			}
		}
	}
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
	fs := newFlags("history", stderr)
	path := fs.String("config", defaultConfig, "config file (TOML)")
	asJSON := fs.Bool("json", false, "one JSON object per call")
	sinceStr := fs.String("since", "", "only calls since a duration ago (24h) or a date (2006-01-02)")
	if err := parseArgs(fs, args); err != nil {
		return err
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
	fs := newFlags("dtmf", stderr)
	socket := controlSocketFlags(fs)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		printCommandHelp(stderr, fs)
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
