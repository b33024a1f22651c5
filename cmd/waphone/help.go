package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"strings"
)

// command is one subcommand's help: what `waphone help NAME` and
// `waphone NAME -h` print above its flags.
type command struct {
	args, short, about string
}

// commands names every subcommand (the names are a contract with scripts).
var commands = map[string]command{
	"run":            {"-config FILE [-cpuprofile FILE] [-memprofile FILE]", "run the phone (the daemon)", "Run the phone: the SIP server Meta calls, the headset, the button and LED, the control socket, and the surfaces that are configured (console, metrics, MQTT, webhooks). SIGHUP reloads the config; SIGTERM/Ctrl-C stops."},
	"demo":           {"[-talk 2s]", "demo calls against the built-in Meta emulator", "Four demo calls against the built-in Meta emulator on loopback (each direction, SDES and DTLS-SRTP), a tone each way, checked on the far side. Nothing leaves the machine."},
	"call":           {"[-config FILE] +NUMBER|BSUID", "call a WhatsApp user", "Call a WhatsApp user, by phone number or by business-scoped user ID. Through the running daemon when there is one (progress is printed; Ctrl-C cancels), otherwise from this process until the call ends."},
	"permission":     {"[-config FILE] [--request [-text T | -template NAME -lang CODE]] +NUMBER|BSUID", "may we call this user now; ask them", "Show whether the business may call this WhatsApp user now (Meta's call permissions), or ask the user for permission."},
	"init":           {"[-config FILE] [flags]", "first-run set-up: write the config and the password", "First run: ask for (or take as flags) the SIP hostname, business number, certificate, headset, button and Meta's SIP password; write the config and the password credential; run doctor."},
	"answer":         {"[-config FILE | -socket PATH]", "answer the ringing call", "Answer the ringing call on the running daemon."},
	"hangup":         {"[-config FILE | -socket PATH]", "hang up, decline or cancel the current call", "Hang up (or decline, or cancel) the current call on the running daemon."},
	"mute":           {"[-config FILE | -socket PATH]", "mute or unmute the microphone", "Mute or unmute the microphone during a call (media keeps flowing)."},
	"dtmf":           {"[-config FILE | -socket PATH] DIGITS", "send DTMF digits on the call", "Send DTMF digits (0-9 * # A-D) on the call in progress (RFC 4733)."},
	"status":         {"[-config FILE | -socket PATH] [--json]", "the running phone's state", "The running daemon's state: the call, its quality, the last call, the headset, uptime, certificate expiry, refused connections. --json prints the documented JSON (docs/control.md)."},
	"events":         {"[-config FILE | -socket PATH] [--json]", "follow the running phone's events", "Follow the running daemon's events (ringing, answered, ended, muted, ...) until interrupted; --json prints one JSON object per line."},
	"setup":          {"-config FILE [--dry-run|--show|--reset-password]", "configure the number's SIP settings at Meta", "Configure the number's SIP settings at Meta through the Graph API and store Meta's SIP password (mode 0600)."},
	"check-tls":      {"-config FILE [-connect HOST:PORT]", "check the SIP certificate as Meta will", "Check the SIP certificate against sip.hostname the way Meta will (or a running server's)."},
	"doctor":         {"-config FILE", "check everything a working phone needs", "Check everything a working phone needs: one ok/warn/FAIL line each, with what to do."},
	"history":        {"[-config FILE] [--json] [--since 24h|2006-01-02]", "the call log", "The call log, with Meta's webhook events joined to each call."},
	"edge-config":    {"-config FILE [-check|-example]", "fleet mode: the Kamailio edge's configuration", "Fleet mode: render the Kamailio edge's configuration from a small TOML (docs/fleet.md)."},
	"example-config": {"", "a commented config with every key", "Print a commented config with every key and its default."},
	"version":        {"", "print the version", "Print the version."},
	"help":           {"[COMMAND]", "describe waphone, or one command", "Describe waphone, or one command."},
}

// helpError asks run to print a command's help on stdout and exit 0.
type helpError struct{ fs *flag.FlagSet }

func (helpError) Error() string { return "help requested" }

// newFlags is a command's flag set: errors to stderr, help on request.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // parseArgs prints what is needed
	return fs
}

// parseArgs parses flags before, between and after the positional
// arguments (`waphone call +1… -config f` works), leaving the positional
// ones in fs.Args(). -h asks for the command's help.
func parseArgs(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return helpError{fs}
			}
			printCommandHelp(fs.Output(), fs)
			return errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}

// printCommandHelp prints a command's synopsis, what it does and its flags.
func printCommandHelp(w io.Writer, fs *flag.FlagSet) {
	c := commands[fs.Name()]
	fmt.Fprintf(w, "usage: waphone %s %s\n\n%s\n", fs.Name(), c.args, wrap(c.about, 76))
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nflags:")
		out := fs.Output()
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(out)
	}
}

// cmdHelp: `waphone help` or `waphone help CMD`.
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stdout)
		return 0
	}
	name := args[0]
	if _, ok := commands[name]; !ok {
		fmt.Fprintf(stderr, "waphone help: no command %q\n\n", name)
		usage(stderr)
		return 2
	}
	switch name {
	case "example-config", "version", "help", "demo":
		// no flag set to build (or none worth one): the table says it all
		printCommandHelp(stdout, newFlags(name, stderr))
		return 0
	}
	return run([]string{name, "-h"}, stdout, stderr)
}

// usage is the general help.
func usage(w io.Writer) {
	fmt.Fprintln(w, "waphone: a WhatsApp Business Calling desk phone (SIP over TLS, SRTP, Opus)")
	fmt.Fprintln(w, "\nusage: waphone COMMAND [flags] [args]   (waphone help COMMAND, or COMMAND -h, for more)")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w)
	for _, n := range names {
		fmt.Fprintf(w, "  %-15s %s\n", n, commands[n].short)
	}
	fmt.Fprintln(w, "\nexit status: 0 ok, 1 failed, 2 bad usage or config")
}

// wrap breaks text into lines of at most width characters.
func wrap(text string, width int) string {
	var b strings.Builder
	n := 0
	for _, w := range strings.Fields(text) {
		if n > 0 && n+1+len(w) > width {
			b.WriteByte('\n')
			n = 0
		} else if n > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

// buildVersion is the version and commit the Makefile stamps in, or, for a
// plain `go build`/`go install`, what the Go toolchain recorded: the module
// version and the VCS revision (with "+dirty" for local changes).
func buildVersion() (v, c string) {
	v, c = version, commit
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return v, c
	}
	if v == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	if c == "unknown" {
		var rev, dirty string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			c = rev + dirty
		}
	}
	return v, c
}
