package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/graph"
	"github.com/waphone/waphone/sip"
)

// cmdPermission shows whether the business may call a WhatsApp user now
// (Meta's call permissions), and with --request asks the user for it.
func cmdPermission(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("permission", stderr)
	path := fs.String("config", defaultConfig, "config file (TOML)")
	request := fs.Bool("request", false, "send the user a call permission request message")
	text := fs.String("text", "", "with --request: the message's body (free form, inside a customer service window)")
	tmpl := fs.String("template", "", "with --request: an approved call permission request template (outside a customer service window)")
	lang := fs.String("lang", "", "with -template: the template's language code, e.g. en")
	usage := func() error {
		fmt.Fprintln(stderr, "usage: waphone permission [-config FILE] [--request [-text T | -template NAME -lang CODE]] +NUMBER|BSUID")
		return errUsage
	}
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usage()
	}
	if !*request && (*text != "" || *tmpl != "" || *lang != "") {
		fmt.Fprintln(stderr, "waphone permission: -text, -template and -lang go with --request")
		return usage()
	}
	if *text != "" && *tmpl != "" || (*tmpl == "") != (*lang == "") {
		fmt.Fprintln(stderr, "waphone permission: either -text, or -template with -lang")
		return usage()
	}
	target, err := sip.NormalizeTarget(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "waphone permission: %v\n", err)
		return errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return configError{err}
	}
	client, err := graphClient(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if *request {
		id, err := client.RequestCallPermission(ctx, graph.PermissionRequest{To: target, Text: *text, Template: *tmpl, Language: *lang})
		if err != nil {
			return explainGraphRefusal(err, target, true)
		}
		fmt.Fprintf(stdout, "asked %s for permission to call (message %s); the answer shows in `waphone permission %s`\n", target, id, target)
		return nil
	}
	p, err := client.CallPermissions(ctx, target)
	if err != nil {
		return explainGraphRefusal(err, target, false)
	}
	printPermissions(stdout, target, p, time.Now(), time.Local)
	return nil
}

// graphClient is the Graph client for the config's number, with its token.
func graphClient(cfg config.Config) (*graph.Client, error) {
	g := cfg.Graph
	if g.PhoneNumberID == "" {
		return nil, configError{errors.New("graph.phone_number_id is not set (the number's ID in WhatsApp Manager)")}
	}
	tok, err := config.ReadToken(g.TokenFile)
	if err != nil {
		return nil, configError{err}
	}
	return &graph.Client{BaseURL: g.BaseURL, Version: g.Version, PhoneNumberID: g.PhoneNumberID, Token: tok, Retries: 3, Backoff: time.Second}, nil
}

// explainGraphRefusal says plainly what to do when Meta refuses the
// calling endpoints because the number uses SIP.
func explainGraphRefusal(err error, target string, sending bool) error {
	var ge *graph.Error
	if !errors.As(err, &ge) || !ge.SIPEnabled() {
		return err
	}
	if sending {
		return fmt.Errorf("%w\nMeta refused the permission request message while SIP is enabled on this number: send it from the app that handles the number's messages (an approved call permission request template), then call", err)
	}
	return fmt.Errorf("%w\nMeta does not tell this number's permissions while SIP is enabled on it. What you can do: "+
		"ask anyway with `waphone permission --request %s` (the user's answer arrives in WhatsApp), "+
		"or just call: without permission Meta refuses the call and `waphone call` says so", err, target)
}

// printPermissions: the state, its expiry, and whether a call or a
// request may be made now, with Meta's limits.
func printPermissions(w io.Writer, target string, p *graph.CallPermissions, now time.Time, loc *time.Location) {
	at := func(t time.Time) string { return t.In(loc).Format("2006-01-02 15:04 MST") }
	exp := p.Permission.ExpirationTime.Time()
	switch {
	case p.Granted() && !exp.IsZero() && !exp.After(now):
		fmt.Fprintf(w, "%s: %s permission expired %s\n", target, p.Permission.Status, at(exp))
	case p.Granted() && !exp.IsZero():
		fmt.Fprintf(w, "%s: %s permission to call, until %s (%s left)\n", target, p.Permission.Status, at(exp), roughly(exp.Sub(now)))
	case p.Granted():
		fmt.Fprintf(w, "%s: %s permission to call\n", target, p.Permission.Status)
	case p.Permission.Status == "" || p.Permission.Status == graph.PermissionNone:
		fmt.Fprintf(w, "%s: no permission to call\n", target)
	default:
		fmt.Fprintf(w, "%s: permission %q\n", target, p.Permission.Status)
	}
	names := []struct{ action, label string }{{graph.ActionStartCall, "call"}, {graph.ActionRequestPermission, "permission request"}}
	for _, n := range names {
		a, ok := p.Action(n.action)
		if !ok {
			continue
		}
		verdict := "allowed now"
		if !a.CanPerformAction {
			verdict = "not allowed now"
		}
		var lim []string
		for _, l := range a.Limits {
			s := fmt.Sprintf("%d of %d used in %s", l.CurrentUsage, l.MaxAllowed, isoPeriod(l.TimePeriod))
			if t := l.LimitExpirationTime.Time(); !t.IsZero() {
				s += ", until " + at(t)
			}
			lim = append(lim, s)
		}
		if len(lim) > 0 {
			verdict += " (" + strings.Join(lim, "; ") + ")"
		}
		fmt.Fprintf(w, "  %-19s %s\n", n.label+":", verdict)
	}
	call, _ := p.Action(graph.ActionStartCall)
	ask, _ := p.Action(graph.ActionRequestPermission)
	if !call.CanPerformAction && !p.Granted() && ask.CanPerformAction {
		fmt.Fprintf(w, "ask the user: waphone permission --request %s [-text \"why you want to call\"]\n", target)
	}
}

// isoPeriod turns Meta's ISO 8601 periods (PT24H, P7D) into 24h, 7d.
func isoPeriod(p string) string {
	s := strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(p, "P"), "T"))
	if s == "" {
		return p
	}
	return strings.ReplaceAll(s, "t", "")
}

// roughly is a duration in days and hours (or minutes when short).
func roughly(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return fmt.Sprintf("%dm", (d+time.Minute-1)/time.Minute)
}

// explainCallFailure adds what to do when Meta refused a business-initiated
// call because the user has not allowed it. Through the daemon only the
// error's text arrives, so that is recognised too.
func explainCallFailure(err error, target string) error {
	if err == nil {
		return nil
	}
	var ce *sip.CallError
	no := errors.As(err, &ce) && ce.NoPermission()
	if ce == nil {
		msg := strings.ToLower(err.Error())
		no = (strings.Contains(msg, "call failed: 403") || strings.Contains(msg, "call failed: 480")) && strings.Contains(msg, "permission")
	}
	if !no {
		return err
	}
	return fmt.Errorf("%w\nthe WhatsApp user has not allowed this business to call them: ask with `waphone permission --request %s`, "+
		"and check with `waphone permission %s`", err, target, target)
}
