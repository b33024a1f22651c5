package sip

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/testpki"
)

const (
	tHost   = "meta-voip.example.com"
	tNumber = "+12145551869"
	tPass   = "meta-generated-pw"
	tSDP    = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/SAVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
)

// testHandler plays the phone: it records calls and follows a policy.
type testHandler struct {
	mu     sync.Mutex
	calls  []*InboundCall
	policy func(c *InboundCall)
	got    chan *InboundCall
}

func (h *testHandler) IncomingCall(c *InboundCall) {
	h.mu.Lock()
	h.calls = append(h.calls, c)
	h.mu.Unlock()
	if h.policy != nil {
		go h.policy(c)
	}
	select {
	case h.got <- c:
	default:
	}
}

func answerPolicy(c *InboundCall) {
	_ = c.Ringing()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.Answer(ctx, []byte(tSDP))
}

type testEnv struct {
	ep   *Endpoint
	addr string
	ca   *testpki.CA
	h    *testHandler
}

func newTestEnv(t testing.TB, allow []netip.Prefix, policy func(*InboundCall), opts ...func(*Config)) *testEnv {
	t.Helper()
	ca, err := testpki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(tHost)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := testpki.WriteFiles(t.TempDir(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := NewCertReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &testHandler{policy: policy, got: make(chan *InboundCall, 4)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := Config{
		Hostname: tHost, Number: tNumber, Password: func() (string, error) { return tPass, nil },
		ContactPort: ln.Addr().(*net.TCPAddr).Port, Allow: allow, Logger: log,
	}
	for _, o := range opts {
		o(&cfg)
	}
	ep, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ep.Serve(ctx, ln, ServerTLSConfig(certs.Certificate))
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = ep.Close()
	})
	return &testEnv{ep: ep, addr: ln.Addr().String(), ca: ca, h: h}
}

// metaConn is Meta's side of one TLS connection, speaking raw SIP text so
// the messages are exactly the guide's.
type metaConn struct {
	t  testing.TB
	c  *tls.Conn
	rd *bufio.Reader
}

func (e *testEnv) dialMeta(t testing.TB) *metaConn {
	t.Helper()
	return e.dialFrom(t, "")
}

// dialFrom is dialMeta from the loopback address src ("" = any).
func (e *testEnv) dialFrom(t testing.TB, src string) *metaConn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := tls.DialWithDialer(d, "tcp", e.addr, &tls.Config{RootCAs: e.ca.Pool(), ServerName: tHost})
	if err != nil {
		t.Fatalf("TLS to waphone: %v", err)
	}
	if len(c.ConnectionState().PeerCertificates) == 0 {
		t.Fatal("no server certificate")
	}
	t.Cleanup(func() { _ = c.Close() })
	return &metaConn{t: t, c: c, rd: bufio.NewReader(c)}
}

func (m *metaConn) send(msg string) {
	m.t.Helper()
	if _, err := io.WriteString(m.c, msg); err != nil {
		m.t.Fatalf("write: %v", err)
	}
}

// read returns the next SIP message (start line, headers, body).
func (m *metaConn) read() (start string, hdr map[string][]string, body string) {
	m.t.Helper()
	_ = m.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr = map[string][]string{}
	for {
		line, err := m.rd.ReadString('\n')
		if err != nil {
			m.t.Fatalf("read: %v (got %q so far)", err, start)
		}
		line = strings.TrimRight(line, "\r\n")
		if start == "" {
			if line == "" {
				continue // keep-alive CRLF
			}
			start = line
			continue
		}
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ":")
		k = strings.ToLower(strings.TrimSpace(k))
		hdr[k] = append(hdr[k], strings.TrimSpace(v))
	}
	if n, _ := strconv.Atoi(first(hdr["content-length"])); n > 0 {
		b := make([]byte, n)
		if _, err := io.ReadFull(m.rd, b); err != nil {
			m.t.Fatalf("read body: %v", err)
		}
		body = string(b)
	}
	return start, hdr, body
}

