package sip

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// CertReloader serves the certificate from cert_file/key_file and loads it
// again when either file changes on disk (ACME renewal, a copied-in cert),
// so a renewal needs no restart and drops no call: existing TLS sessions
// keep their keys, new handshakes get the new certificate.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	modCert time.Time
	modKey  time.Time
	checked time.Time
}

// NewCertReloader loads the pair once, failing early with a clear error.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *CertReloader) reload() error {
	ci, err := os.Stat(r.certFile)
	if err != nil {
		return fmt.Errorf("sip.cert_file: %w", err)
	}
	ki, err := os.Stat(r.keyFile)
	if err != nil {
		return fmt.Errorf("sip.key_file: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("loading certificate %s with key %s: %w", r.certFile, r.keyFile, err)
	}
	if pair.Leaf == nil && len(pair.Certificate) > 0 {
		pair.Leaf, _ = x509.ParseCertificate(pair.Certificate[0])
	}
	r.cert = &pair
	r.modCert, r.modKey = ci.ModTime(), ki.ModTime()
	return nil
}

// Certificate returns the current certificate, re-reading the files at most
// once a second when their modification times moved.
func (r *CertReloader) Certificate() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) >= time.Second {
		r.checked = now
		ci, err1 := os.Stat(r.certFile)
		ki, err2 := os.Stat(r.keyFile)
		if err1 == nil && err2 == nil && (!ci.ModTime().Equal(r.modCert) || !ki.ModTime().Equal(r.modKey)) {
			old := r.cert
			if err := r.reload(); err != nil {
				// A half-written renewal must not take the phone down: keep serving the old pair.
				r.log.Warn("certificate changed on disk but does not load; keeping the old one", "err", err)
				r.cert = old
			} else {
				r.log.Info("certificate reloaded", "file", r.certFile, "not_after", r.cert.Leaf.NotAfter)
			}
		}
	}
	return r.cert, nil
}

// ServerTLSConfig is the listener's TLS config: TLS 1.2+, certificate from
// the reloader, and never a client-certificate request (Meta's client
// certificate names a random host and would fail validation, per the guide).
// No ALPN: Meta's gateway rejects a "sip" ALPN.
func ServerTLSConfig(get func() (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.NoClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return get()
		},
	}
}

// guardListener drops connections from outside the allow-list before any TLS
// work, caps concurrent connections, and bounds how long a connection may
// sit idle, so that strangers cost (almost) nothing.
type guardListener struct {
	net.Listener
	allow    []netip.Prefix
	sem      chan struct{}
	idle     time.Duration
	first    time.Duration
	log      *slog.Logger
	refused  atomic.Uint64
	overflow atomic.Uint64
	lastLog  atomic.Int64

	// One source may hold at most a quarter of the connections, so a
	// single stranger (when sip.allow is empty) cannot lock Meta out.
	maxPerIP int
	mu       sync.Mutex
	perIP    map[netip.Addr]int
}

func newGuardListener(l net.Listener, allow []netip.Prefix, maxConns int, log *slog.Logger) *guardListener {
	return &guardListener{
		Listener: l, allow: allow, sem: make(chan struct{}, maxConns),
		// idle outlasts a long call: Meta's connection may carry nothing for
		// the whole call, and closing it would send our BYE the long way.
		idle: 2 * time.Hour, first: 10 * time.Second, log: log,
		maxPerIP: max(maxConns/4, 1), perIP: make(map[netip.Addr]int),
	}
}

func remoteIP(addr net.Addr) netip.Addr {
	if ta, ok := addr.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// take counts a connection from ip, or says no when ip holds its share.
func (g *guardListener) take(ip netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perIP[ip] >= g.maxPerIP {
		return false
	}
	g.perIP[ip]++
	return true
}

func (g *guardListener) release(ip netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
}

func (g *guardListener) allowed(addr net.Addr) bool {
	if len(g.allow) == 0 {
		return true
	}
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range g.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// logRefusal logs at most once per 10 s, so that a scan cannot flood the journal.
func (g *guardListener) logRefusal(msg string, addr net.Addr) {
	now := time.Now().UnixNano()
	last := g.lastLog.Load()
	if now-last < int64(10*time.Second) || !g.lastLog.CompareAndSwap(last, now) {
		return
	}
	g.log.Warn(msg, "remote", addr.String(), "refused_total", g.refused.Load(), "over_limit_total", g.overflow.Load())
}

func (g *guardListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !g.allowed(c.RemoteAddr()) {
			g.refused.Add(1)
			g.logRefusal("refused connection from outside sip.allow", c.RemoteAddr())
			_ = c.Close()
			continue
		}
		ip := remoteIP(c.RemoteAddr())
		if !g.take(ip) {
			g.overflow.Add(1)
			g.logRefusal("too many SIP connections from one address; refusing", c.RemoteAddr())
			_ = c.Close()
			continue
		}
		select {
		case g.sem <- struct{}{}:
		default:
			g.release(ip)
			g.overflow.Add(1)
			g.logRefusal("too many SIP connections; refusing", c.RemoteAddr())
			_ = c.Close()
			continue
		}
		// The first deadline covers the TLS handshake and the first message.
		_ = c.SetReadDeadline(time.Now().Add(g.first))
		return &guardConn{Conn: c, g: g, ip: ip}, nil
	}
}

type guardConn struct {
	net.Conn
	g    *guardListener
	ip   netip.Addr
	once sync.Once
}

func (c *guardConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.g.idle))
	}
	return n, err
}

func (c *guardConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		<-c.g.sem
		c.g.release(c.ip)
	})
	return err
}

// ParseAllow turns sip.allow entries (CIDRs or single IPs) into prefixes.
func ParseAllow(entries []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, e := range entries {
		if p, err := netip.ParsePrefix(e); err == nil {
			out = append(out, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(e); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		errs = append(errs, fmt.Errorf("sip.allow %q: not an IP or CIDR", e))
	}
	return out, errors.Join(errs...)
}
