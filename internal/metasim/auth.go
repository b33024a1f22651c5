package metasim

// Digest authentication, both directions, with github.com/icholy/digest doing
// the hashing.
//
// Server side (business-initiated calls): Meta answers an unauthenticated
// INVITE with 407 and, per public traces (kamailio issue 4698, livekit/sip
// issue 686), TWO Proxy-Authenticate headers, SHA-256 first then MD5, each
// with its own nonce and opaque; the guide's own sample shows a single MD5
// one. Each nonce is remembered with its algorithm, opaque, expiry and the
// highest nc used.
//
// Client side (user-initiated calls): Meta answers the business's challenge
// with a Proxy-Authorization in the guide's parameter order, with
// uri = the Request-URI without its parameters (the guide's second INVITE has
// uri="sip:+12145551869@meta-voip.example.com" while its Request-URI ends in
// ";transport=tls").

import (
	"crypto/subtle"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// ChallengeMode selects the Proxy-Authenticate headers of metasim's 407.
type ChallengeMode int

const (
	// ChallengeSHA256AndMD5 sends two Proxy-Authenticate headers, SHA-256
	// first, then MD5, each with its own nonce and opaque (what the real
	// gateway sends, per public traces). The default.
	ChallengeSHA256AndMD5 ChallengeMode = iota
	// ChallengeMD5 sends one MD5 challenge, like the guide's sample 407.
	ChallengeMD5
	// ChallengeSHA256 sends one SHA-256 challenge.
	ChallengeSHA256
)

func (m ChallengeMode) String() string {
	switch m {
	case ChallengeSHA256AndMD5:
		return "SHA-256+MD5"
	case ChallengeMD5:
		return "MD5"
	case ChallengeSHA256:
		return "SHA-256"
	}
	return fmt.Sprintf("ChallengeMode(%d)", int(m))
}

func (m ChallengeMode) algorithms() []string {
	switch m {
	case ChallengeMD5:
		return []string{"MD5"}
	case ChallengeSHA256:
		return []string{"SHA-256"}
	}
	return []string{"SHA-256", "MD5"}
}

// DefaultNonceTTL is Config.NonceTTL's default.
const DefaultNonceTTL = 5 * time.Minute

const maxNonces = 4096

type nonceEntry struct {
	alg    string
	opaque string
	issued time.Time
	lastNC int
}

type nonceStore struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]*nonceEntry
}

func newNonceStore(ttl time.Duration) *nonceStore {
	return &nonceStore{ttl: ttl, m: map[string]*nonceEntry{}}
}

// issue returns a fresh nonce and opaque (16 hex digits each, like the
// guide's nonce="419ac2415577f8e1",opaque="440badfc05072367").
func (ns *nonceStore) issue(alg string) (nonce, opaque string) {
	now := time.Now()
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for k, e := range ns.m {
		if now.Sub(e.issued) > 2*ns.ttl {
			delete(ns.m, k)
		}
	}
	if len(ns.m) >= maxNonces { // drop the oldest under a flood
		var oldK string
		var old time.Time
		for k, e := range ns.m {
			if oldK == "" || e.issued.Before(old) {
				oldK, old = k, e.issued
			}
		}
		delete(ns.m, oldK)
	}
	for {
		nonce = randHex(8)
		if _, dup := ns.m[nonce]; !dup {
			break
		}
	}
	opaque = randHex(8)
	ns.m[nonce] = &nonceEntry{alg: alg, opaque: opaque, issued: now}
	return nonce, opaque
}

// challengeValue formats a Proxy-Authenticate value exactly like the guide's
// `Digest realm="wa.meta.vc",nonce="…",opaque="…",algorithm=MD5,qop="auth"`.
func challengeValue(realm, nonce, opaque, alg string, stale bool) string {
	v := fmt.Sprintf(`Digest realm="%s",nonce="%s",opaque="%s",algorithm=%s,qop="auth"`, realm, nonce, opaque, alg)
	if stale {
		v += ",stale=true"
	}
	return v
}

// authVerdict is the outcome of checking a business INVITE's credentials.
type authVerdict int

const (
	authOK        authVerdict = iota
	authChallenge             // send (another) 407
	authForbidden             // send 403
)

type authResult struct {
	verdict authVerdict
	stale   bool
	reason  string // why, for logs and the 403's reason phrase
	cred    *digest.Credentials
}

