package sip

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"net/netip"
	"regexp"
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

func TestNonceSingleUseAndExpiry(t *testing.T) {
	m := newNonceMinter(time.Minute)
	now := m.start
	m.now = func() time.Time { return now }
	n, o := m.issue("192.0.2.1")
	if len(n) != 64 || len(o) != 16 {
		t.Fatalf("nonce %q opaque %q: want 256-bit and 64-bit hex", n, o)
	}
	if n2, _ := m.issue("192.0.2.1"); n2 == n {
		t.Fatal("two challenges in the same instant got the same nonce")
	}
	if got := m.check(n, o, "192.0.2.1"); got != authOK {
		t.Fatalf("first use = %v, want ok", got)
	}
	// A wrong answer does not use the nonce up; a right one does.
	if got := m.check(n, o, "192.0.2.1"); got != authOK {
		t.Fatalf("check twice = %v, want ok until consumed", got)
	}
	if !m.consume(n) {
		t.Fatal("consume refused a fresh nonce")
	}
	if got := m.check(n, o, "192.0.2.1"); got != authChallenge {
		t.Fatalf("replay = %v, want a fresh challenge", got)
	}
	if m.consume(n) {
		t.Fatal("a nonce was honoured twice")
	}
	// Bound to the address it was issued to.
	n2, o2 := m.issue("192.0.2.1")
	if got := m.check(n2, o2, "192.0.2.2"); got != authChallenge {
		t.Fatalf("nonce from another address = %v, want a fresh challenge", got)
	}
	now = now.Add(61 * time.Second)
	if got := m.check(n2, o2, "192.0.2.1"); got != authStale {
		t.Fatalf("expired = %v, want stale", got)
	}
	n3, _ := m.issue("192.0.2.1")
	if got := m.check(n3, "0000000000000000", "192.0.2.1"); got != authForbidden {
		t.Fatalf("wrong opaque = %v, want forbidden", got)
	}
	// Forged or mangled nonces are simply challenged again.
	for _, bad := range []string{"", "zz", n3[:63] + "0", strings.Repeat("0", 64), n3 + "00"} {
		if bad == n3 {
			continue
		}
		if got := m.check(bad, o, "192.0.2.1"); got != authChallenge {
			t.Fatalf("forged nonce %q = %v, want challenge", bad, got)
		}
	}
	// Another process's key (a restart) does not validate ours.
	if got := newNonceMinter(time.Minute).check(n3, m.opaqueFor(n3), "192.0.2.1"); got != authChallenge {
		t.Fatalf("nonce under another key = %v", got)
	}
}

// TestUsedNonceRecordIsBounded: the record of honoured nonces drops
// expired entries and refuses (rather than forgets) when full of live ones.
func TestUsedNonceRecordIsBounded(t *testing.T) {
	m := newNonceMinter(time.Minute)
	m.usedMax = 8
	now := m.start
	m.now = func() time.Time { return now }
	for i := 0; i < 8; i++ {
		n, _ := m.issue("192.0.2.1")
		if !m.consume(n) {
			t.Fatalf("consume %d refused", i)
		}
	}
	n, _ := m.issue("192.0.2.1")
	if m.consume(n) {
		t.Fatal("a full record of live nonces took another (a replay could follow an eviction)")
	}
	now = now.Add(2 * time.Minute)
	n, _ = m.issue("192.0.2.1")
	if !m.consume(n) || len(m.used) != 1 {
		t.Fatalf("expired entries not dropped: %d left", len(m.used))
	}
}