// expect reads until a response with the given status arrives, skipping 1xx below it.
func (m *metaConn) expect(code int) map[string][]string {
	m.t.Helper()
	for {
		start, hdr, _ := m.read()
		if !strings.HasPrefix(start, "SIP/2.0 ") {
			m.t.Fatalf("expected response %d, got request %q", code, start)
		}
		got, _ := strconv.Atoi(strings.Fields(start)[1])
		if got == code {
			return hdr
		}
		if got >= 200 || got > code {
			m.t.Fatalf("expected %d, got %q", code, start)
		}
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// guideInvite is the guide's "First INVITE request from Meta", with a
// Call-ID, tag, branch and CSeq of the test's choosing.
func guideInvite(callID, tag, branch string, cseq int, extra string) string {
	body := "v=0\r\no=- 1750716867913 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 3480 RTP/SAVP 111 126\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:111 opus/48000/2\r\n"
	return "INVITE sip:+12145551869@meta-voip.example.com;transport=tls SIP/2.0\r\n" +
		"Via: SIP/2.0/TLS [2803:6080:f948:9597::]:47237;rport;branch=" + branch + ";alias\r\n" +
		"Record-Route: <sip:wa.meta.vc;transport=tls;lr>\r\n" +
		"Record-Route: <sip:onevc-sip-proxy.fbinfra.net:8191;transport=tls;lr>\r\n" +
		"Via: SIP/2.0/TLS [2803:6080:f948:9597:7253:922a:400:0]:5061;branch=z9hG4bKPj1e6c665db16b3ecacf32cadb4497fe77\r\n" +
		"Max-Forwards: 69\r\n" +
		`From: "12195550714" <sip:+12195550714@wa.meta.vc>;tag=` + tag + "\r\n" +
		"To: <sip:+12145551869@meta-voip.example.com>\r\n" +
		"Contact: <sip:+12195550714@wa.meta.vc;transport=tls;ob>;isfocus\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: " + strconv.Itoa(cseq) + " INVITE\r\n" +
		"X-FB-External-Domain: wa.meta.vc\r\n" +
		"Allow: INVITE, ACK, BYE, CANCEL, NOTIFY, OPTIONS\r\n" +
		"User-Agent: Facebook SipGateway\r\n" +
		"x-wa-meta-wacid: wacid.HBgLMTIxOTU1NTA3MTQVAgASGCA2MUI2\r\n" +
		"x-wa-meta-user-id: US.13491208655302741918\r\n" +
		"x-wa-meta-username: shopper42\r\n" +
		"x-wa-meta-cta-payload: order-1234\r\n" +
		extra +
		"Content-Type: application/sdp\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

var challengeRE = regexp.MustCompile(`^Digest realm="([^"]+)", nonce="([0-9a-f]+)", opaque="([0-9a-f]+)", algorithm=MD5, qop="auth"`)

// authenticate runs the 407 round and returns Meta's retry's Proxy-Authorization.
func authFor(t testing.TB, hdr map[string][]string, pass string) string {
	t.Helper()
	m := challengeRE.FindStringSubmatch(first(hdr["proxy-authenticate"]))
	if m == nil {
		t.Fatalf("407 challenge not shaped as specified: %q", hdr["proxy-authenticate"])
	}
	if m[1] != tHost {
		t.Fatalf("realm %q, want our hostname", m[1])
	}
	return metaAuth("12145551869", m[1], pass, m[2], m[3], "sip:+12145551869@meta-voip.example.com")
}

const callID = "outgoing:wacid.HBgLMTIxOTU1NTA3MTQVAgASGCA2MUI2QUY0MDRCMTUyOTM4QkE5ODEwN0ZGQTAwODkxORwYCzEyMTQ1NTUxODY5FQIAFRoA"

// establish runs a whole user-initiated call up to ACK and returns our To tag.
func establish(t testing.TB, m *metaConn, cid string) (toTag string, ok200 map[string][]string) {
	t.Helper()
	m.send(guideInvite(cid, "ece2da15", "z9hG4bKPj1"+cid, 9989, ""))
	h407 := m.expect(407)
	m.send("ACK sip:+12145551869@meta-voip.example.com;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS [2803:6080:f948:9597::]:47237;rport;branch=z9hG4bKPj1" + cid + ";alias\r\nMax-Forwards: 70\r\n" +
		`From: "12195550714" <sip:+12195550714@wa.meta.vc>;tag=ece2da15` + "\r\nTo: " + first(h407["to"]) + "\r\nCall-ID: " + cid + "\r\nCSeq: 9989 ACK\r\nContent-Length: 0\r\n\r\n")
	auth := authFor(t, h407, tPass)
	m.send(guideInvite(cid, "ece2da15", "z9hG4bKPj2"+cid, 9990, "Proxy-Authorization: "+auth+"\r\n"))
	m.expect(100)
	m.expect(180)
	ok := m.expect(200)
	to := first(ok["to"])
	i := strings.Index(to, "tag=")
	if i < 0 {
		t.Fatalf("200 without To tag: %q", to)
	}
	m.send("ACK sip:+12145551869@127.0.0.1:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS [2803:6080:f948:9597::]:47237;rport;branch=z9hG4bKPj3" + cid + ";alias\r\nMax-Forwards: 70\r\n" +
		`From: "12195550714" <sip:+12195550714@wa.meta.vc>;tag=ece2da15` + "\r\nTo: " + to + "\r\nCall-ID: " + cid + "\r\nCSeq: 9990 ACK\r\nContent-Length: 0\r\n\r\n")
	return to[i+4:], ok
}

func TestUserInitiatedCallMetaHangsUp(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	m := env.dialMeta(t)
	_, ok := establish(t, m, callID)
	if got := first(ok["content-type"]); got != "application/sdp" {
		t.Fatalf("200 Content-Type %q", got)
	}
	if len(ok["record-route"]) != 2 || !strings.Contains(ok["record-route"][0], "wa.meta.vc") {
		t.Fatalf("200 must echo Record-Route, got %q", ok["record-route"])
	}
	if !strings.Contains(first(ok["contact"]), "transport=tls") {
		t.Fatalf("Contact %q", ok["contact"])
	}
	var call *InboundCall
	select {
	case call = <-env.h.got:
	case <-time.After(5 * time.Second):
		t.Fatal("handler never saw the call")
	}
	info := call.Info()
	if info.WACID != "wacid.HBgLMTIxOTU1NTA3MTQVAgASGCA2MUI2" || info.UserID != "US.13491208655302741918" ||
		info.Username != "shopper42" || info.CTAPayload != "order-1234" || info.Remote != "+12195550714" {
		t.Fatalf("call info %+v", info)
	}
	// Meta's BYE, as in the guide, with its duration.
	m.send("BYE sip:+12145551869@127.0.0.1;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS [2803:6080:f948:9597::]:47237;rport;branch=z9hG4bKPj4;alias\r\nMax-Forwards: 70\r\n" +
		`From: "12195550714" <sip:+12195550714@wa.meta.vc>;tag=ece2da15` + "\r\nTo: " + first(ok["to"]) + "\r\nCall-ID: " + callID +
		"\r\nCSeq: 9991 BYE\r\nx-wa-meta-call-duration: 17\r\nReason: Q.850;cause=16;text=\"NORMAL_CLEARING\"\r\nContent-Length: 0\r\n\r\n")
	m.expect(200)
	select {
	case <-call.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("call did not end on BYE")
	}
	if by, _ := call.Ended(); by != EndRemoteBye {
		t.Fatalf("ended by %q", by)
	}
	if d := call.Info().DurationSec; d != 17 {
		t.Fatalf("Meta's call duration %d, want 17", d)
	}
	if n := env.ep.ActiveDialogs(); n != 0 {
		t.Fatalf("%d dialogs left", n)
	}
}

func TestOurByeFollowsRouteSetOverMetasConnection(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	m := env.dialMeta(t)
	toTag, _ := establish(t, m, callID)
	call := <-env.h.got
	errc := make(chan error, 1)
	go func() { errc <- call.Hangup(context.Background()) }()
	// The BYE arrives over Meta's own connection (its Via had ;alias).
	start, hdr, _ := m.read()
	if start != "BYE sip:+12195550714@wa.meta.vc;transport=tls;ob SIP/2.0" {
		t.Fatalf("BYE request line %q: want Meta's Contact as the Request-URI", start)
	}
	if r := hdr["route"]; len(r) != 2 || !strings.Contains(r[0], "wa.meta.vc") || !strings.Contains(r[1], "onevc-sip-proxy") {
		t.Fatalf("Route %q: want the Record-Route set in order", r)
	}
	if !strings.Contains(first(hdr["from"]), "tag="+toTag) || !strings.Contains(first(hdr["to"]), "tag=ece2da15") {
		t.Fatalf("dialog tags wrong: From %q To %q", hdr["from"], hdr["to"])
	}
	if !strings.Contains(first(hdr["reason"]), "Q.850") {
		t.Fatalf("BYE without Reason: %q", hdr["reason"])
	}
	via := first(hdr["via"])
	branch := regexp.MustCompile(`branch=([^;]+)`).FindStringSubmatch(via)[1]
	m.send("SIP/2.0 200 OK\r\nVia: " + via + "\r\nFrom: " + first(hdr["from"]) + "\r\nTo: " + first(hdr["to"]) +
		"\r\nCall-ID: " + callID + "\r\nCSeq: " + first(hdr["cseq"]) + "\r\nContent-Length: 0\r\n\r\n")
	_ = branch
	if err := <-errc; err != nil {
		t.Fatalf("Hangup: %v", err)
	}
	if by, _ := call.Ended(); by != EndLocalBye {
		t.Fatalf("ended by %q", by)
	}
}

func TestWrongPasswordIsForbiddenThenThrottled(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	m := env.dialMeta(t)
	for i := 0; i < 5; i++ {
		m.send(guideInvite(fmt.Sprintf("c%d", i), "t1", fmt.Sprintf("z9hG4bKa%d", i), 1, ""))
		h := m.expect(407)
		m.send(guideInvite(fmt.Sprintf("c%d", i), "t1", fmt.Sprintf("z9hG4bKb%d", i), 2, "Proxy-Authorization: "+authFor(t, h, "wrong")+"\r\n"))
		m.expect(403)
	}
	// Now even the right password is refused for a while, without a challenge.
	m.send(guideInvite("c9", "t1", "z9hG4bKc9", 1, ""))
	m.expect(403)
	if len(env.h.calls) != 0 {
		t.Fatal("a call reached the phone")
	}
	if n := env.ep.Throttled(); n != 1 {
		t.Fatalf("throttled INVITEs counted %d, want 1", n)
	}
	if g := env.ep.Guard(); g.AuthFailures != 5 || g.TLSHandshakes != 1 {
		t.Fatalf("auth failures %d (want 5), TLS handshakes %d (want 1)", g.AuthFailures, g.TLSHandshakes)
	}
}

func TestReplayedNonceIsChallengedAgain(t *testing.T) {
	env := newTestEnv(t, nil, func(c *InboundCall) { _ = c.Reject(486, "Busy Here") })
	m := env.dialMeta(t)
	m.send(guideInvite("r1", "t1", "z9hG4bKr1", 1, ""))
	auth := authFor(t, m.expect(407), tPass)
	m.send(guideInvite("r1", "t1", "z9hG4bKr2", 2, "Proxy-Authorization: "+auth+"\r\n"))
	m.expect(486)
	// The same credentials again, as an attacker who captured them would send.
	m.send(guideInvite("r2", "t2", "z9hG4bKr3", 1, "Proxy-Authorization: "+auth+"\r\n"))
	h := m.expect(407)
	if first(h["proxy-authenticate"]) == "" {
		t.Fatal("replay not challenged")
	}
}

func TestCancelWhileRinging(t *testing.T) {
	env := newTestEnv(t, nil, func(c *InboundCall) { _ = c.Ringing() })
	m := env.dialMeta(t)
	m.send(guideInvite("k1", "t1", "z9hG4bKk1", 1, ""))
	auth := authFor(t, m.expect(407), tPass)
	m.send(guideInvite("k1", "t1", "z9hG4bKk2", 2, "Proxy-Authorization: "+auth+"\r\n"))
	m.expect(180)
	call := <-env.h.got
	m.send("CANCEL sip:+12145551869@meta-voip.example.com;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS [2803:6080:f948:9597::]:47237;rport;branch=z9hG4bKk2;alias\r\nMax-Forwards: 70\r\n" +
		`From: "12195550714" <sip:+12195550714@wa.meta.vc>;tag=t1` + "\r\nTo: <sip:+12145551869@meta-voip.example.com>\r\nCall-ID: k1\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n")
	got := map[int]bool{}
	for len(got) < 2 {
		start, _, _ := m.read()
		code, _ := strconv.Atoi(strings.Fields(start)[1])
		got[code] = true
		if code != 200 && code != 487 {
			t.Fatalf("unexpected %q", start)
		}
	}
	select {
	case <-call.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("call not ended by CANCEL")
	}
	if by, _ := call.Ended(); by != EndCancelled {
		t.Fatalf("ended by %q", by)
	}
	if err := call.Answer(context.Background(), []byte(tSDP)); err == nil {
		t.Fatal("answered a cancelled call")
	}
}

func TestOtherMethodsAndBadInput(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	m := env.dialMeta(t)
	m.send(req("OPTIONS", ""))
	if h := m.expect(200); !strings.Contains(first(h["allow"]), "INVITE") {
		t.Fatalf("OPTIONS without Allow: %v", h)
	}
	m.send(req("MESSAGE", ""))
	if h := m.expect(405); !strings.Contains(first(h["allow"]), "BYE") {
		t.Fatalf("405 without Allow: %v", h)
	}
	m.send(req("BYE", ""))
	m.expect(481)
	// An INVITE missing its Call-ID is answered 400.
	inv := strings.Replace(guideInvite("x", "t", "z9hG4bKbad", 1, ""), "Call-ID: x\r\n", "", 1)
	m.send(inv)
	m.expect(400)
	// An INVITE without SDP cannot be answered: 488 after auth.
	noSDP := "INVITE sip:+12145551869@meta-voip.example.com;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKns1\r\nMax-Forwards: 70\r\n" +
		"From: <sip:+12195550714@wa.meta.vc>;tag=o1\r\nTo: <sip:+12145551869@meta-voip.example.com>\r\nContact: <sip:x@wa.meta.vc>\r\nCall-ID: ns\r\nCSeq: 1 INVITE\r\n"
	m.send(noSDP + "Content-Length: 0\r\n\r\n")
	auth := authFor(t, m.expect(407), tPass)
	m.send(strings.Replace(noSDP, "ns1", "ns2", 1) + "Proxy-Authorization: " + auth + "\r\nContent-Length: 0\r\n\r\n")
	m.expect(488)
	// Garbage: the connection may be dropped, but the server keeps serving.
	m2 := env.dialMeta(t)
	m2.send("\x00\x01garbage that is not SIP\r\n\r\nINVITE nonsense\r\n\r\n")
	m3 := env.dialMeta(t)
	m3.send(req("OPTIONS", ""))
	m3.expect(200)
}

func TestReInviteGetsCurrentSDP(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	m := env.dialMeta(t)
	toTag, _ := establish(t, m, callID)
	body := "v=0\r\n"
	m.send("INVITE sip:+12145551869@127.0.0.1;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS [2803:6080:f948:9597::]:47237;rport;branch=z9hG4bKre1;alias\r\nMax-Forwards: 70\r\n" +
		`From: "12195550714" <sip:+12195550714@wa.meta.vc>;tag=ece2da15` + "\r\nTo: <sip:+12145551869@meta-voip.example.com>;tag=" + toTag +
		"\r\nContact: <sip:+12195550714@wa.meta.vc;transport=tls;ob>\r\nCall-ID: " + callID + "\r\nCSeq: 9992 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	m.expect(200)
}

func TestAllowListRefusesBeforeTLS(t *testing.T) {
	env := newTestEnv(t, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, answerPolicy)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", env.addr, &tls.Config{RootCAs: env.ca.Pool(), ServerName: tHost})
	if err == nil {
		c.Close()
		t.Fatal("TLS handshake succeeded from outside sip.allow")
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if n, _ := env.ep.Refused(); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("refusal not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServerNeverAsksForClientCert(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	asked := false
	c, err := tls.Dial("tcp", env.addr, &tls.Config{RootCAs: env.ca.Pool(), ServerName: tHost,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked = true
			return &tls.Certificate{}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if asked {
		t.Fatal("server requested a client certificate: Meta's would fail validation")
	}
	if v := c.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Fatalf("TLS version %x", v)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "" {
		t.Fatalf("ALPN %q negotiated; Meta rejects ALPN", p)
	}
	_ = md5.New
}

// Meta connects over IPv6 in the guide's samples.
func TestIPv6Listener(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback here:", err)
	}
	ln.Close()
	env := newTestEnv(t, nil, answerPolicy)
	ca := env.ca
	certPEM, keyPEM, _ := ca.Issue(tHost)
	cf, kf, _ := testpki.WriteFiles(t.TempDir(), certPEM, keyPEM)
	certs, _ := NewCertReloader(cf, kf, nil)
	ln6, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = env.ep.Serve(ctx, ln6, ServerTLSConfig(certs.Certificate)) }()
	t.Cleanup(func() { cancel(); <-done })
	m := (&testEnv{addr: ln6.Addr().String(), ca: ca}).dialMeta(t)
	establish(t, m, "v6-call")
}

func TestByeAfterMediaFailureSaysWhy(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	m := env.dialMeta(t)
	establish(t, m, "fail-call")
	call := <-env.h.got
	errc := make(chan error, 1)
	go func() {
		errc <- call.HangupFailed(context.Background(), `media: ICE/DTLS did not complete within 10 s "x"`)
	}()
	_, hdr, _ := m.read()
	want := `Q.850;cause=41;text="media: ICE/DTLS did not complete within 10 s 'x'"`
	if got := first(hdr["reason"]); got != want {
		t.Fatalf("Reason %q, want %q", got, want)
	}
	m.send("SIP/2.0 200 OK\r\nVia: " + first(hdr["via"]) + "\r\nFrom: " + first(hdr["from"]) + "\r\nTo: " + first(hdr["to"]) +
		"\r\nCall-ID: fail-call\r\nCSeq: " + first(hdr["cseq"]) + "\r\nContent-Length: 0\r\n\r\n")
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestOneStrangerCannotLockMetaOut: with sip.allow empty, one address
// opening connections and sending nothing gets an eighth of the slots at
// most; Meta (another address, even of the same /24) still connects and is served.
func TestOneStrangerCannotLockMetaOut(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 2 * time.Second}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < 64; i++ { // as many as the whole device takes
		c, err := d.Dial("tcp", env.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, over := env.ep.Refused(); over >= 64-8 {
			break
		}
		if time.Now().After(deadline) {
			_, over := env.ep.Refused()
			t.Fatalf("%d of 64 connections from one address refused, want %d", over, 64-8)
		}
		time.Sleep(10 * time.Millisecond)
	}
	m := env.dialMeta(t)
	m.send(req("OPTIONS", ""))
	m.expect(200)
}

// req is an out-of-dialog request from Meta with no body.
func req(method, extra string) string {
	return method + " sip:+12145551869@meta-voip.example.com;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK" + method + "\r\nMax-Forwards: 70\r\n" +
		"From: <sip:+12195550714@wa.meta.vc>;tag=o1\r\nTo: <sip:+12145551869@meta-voip.example.com>\r\nCall-ID: o-" + method + "\r\nCSeq: 1 " + method + "\r\n" + extra + "Content-Length: 0\r\n\r\n"
}

// TestOtherNumbersLookTheSame: an INVITE for another number is challenged
// exactly like one for ours (a scan cannot tell which number rings here);
// only an authenticated one learns 404.
func TestOtherNumbersLookTheSame(t *testing.T) {
	env := newTestEnv(t, nil, answerPolicy)
	m := env.dialMeta(t)
	other := strings.ReplaceAll(guideInvite("other", "o1", "z9hG4bKother1", 1, ""), "sip:+12145551869@meta-voip.example.com;transport=tls SIP/2.0", "sip:+19995550000@meta-voip.example.com;transport=tls SIP/2.0")
	m.send(other)
	h := m.expect(407)
	auth := authFor(t, h, tPass)
	retry := strings.ReplaceAll(guideInvite("other", "o1", "z9hG4bKother2", 2, "Proxy-Authorization: "+auth+"\r\n"), "sip:+12145551869@meta-voip.example.com;transport=tls SIP/2.0", "sip:+19995550000@meta-voip.example.com;transport=tls SIP/2.0")
	m.send(retry)
	m.expect(404)
}
