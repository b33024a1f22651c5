package sip

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	ssip "github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// authResult is the verdict on an INVITE's Proxy-Authorization.
type authResult int

const (
	authOK        authResult = iota
	authChallenge            // no credentials, or a nonce we never issued or already honoured: send a fresh 407
	authStale                // our nonce expired: 407 with stale=true
	authForbidden            // credentials present and wrong: 403
)

// nonceMinter issues stateless nonces: a nonce is the time it was issued
// and an HMAC over that time and the client's address, under a key that
// lives only in memory. Issuing stores nothing, so no number of
// unauthenticated INVITEs from any number of addresses can push Meta's
// nonce out before Meta's retry comes back (the old bounded store turned
// over in under 100 ms under a flood from ten addresses).
//
// Single use is enforced by a bounded record of the nonces already
// honoured, kept for the nonce lifetime: only a correct digest answer
// (someone holding the password) adds to it, so strangers cannot fill it.
type nonceMinter struct {
	key   [32]byte
	ttl   time.Duration
	start time.Time // nonce times count from here (monotonic: a clock step cannot age or revive a nonce)
	now   func() time.Time

	mu      sync.Mutex
	used    map[string]time.Duration // honoured nonce -> its issue time (since start)
	usedMax int
}

// A nonce is 8 bytes of issue time, 8 random bytes (two challenges in the
// same instant differ) and 16 bytes of HMAC over both and the address.
const (
	nonceTimeLen = 8
	nonceSaltLen = 8
	nonceMACLen  = 16
	nonceLen     = nonceTimeLen + nonceSaltLen + nonceMACLen
)

func newNonceMinter(ttl time.Duration) *nonceMinter {
	m := &nonceMinter{ttl: ttl, start: time.Now(), now: time.Now, used: make(map[string]time.Duration), usedMax: 4096}
	_, _ = rand.Read(m.key[:]) // documented never to return an error since Go 1.24
	return m
}

func (m *nonceMinter) mac(label string, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, m.key[:])
	h.Write([]byte(label))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write(p)
	}
	return h.Sum(nil)
}

// issue makes a nonce (and its opaque) for a challenge sent to addr.
func (m *nonceMinter) issue(addr string) (nonce, opaque string) {
	raw := make([]byte, nonceTimeLen+nonceSaltLen, nonceLen)
	binary.BigEndian.PutUint64(raw, uint64(m.now().Sub(m.start)))
	_, _ = rand.Read(raw[nonceTimeLen:])
	raw = append(raw, m.mac("nonce", raw, []byte(addr))[:nonceMACLen]...)
	nonce = hex.EncodeToString(raw)
	return nonce, m.opaqueFor(nonce)
}

func (m *nonceMinter) opaqueFor(nonce string) string {
	return hex.EncodeToString(m.mac("opaque", []byte(nonce))[:8])
}

// check says whether a nonce presented by addr is ours, fresh, with its
// opaque, and not yet honoured. It records nothing: a wrong answer leaves
// the nonce usable (guessing is the throttle's business, not the nonce's).
func (m *nonceMinter) check(nonce, opaque, addr string) authResult {
	raw, err := hex.DecodeString(nonce)
	if err != nil || len(raw) != nonceLen {
		return authChallenge
	}
	body := raw[:nonceTimeLen+nonceSaltLen]
	if !hmac.Equal(raw[len(body):], m.mac("nonce", body, []byte(addr))[:nonceMACLen]) {
		return authChallenge // not ours, or issued to another address
	}
	age := m.now().Sub(m.start) - time.Duration(binary.BigEndian.Uint64(raw[:nonceTimeLen]))
	if age < 0 {
		return authChallenge
	}
	if age > m.ttl {
		return authStale
	}
	if subtle.ConstantTimeCompare([]byte(m.opaqueFor(nonce)), []byte(opaque)) != 1 {
		return authForbidden
	}
	m.mu.Lock()
	_, used := m.used[nonce]
	m.mu.Unlock()
	if used {
		return authChallenge // a replay: it costs nothing and tells nothing
	}
	return authOK
}

