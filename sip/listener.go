package sip

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
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

// guardListener drops connections from outside the allow-list before any
// TLS work, budgets the connections strangers may hold, and bounds how
// long a connection may take to prove itself, so that strangers cost
// (almost) nothing and cannot lock Meta out:
//
//   - at most maxConns connections; reserved of them only trusted sources
//     (sip.allow, addresses that authenticated before) may take;
//   - unauthenticated connections from strangers at most perPrefix per
//     /24 (/64) and perAddr per address;
//   - the TLS handshake and a first complete SIP message within first,
//     then at most first between messages until a request on the
//     connection authenticated (the endpoint says so through
//     authenticated); only then the long idle limit.
//
// Above TLS it frames the SIP stream the way sipgo will, so that an
// over-long message is answered 513 and skipped instead of costing the
// connection (see sipConn.frame).
type guardListener struct {
	net.Listener
	tls       *tls.Config
	allow     *allowList
	trusted   func(netip.Addr) bool
	prefixOf  func(netip.Addr) netip.Prefix
	maxConns  int
	reserved  int
	perPrefix int
	perAddr   int
	first     time.Duration
	idle      time.Duration
	maxMsg    int
	log       *slog.Logger
	lastLog   atomic.Int64

	notAllowed, overTotal, overStrangers, overPrefix, overAddr        atomic.Uint64
	firstTimeouts, idleTimeouts, tlsFailures, tooLarge, tooLargeDrops atomic.Uint64
	tlsHandshakes                                                     atomic.Uint64

	mu        sync.Mutex
	total     int
	strangers int
	byPrefix  map[netip.Prefix]int
	byAddr    map[netip.Addr]int
	conns     map[string]*sipConn // by remote address, as sipgo names the source
	authed    int
}

type guardConfig struct {
	allow    *allowList
	trusted  func(netip.Addr) bool
	prefixOf func(netip.Addr) netip.Prefix
	maxConns int
	reserved int
	first    time.Duration
	idle     time.Duration
	maxMsg   int
	log      *slog.Logger
}

func newGuardListener(l net.Listener, tlsConf *tls.Config, c guardConfig) *guardListener {
	pool := max(c.maxConns-c.reserved, 1)
	g := &guardListener{
		Listener: l, tls: tlsConf, allow: c.allow, trusted: c.trusted, prefixOf: c.prefixOf,
		maxConns: c.maxConns, reserved: c.reserved,
		perPrefix: max(c.maxConns/4, 1), perAddr: max(c.maxConns/8, 1),
		first: c.first, idle: c.idle, maxMsg: c.maxMsg, log: c.log,
		byPrefix: make(map[netip.Prefix]int), byAddr: make(map[netip.Addr]int), conns: make(map[string]*sipConn),
	}
	return g.withPool(pool)
}

// withPool caps the per-source shares at the strangers' pool.
func (g *guardListener) withPool(pool int) *guardListener {
	g.perPrefix = min(g.perPrefix, pool)
	g.perAddr = min(g.perAddr, g.perPrefix)
	return g
}

func remoteIP(addr net.Addr) netip.Addr {
	if ta, ok := addr.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

func (g *guardListener) allowed(ip netip.Addr) bool {
	return len(g.allow.get()) == 0 || g.allow.contains(ip)
}

// seat takes a connection seat for ip, or names the counter of the refusal.
func (g *guardListener) seat(ip netip.Addr, trusted bool) *atomic.Uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.total >= g.maxConns {
		return &g.overTotal
	}
	if !trusted {
		pf := g.prefixOf(ip)
		switch {
		case g.strangers >= g.maxConns-g.reserved:
			return &g.overStrangers
		case g.byPrefix[pf] >= g.perPrefix:
			return &g.overPrefix
		case g.byAddr[ip] >= g.perAddr:
			return &g.overAddr
		}
		g.strangers++
		g.byPrefix[pf]++
		g.byAddr[ip]++
	}
	g.total++
	return nil
}

// unseatStranger gives back a stranger's share; g.mu is held.
func (g *guardListener) unseatStranger(ip netip.Addr) {
	g.strangers--
	pf := g.prefixOf(ip)
	if g.byPrefix[pf]--; g.byPrefix[pf] <= 0 {
		delete(g.byPrefix, pf)
	}
	if g.byAddr[ip]--; g.byAddr[ip] <= 0 {
		delete(g.byAddr, ip)
	}
}

// logRefusal logs at most once per 10 s, so that a scan cannot flood the journal.
func (g *guardListener) logRefusal(msg string, remote string) {
	now := time.Now().UnixNano()
	last := g.lastLog.Load()
	if now-last < int64(10*time.Second) || !g.lastLog.CompareAndSwap(last, now) {
		return
	}
	st := g.stats()
	g.log.Warn(msg, "remote", remote, "refused_not_allowed", st.NotAllowed,
		"refused_over_limit", st.OverTotal+st.OverStrangers+st.OverPrefix+st.OverAddr,
		"closed_slow", st.FirstTimeouts+st.IdleTimeouts, "tls_failures", st.TLSFailures,
		"too_large", st.TooLarge+st.TooLargeDrops)
}

