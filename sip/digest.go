package sip

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
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
	authChallenge            // no credentials, or a nonce we no longer honour: send a fresh 407
	authStale                // our nonce expired: 407 with stale=true
	authForbidden            // credentials present and wrong: 403
	authThrottled            // too many failures from this source: 403 without checking
)

// nonceStore issues single-use nonces. It is bounded so that a flood of
// unauthenticated INVITEs cannot grow it without limit: the oldest nonce is
// forgotten first, which at worst costs a legitimate caller one extra 407.
// One source may hold at most an eighth of the store: past that, its own
// oldest nonce goes, so a flood from one address cannot evict Meta's.
type nonceStore struct {
	mu     sync.Mutex
	ttl    time.Duration
	max    int
	perSrc int
	nonces map[string]nonceEntry
	order  []string // issue order, for eviction
	bySrc  map[string]int
	now    func() time.Time
}

type nonceEntry struct {
	issued time.Time
	opaque string
	src    string
}

func newNonceStore(ttl time.Duration, size int) *nonceStore {
	return &nonceStore{ttl: ttl, max: size, perSrc: max(size/8, 1), nonces: make(map[string]nonceEntry),
		bySrc: make(map[string]int), now: time.Now}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // documented never to return an error since Go 1.24
	return hex.EncodeToString(b)
}

// issue makes a nonce for a challenge sent to src (an IP address).
func (s *nonceStore) issue(src string) (nonce, opaque string) {
	nonce, opaque = randomHex(16), randomHex(8)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bySrc[src] >= s.perSrc {
		for i, n := range s.order {
			if s.nonces[n].src == src {
				s.forget(i)
				break
			}
		}
	}
	for len(s.order) >= s.max {
		s.forget(0)
	}
	s.nonces[nonce] = nonceEntry{issued: s.now(), opaque: opaque, src: src}
	s.order = append(s.order, nonce)
	s.bySrc[src]++
	return nonce, opaque
}

// forget drops the i-th nonce in issue order; s.mu is held.
func (s *nonceStore) forget(i int) {
	n := s.order[i]
	src := s.nonces[n].src
	if s.bySrc[src]--; s.bySrc[src] <= 0 {
		delete(s.bySrc, src)
	}
	delete(s.nonces, n)
	s.order = append(s.order[:i], s.order[i+1:]...)
}

// take consumes a nonce: each one authorizes exactly one INVITE, so a
// captured Proxy-Authorization cannot be replayed.
func (s *nonceStore) take(nonce, opaque string) authResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.nonces[nonce]
	if !ok {
		return authChallenge
	}
	for i, n := range s.order {
		if n == nonce {
			s.forget(i)
			break
		}
	}
	if s.now().Sub(e.issued) > s.ttl {
		return authStale
	}
	if subtle.ConstantTimeCompare([]byte(e.opaque), []byte(opaque)) != 1 {
		return authForbidden
	}
	return authOK
}

// failThrottle counts failed authentications per source IP and refuses
// further attempts for a while once a source crosses the limit.
type failThrottle struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	max    int
	fails  map[string]*failCount
	now    func() time.Time
}

type failCount struct {
	n     int
	first time.Time
}

func newFailThrottle(limit int, window time.Duration) *failThrottle {
	return &failThrottle{limit: limit, window: window, max: 4096, fails: make(map[string]*failCount), now: time.Now}
}

func (t *failThrottle) blocked(ip string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.current(ip, t.now())
	return f != nil && f.n >= t.limit
}

// current is ip's count inside the window, nil when there is none (an
// expired one is dropped). t.mu is held.
func (t *failThrottle) current(ip string, now time.Time) *failCount {
	f, ok := t.fails[ip]
	if ok && now.Sub(f.first) > t.window {
		delete(t.fails, ip)
		return nil
	}
	return f
}

// attempt books one authentication attempt from ip as a failure before
// it is checked, and says no once ip is at the limit: concurrent guesses
// (sipgo runs each request in its own goroutine) cannot overrun it. A
// success clears the count (succeed), an attempt that turned out not to be
// a guess (an expired nonce) gives its booking back (undo).
func (t *failThrottle) attempt(ip string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if f := t.current(ip, now); f != nil {
		if f.n >= t.limit {
			return false
		}
		f.n++
		return true
	}
	if len(t.fails) >= t.max {
		for k, f := range t.fails { // drop expired entries; bounded map
			if now.Sub(f.first) > t.window {
				delete(t.fails, k)
			}
		}
		if len(t.fails) >= t.max {
			return true // full of live entries: check, but do not track this source
		}
	}
	t.fails[ip] = &failCount{n: 1, first: now}
	return true
}

func (t *failThrottle) undo(ip string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f, ok := t.fails[ip]; ok && f.n > 0 {
		f.n--
	}
}

func (t *failThrottle) succeed(ip string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.fails, ip)
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