// consume records a nonce whose digest answer was right, so that the same
// Proxy-Authorization cannot be replayed. False if it was already honoured
// (a concurrent replay) or if the record is full of live nonces: then the
// INVITE is challenged again rather than let a replay through.
func (m *nonceMinter) consume(nonce string) bool {
	raw, err := hex.DecodeString(nonce)
	if err != nil || len(raw) < nonceTimeLen {
		return false
	}
	issued := time.Duration(binary.BigEndian.Uint64(raw[:nonceTimeLen]))
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.used[nonce]; ok {
		return false
	}
	if len(m.used) >= m.usedMax {
		now := m.now().Sub(m.start)
		for n, t := range m.used {
			if now-t > m.ttl {
				delete(m.used, n) // expired: check answers authStale for it now
			}
		}
		if len(m.used) >= m.usedMax {
			return false
		}
	}
	m.used[nonce] = issued
	return true
}

// failThrottle counts failed authentications per source address and per
// source prefix (an IPv4 /24, an IPv6 /64 by default), and refuses further
// attempts for a while once either crosses its limit: one address gets
// limit guesses a window, a whole prefix twice that, so rotating through
// the addresses of one /64 buys nothing. Trusted sources (sip.allow,
// addresses that authenticated before) are counted by address only, so a
// stranger next to Meta cannot get Meta's prefix blocked.
type failThrottle struct {
	mu          sync.Mutex
	limit       int
	prefixLimit int
	window      time.Duration
	max         int
	addrs       map[netip.Addr]*failCount
	prefixes    map[netip.Prefix]*failCount
	prefixOf    func(netip.Addr) netip.Prefix
	trusted     func(netip.Addr) bool
	now         func() time.Time
}

type failCount struct {
	n     int
	first time.Time
}

func newFailThrottle(limit int, window time.Duration, prefixOf func(netip.Addr) netip.Prefix, trusted func(netip.Addr) bool) *failThrottle {
	return &failThrottle{limit: limit, prefixLimit: 2 * limit, window: window, max: 4096,
		addrs: make(map[netip.Addr]*failCount), prefixes: make(map[netip.Prefix]*failCount),
		prefixOf: prefixOf, trusted: trusted, now: time.Now}
}

// current is k's count inside the window, nil when there is none (an
// expired one is dropped). t.mu is held.
func current[K comparable](m map[K]*failCount, k K, now time.Time, window time.Duration) *failCount {
	f, ok := m[k]
	if ok && now.Sub(f.first) > window {
		delete(m, k)
		return nil
	}
	return f
}

// book adds one to k's count; a full map of live entries leaves k
// untracked (checked, but not counted). t.mu is held.
func book[K comparable](m map[K]*failCount, k K, now time.Time, window time.Duration, max int) {
	if f := current(m, k, now, window); f != nil {
		f.n++
		return
	}
	if len(m) >= max {
		for k2, f := range m { // drop expired entries; bounded map
			if now.Sub(f.first) > window {
				delete(m, k2)
			}
		}
		if len(m) >= max {
			return
		}
	}
	m[k] = &failCount{n: 1, first: now}
}

func giveBack[K comparable](m map[K]*failCount, k K) {
	if f, ok := m[k]; ok && f.n > 0 {
		f.n--
	}
}

// over says whether ip (or, for a stranger, its prefix) is at its limit. t.mu is held.
func (t *failThrottle) over(ip netip.Addr, now time.Time) bool {
	if f := current(t.addrs, ip, now, t.window); f != nil && f.n >= t.limit {
		return true
	}
	if t.trusted(ip) {
		return false
	}
	f := current(t.prefixes, t.prefixOf(ip), now, t.window)
	return f != nil && f.n >= t.prefixLimit
}

func (t *failThrottle) blocked(ip netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.over(ip, t.now())
}

// attempt books one authentication attempt from ip as a failure before
// it is checked, and says no once ip or its prefix is at the limit:
// concurrent guesses (sipgo runs each request in its own goroutine) cannot
// overrun it. A success clears the address's count (succeed), an attempt
// that turned out not to be a guess (an expired nonce) gives its booking
// back (undo).
func (t *failThrottle) attempt(ip netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if t.over(ip, now) {
		return false
	}
	book(t.addrs, ip, now, t.window, t.max)
	book(t.prefixes, t.prefixOf(ip), now, t.window, t.max)
	return true
}

func (t *failThrottle) undo(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	giveBack(t.addrs, ip)
	giveBack(t.prefixes, t.prefixOf(ip))
}