func (g *guardListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		if !g.allowed(ip) {
			g.notAllowed.Add(1)
			g.logRefusal("refused connection from outside sip.allow", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		trusted := g.trusted(ip)
		if refused := g.seat(ip, trusted); refused != nil {
			refused.Add(1)
			g.logRefusal("SIP connection over the limits; refusing", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		// The first deadline covers the TLS handshake and the first message;
		// handshake bytes do not move it.
		_ = c.SetReadDeadline(time.Now().Add(g.first))
		sc := &sipConn{Conn: tls.Server(c, g.tls), g: g, ip: ip, key: c.RemoteAddr().String(), stranger: !trusted,
			buf: make([]byte, 16<<10)}
		g.mu.Lock()
		g.conns[sc.key] = sc
		g.mu.Unlock()
		return sc, nil
	}
}

// authenticated is the endpoint's word that a request from src (sipgo's
// source address) passed digest authentication: that connection may now
// idle the long limit and no longer counts against the strangers' shares.
func (g *guardListener) authenticated(src string) {
	g.mu.Lock()
	c := g.conns[src]
	if c == nil || c.authed.Load() {
		g.mu.Unlock()
		return
	}
	c.authed.Store(true)
	g.authed++
	if c.stranger {
		c.stranger = false
		g.unseatStranger(c.ip)
	}
	g.mu.Unlock()
	_ = c.Conn.SetReadDeadline(time.Now().Add(g.idle))
}

func (g *guardListener) release(c *sipConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns[c.key] == c {
		delete(g.conns, c.key)
	}
	g.total--
	if c.stranger {
		c.stranger = false
		g.unseatStranger(c.ip)
	}
	if c.authed.Load() {
		g.authed--
	}
}

func (g *guardListener) stats() GuardStats {
	st := GuardStats{
		NotAllowed: g.notAllowed.Load(), OverTotal: g.overTotal.Load(), OverStrangers: g.overStrangers.Load(),
		OverPrefix: g.overPrefix.Load(), OverAddr: g.overAddr.Load(), FirstTimeouts: g.firstTimeouts.Load(),
		IdleTimeouts: g.idleTimeouts.Load(), TLSFailures: g.tlsFailures.Load(), TLSHandshakes: g.tlsHandshakes.Load(), TooLarge: g.tooLarge.Load(),
		TooLargeDrops: g.tooLargeDrops.Load(),
	}
	g.mu.Lock()
	st.Open, st.Authenticated = g.total, g.authed
	g.mu.Unlock()
	return st
}

// sipConn is one accepted TLS connection as sipgo sees it.
type sipConn struct {
	*tls.Conn
	g        *guardListener
	ip       netip.Addr
	key      string
	stranger bool // holds a stranger's share; guarded by g.mu
	authed   atomic.Bool
	once     sync.Once

	// Read side, used by sipgo's one reading goroutine only.
	buf     []byte
	pending []byte
	rerr    error
	fr      framer
	gotMsg  bool
}

var errTooLarge = errors.New("SIP message over the size limit, no message boundary to skip to")

func (c *sipConn) Read(b []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		n, err := c.Conn.Read(c.buf)
		if n > 0 {
			if c.authed.Load() {
				_ = c.Conn.SetReadDeadline(time.Now().Add(c.g.idle))
			}
			out, ferr := c.fr.feed(c.buf[:n], c.g.maxMsg, c)
			c.pending = out
			if ferr != nil {
				c.g.tooLargeDrops.Add(1)
				c.g.logRefusal("closing a SIP connection: message over the size limit", c.key)
				c.rerr = io.EOF // sipgo closes the connection
			}
		}
		if err != nil && c.rerr == nil {
			c.rerr = c.readError(err)
		}
	}
	n := copy(b, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// readError counts why a connection ended. Timeouts and handshake failures
// reach sipgo as a plain EOF: it logs other read errors at Error level,
// once per connection, which a scan would turn into a journal flood; the
// guard's own log line is rate-limited.
func (c *sipConn) readError(err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		switch {
		case !c.gotMsg:
			c.g.firstTimeouts.Add(1)
			c.g.logRefusal("closing a SIP connection: no TLS handshake and first message in time", c.key)
		case !c.authed.Load():
			c.g.idleTimeouts.Add(1)
			c.g.logRefusal("closing an unauthenticated SIP connection gone quiet", c.key)
		}
		return io.EOF
	case !c.ConnectionState().HandshakeComplete:
		c.g.tlsFailures.Add(1)
		c.g.logRefusal("closing a SIP connection: TLS handshake failed", c.key)
		return io.EOF
	}
	return err
}

// message is the framer's word that one whole message went up (or was
// skipped): an unauthenticated connection gets first again for the next.
func (c *sipConn) message() {
	if !c.gotMsg {
		c.g.tlsHandshakes.Add(1) // a completed handshake that carried SIP
	}
	c.gotMsg = true
	if !c.authed.Load() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.g.first))
	}
}

// tooLarge answers an over-long request 513 from its header section; the
// framer skips its body.
func (c *sipConn) tooLarge(head []byte) {
	c.g.tooLarge.Add(1)
	c.g.logRefusal("SIP message over the size limit answered 513", c.key)
	res := response513(head, c.key)
	if res == nil {
		return
	}
	// A peer that does not read must not stall the connection's reader for long.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Conn.Write(res)
	_ = c.Conn.SetWriteDeadline(time.Time{})
}

func (c *sipConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.g.release(c) })
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