// TestNonceFloodFromManySourcesSparesMeta: 100,000 challenges to 10,000
// addresses between Meta's 407 and its retry change nothing: nonces are
// stateless, nothing is stored per challenge.
func TestNonceFloodFromManySourcesSparesMeta(t *testing.T) {
	m := newNonceMinter(time.Minute)
	meta, mo := m.issue("157.240.0.1")
	for i := 0; i < 100000; i++ {
		m.issue(fmt.Sprintf("198.%d.%d.%d", 18+i/65536%2, i/256%256, i%256%250+1))
	}
	if got := m.check(meta, mo, "157.240.0.1"); got != authOK || !m.consume(meta) {
		t.Fatalf("Meta's nonce after a 100k-challenge flood: %v, want ok", got)
	}
	if len(m.used) != 1 {
		t.Fatalf("%d nonces recorded, want only the honoured one", len(m.used))
	}
}

func testThrottle(limit int, trusted ...string) *failThrottle {
	ts := newTrustSet(newAllowList(nil))
	for _, a := range trusted {
		ts.add(netip.MustParseAddr(a))
	}
	return newFailThrottle(limit, time.Minute, prefixer{v4: 24, v6: 64}.of, ts.trusted)
}

func TestFailThrottle(t *testing.T) {
	th := testThrottle(3)
	now := time.Unix(0, 0)
	th.now = func() time.Time { return now }
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")
	for i := 0; i < 3; i++ {
		if th.blocked(a1) || !th.attempt(a1) {
			t.Fatalf("blocked after %d failures", i)
		}
	}
	if !th.blocked(a1) || th.attempt(a1) {
		t.Fatal("not blocked after 3 failures")
	}
	// An attempt given back (an expired nonce, not a guess) frees its slot.
	th.undo(a1)
	if th.blocked(a1) || !th.attempt(a1) {
		t.Fatal("undo did not free the attempt")
	}
	if th.blocked(a2) {
		t.Fatal("another source is blocked")
	}
	now = now.Add(2 * time.Minute)
	if th.blocked(a1) {
		t.Fatal("still blocked after the window")
	}
}

// TestThrottleCountsByPrefix: rotating through the addresses of one IPv6
// /64 (or IPv4 /24) gets twice one address's guesses, not one per address;
// an address that authenticated before is not blocked by its neighbours.
func TestThrottleCountsByPrefix(t *testing.T) {
	th := testThrottle(5, "2001:db8:1:2::ffff")
	checked := 0
	for i := 1; i <= 1000; i++ {
		if th.attempt(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i))) {
			checked++
		}
	}
	if checked != 10 {
		t.Fatalf("%d guesses checked from 1000 addresses of one /64, want 10", checked)
	}
	if !th.blocked(netip.MustParseAddr("2001:db8:1:2:dead::1")) {
		t.Fatal("a fresh address of the blocked /64 is not blocked")
	}
	if th.blocked(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Fatal("the neighbouring /64 is blocked")
	}
	if th.blocked(netip.MustParseAddr("2001:db8:1:2::ffff")) || !th.attempt(netip.MustParseAddr("2001:db8:1:2::ffff")) {
		t.Fatal("a trusted address is blocked by strangers in its /64")
	}
	v4 := 0
	for i := 1; i <= 250; i++ {
		if th.attempt(netip.MustParseAddr(fmt.Sprintf("203.0.113.%d", i))) {
			v4++
		}
	}
	if v4 != 10 {
		t.Fatalf("%d guesses checked from one /24, want 10", v4)
	}
	// A success gives the prefix back its own booking only.
	th2 := testThrottle(5)
	ip := netip.MustParseAddr("192.0.2.7")
	th2.attempt(ip)
	th2.succeed(ip)
	if f := th2.prefixes[netip.MustParsePrefix("192.0.2.0/24")]; f != nil && f.n != 0 {
		t.Fatalf("prefix count %d after a success, want 0", f.n)
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

// TestThrottleHoldsUnderConcurrentGuesses: many goroutines guessing at
// once from one address get at most the limit of checks.
func TestThrottleHoldsUnderConcurrentGuesses(t *testing.T) {
	th := testThrottle(5)
	var checked atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if th.attempt(netip.MustParseAddr("203.0.113.9")) {
				checked.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := checked.Load(); n != 5 {
		t.Fatalf("%d of 64 concurrent guesses were checked, want 5", n)
	}
}
