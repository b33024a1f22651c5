package sip

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// GuardStats counts what the listener and the digest check refused, for
// `waphone status`. The counters only grow; Open, Authenticated and
// Trusted are the current numbers.
type GuardStats struct {
	NotAllowed    uint64 // connections from outside sip.allow, closed at accept
	OverTotal     uint64 // connections refused: all MaxConns seats taken
	OverStrangers uint64 // refused: the seats strangers may use are taken (the rest are held for Meta)
	OverPrefix    uint64 // refused: the source's /24 (/64) holds its share of unauthenticated connections
	OverAddr      uint64 // refused: the source address holds its share of unauthenticated connections
	FirstTimeouts uint64 // closed: no TLS handshake and first complete SIP message in time
	IdleTimeouts  uint64 // closed: an unauthenticated connection went quiet between messages
	TLSFailures   uint64 // closed: the TLS handshake failed
	TLSHandshakes uint64 // TLS handshakes completed that carried a SIP message
	AuthFailures  uint64 // INVITEs whose digest answer was wrong (403)
	TooLarge      uint64 // messages over the size limit answered 513 (the connection kept serving)
	TooLargeDrops uint64 // connections closed for a message over the size limit that could not be framed
	Throttled     int64  // INVITEs refused without a check: too many failed digest answers from the source or its prefix
	NoACK         uint64 // answered calls hung up because Meta's ACK never came
	Open          int    // connections open now
	Authenticated int    // of them, connections that carried an authenticated request
	Trusted       int    // addresses that authenticated before (they may use the reserved seats)
}

// prefixer maps an address to the unit the caps and the throttle count
// by: an IPv4 /v4 or an IPv6 /v6 (one customer's allocation, which an
// attacker gets as a whole).
type prefixer struct{ v4, v6 int }

func (p prefixer) of(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := p.v6
	if ip.Is4() {
		bits = p.v4
	}
	pf, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{} // the zero address: all such sources share one bucket
	}
	return pf
}

// trustSet holds the sources that may use the reserved connection seats
// and are throttled by address only: sip.allow, and addresses that
// authenticated before (Meta's gateways; remembered in memory, bounded,
// least recently authenticated forgotten first).
type trustSet struct {
	allow *allowList
	max   int

	mu   sync.Mutex
	seen map[netip.Addr]time.Time
}

func newTrustSet(allow *allowList) *trustSet {
	return &trustSet{allow: allow, max: 256, seen: make(map[netip.Addr]time.Time)}
}

// allowList is sip.allow, which SIGHUP may replace while connections come.
type allowList struct {
	p atomic.Pointer[[]netip.Prefix]
}

func newAllowList(prefixes []netip.Prefix) *allowList {
	a := &allowList{}
	a.set(prefixes)
	return a
}

func (a *allowList) set(prefixes []netip.Prefix) { a.p.Store(&prefixes) }
func (a *allowList) get() []netip.Prefix         { return *a.p.Load() }

// contains: no list means everyone.
func (a *allowList) contains(ip netip.Addr) bool {
	list := a.get()
	if len(list) == 0 {
		return false
	}
	for _, p := range list {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (t *trustSet) trusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	if t.allow.contains(ip) {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.seen[ip]
	return ok
}

func (t *trustSet) add(ip netip.Addr) {
	if !ip.IsValid() {
		return
	}
	ip = ip.Unmap()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.seen[ip]; !ok && len(t.seen) >= t.max {
		var oldest netip.Addr
		var at time.Time
		for a, when := range t.seen {
			if !oldest.IsValid() || when.Before(at) {
				oldest, at = a, when
			}
		}
		delete(t.seen, oldest)
	}
	t.seen[ip] = time.Now()
}

func (t *trustSet) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.seen)
}

// sourceIP parses the host of a "host:port" source as sipgo reports it.
func sourceIP(src string) netip.Addr {
	host, _, err := net.SplitHostPort(src)
	if err != nil {
		host = src
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}