// succeed forgets ip's failures and gives its prefix back the booking of
// this (successful) attempt; other addresses' failures in the prefix stay.
func (t *failThrottle) succeed(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.addrs, ip)
	giveBack(t.prefixes, t.prefixOf(ip))
}

// verifyDigest checks one Proxy-Authorization value against our challenge
// rules: our realm, a username equal to the business number (with or
// without '+'), qop=auth with cnonce and nc, MD5 or SHA-256.
func verifyDigest(hdr string, method string, realm, digits, password string) (*digest.Credentials, error) {
	creds, err := digest.ParseCredentials(hdr)
	if err != nil {
		return nil, fmt.Errorf("unparseable Proxy-Authorization: %w", err)
	}
	if creds.Realm != realm {
		return creds, fmt.Errorf("realm %q is not ours (%q)", creds.Realm, realm)
	}
	if strings.TrimPrefix(creds.Username, "+") != digits {
		return creds, fmt.Errorf("username %q is not the business number", creds.Username)
	}
	if creds.QOP != "auth" || creds.Cnonce == "" || creds.Nc < 1 {
		return creds, errors.New("qop=auth with cnonce and nc is required")
	}
	alg := strings.ToUpper(creds.Algorithm)
	if alg != "" && alg != "MD5" && alg != "SHA-256" {
		return creds, fmt.Errorf("algorithm %q not supported", creds.Algorithm)
	}
	want, err := digest.Digest(&digest.Challenge{
		Realm: realm, Nonce: creds.Nonce, Opaque: creds.Opaque,
		Algorithm: creds.Algorithm, QOP: []string{"auth"},
	}, digest.Options{
		Method: method, URI: creds.URI, Username: creds.Username, Password: password,
		Cnonce: creds.Cnonce, Count: creds.Nc,
	})
	if err != nil {
		return creds, fmt.Errorf("computing digest: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(strings.ToLower(want.Response)), []byte(strings.ToLower(creds.Response))) != 1 {
		return creds, errors.New("wrong password (digest response mismatch)")
	}
	return creds, nil
}

// pickChallenge chooses the strongest digest challenge among a 407's
// Proxy-Authenticate headers. Meta sends two (SHA-256, then MD5), each with
// its own nonce; some UACs failed by answering the first with the wrong
// nonce, so the answer always uses the chosen header's own parameters.
func pickChallenge(res *ssip.Response) (*digest.Challenge, error) {
	var best *digest.Challenge
	rank := func(alg string) int {
		switch strings.ToUpper(alg) {
		case "SHA-256":
			return 2
		case "", "MD5":
			return 1
		}
		return 0
	}
	var errs []error
	for _, h := range res.GetHeaders("Proxy-Authenticate") {
		ch, err := digest.ParseChallenge(h.Value())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if rank(ch.Algorithm) == 0 || (len(ch.QOP) > 0 && !ch.SupportsQOP("auth")) {
			errs = append(errs, fmt.Errorf("unsupported challenge algorithm=%q qop=%v", ch.Algorithm, ch.QOP))
			continue
		}
		if best == nil || rank(ch.Algorithm) > rank(best.Algorithm) {
			best = ch
		}
	}
	if best == nil {
		if len(errs) == 0 {
			return nil, errors.New("407 without a Proxy-Authenticate header")
		}
		return nil, fmt.Errorf("no usable digest challenge: %w", errors.Join(errs...))
	}
	return best, nil
}

// answerChallenge builds the Proxy-Authorization value for a challenge, the
// way the guide's samples show it: username is the business number without '+'.
func answerChallenge(ch *digest.Challenge, method, uri, digits, password string) (string, error) {
	creds, err := digest.Digest(ch, digest.Options{
		Method: method, URI: uri, Username: digits, Password: password, Count: 1,
	})
	if err != nil {
		return "", fmt.Errorf("answering %s challenge: %w", ch.Algorithm, err)
	}
	return creds.String(), nil
}

// challengeHeader renders our 407 challenge as the issue specifies.
func challengeHeader(realm, nonce, opaque string, stale bool) ssip.Header {
	v := fmt.Sprintf(`Digest realm="%s", nonce="%s", opaque="%s", algorithm=MD5, qop="auth"`, realm, nonce, opaque)
	if stale {
		v += ", stale=true"
	}
	return ssip.NewHeader("Proxy-Authenticate", v)
}
