package main

// Fleet mode: a desk behind a Kamailio edge (docs/fleet.md), and the
// `waphone edge-config` subcommand that renders the edge's configuration.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/deploy/kamailio"
	"github.com/waphone/waphone/sip"
)

// fleetRoots reads the fleet CA (fleet.edge_ca_file).
func fleetRoots(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("fleet.edge_ca_file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("fleet.edge_ca_file %s: no PEM certificate in it", path)
	}
	return roots, nil
}

// fleetSIP is sip's fleet configuration from [fleet]: the fleet CA and this
// desk's certificate (reloaded when renewed on disk).
func fleetSIP(f config.Fleet, log *slog.Logger) (*sip.Fleet, error) {
	roots, err := fleetRoots(f.EdgeCAFile)
	if err != nil {
		return nil, err
	}
	certs, err := sip.NewCertReloader(f.CertFile, f.KeyFile, log)
	if err != nil {
		return nil, fmt.Errorf("fleet.cert_file: %w", err)
	}
	return &sip.Fleet{
		Edge: f.Edge, EdgeName: f.EdgeName, EdgeRoots: roots, ClientCert: certs.Certificate,
		Device: f.Device, Expires: f.RegisterExpires.Duration, Q: f.Q,
	}, nil
}

// runFleet keeps the desk registered until ctx ends; close waits for the
// unregister before it closes the transports.
func (d *daemon) runFleet(ctx context.Context) {
	d.fleetDone = make(chan struct{})
	go func() {
		defer close(d.fleetDone)
		_ = d.ep.RunFleet(ctx) // it logs its own failures
	}()
	d.log.Info("fleet desk: registering at the edge", "edge", d.cfg.Fleet.Edge, "device", d.cfg.Fleet.Device)
}

// checkFleet is doctor's part for a fleet desk: the fleet CA, this desk's
// certificate, and whether the edge takes it (an OPTIONS over mTLS).
func checkFleet(ctx context.Context, r *tlsReport, cfg config.Config) {
	f := cfg.Fleet
	roots, err := fleetRoots(f.EdgeCAFile)
	if err != nil {
		r.bad("%v", err)
		return
	}
	r.ok("fleet CA %s loads", f.EdgeCAFile)
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		r.bad("desk certificate %s / key %s do not load as a pair: %v", f.CertFile, f.KeyFile, err)
		return
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		r.bad("desk certificate does not parse: %v", err)
		return
	}
	now := time.Now()
	switch left := leaf.NotAfter.Sub(now); {
	case now.Before(leaf.NotBefore):
		r.bad("desk certificate is not valid before %s (is the clock right?)", leaf.NotBefore.Format(time.RFC3339))
	case left <= 0:
		r.bad("desk certificate expired on %s (fix: issue a new one from the fleet CA)", leaf.NotAfter.Format(time.RFC3339))
	case left < 14*24*time.Hour:
		r.warn("desk certificate expires in %d days (%s)", int(left.Hours()/24), leaf.NotAfter.Format(time.RFC3339))
	default:
		r.ok("desk certificate %q valid until %s", leaf.Subject.CommonName, leaf.NotAfter.Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		r.bad("desk certificate is not a client certificate from the fleet CA: %v (the edge will refuse it)", err)
	} else {
		r.ok("desk certificate chains to the fleet CA for client use")
	}
	checkEdge(ctx, r, cfg, roots, pair)
	r.ok("fleet desk %q: no Meta password or public certificate needed here (the edge holds them)", f.Device)
}

// checkEdge connects to the edge as the desk does and asks OPTIONS: a 200
// proves the name, the fleet CA and that the edge accepts our certificate
// (with TLS 1.3 a refused client certificate shows only on the first read).
func checkEdge(ctx context.Context, r *tlsReport, cfg config.Config, roots *x509.CertPool, pair tls.Certificate) {
	f := cfg.Fleet
	name := f.EdgeName
	if name == "" {
		name, _, _ = net.SplitHostPort(f.Edge)
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: name, Certificates: []tls.Certificate{pair}}}
	c, err := d.DialContext(dctx, "tcp", f.Edge)
	if err != nil {
		r.bad("the edge %s does not take a TLS connection as %s: %v", f.Edge, name, err)
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	local := c.LocalAddr().String()
	req := fmt.Sprintf("OPTIONS sip:%s;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=z9hG4bK%d;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:%s@%s>;tag=doctor\r\nTo: <sip:%s>\r\nCall-ID: doctor-%d@%s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
		name, local, time.Now().UnixNano(), cfg.SIP.Number, cfg.SIP.Hostname, name, time.Now().UnixNano(), f.Device)
	if _, err := io.WriteString(c, req); err != nil {
		r.bad("the edge %s closed the connection: %v", f.Edge, err)
		return
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	switch {
	case err != nil:
		r.bad("the edge %s refused this desk (certificate not from its fleet CA?): %v", f.Edge, err)
	case strings.HasPrefix(line, "SIP/2.0 200"):
		r.ok("the edge %s (%s) accepts this desk's certificate", f.Edge, name)
	default:
		r.warn("the edge %s answered OPTIONS with %q", f.Edge, strings.TrimSpace(line))
	}
}

// cmdEdgeConfig renders the edge's Kamailio configuration from edge.toml.
func cmdEdgeConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("edge-config", stderr)
	path := fs.String("config", "/etc/kamailio/edge.toml", "the edge's TOML file")
	check := fs.Bool("check", false, "only check the file and the password; write nothing")
	example := fs.Bool("example", false, "print a commented edge.toml")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if *example {
		fmt.Fprint(stdout, kamailio.Example)
		return nil
	}
	c, err := kamailio.Load(*path)
	if err != nil {
		return configError{err}
	}
	password, err := config.ReadPassword(c.MetaPasswordFile)
	if err != nil {
		return configError{fmt.Errorf("meta_password_file: %w", err)}
	}
	files, err := kamailio.Render(c, password, *path)
	if err != nil {
		return configError{err}
	}
	if *check {
		fmt.Fprintf(stdout, "%s is valid\n", *path)
		return nil
	}
	// The files name each other by kamailio.dir, so they are written there.
	dir := c.Kamailio.Dir
	if err := kamailio.Write(dir, files); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s/{%s,%s,%s}; check with `kamailio -c -f %s/%s`, then restart kamailio\n",
		dir, kamailio.KamailioFile, kamailio.TLSFile, kamailio.SecretFile, dir, kamailio.KamailioFile)
	return nil
}
