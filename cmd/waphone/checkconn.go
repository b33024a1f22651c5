package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/waphone/waphone/sip"
)

// checkConnect does what the guide's `openssl s_client -verify_hostname`
// check does, from the device: connect to host:port over TLS, verify the
// chain with roots and the name, and explain each failure with the fix.
func checkConnect(ctx context.Context, addr, hostname string, roots *x509.CertPool, now time.Time) *tlsReport {
	r := &tlsReport{}
	d := &net.Dialer{Timeout: 10 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		r.bad("cannot connect to %s: %v (is waphone running and the port forwarded? Meta connects to the hostname and port configured on the number)", addr, err)
		return r
	}
	defer raw.Close()
	_ = raw.SetDeadline(now.Add(10 * time.Second))
	var chain []*x509.Certificate
	conn := tls.Client(raw, &tls.Config{
		ServerName: hostname, InsecureSkipVerify: true, // we verify below, to explain failures
		VerifyConnection: func(cs tls.ConnectionState) error { chain = cs.PeerCertificates; return nil },
	})
	if err := conn.HandshakeContext(ctx); err != nil {
		if errors.Is(err, io.EOF) || strings.Contains(err.Error(), "first record does not look like a TLS handshake") ||
			strings.Contains(err.Error(), "connection reset") {
			r.bad("%s is not speaking TLS (%v): Meta only uses SIP over TLS — point Meta at waphone's TLS port (%d by default), not a plain SIP port", addr, err, sip.DefaultPort)
		} else {
			r.bad("TLS handshake with %s failed: %v", addr, err)
		}
		return r
	}
	r.ok("%s speaks TLS (%s)", addr, tls.VersionName(conn.ConnectionState().Version))
	leaf := chain[0]
	if err := leaf.VerifyHostname(hostname); err != nil {
		r.bad("hostname mismatch: the certificate is for %v, Meta will ask for %q (fix: a certificate for %s, or change the hostname configured at Meta and in sip.hostname)", leaf.DNSNames, hostname, hostname)
	} else {
		r.ok("certificate covers %s", hostname)
	}
	if left := leaf.NotAfter.Sub(now); left <= 0 {
		r.bad("certificate expired on %s (fix: renew it)", leaf.NotAfter.Format(time.RFC3339))
	} else if left < 14*24*time.Hour {
		r.warn("certificate expires in %d days: renew it soon", int(left.Hours()/24))
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now}); err != nil {
		if len(chain) == 1 && leaf.Issuer.String() != leaf.Subject.String() {
			r.bad("incomplete chain: the server sends only its own certificate (%v) (fix: serve the full chain, e.g. fullchain.pem, in sip.cert_file)", err)
		} else {
			r.bad("chain does not verify against the system roots: %v (Meta refuses self-signed and private-CA certificates)", err)
		}
	} else {
		r.ok("chain verifies against the system roots")
	}
	return r
}

// fmtReport prints a report and returns an error when it has a failure.
func fmtReport(w io.Writer, r *tlsReport) error {
	for _, l := range r.lines {
		fmt.Fprintln(w, l)
	}
	if r.fail {
		return errors.New("check failed")
	}
	return nil
}