// verify checks the Proxy-Authorization of req: username must be the
// business digits, realm ours, nonce one we issued (and not expired),
// algorithm and opaque those issued with the nonce, qop=auth, nc above any
// nc seen before with that nonce, uri naming the Request-URI's user@host, and
// the response must match password.
func (s *Sim) verify(req *sip.Request) authResult {
	var cred *digest.Credentials
	for _, h := range req.GetHeaders("Proxy-Authorization") {
		c, err := digest.ParseCredentials(h.Value())
		if err != nil {
			return authResult{verdict: authForbidden, reason: "malformed Proxy-Authorization"}
		}
		if c.Realm == s.cfg.Hostname {
			cred = c
			break
		}
	}
	if cred == nil {
		return authResult{verdict: authChallenge, reason: "no credentials for realm " + s.cfg.Hostname}
	}
	fail := func(why string) authResult { return authResult{verdict: authForbidden, reason: why, cred: cred} }
	if cred.Username != digits(s.cfg.BusinessNumber) {
		return fail(fmt.Sprintf("username %q is not the business number", cred.Username))
	}
	if !strings.EqualFold(cred.QOP, "auth") {
		return fail("qop must be auth")
	}
	if cred.Cnonce == "" || cred.Nc <= 0 {
		return fail("missing cnonce or nc")
	}
	var uri sip.Uri
	if err := sip.ParseUri(cred.URI, &uri); err != nil || uri.User != req.Recipient.User ||
		!strings.EqualFold(uri.Host, req.Recipient.Host) {
		return fail(fmt.Sprintf("uri %q does not match the Request-URI", cred.URI))
	}
	alg := cred.Algorithm
	if alg == "" {
		alg = "MD5"
	}

	s.nonces.mu.Lock()
	defer s.nonces.mu.Unlock()
	e := s.nonces.m[cred.Nonce]
	if e == nil {
		return fail("unknown nonce")
	}
	if time.Since(e.issued) > s.nonces.ttl {
		return authResult{verdict: authChallenge, stale: true, reason: "nonce expired", cred: cred}
	}
	if !strings.EqualFold(alg, e.alg) {
		return fail(fmt.Sprintf("algorithm %s answers a %s nonce", alg, e.alg))
	}
	if cred.Opaque != e.opaque {
		return fail("opaque mismatch")
	}
	if cred.Nc <= e.lastNC {
		return fail(fmt.Sprintf("nonce reused (nc %08x after %08x)", cred.Nc, e.lastNC))
	}
	want, err := digest.Digest(&digest.Challenge{
		Realm: s.cfg.Hostname, Nonce: cred.Nonce, Opaque: e.opaque, Algorithm: e.alg, QOP: []string{"auth"},
	}, digest.Options{
		Method: string(req.Method), URI: cred.URI, Username: cred.Username, Password: s.cfg.Password,
		Cnonce: cred.Cnonce, Count: cred.Nc,
	})
	if err != nil {
		return fail(err.Error())
	}
	if subtle.ConstantTimeCompare([]byte(strings.ToLower(cred.Response)), []byte(want.Response)) != 1 {
		return fail("wrong digest response")
	}
	e.lastNC = cred.Nc
	return authResult{verdict: authOK, cred: cred}
}

func algRank(alg string) int {
	switch strings.ToUpper(alg) {
	case "", "MD5":
		return 1
	case "SHA-256":
		return 2
	}
	return 0 // unsupported (SHA-512-256 etc. are not what Meta speaks)
}

// credentials answers the strongest supported challenge of a 401/407 with
// the guide's parameter order:
//
//	Digest username="12145551869", realm="…", nonce="…", uri="sip:+12145551869@meta-voip.example.com",
//	response="…", [algorithm=X, ]cnonce="…", opaque="…", qop=auth, nc=00000001
//
// It returns the header name to send (Proxy-Authorization or Authorization).
func credentials(res *sip.Response, method string, ruri sip.Uri, username, password string) (name, value string, err error) {
	chName, name := "Proxy-Authenticate", "Proxy-Authorization"
	if res.StatusCode == sip.StatusUnauthorized {
		chName, name = "WWW-Authenticate", "Authorization"
	}
	var best *digest.Challenge
	for _, h := range res.GetHeaders(chName) {
		ch, err := digest.ParseChallenge(h.Value())
		if err != nil {
			continue
		}
		for i := range ch.QOP {
			ch.QOP[i] = strings.TrimSpace(ch.QOP[i])
		}
		if algRank(ch.Algorithm) == 0 || (len(ch.QOP) > 0 && !ch.SupportsQOP("auth")) {
			continue
		}
		if best == nil || algRank(ch.Algorithm) > algRank(best.Algorithm) {
			best = ch
		}
	}
	if best == nil {
		return "", "", fmt.Errorf("metasim: no usable digest challenge in %d %s", res.StatusCode, res.Reason)
	}
	uri := ruri.Addr() // sip:user@host, no parameters, as in the guide
	opts := digest.Options{Method: method, URI: uri, Username: username, Password: password, Count: 1}
	if len(best.QOP) > 0 {
		opts.Cnonce = randAlnum(30)
	}
	cred, err := digest.Digest(best, opts)
	if err != nil {
		return "", "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s"`,
		cred.Username, cred.Realm, cred.Nonce, cred.URI, cred.Response)
	if best.Algorithm != "" {
		fmt.Fprintf(&b, ", algorithm=%s", best.Algorithm)
	}
	if cred.QOP != "" {
		fmt.Fprintf(&b, `, cnonce="%s"`, cred.Cnonce)
	}
	if cred.Opaque != "" {
		fmt.Fprintf(&b, `, opaque="%s"`, cred.Opaque)
	}
	if cred.QOP != "" {
		fmt.Fprintf(&b, ", qop=%s, nc=%08x", cred.QOP, cred.Nc)
	}
	return name, b.String(), nil
}
