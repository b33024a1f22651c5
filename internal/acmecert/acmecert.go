// Package acmecert obtains and renews the SIP certificate from an ACME CA
// (Let's Encrypt by default) with golang.org/x/crypto/acme/autocert.
//
// Why autocert: it is maintained with the Go project, already in our
// module graph (x/crypto), renews by itself 30 days before expiry, and
// caches under the state directory. What it lacks is DNS-01; certmagic
// has it but brings a large dependency tree into a static binary for a
// Pi. So: tls-alpn-01 (port 443 forwarded) or http-01 (port 80) through
// autocert, and DNS-01 (no open port) through x/crypto/acme directly in
// dns01.go, with a user hook that sets the TXT record at the DNS provider.
//
// The SIP listener never uses autocert's TLSConfig(): that adds ALPN
// protocols, and Meta's gateway refuses ALPN. Challenges are answered on
// their own listener.
package acmecert

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// LetsEncrypt is the default directory.
const LetsEncrypt = acme.LetsEncryptURL

// Config for one hostname.
type Config struct {
	Hostname     string
	Email        string
	DirectoryURL string       // "" = Let's Encrypt production
	Challenge    string       // "tls-alpn-01" (default) or "http-01"
	StateDir     string       // certificates and the account key live in StateDir/acme (0700)
	DNSHook      string       // dns-01: `HOOK present|cleanup FQDN VALUE` publishes the TXT record
	HTTPClient   *http.Client // to reach the CA (tests pass pebble's roots)
	Logger       *slog.Logger
	// RenewBefore is how long before expiry a certificate is renewed.
	// 0 = as by default: 30 days for dns-01; for tls-alpn-01/http-01
	// autocert's own default (a third of the lifetime, at most 30 days).
	// autocert caps any value at 30 days. Not a config key: tests set it.
	RenewBefore time.Duration
	// RenewCheck is how often Renew looks at a dns-01 certificate's
	// expiry; 0 = every 12 hours. (autocert times its own renewals.)
	RenewCheck time.Duration
}

// Manager serves the certificate and answers challenges.
type Manager struct {
	cfg Config
	m   *autocert.Manager
	dns *dns01 // set for dns-01
	log *slog.Logger
}

// New checks the config; nothing is fetched yet.
func New(cfg Config) (*Manager, error) {
	switch cfg.Challenge {
	case "", "tls-alpn-01", "http-01":
	case "dns-01":
		if cfg.DNSHook == "" {
			return nil, errors.New("tls.challenge dns-01 needs tls.dns_hook: a command run as `HOOK present|cleanup FQDN VALUE` that sets the TXT record at your DNS provider (or use your provider's ACME client and sip.cert_file/key_file)")
		}
	default:
		return nil, fmt.Errorf("tls.challenge %q: want tls-alpn-01 or http-01", cfg.Challenge)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir := cfg.DirectoryURL
	if dir == "" {
		dir = LetsEncrypt
	}
	m := &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       autocert.DirCache(filepath.Join(cfg.StateDir, "acme")),
		HostPolicy:  autocert.HostWhitelist(cfg.Hostname),
		Email:       cfg.Email,
		Client:      &acme.Client{DirectoryURL: dir, HTTPClient: cfg.HTTPClient},
		RenewBefore: cfg.RenewBefore,
	}
	mgr := &Manager{cfg: cfg, m: m, log: cfg.Logger}
	if cfg.Challenge == "dns-01" {
		mgr.dns = &dns01{cfg: cfg}
	}
	return mgr, nil
}

// Certificate is the getter for sip.ServerTLSConfig: always the
// certificate for sip.hostname, whatever name (if any) the client sent.
func (m *Manager) Certificate() (*tls.Certificate, error) {
	if m.dns != nil {
		return m.dns.current()
	}
	return m.m.GetCertificate(&tls.ClientHelloInfo{ServerName: m.cfg.Hostname})
}

// ServeChallenges answers the CA's challenges on ln until ctx ends.
func (m *Manager) ServeChallenges(ctx context.Context, ln net.Listener) error {
	if m.dns != nil { // DNS-01 needs no listener
		_ = ln.Close()
		return nil
	}
	var srv *http.Server
	if m.cfg.Challenge == "http-01" {
		srv = &http.Server{Handler: m.m.HTTPHandler(nil), ReadHeaderTimeout: 10 * time.Second}
	} else {
		ln = tls.NewListener(ln, &tls.Config{
			MinVersion: tls.VersionTLS12, NextProtos: []string{acme.ALPNProto}, GetCertificate: m.m.GetCertificate,
		})
		srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.NotFoundHandler()}
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ACME challenge listener: %w", err)
	}
	return nil
}

// Prefetch obtains the certificate before Meta's first call needs it,
// retrying with backoff (a board may boot before its network is up).
// With DNS-01 it also renews: Renew keeps calling it.
func (m *Manager) Prefetch(ctx context.Context) error {
	wait := 5 * time.Second
	for {
		var c *tls.Certificate
		var err error
		if m.dns != nil {
			octx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			c, err = m.dns.obtain(octx)
			cancel()
		} else {
			c, err = m.Certificate()
		}
		if err == nil {
			if c.Leaf != nil {
				m.log.Info("ACME certificate ready", "hostname", m.cfg.Hostname, "not_after", c.Leaf.NotAfter)
			}
			return nil
		}
		m.log.Warn("ACME certificate not obtained yet; retrying", "hostname", m.cfg.Hostname, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Minute)
	}
}

// Renew keeps a DNS-01 certificate fresh (autocert renews its own): it
// checks every RenewCheck (twice a day) and renews RenewBefore (30 days)
// before expiry, until ctx ends.
func (m *Manager) Renew(ctx context.Context) {
	if m.dns == nil {
		return
	}
	every := m.cfg.RenewCheck
	if every <= 0 {
		every = 12 * time.Hour
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = m.Prefetch(ctx) // obtains only within RenewBefore of expiry; the old one serves meanwhile
		}
	}
}

// CachedFile is where a certificate obtained for hostname is kept under
// stateDir (doctor and check-tls read it); it may not exist yet.
func CachedFile(stateDir, hostname, challenge string) string {
	if challenge == "dns-01" {
		return (&dns01{cfg: Config{StateDir: stateDir, Hostname: hostname}}).certFile()
	}
	return filepath.Join(stateDir, "acme", hostname) // autocert.DirCache's name for an ECDSA certificate
}
