package sip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond for a generous 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closedByServer says whether the peer closed c (EOF or reset) within a
// generous bound, as opposed to c staying open.
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(c)
	return err == nil || !errors.Is(err, os.ErrDeadlineExceeded)
}

func dialTCPFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot dial from %s (needs Linux's 127.0.0.0/8 on lo): %v", src, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestFirstMessageDeadline: a connection must finish the TLS handshake and
// send a first whole SIP message within FirstMessage, whatever bytes it
// dribbles meanwhile; an unauthenticated one that falls silent later is
// closed too; one that authenticated may stay idle.
func TestFirstMessageDeadline(t *testing.T) {
	const first = 300 * time.Millisecond
	env := newTestEnv(t, nil, answerPolicy, func(c *Config) { c.FirstMessage = first })

	// Nothing at all: not even a ClientHello.
	if c := dialTCPFrom(t, "127.0.0.1", env.addr); !closedByServer(c) {
		t.Fatal("a silent TCP connection was held open")
	}
	// A handshake, then a request one byte every 50 ms (it would take
	// seconds): handshake bytes and partial messages do not move the deadline.
	c, err := tls.Dial("tcp", env.addr, &tls.Config{RootCAs: env.ca.Pool(), ServerName: tHost})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	slow := req("OPTIONS", "")
	wrote := make(chan int, 1)
	go func() {
		n := 0
		for ; n < len(slow); n++ {
			if _, err := c.Write([]byte{slow[n]}); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		wrote <- n
	}()
	if !closedByServer(c) {
		t.Fatal("a slowly dribbled first message kept the connection open")
	}
	if n := <-wrote; n >= len(slow) {
		t.Fatal("the whole slow message got through before the deadline: test too short")
	}
	waitFor(t, "two first-message timeouts counted", func() bool { return env.ep.Guard().FirstTimeouts >= 2 })

	// One message, then silence, never authenticated.
	m := env.dialMeta(t)
	m.send(req("OPTIONS", ""))
	m.expect(200)
	if !closedByServer(m.c) {
		t.Fatal("an unauthenticated connection idled past the deadline")
	}
	waitFor(t, "idle timeout counted", func() bool { return env.ep.Guard().IdleTimeouts >= 1 })

	// Meta's connection authenticated: it may stay silent (here 3× the deadline).
	meta := env.dialMeta(t)
	establish(t, meta, "deadline-call")
	time.Sleep(3 * first)
	meta.send(req("OPTIONS", ""))
	meta.expect(200)
	if st := env.ep.Guard(); st.Authenticated != 1 || st.Trusted != 1 {
		t.Fatalf("guard %+v: want one authenticated connection and one trusted address", st)
	}
}

// TestReservedSeatsForMeta: strangers from many prefixes fill what they
// may, per address and per /24 shares hold, and Meta (an address that
// authenticated before) still gets a connection.
func TestReservedSeatsForMeta(t *testing.T) {
	// 8 seats, 2 reserved: strangers get 6, at most 2 per /24, 1 per address.
	env := newTestEnv(t, nil, answerPolicy, func(c *Config) { c.MaxConns, c.ReservedConns = 8, 2 })
	meta := env.dialFrom(t, "127.0.0.1")
	establish(t, meta, "seat-call")
	_ = meta.c.Close()
	waitFor(t, "Meta's connection released", func() bool { return env.ep.Guard().Open == 0 })

	// Shares: a second connection from one address, a third from one /24.
	a := dialTCPFrom(t, "127.2.0.1", env.addr)
	waitFor(t, "a stranger seated", func() bool { return env.ep.Guard().Open == 1 })
	if c := dialTCPFrom(t, "127.2.0.1", env.addr); !closedByServer(c) {
		t.Fatal("a second connection from one stranger address was held")
	}
	b := dialTCPFrom(t, "127.2.0.2", env.addr)
	waitFor(t, "a second stranger of the /24 seated", func() bool { return env.ep.Guard().Open == 2 })
	if c := dialTCPFrom(t, "127.2.0.3", env.addr); !closedByServer(c) {
		t.Fatal("a third connection from one /24 was held")
	}
	if st := env.ep.Guard(); st.OverAddr != 1 || st.OverPrefix != 1 {
		t.Fatalf("guard %+v: want one refusal per address and one per prefix", st)
	}
	_, _ = a.Close(), b.Close()
	waitFor(t, "strangers released", func() bool { return env.ep.Guard().Open == 0 })

	// Six strangers from six /24s take the strangers' seats; a seventh is refused.
	for i := 1; i <= 6; i++ {
		dialTCPFrom(t, fmt.Sprintf("127.1.%d.1", i), env.addr)
	}
	waitFor(t, "six strangers seated", func() bool { return env.ep.Guard().Open == 6 })
	if c := dialTCPFrom(t, "127.1.7.1", env.addr); !closedByServer(c) {
		t.Fatal("a stranger took a reserved seat")
	}
	// Meta takes both reserved seats and is served on them.
	for i := 0; i < 2; i++ {
		m := env.dialFrom(t, "127.0.0.1")
		m.send(req("OPTIONS", ""))
		m.expect(200)
	}
	if c := dialTCPFrom(t, "127.0.0.1", env.addr); !closedByServer(c) {
		t.Fatal("a ninth connection was held: the total cap did not hold")
	}
	st := env.ep.Guard()
	if st.OverStrangers != 1 || st.OverTotal != 1 || st.Open != 8 {
		t.Fatalf("guard %+v: want 1 refusal for the strangers' pool, 1 for the total, 8 open", st)
	}
	na, over := env.ep.Refused()
	if na != 0 || over != 4 {
		t.Fatalf("Refused() = %d, %d; want 0, 4", na, over)
	}
}

// TestNoACKHangsUpAfter64T1: our 200 OK is retransmitted with doubling
// intervals capped at T2 = 8·T1; without an ACK, after 64·T1 we send BYE
// with a Reason, the call ends as EndNoACK and Answer says why.
func TestNoACKHangsUpAfter64T1(t *testing.T) {
	const t1 = 40 * time.Millisecond
	answerErr := make(chan error, 1)
	env := newTestEnv(t, nil, func(c *InboundCall) {
		_ = c.Ringing()
		answerErr <- c.Answer(context.Background(), []byte(tSDP))
	}, func(c *Config) { c.T1 = t1 })
	m := env.dialMeta(t)
	const cid = "no-ack-call"
	m.send(guideInvite(cid, "na1", "z9hG4bKna1", 1, ""))
	auth := authFor(t, m.expect(407), tPass)
	m.send(guideInvite(cid, "na1", "z9hG4bKna2", 2, "Proxy-Authorization: "+auth+"\r\n"))
	m.expect(200)
	got := []time.Time{time.Now()}
	var bye map[string][]string
	for bye == nil {
		start, hdr, _ := m.read()
		switch {
		case strings.HasPrefix(start, "SIP/2.0 200"):
			got = append(got, time.Now())
		case strings.HasPrefix(start, "BYE "):
			bye = hdr
		default:
			t.Fatalf("unexpected %q", start)
		}
	}
	m.send("SIP/2.0 200 OK\r\nVia: " + first(bye["via"]) + "\r\nFrom: " + first(bye["from"]) + "\r\nTo: " + first(bye["to"]) +
		"\r\nCall-ID: " + cid + "\r\nCSeq: " + first(bye["cseq"]) + "\r\nContent-Length: 0\r\n\r\n")
	if r := first(bye["reason"]); !strings.Contains(r, "cause=408") {
		t.Fatalf("BYE Reason %q, want SIP cause 408", r)
	}
	if r := bye["route"]; len(r) != 2 || !strings.Contains(r[0], "wa.meta.vc") {
		t.Fatalf("BYE Route %q: want the route set", r)
	}
	select {
	case err := <-answerErr:
		if !errors.Is(err, ErrNoACK) {
			t.Fatalf("Answer = %v, want ErrNoACK", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Answer did not return")
	}
	call := <-env.h.got
	if by, why := call.Ended(); by != EndNoACK || why == "" {
		t.Fatalf("ended (%q, %q), want EndNoACK with a reason", by, why)
	}
	// 64·T1 holds 10 retransmissions at T1, 2T1, 4T1, then T2 = 8T1 apart.
	retrans := len(got) - 1
	if retrans < 6 || retrans > 12 {
		t.Fatalf("%d retransmissions of the 200 in 64·T1, want about 10", retrans)
	}
	var iv []time.Duration
	for i := 1; i < len(got); i++ {
		iv = append(iv, got[i].Sub(got[i-1]))
	}
	t.Logf("intervals %v", iv)
	// Doubling: the fourth interval (8T1) is well above the first (T1),
	// and later ones stay at the cap instead of growing on.
	if iv[3] < 3*iv[0] || iv[2] < iv[0] {
		t.Fatalf("intervals %v do not double from T1", iv)
	}
	for _, d := range iv[4:] {
		if d > 3*8*t1 {
			t.Fatalf("intervals %v pass T2 = 8·T1", iv)
		}
	}
	if n := env.ep.Guard().NoACK; n != 1 {
		t.Fatalf("NoACK counted %d", n)
	}
	waitFor(t, "dialog released", func() bool { return env.ep.ActiveDialogs() == 0 })
}

// TestACKStopsRetransmissions: with the ACK the 200 is not sent again.
func TestACKStopsRetransmissions(t *testing.T) {
	answerErr := make(chan error, 1)
	env := newTestEnv(t, nil, func(c *InboundCall) {
		_ = c.Ringing()
		answerErr <- c.Answer(context.Background(), []byte(tSDP))
	}, func(c *Config) { c.T1 = 20 * time.Millisecond })
	m := env.dialMeta(t)
	establish(t, m, "acked-call")
	if err := <-answerErr; err != nil {
		t.Fatalf("Answer: %v", err)
	}
	call := <-env.h.got
	if n := call.d.retransmits.Load(); n > 3 {
		t.Fatalf("%d retransmissions although the ACK came at once", n)
	}
	if by, _ := call.Ended(); by != "" {
		t.Fatalf("acked call ended %q", by)
	}
}

// TestTooLargeMessage: a request over sipgo's 64 KB limit whose framing is
// sound is answered 513 and the connection goes on serving; a header
// section without end past the limit closes the connection, counted, and
// the endpoint serves the next one.
func TestTooLargeMessage(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	m := env.dialMeta(t)
	big := strings.Repeat("x", 70000)
	m.send(strings.Replace(req("OPTIONS", "Content-Type: text/plain\r\n"), "Content-Length: 0", "Content-Length: "+strconv.Itoa(len(big)), 1) + big)
	h := m.expect(513)
	if first(h["call-id"]) != "o-OPTIONS" || !strings.Contains(first(h["cseq"]), "OPTIONS") {
		t.Fatalf("513 does not answer the request: %v", h)
	}
	// An over-long response is skipped without a word, then the next request is served.
	m.send("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: big-res\r\nCSeq: 1 BYE\r\nContent-Length: 70000\r\n\r\n" + big)
	m.send(req("OPTIONS", ""))
	m.expect(200)

	// 70 KB of headers with no end: no boundary to skip to.
	c := env.dialMeta(t)
	c.send("OPTIONS sip:x@y SIP/2.0\r\nX-Junk: " + big)
	if !closedByServer(c.c) {
		t.Fatal("a never-ending header section kept the connection")
	}
	n := env.dialMeta(t)
	n.send(req("OPTIONS", ""))
	n.expect(200)
	st := env.ep.Guard()
	if st.TooLarge != 2 || st.TooLargeDrops != 1 {
		t.Fatalf("guard %+v: want 2 skipped over-long messages and 1 closed connection", st)
	}
}

// TestFloodOfChallengesCannotStarveMeta: between Meta's 407 and its retry,
// strangers from other addresses get thousands of challenges on the wire
// (and the nonce minter 100k more); Meta's answer still works.
func TestFloodOfChallengesCannotStarveMeta(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	meta := env.dialFrom(t, "127.0.0.1")
	const cid = "flood-call"
	meta.send(guideInvite(cid, "f1", "z9hG4bKf1", 1, ""))
	auth := authFor(t, meta.expect(407), tPass)

	done := make(chan int, 4)
	for i := 0; i < 4; i++ {
		a := env.dialFrom(t, fmt.Sprintf("127.%d.0.1", 10+i))
		go func() {
			var b strings.Builder
			for j := 0; j < 250; j++ {
				b.WriteString(guideInvite(fmt.Sprintf("fl-%d-%d", i, j), "x", fmt.Sprintf("z9hG4bKfl%d-%d", i, j), 1, ""))
			}
			_, _ = io.WriteString(a.c, b.String())
			n := 0
			_ = a.c.SetReadDeadline(time.Now().Add(20 * time.Second))
			for n < 250 {
				line, err := a.rd.ReadString('\n')
				if err != nil {
					break
				}
				if strings.HasPrefix(line, "SIP/2.0 407") {
					n++
				}
			}
			done <- n
		}()
	}
	total := 0
	for i := 0; i < 4; i++ {
		total += <-done
	}
	if total != 1000 {
		t.Fatalf("%d of 1000 flood INVITEs challenged", total)
	}
	for i := 0; i < 100000; i++ {
		env.ep.nonces.issue(fmt.Sprintf("198.18.%d.%d", i/250%256, i%250+1))
	}
	meta.send(guideInvite(cid, "f1", "z9hG4bKf2", 2, "Proxy-Authorization: "+auth+"\r\n"))
	meta.expect(200)
}

// TestExpiredNonceIsStale: an answer to an expired nonce gets a fresh
// challenge with stale=true (not a failure), which then works.
func TestExpiredNonceIsStale(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy, func(c *Config) { c.NonceTTL = 100 * time.Millisecond })
	m := env.dialMeta(t)
	m.send(guideInvite("st", "s1", "z9hG4bKs1", 1, ""))
	auth := authFor(t, m.expect(407), tPass)
	time.Sleep(300 * time.Millisecond)
	m.send(guideInvite("st", "s1", "z9hG4bKs2", 2, "Proxy-Authorization: "+auth+"\r\n"))
	h := m.expect(407)
	if !strings.Contains(first(h["proxy-authenticate"]), "stale=true") {
		t.Fatalf("expired nonce challenged without stale=true: %q", h["proxy-authenticate"])
	}
	m.send(guideInvite("st", "s1", "z9hG4bKs3", 3, "Proxy-Authorization: "+authFor(t, h, tPass)+"\r\n"))
	m.expect(200)
	if n := env.ep.Throttled(); n != 0 {
		t.Fatalf("a stale answer was throttled (%d)", n)
	}
}

// TestSetAllowTakesEffectForNewConnections: SIGHUP's new sip.allow refuses
// a source the old one let in, before TLS, without a restart.
func TestSetAllowTakesEffectForNewConnections(t *testing.T) {
	a := newAllowList(nil)
	g := &guardListener{allow: a}
	ip := netip.MustParseAddr("127.0.0.2")
	if !g.allowed(ip) {
		t.Fatal("an empty allow-list refused someone")
	}
	e := &Endpoint{allow: a}
	if err := e.SetAllow([]string{"127.0.0.1/32"}); err != nil {
		t.Fatal(err)
	}
	if g.allowed(ip) || !g.allowed(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("the new allow-list is not the one checked")
	}
	if err := e.SetAllow([]string{"meta"}); err == nil {
		t.Fatal("a bad entry accepted")
	}
	if !g.allowed(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("a bad SIGHUP dropped the working allow-list")
	}
}
