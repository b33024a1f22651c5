package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/graph"
)

// cmdSetup applies the config to Meta through the Graph API and stores
// the Meta-generated SIP password (mode 0600, atomically). A running
// daemon reads the password file on every use, so it needs no restart.
func cmdSetup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("setup", stderr)
	path := fs.String("config", defaultConfig, "config file (TOML)")
	dry := fs.Bool("dry-run", false, "print the request instead of sending it")
	reset := fs.Bool("reset-password", false, "make Meta generate a new SIP password and store it")
	show := fs.Bool("show", false, "show what Meta has now, against the config")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return configError{err}
	}
	g := cfg.Graph
	if g.PhoneNumberID == "" {
		return configError{errors.New("graph.phone_number_id is not set (the number's ID in WhatsApp Manager)")}
	}
	_, portStr, _ := net.SplitHostPort(cfg.SIP.Listen)
	port, _ := strconv.Atoi(portStr)
	desired := graph.Desired(cfg.SIP.Hostname, port, cfg.Media.KeyExchange, g.RequestURIUserParams, g.WebhookDelivery)
	client := &graph.Client{BaseURL: g.BaseURL, Version: g.Version, PhoneNumberID: g.PhoneNumberID, Retries: 3, Backoff: time.Second}
	if *dry {
		body, _ := json.MarshalIndent(desired, "", "  ")
		fmt.Fprintf(stdout, "POST %s/%s/%s/settings\nAuthorization: Bearer [token from %s]\nContent-Type: application/json\n\n%s\n",
			strings.TrimRight(g.BaseURL, "/"), g.Version, g.PhoneNumberID, g.TokenFile, body)
		return nil
	}
	if client.Token, err = config.ReadToken(g.TokenFile); err != nil {
		return configError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	switch {
	case *show:
		have, err := client.Get(ctx, false)
		if err != nil {
			return err
		}
		return printSettingsDiff(stdout, have, desired)
	case *reset:
		if err := client.ResetPassword(ctx, desired); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "Meta generated a new SIP password")
	default:
		if err := client.Post(ctx, desired); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Meta now sends this number's calls to %s:%d over TLS (SRTP key exchange %s)\n",
			cfg.SIP.Hostname, port, desired.Calling.SRTPKeyExchangeProtocol)
	}
	have, err := client.Get(ctx, true)
	if err != nil {
		return fmt.Errorf("fetching the SIP password: %w", err)
	}
	pw, err := graph.Password(have, cfg.SIP.Hostname)
	if err != nil {
		return err
	}
	dest := cfg.SIP.PasswordFile
	if !filepath.IsAbs(dest) { // a credential name: the file lives beside the config
		dest = filepath.Join(filepath.Dir(*path), dest)
	}
	if err := config.WriteSecret(dest, pw); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "SIP password stored in %s (mode 0600); a running waphone uses it from its next call\n", dest)
	return nil
}

func printSettingsDiff(w io.Writer, have *graph.Settings, want graph.Settings) error {
	line := func(name, h, wnt string) {
		mark := "ok  "
		if !strings.EqualFold(h, wnt) {
			mark = "DIFF"
		}
		fmt.Fprintf(w, "%s %-28s Meta: %-24q config: %q\n", mark, name, h, wnt)
	}
	hs, ws := have.Calling.SIP, want.Calling.SIP
	if hs == nil {
		hs = &graph.SIP{}
	}
	line("calling.status", have.Calling.Status, want.Calling.Status)
	line("srtp_key_exchange_protocol", have.Calling.KeyExchange(), want.Calling.KeyExchange())
	line("sip.status", hs.Status, ws.Status)
	var hosts []string
	for _, s := range hs.Servers {
		hosts = append(hosts, net.JoinHostPort(s.Hostname, strconv.Itoa(s.EffectivePort())))
	}
	line("sip.servers", strings.Join(hosts, ","), net.JoinHostPort(ws.Servers[0].Hostname, strconv.Itoa(ws.Servers[0].EffectivePort())))
	if len(hs.Servers) > 1 {
		fmt.Fprintln(w, "warn: several SIP servers: other apps configured them; Meta ends the call on a BYE from any of them")
	}
	return nil
}
