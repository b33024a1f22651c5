package sip

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ssip "github.com/emiago/sipgo/sip"
)

// refResponse is an independent RFC 2617/7616 qop=auth computation, so the
// tests do not check icholy/digest against itself.
func refResponse(h func() hash.Hash, user, realm, pass, method, uri, nonce, nc, cnonce string) string {
	sum := func(s string) string {
		x := h()
		x.Write([]byte(s))
		return hex.EncodeToString(x.Sum(nil))
	}
	ha1 := sum(user + ":" + realm + ":" + pass)
	ha2 := sum(method + ":" + uri)
	return sum(ha1 + ":" + nonce + ":" + nc + ":" + cnonce + ":auth:" + ha2)
}

// metaAuth builds a Proxy-Authorization exactly shaped like Meta's in the
// guide's "Second INVITE with authorization from Meta".
func metaAuth(user, realm, pass, nonce, opaque, uri string) string {
	cnonce := "TY2SszvYCKitUCBlVLpGiPKMQfmBbj"
	resp := refResponse(md5.New, user, realm, pass, "INVITE", uri, nonce, "00000001", cnonce)
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", cnonce="%s", opaque="%s", qop=auth, nc=00000001`,
		user, realm, nonce, uri, resp, cnonce, opaque)
}

func TestVerifyDigestMetaShape(t *testing.T) {
	const realm, pass, uri = "meta-voip.example.com", "s3cret-from-meta", "sip:+12145551869@meta-voip.example.com"
	cases := []struct {
		name    string
		hdr     string
		wantErr string
	}{
		{"meta sample shape, digits username", metaAuth("12145551869", realm, pass, "n1", "o1", uri), ""},
		{"username with plus", metaAuth("+12145551869", realm, pass, "n1", "o1", uri), ""},
		{"wrong password", metaAuth("12145551869", realm, "guess", "n1", "o1", uri), "wrong password"},
		{"other number", metaAuth("19995550000", realm, pass, "n1", "o1", uri), "not the business number"},
		{"other realm", metaAuth("12145551869", "sip.twilio.com", pass, "n1", "o1", uri), "realm"},
		{"no qop", `Digest username="12145551869", realm="meta-voip.example.com", nonce="n1", uri="sip:x", response="00"`, "qop=auth"},
		{"not digest", `Basic dXNlcjpwYXNz`, "unparseable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := verifyDigest(c.hdr, "INVITE", realm, "12145551869", pass)
			if c.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("error = %v, want it to mention %q", err, c.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), pass) {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestVerifyDigestSHA256(t *testing.T) {
	const realm, pass, uri, nonce = "h.example", "pw", "sip:+12145551869@h.example", "abc"
	resp := refResponse(sha256.New, "12145551869", realm, pass, "INVITE", uri, nonce, "00000001", "cn")
	hdr := fmt.Sprintf(`Digest username="12145551869", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=SHA-256, cnonce="cn", opaque="o", qop=auth, nc=00000001`, realm, nonce, uri, resp)
	if _, err := verifyDigest(hdr, "INVITE", realm, "12145551869", pass); err != nil {
		t.Fatal(err)
	}
}

func TestNonceStoreSingleUseAndExpiry(t *testing.T) {
	s := newNonceStore(time.Minute, 3)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	n, o := s.issue("192.0.2.1")
	if len(n) != 32 || len(o) != 16 {
		t.Fatalf("nonce %q opaque %q: want 128-bit and 64-bit random hex", n, o)
	}
	if got := s.take(n, o); got != authOK {
		t.Fatalf("first use = %v, want ok", got)
	}
	if got := s.take(n, o); got != authChallenge {
		t.Fatalf("replay = %v, want a fresh challenge", got)
	}
	n2, o2 := s.issue("192.0.2.1")
	now = now.Add(2 * time.Minute)
	if got := s.take(n2, o2); got != authStale {
		t.Fatalf("expired = %v, want stale", got)
	}
	n3, _ := s.issue("192.0.2.1")
	if got := s.take(n3, "other-opaque"); got != authForbidden {
		t.Fatalf("wrong opaque = %v, want forbidden", got)
	}
	// Bounded: a flood of challenges keeps at most max nonces.
	for i := 0; i < 100; i++ {
		s.issue("192.0.2." + strconv.Itoa(i))
	}
	if len(s.nonces) != 3 || len(s.order) != 3 {
		t.Fatalf("store holds %d/%d nonces, want 3", len(s.nonces), len(s.order))
	}
}

func TestFailThrottle(t *testing.T) {
	th := newFailThrottle(3, time.Minute)
	now := time.Unix(0, 0)
	th.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if th.blocked("192.0.2.1") || !th.attempt("192.0.2.1") {
			t.Fatalf("blocked after %d failures", i)
		}
	}
	if !th.blocked("192.0.2.1") || th.attempt("192.0.2.1") {
		t.Fatal("not blocked after 3 failures")
	}
	// An attempt given back (an expired nonce, not a guess) frees its slot.
	th.undo("192.0.2.1")
	if th.blocked("192.0.2.1") || !th.attempt("192.0.2.1") {
		t.Fatal("undo did not free the attempt")
	}
	if th.blocked("192.0.2.2") {
		t.Fatal("another source is blocked")
	}
	now = now.Add(2 * time.Minute)
	if th.blocked("192.0.2.1") {
		t.Fatal("still blocked after the window")
	}
}

// The 407 Meta sends to business INVITEs: SHA-256 first, then MD5, each with its own nonce.
func metaDouble407(t *testing.T) *ssip.Response {
	t.Helper()
	raw := "SIP/2.0 407 Proxy Authentication Required\r\n" +
		"Via: SIP/2.0/TLS 159.65.244.171:5061;branch=z9hG4bK0da2\r\n" +
		"Call-ID: dc2c5b33-1b81-43ee-9213-afb56f4e56ba\r\n" +
		"From: <sip:+17125550259@meta-voip.example.com>;tag=Kc9QZg4496maQ\r\n" +
		"To: <sip:+12195550714@wa.meta.vc>;tag=z9hG4bK0da2\r\n" +
		"CSeq: 96743476 INVITE\r\n" +
		`Proxy-Authenticate: Digest realm="wa.meta.vc",nonce="47cd0001",opaque="7a2b0001",algorithm=SHA-256,qop="auth"` + "\r\n" +
		`Proxy-Authenticate: Digest realm="wa.meta.vc",nonce="419ac2415577f8e1",opaque="440badfc05072367",algorithm=MD5,qop="auth"` + "\r\n" +
		"Content-Length: 0\r\n\r\n"
	msg, err := ssip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*ssip.Response)
}

func TestPickChallengePrefersSHA256WithItsOwnNonce(t *testing.T) {
	res := metaDouble407(t)
	ch, err := pickChallenge(res)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Algorithm != "SHA-256" || ch.Nonce != "47cd0001" || ch.Opaque != "7a2b0001" {
		t.Fatalf("picked %+v, want the SHA-256 challenge with its own nonce/opaque", ch)
	}
	uri := "sip:+12195550714@wa.meta.vc;transport=tls"
	auth, err := answerChallenge(ch, "INVITE", uri, "17125550259", "pw")
	if err != nil {
		t.Fatal(err)
	}
	get := func(k string) string {
		m := regexp.MustCompile(k + `="?([^",]+)"?`).FindStringSubmatch(auth)
		if m == nil {
			t.Fatalf("%s missing in %s", k, auth)
		}
		return m[1]
	}
	if get("username") != "17125550259" || get("nonce") != "47cd0001" || get("uri") != uri || get("nc") != "00000001" || get("qop") != "auth" {
		t.Fatalf("answer not shaped like the guide's: %s", auth)
	}
	want := refResponse(sha256.New, "17125550259", "wa.meta.vc", "pw", "INVITE", uri, "47cd0001", "00000001", get("cnonce"))
	if get("response") != want {
		t.Fatalf("response %s, independent computation %s", get("response"), want)
	}
}

func TestPickChallengeMD5Only(t *testing.T) {
	res := metaDouble407(t)
	clearChallenges(res)
	res.AppendHeader(ssip.NewHeader("Proxy-Authenticate", `Digest realm="wa.meta.vc",nonce="419ac2415577f8e1",opaque="440badfc05072367",algorithm=MD5,qop="auth"`))
	ch, err := pickChallenge(res)
	if err != nil || ch.Algorithm != "MD5" {
		t.Fatalf("got %+v, %v", ch, err)
	}
	uri := "sip:+12195550714@wa.meta.vc;transport=tls"
	auth, _ := answerChallenge(ch, "INVITE", uri, "17125550259", "pw")
	cn := regexp.MustCompile(`cnonce="([^"]+)"`).FindStringSubmatch(auth)[1]
	if !strings.Contains(auth, refResponse(md5.New, "17125550259", "wa.meta.vc", "pw", "INVITE", uri, "419ac2415577f8e1", "00000001", cn)) {
		t.Fatalf("MD5 answer wrong: %s", auth)
	}
	clearChallenges(res)
	res.AppendHeader(ssip.NewHeader("Proxy-Authenticate", `Digest realm="x",nonce="n",algorithm=AKAv1-MD5`))
	if _, err := pickChallenge(res); err == nil {
		t.Fatal("accepted an unsupported algorithm")
	}
	clearChallenges(res)
	if _, err := pickChallenge(res); err == nil {
		t.Fatal("accepted a 407 without a challenge")
	}
}

func clearChallenges(res *ssip.Response) {
	for res.RemoveHeader("Proxy-Authenticate") {
	}
}

// TestNonceFloodFromOneSourceSparesOthers: one address asking for
// challenges without end evicts only its own nonces; Meta's stays valid.
func TestNonceFloodFromOneSourceSparesOthers(t *testing.T) {
	s := newNonceStore(time.Minute, 64)
	meta, mo := s.issue("157.240.0.1")
	for i := 0; i < 10000; i++ {
		s.issue("203.0.113.9")
	}
	if got := s.take(meta, mo); got != authOK {
		t.Fatalf("Meta's nonce after a one-source flood: %v, want ok", got)
	}
	if len(s.nonces) > 64/8 || len(s.order) != len(s.nonces) {
		t.Fatalf("the flooding source holds %d nonces (order %d), want at most %d", len(s.nonces), len(s.order), 64/8)
	}
	// Many sources still cannot grow the store past its size.
	for i := 0; i < 1000; i++ {
		s.issue("198.51.100." + strconv.Itoa(i%250))
	}
	if len(s.nonces) != 64 || len(s.order) != 64 {
		t.Fatalf("store holds %d/%d nonces, want 64", len(s.nonces), len(s.order))
	}
}

// TestThrottleHoldsUnderConcurrentGuesses: many goroutines guessing at
// once from one address get at most the limit of checks.
func TestThrottleHoldsUnderConcurrentGuesses(t *testing.T) {
	th := newFailThrottle(5, time.Minute)
	var checked atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if th.attempt("203.0.113.9") {
				checked.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := checked.Load(); n != 5 {
		t.Fatalf("%d of 64 concurrent guesses were checked, want 5", n)
	}
}
