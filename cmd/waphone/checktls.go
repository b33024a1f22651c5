package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/internal/acmecert"
	"io"
	"net"
	"os"
	"time"
)

// tlsReport is one certificate check, line by line, like `waphone doctor` will print.
type tlsReport struct {
	lines []string
	fail  bool
}

func (r *tlsReport) ok(f string, a ...any) { r.lines = append(r.lines, "ok    "+fmt.Sprintf(f, a...)) }
func (r *tlsReport) warn(f string, a ...any) {
	r.lines = append(r.lines, "warn  "+fmt.Sprintf(f, a...))
}
func (r *tlsReport) bad(f string, a ...any) {
	r.fail = true
	r.lines = append(r.lines, "FAIL  "+fmt.Sprintf(f, a...))
}

// checkCertFiles checks what Meta will check when it connects: the chain,
// the name, the dates, and that the key belongs to the certificate.
func checkCertFiles(certFile, keyFile, hostname string, roots *x509.CertPool, now time.Time) *tlsReport {
	r := &tlsReport{}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		r.bad("certificate %s / key %s do not load as a pair: %v (fix: the key must be the one the certificate was issued for, both PEM)", certFile, keyFile, err)
		return r
	}
	r.ok("certificate and key load and match")
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		r.bad("certificate does not parse: %v", err)
		return r
	}
	if err := leaf.VerifyHostname(hostname); err != nil {
		r.bad("hostname mismatch: the certificate is for %v, sip.hostname is %q (fix: get a certificate for %s, or set sip.hostname and Meta's server hostname to a name on the certificate)", leaf.DNSNames, hostname, hostname)
	} else {
		r.ok("certificate covers %s", hostname)
	}
	switch left := leaf.NotAfter.Sub(now); {
	case now.Before(leaf.NotBefore):
		r.bad("certificate is not valid before %s (is the clock right? a board without RTC boots in 1970)", leaf.NotBefore.Format(time.RFC3339))
	case left <= 0:
		r.bad("certificate expired on %s (fix: renew it)", leaf.NotAfter.Format(time.RFC3339))
	case left < 14*24*time.Hour:
		r.warn("certificate expires in %d days (%s): renew it soon", int(left.Hours()/24), leaf.NotAfter.Format(time.RFC3339))
	default:
		r.ok("certificate valid until %s", leaf.NotAfter.Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now}); err != nil {
		if len(pair.Certificate) == 1 && leaf.Issuer.String() != leaf.Subject.String() {
			r.bad("incomplete chain: %v (fix: put the intermediate certificates after yours in %s, e.g. use fullchain.pem; a private or test CA will not do: Meta checks against public roots)", err, certFile)
		} else {
			r.bad("chain does not verify against the system roots: %v (Meta will refuse a self-signed or private-CA certificate)", err)
		}
	} else {
		r.ok("chain verifies against the system roots")
	}
	return r
}

func cmdCheckTLS(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check-tls", stderr)
	path := fs.String("config", defaultConfig, "config file (TOML)")
	connect := fs.String("connect", "", "also connect to host:port like Meta does (\"-\" = sip.hostname and the listen port)")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return configError{err}
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	r := &tlsReport{}
	certFile, keyFile := cfg.SIP.CertFile, cfg.SIP.KeyFile
	if cfg.TLS.ACME { // the certificate waphone obtained, where it keeps it
		certFile = acmecert.CachedFile(stateDir(cfg), cfg.SIP.Hostname, cfg.TLS.Challenge)
		keyFile = certFile
		if _, err := os.Stat(certFile); err != nil && *connect == "" {
			return fmt.Errorf("[tls] acme: no certificate for %s obtained yet (%s): start `waphone run`, or use -connect host:port", cfg.SIP.Hostname, certFile)
		}
	}
	if _, err := os.Stat(certFile); certFile != "" && (err == nil || !cfg.TLS.ACME) {
		r = checkCertFiles(certFile, keyFile, cfg.SIP.Hostname, roots, time.Now())
	} else if *connect == "" {
		return configError{fmt.Errorf("sip.cert_file is not set (or use -connect host:port)")}
	}
	if *connect != "" {
		addr := *connect
		if addr == "-" {
			_, port, _ := net.SplitHostPort(cfg.SIP.Listen)
			addr = net.JoinHostPort(cfg.SIP.Hostname, port)
		}
		c := checkConnect(context.Background(), addr, cfg.SIP.Hostname, roots, time.Now())
		r.lines = append(r.lines, c.lines...)
		r.fail = r.fail || c.fail
	}
	if err := fmtReport(stdout, r); err != nil {
		return fmt.Errorf("certificate check failed")
	}
	return nil
}
