package metasim

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/internal/testutil"
)

// simSetup starts a metasim and a business for it.
func simSetup(t *testing.T, cfg Config) (*Sim, *biz) {
	t.Helper()
	pki, err := testpki.NewCA("business CA")
	if err != nil {
		t.Fatal(err)
	}
	cfg.BusinessRoots = pki.Pool()
	if cfg.Password == "" {
		cfg.Password = simPassword
	}
	if cfg.Logger == nil {
		cfg.Logger = simTestLogger(t)
	}
	sim, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := newTestBiz(t, pki, sim.CA())
	t.Cleanup(func() { sim.Close() }) // runs before b.close (LIFO)
	return sim, b
}

func simCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func simWaitDone(t *testing.T, c *Call, d time.Duration) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(d):
		t.Fatalf("call not ended after %v (endedBy=%q)", d, c.EndedBy())
	}
}

// headerLines returns the header lines of the first message in raw that
// starts with startLine.
func simMessageHeaders(raw, startPrefix string, nth int) []string {
	msgs := strings.Split(raw, "\r\n\r\n")
	n := 0
	for _, m := range msgs {
		i := strings.Index(m, startPrefix)
		if i < 0 {
			continue
		}
		if n == nth {
			return strings.Split(m[i:], "\r\n")
		}
		n++
	}
	return nil
}

// --- user-initiated calls (metasim → business) ---

func TestUserInitiatedInviteMatchesGuideAndDigestRetryValidates(t *testing.T) {
	sim, b := simSetup(t, Config{})
	// The guide's partner 407: no algorithm, qop="auth", opaque.
	b.setBehavior(func(u *bizBehavior) {
		u.challenge = []string{`Digest realm="sip.twilio.com",nonce="eyOam_8-l5FVugxsyxFRjnlxq9vy1TjQIMB3mBfJuAvB5gV4",opaque="4a6a068be2ca2032a57912b9a2a6adf7",qop="auth"`}
		u.password = simPassword
	})
	ctx := simCtx(t)
	c, err := sim.Call(ctx, b.addr, CallOptions{UserID: "US.13491208655302741918", Username: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status() != 200 || !c.Challenged() {
		t.Fatalf("status %d challenged %v, want 200 true (auth errors at business: %v)", c.Status(), c.Challenged(), b.authErrs)
	}
	if p := c.Provisional(); len(p) == 0 || p[len(p)-1] != 180 {
		t.Errorf("provisional = %v, want ... 180", p)
	}
	if !strings.HasPrefix(c.CallID(), "outgoing:wacid.") || c.CallID() != "outgoing:"+c.WACID() {
		t.Errorf("Call-ID %q / WACID %q", c.CallID(), c.WACID())
	}

	raw := b.rawText()
	first := simMessageHeaders(raw, "INVITE sip:", 0)
	second := simMessageHeaders(raw, "INVITE sip:", 1)
	if first == nil || second == nil {
		t.Fatalf("business did not see two INVITEs:\n%s", raw)
	}
	// Line by line against the guide's "First INVITE request from Meta".
	want := []string{
		`^INVITE sip:\+12145551869@meta-voip\.example\.com;transport=tls SIP/2\.0$`,
		`^Via: SIP/2\.0/TLS 127\.0\.0\.1:\d+;rport;branch=z9hG4bKPj[0-9a-f]{32};alias$`,
		`^Record-Route: <sip:wa\.meta\.vc;transport=tls;lr>$`,
		`^Record-Route: <sip:onevc-sip-proxy\.fbinfra\.net:8191;transport=tls;lr>$`,
		`^Via: SIP/2\.0/TLS \[2803:6080:f948:9597:7253:922a:400:0\]:5061;branch=z9hG4bKPj[0-9a-f]{32}$`,
		`^Via: SIP/2\.0/TLS \[2803:6080:f8bc:9272:e488:9927:400:0\]:58279;rport=58279;received=2803:6080:f8bc:9272:e488:9927:400:0;branch=z9hG4bKPj\w{32};alias$`,
		`^Max-Forwards: 69$`,
		`^From: "12195550714" <sip:\+12195550714@wa\.meta\.vc>;tag=[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`,
		`^To: <sip:\+12145551869@meta-voip\.example\.com>$`,
		`^Contact: <sip:\+12195550714@wa\.meta\.vc;transport=tls;ob>;isfocus$`,
		`^Call-ID: outgoing:wacid\.[A-Za-z0-9+/]+$`,
		`^CSeq: \d+ INVITE$`,
		`^X-FB-External-Domain: wa\.meta\.vc$`,
		`^Allow: INVITE, ACK, BYE, CANCEL, NOTIFY, OPTIONS$`,
		`^User-Agent: Facebook SipGateway$`,
		`^x-wa-meta-wacid: wacid\.`,
		`^x-wa-meta-user-id: US\.13491208655302741918$`,
		`^x-wa-meta-username: alice$`,
		`^Content-Type: application/sdp$`,
		`^Content-Length: \d+$`,
	}
	simCheckLines(t, "first INVITE", first, want)
	// The retry: same headers plus Proxy-Authorization as in the guide.
	want2 := append(append([]string{}, want[:15]...),
		`^Proxy-Authorization: Digest username="12145551869", realm="sip\.twilio\.com", nonce="eyOam_8-l5FVugxsyxFRjnlxq9vy1TjQIMB3mBfJuAvB5gV4", uri="sip:\+12145551869@meta-voip\.example\.com", response="[0-9a-f]{32}", cnonce="[A-Za-z0-9]{30}", opaque="4a6a068be2ca2032a57912b9a2a6adf7", qop=auth, nc=00000001$`)
	want2 = append(want2, want[15:]...)
	simCheckLines(t, "second INVITE", second, want2)
	if cseq := func(h []string) string { return h[11] }; cseq(first) == cseq(second) {
		t.Errorf("retry reused the CSeq: %s", cseq(second))
	}
	if len(b.authErrs) != 0 {
		t.Errorf("business rejected metasim's digest: %v", b.authErrs)
	}

	// The WACID is Meta-shaped: Thrift-like binary with both numbers.
	bin, err := base64.RawStdEncoding.DecodeString(strings.TrimPrefix(c.WACID(), "wacid."))
	if err != nil || !strings.Contains(string(bin), "12195550714") || !strings.Contains(string(bin), "12145551869") || bin[0] != 0x1c {
		t.Errorf("WACID %q decodes to %q (%v)", c.WACID(), bin, err)
	}

	// ACK for the 2xx: to the business's Contact, with its To tag.
	var ack *sip.Request
	for ack == nil {
		select {
		case a := <-b.gotAck:
			if tag, _ := a.To().Params.Get("tag"); strings.HasPrefix(tag, "biz-") {
				ack = a // skip sipgo's ACK of the 407
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no ACK for the 200")
		}
	}
	{
		if ack.Recipient.Host != "127.0.0.1" || ack.Recipient.Port != b.port {
			t.Errorf("ACK Request-URI %s, want the business Contact", ack.Recipient.String())
		}
		if tag, _ := ack.To().Params.Get("tag"); !strings.HasPrefix(tag, "biz-") {
			t.Errorf("ACK To %s lacks the business tag", ack.To().Value())
		}
		if ack.CSeq().SeqNo != c.Request().CSeq().SeqNo {
			t.Errorf("ACK CSeq %d, INVITE %d", ack.CSeq().SeqNo, c.Request().CSeq().SeqNo)
		}
		if len(ack.GetHeaders("Via")) != 1 || !ack.Via().Params.Has("alias") {
			t.Errorf("ACK Via %v", ack.GetHeaders("Via"))
		}
	}
	if got := c.Response().Contact(); got == nil || got.Address.Port != b.port {
		t.Errorf("Response() Contact = %v", got)
	}
}

func simCheckLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) < len(want) {
		t.Errorf("%s: %d header lines, want %d:\n%s", what, len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if i >= len(got) {
			break
		}
		if !regexp.MustCompile(w).MatchString(got[i]) {
			t.Errorf("%s line %d: %q does not match %s", what, i, got[i], w)
		}
	}
}

// bizByeFor sends the business's BYE for a user-initiated call,
// either over the connection metasim opened (as Via ;alias asks) or over a
// new connection to metasim's listener ("wa.meta.vc" resolved by config).
func bizByeFor(t *testing.T, ctx context.Context, b *biz, sim *Sim, c *Call, sameConn bool) *sip.Response {
	t.Helper()
	b.mu.Lock()
	inv := b.invites[len(b.invites)-1]
	b.mu.Unlock()
	res := c.Response()
	dest := sim.Addr()
	if sameConn {
		dest = inv.Source()
	}
	req := sip.NewRequest(sip.BYE, inv.Contact().Address)
	req.AppendHeader(bizVia())
	for _, rr := range inv.GetHeaders("Record-Route") {
		req.AppendHeader(&sip.RouteHeader{Address: rr.(*sip.RecordRouteHeader).Address})
	}
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	to := res.To().AsFrom()
	req.AppendHeader(&to)
	from := res.From().AsTo()
	req.AppendHeader(&from)
	cid := sip.CallIDHeader(c.CallID())
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 98734935, MethodName: sip.BYE})
	req.AppendHeader(sip.NewHeader("Reason", `Q.850;cause=16;text="NORMAL_CLEARING"`))
	req.SetBody(nil)
	req.SetTransport("TLS")
	req.SetDestination(dest)
	_, r, err := b.do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestUserInitiatedByeFromBusiness(t *testing.T) {
	for _, sameConn := range []bool{true, false} {
		t.Run(fmt.Sprintf("sameConn=%v", sameConn), func(t *testing.T) {
			sim, b := simSetup(t, Config{})
			ctx := simCtx(t)
			c, err := sim.Call(ctx, b.addr, CallOptions{})
			if err != nil || c.Status() != 200 {
				t.Fatalf("call: %v status %d", err, c.Status())
			}
			if c.Challenged() {
				t.Error("Challenged without a challenge")
			}
			res := bizByeFor(t, ctx, b, sim, c, sameConn)
			if res.StatusCode != 200 {
				t.Fatalf("BYE answered %d", res.StatusCode)
			}
			simWaitDone(t, c, 5*time.Second)
			if c.EndedBy() != "business" {
				t.Errorf("EndedBy %q", c.EndedBy())
			}
			bye := c.ByeRequest()
			if bye == nil || len(bye.GetHeaders("Route")) != 2 || bye.Recipient.String() != "sip:+12195550714@wa.meta.vc;transport=tls;ob" {
				t.Errorf("ByeRequest = %v", bye)
			}
			if err := c.Hangup(ctx); err != ErrCallEnded {
				t.Errorf("Hangup after BYE: %v, want ErrCallEnded", err)
			}
		})
	}
}

func TestUserInitiatedPicksSHA256OfTwoChallenges(t *testing.T) {
	sim, b := simSetup(t, Config{})
	b.setBehavior(func(u *bizBehavior) {
		u.challenge = []string{
			`Digest realm="meta-voip.example.com",nonce="n1",opaque="o1",algorithm=MD5,qop="auth"`,
			`Digest realm="meta-voip.example.com",nonce="n2",opaque="o2",algorithm=SHA-256,qop="auth"`,
		}
		u.password = simPassword
	})
	c, err := sim.Call(simCtx(t), b.addr, CallOptions{})
	if err != nil || c.Status() != 200 {
		t.Fatalf("call: %v status %d authErrs %v", err, c.Status(), b.authErrs)
	}
	pa := c.Request().GetHeader("Proxy-Authorization").Value()
	if !strings.Contains(pa, `nonce="n2"`) || !strings.Contains(pa, "algorithm=SHA-256") {
		t.Errorf("Proxy-Authorization %s does not answer the SHA-256 challenge", pa)
	}
}

func TestUserInitiatedWrongPasswordAndNoAuth(t *testing.T) {
	sim, b := simSetup(t, Config{})
	b.setBehavior(func(u *bizBehavior) {
		u.challenge = []string{`Digest realm="meta-voip.example.com",nonce="abc",opaque="def",algorithm=MD5,qop="auth"`}
		u.password = simPassword
	})
	ctx := simCtx(t)
	c, err := sim.Call(ctx, b.addr, CallOptions{Password: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status() != 403 || !c.Challenged() || c.EndedBy() != "business" {
		t.Errorf("wrong password: status %d challenged %v endedBy %q", c.Status(), c.Challenged(), c.EndedBy())
	}
	simWaitDone(t, c, time.Second)

	c, err = sim.Call(ctx, b.addr, CallOptions{NoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status() != 407 || c.Challenged() || c.Response().GetHeader("Proxy-Authenticate") == nil {
		t.Errorf("NoAuth: status %d challenged %v", c.Status(), c.Challenged())
	}
}

func TestUserInitiatedHeadersAndBSUID(t *testing.T) {
	sim, b := simSetup(t, Config{})
	c, err := sim.Call(simCtx(t), b.addr, CallOptions{
		From: "US.13491208655302741918", UserID: "US.13491208655302741918", ParentUserID: "US.P.1",
		Username: "bob", CTAPayload: "cta-42", DeeplinkPayload: "deep-7",
		ExtraHeaders: []sip.Header{sip.NewHeader("X-Test", "yes")},
	})
	if err != nil || c.Status() != 200 {
		t.Fatalf("call: %v", err)
	}
	b.mu.Lock()
	inv := b.invites[0]
	b.mu.Unlock()
	for name, want := range map[string]string{
		"From": `"US.13491208655302741918" <sip:US.13491208655302741918@wa.meta.vc>;tag=`, "Contact": "<sip:US.13491208655302741918@wa.meta.vc;transport=tls;ob>;isfocus",
		"x-wa-meta-user-id": "US.13491208655302741918", "x-wa-meta-parent-user-id": "US.P.1",
		"x-wa-meta-username": "bob", "x-wa-meta-cta-payload": "cta-42", "x-wa-meta-deeplink-payload": "deep-7",
		"X-Test": "yes", "x-wa-meta-wacid": c.WACID(),
	} {
		h := inv.GetHeader(name)
		if h == nil || !strings.HasPrefix(h.Value(), want) {
			t.Errorf("%s = %v, want %q", name, h, want)
		}
	}
}

func TestUserInitiatedHangupFromMeta(t *testing.T) {
	sim, b := simSetup(t, Config{})
	ctx := simCtx(t)
	c, err := sim.Call(ctx, b.addr, CallOptions{UserID: "US.1"})
	if err != nil || c.Status() != 200 {
		t.Fatalf("call: %v", err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := c.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	if c.EndedBy() != "meta" {
		t.Errorf("EndedBy %q", c.EndedBy())
	}
	select {
	case bye := <-b.gotBye:
		if bye.Recipient.Port != b.port {
			t.Errorf("BYE Request-URI %s, want the business Contact", bye.Recipient.String())
		}
		simCheckHeader(t, bye, "Reason", `Q.850;cause=16;text="NORMAL_CLEARING"`)
		simCheckHeader(t, bye, "x-wa-meta-call-duration", "1")
		simCheckHeader(t, bye, "x-wa-meta-wacid", c.WACID())
		simCheckHeader(t, bye, "x-wa-meta-user-id", "US.1")
		if v := bye.Via(); v == nil || !v.Params.Has("alias") {
			t.Errorf("BYE Via %v lacks ;alias", v)
		}
		if tag, _ := bye.To().Params.Get("tag"); !strings.HasPrefix(tag, "biz-") {
			t.Errorf("BYE To %s", bye.To().Value())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("business got no BYE")
	}
}

func simCheckHeader(t *testing.T, m interface{ GetHeader(string) sip.Header }, name, want string) {
	t.Helper()
	h := m.GetHeader(name)
	if h == nil || h.Value() != want {
		t.Errorf("%s = %v, want %q", name, h, want)
	}
}

func TestUserInitiatedCancelWhileRinging(t *testing.T) {
	sim, b := simSetup(t, Config{})
	b.setBehavior(func(u *bizBehavior) { u.ring = 10 * time.Second })
	ctx := simCtx(t)
	c, err := sim.Call(ctx, b.addr, CallOptions{ReturnOnRinging: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status() != 0 {
		t.Fatalf("status %d while ringing", c.Status())
	}
	if err := c.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Status() != 487 || c.EndedBy() != "cancel" {
		t.Errorf("after Cancel: status %d endedBy %q", c.Status(), c.EndedBy())
	}
	if err := c.WaitAnswer(ctx); err != nil {
		t.Error(err)
	}
	if err := c.Cancel(ctx); err != ErrAnswered {
		t.Errorf("second Cancel: %v", err)
	}

	// ctx ending before the answer also cancels. It ends once the business
	// has the INVITE (and so rings): a fixed 300 ms deadline could end
	// before the TLS handshake on a loaded machine, with nothing to cancel.
	b.mu.Lock()
	invites := len(b.invites)
	b.mu.Unlock()
	short, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer cancel()
		testutil.Poll(5*time.Second, func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.invites) > invites
		})
		time.Sleep(100 * time.Millisecond) // the 180 on its way back
	}()
	if _, err := sim.Call(short, b.addr, CallOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Call with short ctx: %v", err)
	}
	cancels := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.cancels)
	}
	if !testutil.Poll(5*time.Second, func() bool { return cancels() == 2 }) {
		t.Fatalf("business saw %d CANCELs, want 2", cancels())
	}
}

func TestUserInitiatedReInviteFromMeta(t *testing.T) {
	sim, b := simSetup(t, Config{})
	ctx := simCtx(t)
	c, err := sim.Call(ctx, b.addr, CallOptions{})
	if err != nil || c.Status() != 200 {
		t.Fatalf("call: %v", err)
	}
	<-b.gotAck
	code, err := c.ReInvite(ctx)
	if err != nil || code != 200 {
		t.Fatalf("ReInvite: %d %v", code, err)
	}
	select {
	case ack := <-b.gotAck:
		if ack.CSeq().SeqNo != c.Request().CSeq().SeqNo+1 {
			t.Errorf("re-INVITE ACK CSeq %d", ack.CSeq().SeqNo)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no ACK for the re-INVITE's 200")
	}
	b.setBehavior(func(u *bizBehavior) { u.reinviteCode = 491 })
	if code, err := c.ReInvite(ctx); err != nil || code != 491 {
		t.Errorf("ReInvite: %d %v, want 491", code, err)
	}
}

func TestUserInitiatedNoMediaBye(t *testing.T) {
	sim, b := simSetup(t, Config{NoMediaTimeout: time.Second})
	c, err := sim.Call(simCtx(t), b.addr, CallOptions{})
	if err != nil || c.Status() != 200 {
		t.Fatalf("call: %v", err)
	}
	start := time.Now()
	simWaitDone(t, c, 5*time.Second)
	if el := time.Since(start); el < 800*time.Millisecond {
		t.Errorf("no-media BYE after %v, want ~1s", el)
	}
	if c.EndedBy() != "no-media" {
		t.Errorf("EndedBy %q", c.EndedBy())
	}
	select {
	case bye := <-b.gotBye:
		simCheckHeader(t, bye, "Reason", reasonNoMedia)
	case <-time.After(5 * time.Second):
		t.Fatal("business got no BYE")
	}
	if st := c.MediaStats(); st.PacketsReceived != 0 || st.PacketsSent != 0 {
		t.Errorf("media stats %+v", st)
	}
}

func TestUserInitiatedTLSVerification(t *testing.T) {
	sim, b := simSetup(t, Config{BusinessHost: "other.example.com"})
	_, err := sim.Call(simCtx(t), b.addr, CallOptions{})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("call to a business whose cert does not cover BusinessHost: %v", err)
	}
}

// --- business-initiated calls (business → metasim) ---

func TestBusinessInitiatedDefaultChallengeSHA256(t *testing.T) {
	sim, b := simSetup(t, Config{Users: map[string]UserInfo{simUser: {UserID: "US.777", Username: "carol"}}})
	ctx := simCtx(t)
	bc := b.newCall(sim)
	r407, prov := bc.establish(t, ctx, 0)

	// The 407: two Proxy-Authenticate, SHA-256 first, own nonce and opaque.
	pas := r407.GetHeaders("Proxy-Authenticate")
	if len(pas) != 2 {
		t.Fatalf("407 has %d Proxy-Authenticate", len(pas))
	}
	re := regexp.MustCompile(`^Digest realm="wa\.meta\.vc",nonce="([0-9a-f]{16})",opaque="([0-9a-f]{16})",algorithm=(SHA-256|MD5),qop="auth"$`)
	m0, m1 := re.FindStringSubmatch(pas[0].Value()), re.FindStringSubmatch(pas[1].Value())
	if m0 == nil || m1 == nil || m0[3] != "SHA-256" || m1[3] != "MD5" || m0[1] == m1[1] || m0[2] == m1[2] {
		t.Errorf("Proxy-Authenticate headers:\n%s\n%s", pas[0].Value(), pas[1].Value())
	}
	if r407.Reason != "Proxy Authentication Required" {
		t.Errorf("407 reason %q", r407.Reason)
	}
	b.mu.Lock()
	raw := b.raw.String()
	b.mu.Unlock()
	h407 := simMessageHeaders(raw, "SIP/2.0 407", 0)
	simCheckLines(t, "407", h407, []string{
		`^SIP/2\.0 407 Proxy Authentication Required$`,
		`^Via: SIP/2\.0/TLS 127\.0\.0\.1:\d+;branch=z9hG4bK\S+$`,
		`^Call-ID: biz-`,
		`^From: <sip:\+12145551869@meta-voip\.example\.com>;tag=`,
		`^To: <sip:\+12195550714@wa\.meta\.vc>;tag=z9hG4bK`,
		`^CSeq: 101 INVITE$`,
		`^Proxy-Authenticate: Digest realm="wa\.meta\.vc",nonce=".*",algorithm=SHA-256`,
		`^Proxy-Authenticate: Digest realm="wa\.meta\.vc",nonce=".*",algorithm=MD5`,
	})
	if tag, _ := r407.To().Params.Get("tag"); tag != r407.Via().Params.GetOr("branch", "") {
		t.Errorf("407 To tag %q is not the Via branch", tag)
	}

	// sipgo hands responses to the client transaction from separate
	// goroutines, so the business may see 100 and 180 in either order.
	if !slices.Contains(prov, 100) || !slices.Contains(prov, 180) {
		t.Errorf("provisional %v, want 100 and 180", prov)
	}
	if i100, i180 := strings.Index(raw, "SIP/2.0 100 Trying"), strings.Index(raw, "SIP/2.0 180 Ringing"); i100 < 0 || i180 < i100 {
		t.Errorf("on the wire: 100 at %d, 180 at %d", i100, i180)
	}
	// The 200 OK, line by line against the guide's "SIP OK (with SDES)".
	h200 := simMessageHeaders(raw, "SIP/2.0 200 OK", 0)
	simCheckLines(t, "200", h200, []string{
		`^SIP/2\.0 200 OK$`,
		`^Via: SIP/2\.0/TLS `,
		`^Record-Route: <sip:onevc-sip-proxy\.fbinfra\.net:8191;transport=tls;lr>$`,
		`^Record-Route: <sip:wa\.meta\.vc;transport=tls;lr>$`,
		`^Call-ID: biz-`,
		`^From: <sip:\+12145551869@meta-voip\.example\.com>;tag=`,
		`^To: <sip:\+12195550714@wa\.meta\.vc>;tag=[0-9a-f]{8}-`,
		`^CSeq: 102 INVITE$`,
		`^Allow: INVITE, ACK, BYE, CANCEL, NOTIFY, OPTIONS$`,
		`^Supported: timer$`,
		`^X-FB-External-Domain: wa\.meta\.vc$`,
		`^Contact: <sip:\+12195550714@wa\.meta\.vc;transport=tls;ob;X-FB-Sip-Smc-Tier=collaboration\.sip_gateway\.sip\.prod>;isfocus$`,
		`^x-wa-meta-user-id: US\.777$`,
		`^x-wa-meta-username: carol$`,
		`^Content-Type: application/sdp$`,
		`^Content-Length: \d+$`,
	})
	if !strings.Contains(string(bc.res.Body()), "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:") {
		t.Errorf("200 SDP:\n%s", bc.res.Body())
	}

	var c *Call
	select {
	case c = <-sim.Incoming():
	case <-time.After(5 * time.Second):
		t.Fatal("no call on Incoming")
	}
	if c.Status() != 200 || c.Request() == nil || c.Request().CallID().Value() != bc.callID || c.Request().GetHeader("Proxy-Authorization") == nil {
		t.Fatalf("incoming call: status %d request %v", c.Status(), c.Request())
	}
	if c.Request().To().Params.Has("tag") {
		t.Error("Request() shows metasim's To tag; want the INVITE as received")
	}
	// The business hangs up, routed like the guide's BYE.
	bye := bc.inDialog(sip.BYE, sim.Addr())
	if got := bye.GetHeaders("Route"); len(got) != 2 || !strings.Contains(got[0].Value(), "wa.meta.vc") {
		t.Fatalf("business route set %v", got)
	}
	_, res, err := b.do(ctx, bye)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("BYE: %v %v", res, err)
	}
	simWaitDone(t, c, 5*time.Second)
	if c.EndedBy() != "business" || c.ByeRequest() == nil {
		t.Errorf("EndedBy %q bye %v", c.EndedBy(), c.ByeRequest())
	}
}

func TestBusinessInitiatedChallengeModes(t *testing.T) {
	for _, tc := range []struct {
		mode ChallengeMode
		algs []string
		idx  int
	}{
		{ChallengeSHA256AndMD5, []string{"SHA-256", "MD5"}, 1}, // answering the MD5 one works too
		{ChallengeMD5, []string{"MD5"}, 0},
		{ChallengeSHA256, []string{"SHA-256"}, 0},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			sim, b := simSetup(t, Config{Challenge: tc.mode, AnswerDelay: -1})
			ctx := simCtx(t)
			bc := b.newCall(sim)
			r407, _ := bc.establish(t, ctx, tc.idx)
			pas := r407.GetHeaders("Proxy-Authenticate")
			if len(pas) != len(tc.algs) {
				t.Fatalf("%d challenges, want %d", len(pas), len(tc.algs))
			}
			for i, alg := range tc.algs {
				if !strings.Contains(pas[i].Value(), "algorithm="+alg+",") {
					t.Errorf("challenge %d = %s, want %s", i, pas[i].Value(), alg)
				}
			}
			c := <-sim.Incoming()
			if err := c.Hangup(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case bye := <-b.gotBye:
				simCheckHeader(t, bye, "Reason", `Q.850;cause=16;text="NORMAL_CLEARING"`)
				simCheckHeader(t, bye, "x-wa-meta-wacid", c.WACID())
				simCheckHeader(t, bye, "x-wa-meta-call-duration", "0")
				if bye.Recipient.Port != b.port || bye.From().Address.Host != DefaultHostname {
					t.Errorf("BYE %s From %s", bye.Recipient.String(), bye.From().Value())
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no BYE at the business")
			}
		})
	}
}

func TestBusinessInitiatedAuthFailures(t *testing.T) {
	sim, b := simSetup(t, Config{AnswerDelay: -1})
	ctx := simCtx(t)
	get407 := func(bc *bizCall) *sip.Response {
		_, r, err := b.do(ctx, bc.invite(""))
		if err != nil || r.StatusCode != 407 {
			t.Fatalf("want 407: %v %v", r, err)
		}
		return r
	}
	status := func(bc *bizCall, auth string) int {
		_, r, err := b.do(ctx, bc.invite(auth))
		if err != nil {
			t.Fatal(err)
		}
		return r.StatusCode
	}
	user := digits(simBizNum)

	bc := b.newCall(sim)
	r := get407(bc)
	if got := status(bc, bizAnswer(t, r, 0, bc.ruri, user, "wrong", 1)); got != 403 {
		t.Errorf("wrong password: %d", got)
	}
	if got := status(bc, bizAnswer(t, r, 0, bc.ruri, "19999999999", simPassword, 1)); got != 403 {
		t.Errorf("wrong username: %d", got)
	}

	// A good answer, then the same credentials again (replay) and nc=2.
	bc = b.newCall(sim)
	r = get407(bc)
	good := bizAnswer(t, r, 0, bc.ruri, user, simPassword, 1)
	if got := status(bc, good); got != 200 {
		t.Fatalf("good answer: %d", got)
	}
	bc2 := b.newCall(sim)
	if got := status(bc2, good); got != 403 {
		t.Errorf("replayed nonce/nc: %d, want 403", got)
	}
	if got := status(bc2, bizAnswer(t, r, 0, bc2.ruri, user, simPassword, 2)); got != 200 {
		t.Errorf("same nonce with nc=2: %d, want 200", got)
	}

	// A nonce metasim never issued; an MD5 answer to the SHA-256 nonce;
	// another realm (re-challenged); no credentials for our realm.
	bc = b.newCall(sim)
	r = get407(bc)
	fake := strings.Replace(bizAnswer(t, r, 0, bc.ruri, user, simPassword, 1), `nonce="`, `nonce="ff`, 1)
	if got := status(bc, fake); got != 403 {
		t.Errorf("unknown nonce: %d", got)
	}
	ch, _ := digest.ParseChallenge(r.GetHeaders("Proxy-Authenticate")[0].Value())
	ch.Algorithm = "MD5"
	cred, _ := digest.Digest(ch, digest.Options{Method: "INVITE", URI: bc.ruri.String(), Username: user, Password: simPassword})
	if got := status(bc, cred.String()); got != 403 {
		t.Errorf("MD5 answer to a SHA-256 nonce: %d", got)
	}
	ch, _ = digest.ParseChallenge(r.GetHeaders("Proxy-Authenticate")[1].Value())
	ch.Realm = "elsewhere"
	cred, _ = digest.Digest(ch, digest.Options{Method: "INVITE", URI: bc.ruri.String(), Username: user, Password: simPassword})
	if got := status(bc, cred.String()); got != 407 {
		t.Errorf("credentials for another realm: %d, want 407", got)
	}
	if got := status(bc, "Digest garbage"); got != 403 {
		t.Errorf("malformed credentials: %d", got)
	}
	if got := status(bc, `Basic Zm9vOmJhcg==`); got != 403 {
		t.Errorf("Basic credentials: %d", got)
	}
}

// An expired nonce is re-challenged with stale=true.
func TestBusinessInitiatedStaleNonce(t *testing.T) {
	const ttl = 50 * time.Millisecond
	sim, b := simSetup(t, Config{AnswerDelay: -1, NonceTTL: ttl})
	ctx := simCtx(t)
	bc := b.newCall(sim)
	_, r, err := b.do(ctx, bc.invite(""))
	if err != nil || r.StatusCode != 407 {
		t.Fatalf("want 407: %v %v", r, err)
	}
	time.Sleep(2 * ttl) // the nonce ages past its TTL: a wait on the clock, not on a condition
	_, r2, err := b.do(ctx, bc.invite(bizAnswer(t, r, 0, bc.ruri, digits(simBizNum), simPassword, 1)))
	if err != nil || r2.StatusCode != 407 || !strings.HasSuffix(r2.GetHeader("Proxy-Authenticate").Value(), ",stale=true") {
		t.Errorf("expired nonce: %v %v", r2, err)
	}
}

func TestBusinessInitiatedFromHostMismatch(t *testing.T) {
	sim, b := simSetup(t, Config{PhoneNumberID: "123456"})
	ctx := simCtx(t)
	bc := b.newCall(sim)
	bc.fromHost = "wa.meta.vc"
	_, r, err := b.do(ctx, bc.invite(""))
	if err != nil {
		t.Fatal(err)
	}
	text := "SIP server wa.meta.vc from INVITE does not match any SIP server configured for phone number id 123456"
	if r.StatusCode != 403 || r.Reason != text {
		t.Errorf("got %d %q", r.StatusCode, r.Reason)
	}
	simCheckHeader(t, r, "Warning", `399 wa.meta.vc "`+text+`"`)
	simCheckHeader(t, r, "X-FB-External-Domain", "wa.meta.vc")
	if rr := r.GetHeaders("Record-Route"); len(rr) != 2 || !strings.Contains(rr[0].Value(), "onevc-sip-proxy") {
		t.Errorf("Record-Route %v", rr)
	}
	if !r.To().Params.Has("tag") {
		t.Error("403 without To tag")
	}

	bc = b.newCall(sim)
	bc.fromUser = "+19998887777"
	if _, r, _ := b.do(ctx, bc.invite("")); r.StatusCode != 403 {
		t.Errorf("unknown business number: %d", r.StatusCode)
	}
	bc = b.newCall(sim)
	bc.ruri.User = "12195550714" // no '+'
	if _, r, _ := b.do(ctx, bc.invite("")); r.StatusCode != 404 {
		t.Errorf("Request-URI user without +: %d", r.StatusCode)
	}
}

func TestBusinessInitiatedReInviteRejected(t *testing.T) {
	sim, b := simSetup(t, Config{AnswerDelay: -1})
	ctx := simCtx(t)
	bc := b.newCall(sim)
	bc.establish(t, ctx, 0)
	c := <-sim.Incoming()
	reinv := bc.inDialog(sip.INVITE, sim.Addr())
	reinv.AppendHeader(b.contact())
	ct := sip.ContentTypeHeader("application/sdp")
	reinv.AppendHeader(&ct)
	reinv.SetBody(bizSDES(41000))
	_, r, err := b.do(ctx, reinv)
	if err != nil || r.StatusCode != 488 {
		t.Fatalf("re-INVITE: %v %v, want 488", r, err)
	}
	if c.ReInvites() != 1 {
		t.Errorf("ReInvites %d", c.ReInvites())
	}
	select {
	case <-c.Done():
		t.Error("the call ended after a rejected re-INVITE")
	default:
	}
	// OPTIONS in and out of the dialog.
	opt := bc.inDialog(sip.OPTIONS, sim.Addr())
	if _, r, err := b.do(ctx, opt); err != nil || r.StatusCode != 200 {
		t.Errorf("OPTIONS: %v %v", r, err)
	}
	// An unknown method gets 405 with Allow.
	upd := bc.inDialog(sip.UPDATE, sim.Addr())
	if _, r, err := b.do(ctx, upd); err != nil || r.StatusCode != 405 || r.GetHeader("Allow") == nil {
		t.Errorf("UPDATE: %v %v", r, err)
	}
	// A BYE for a dialog that does not exist.
	bc2 := *bc
	bc2.callID = "nope"
	if _, r, err := b.do(ctx, bc2.inDialog(sip.BYE, sim.Addr())); err != nil || r.StatusCode != 481 {
		t.Errorf("BYE for no dialog: %v %v", r, err)
	}
}

func TestBusinessInitiatedCancel(t *testing.T) {
	sim, b := simSetup(t, Config{AnswerDelay: 10 * time.Second})
	ctx := simCtx(t)
	bc := b.newCall(sim)
	_, r, _ := b.do(ctx, bc.invite(""))
	inv := bc.invite(bizAnswer(t, r, 0, bc.ruri, digits(simBizNum), simPassword, 1))
	tx, err := b.cli.TransactionRequest(ctx, inv, noBuild)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Terminate()
	var final *sip.Response
	var toTag180 string
	cancelErr := make(chan error, 1)
loop:
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode == 180 {
				toTag180, _ = res.To().Params.Get("tag")
				cancel := sip.NewRequest(sip.CANCEL, inv.Recipient)
				cancel.AppendHeader(inv.Via().Clone())
				mf := sip.MaxForwardsHeader(70)
				cancel.AppendHeader(&mf)
				cancel.AppendHeader(sip.HeaderClone(inv.From()))
				cancel.AppendHeader(sip.HeaderClone(inv.To()))
				cancel.AppendHeader(sip.HeaderClone(inv.CallID()))
				cancel.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
				cancel.SetBody(nil)
				cancel.SetTransport("TLS")
				cancel.SetDestination(sim.Addr())
				go func() {
					_, r, err := b.do(ctx, cancel)
					if err == nil && r.StatusCode != 200 {
						err = fmt.Errorf("CANCEL answered %d", r.StatusCode)
					}
					cancelErr <- err
				}()
			}
			if !res.IsProvisional() {
				final = res
				break loop
			}
		case <-ctx.Done():
			t.Fatal("no final response")
		}
	}
	if final.StatusCode != 487 {
		t.Fatalf("final %d, want 487", final.StatusCode)
	}
	if err := <-cancelErr; err != nil {
		t.Errorf("CANCEL: %v", err)
	}
	if tag, _ := final.To().Params.Get("tag"); tag != toTag180 {
		t.Errorf("487 To tag %q, 180 had %q", tag, toTag180)
	}
	c := <-sim.Incoming()
	simWaitDone(t, c, time.Second)
	if c.Status() != 487 || c.EndedBy() != "cancel" {
		t.Errorf("incoming: status %d endedBy %q", c.Status(), c.EndedBy())
	}
}

func TestBusinessInitiatedRejected(t *testing.T) {
	sim, b := simSetup(t, Config{RejectBusinessCalls: 486, AnswerDelay: -1})
	ctx := simCtx(t)
	bc := b.newCall(sim)
	_, r, _ := b.do(ctx, bc.invite(""))
	prov, res, err := b.do(ctx, bc.invite(bizAnswer(t, r, 0, bc.ruri, digits(simBizNum), simPassword, 1)))
	if err != nil || res.StatusCode != 486 || res.Reason != "Busy Here" {
		t.Fatalf("got %v %v", res, err)
	}
	_ = prov // 1xx may be reordered by sipgo's client; checked on the wire elsewhere
	c := <-sim.Incoming()
	if p := c.Provisional(); !slices.Equal(p, []int{100, 180}) {
		t.Errorf("Provisional %v", p)
	}
	if c.Status() != 486 || c.EndedBy() != "meta" {
		t.Errorf("incoming: %d %q", c.Status(), c.EndedBy())
	}
	if _, err := Start(ctx, Config{RejectBusinessCalls: 200}); err == nil {
		t.Error("RejectBusinessCalls 200 accepted")
	}
}

func TestBusinessInitiatedNoMediaBye(t *testing.T) {
	sim, b := simSetup(t, Config{NoMediaTimeout: time.Second, AnswerDelay: -1})
	ctx := simCtx(t)
	bc := b.newCall(sim)
	bc.establish(t, ctx, 0)
	c := <-sim.Incoming()
	simWaitDone(t, c, 5*time.Second)
	if c.EndedBy() != "no-media" {
		t.Errorf("EndedBy %q", c.EndedBy())
	}
	select {
	case bye := <-b.gotBye:
		simCheckHeader(t, bye, "Reason", reasonNoMedia)
	case <-time.After(5 * time.Second):
		t.Fatal("no BYE at the business")
	}
}

func TestOptionsAndBadSDP(t *testing.T) {
	sim, b := simSetup(t, Config{})
	ctx := simCtx(t)
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: DefaultHostname})
	req.AppendHeader(bizVia())
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: simBizNum, Host: simBizHost}, Params: params("tag", "x")})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: DefaultHostname}})
	cid := sip.CallIDHeader("opt-1")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	req.SetBody(nil)
	req.SetTransport("TLS")
	req.SetDestination(sim.Addr())
	if _, r, err := b.do(ctx, req); err != nil || r.StatusCode != 200 || r.GetHeader("Allow") == nil {
		t.Fatalf("OPTIONS: %v %v", r, err)
	}

	// An authenticated INVITE whose SDP metasim cannot use gets 488.
	bc := b.newCall(sim)
	_, r, _ := b.do(ctx, bc.invite(""))
	inv := bc.invite(bizAnswer(t, r, 0, bc.ruri, digits(simBizNum), simPassword, 1))
	inv.SetBody([]byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"))
	if _, r, err := b.do(ctx, inv); err != nil || r.StatusCode != 488 {
		t.Errorf("plain RTP offer: %v %v", r, err)
	}
}

// TestMalformedInput throws broken bytes at the listener: metasim must not
// panic and must keep working.
func TestMalformedInput(t *testing.T) {
	sim, b := simSetup(t, Config{})
	inputs := []string{
		"\x00\x01\x02garbage\r\n\r\n",
		"INVITE\r\n\r\n",
		"INVITE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n",
		"INVITE sip:+12195550714@wa.meta.vc SIP/2.0\r\nVia: SIP/2.0/TLS 1.2.3.4;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
		"INVITE sip:+12195550714@wa.meta.vc SIP/2.0\r\nVia: SIP/2.0/TLS 1.2.3.4;branch=z9hG4bK2\r\nCSeq: 1 INVITE\r\nFrom: <sip:+12145551869@meta-voip.example.com>;tag=a\r\nTo: <sip:+12195550714@wa.meta.vc>\r\nCall-ID: m1\r\nProxy-Authorization: Digest username=\"12145551869\", nc=zz, nonce=\"\r\nContent-Length: 0\r\n\r\n",
		"INVITE sip:+12195550714@wa.meta.vc SIP/2.0\r\nVia: SIP/2.0/TLS 1.2.3.4;branch=z9hG4bK3\r\nCSeq: 1 INVITE\r\nFrom: <sip:+12145551869@meta-voip.example.com>;tag=a\r\nTo: <sip:+12195550714@wa.meta.vc>;tag=\r\nCall-ID: m2\r\nContent-Length: 0\r\n\r\n",
		"INVITE sip:@wa.meta.vc SIP/2.0\r\nVia: SIP/2.0/TLS 1.2.3.4;branch=z9hG4bK4\r\nCSeq: 1 INVITE\r\nFrom: <sip:@>;tag=a\r\nTo: <sip:@>\r\nCall-ID: m3\r\nContent-Length: 5\r\n\r\nhello",
		"BYE sip:x@wa.meta.vc SIP/2.0\r\nVia: SIP/2.0/TLS 1.2.3.4;branch=z9hG4bK5\r\nCSeq: 1 BYE\r\nCall-ID: m4\r\nContent-Length: 0\r\n\r\n",
		"ACK sip:x@wa.meta.vc SIP/2.0\r\nVia: SIP/2.0/TLS 1.2.3.4;branch=z9hG4bK6\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
		"CANCEL sip:x@wa.meta.vc SIP/2.0\r\nVia: SIP/2.0/TLS 1.2.3.4;branch=z9hG4bK7\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 1.2.3.4;branch=z9hG4bK8\r\nCSeq: 1 INVITE\r\nCall-ID: x\r\nFrom: <sip:a@b>;tag=1\r\nContent-Length: 0\r\n\r\n",
		"OPTIONS sip:wa.meta.vc SIP/2.0\r\nContent-Length: 99999999\r\n\r\nshort",
		strings.Repeat("A", 70000) + "\r\n\r\n",
	}
	for i, in := range inputs {
		conn, err := tls.Dial("tcp", sim.Addr(), &tls.Config{RootCAs: sim.CA().Pool(), ServerName: DefaultHostname})
		if err != nil {
			t.Fatalf("input %d: dial: %v", i, err)
		}
		_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = conn.Write([]byte(in))
		buf := make([]byte, 4096)
		_, _ = conn.Read(buf) // whatever comes back, or nothing
		conn.Close()
	}
	// Still alive and well: a full business call works.
	ctx := simCtx(t)
	bc := b.newCall(sim)
	bc.establish(t, ctx, 0)
}

func TestCloseEndsCallsAndGoroutines(t *testing.T) {
	// Warm up lazily started runtime/library goroutines first.
	func() {
		sim, b := simSetup(t, Config{AnswerDelay: -1})
		c, err := sim.Call(simCtx(t), b.addr, CallOptions{})
		if err == nil {
			_ = c.Hangup(simCtx(t))
		}
		sim.Close()
		b.close()
	}()
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()

	sim, b := simSetup(t, Config{AnswerDelay: -1, NoMediaTimeout: time.Minute})
	ctx := simCtx(t)
	out, err := sim.Call(ctx, b.addr, CallOptions{})
	if err != nil || out.Status() != 200 {
		t.Fatalf("call: %v", err)
	}
	bc := b.newCall(sim)
	bc.establish(t, ctx, 0)
	in := <-sim.Incoming()
	b.setBehavior(func(u *bizBehavior) { u.ring = time.Minute })
	ringing, err := sim.Call(ctx, b.addr, CallOptions{ReturnOnRinging: true})
	if err != nil {
		t.Fatal(err)
	}

	if err := sim.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Call{out, in, ringing} {
		simWaitDone(t, c, time.Second)
	}
	if out.EndedBy() != "meta" || in.EndedBy() != "meta" {
		t.Errorf("EndedBy after Close: %q %q", out.EndedBy(), in.EndedBy())
	}
	if _, ok := <-sim.Incoming(); ok {
		t.Error("Incoming not closed")
	}
	if _, err := sim.Call(ctx, b.addr, CallOptions{}); err != ErrClosed {
		t.Errorf("Call after Close: %v", err)
	}
	b.close()

	if !testutil.Poll(5*time.Second, func() bool { return runtime.NumGoroutine() <= base }) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), base, buf)
	}
}

func TestStartStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	sim, err := Start(ctx, Config{Logger: simDiscardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case _, ok := <-sim.Incoming():
		if ok {
			t.Fatal("unexpected call")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Sim did not stop with its context")
	}
	if err := sim.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	sim, b := simSetup(t, Config{AnswerDelay: 10 * time.Millisecond})
	ctx := simCtx(t)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			c, err := sim.Call(ctx, b.addr, CallOptions{})
			if err != nil || c.Status() != 200 {
				t.Errorf("call: %v", err)
				return
			}
			if err := c.Hangup(ctx); err != nil {
				t.Errorf("hangup: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			bc := b.newCall(sim)
			_, r, err := b.do(ctx, bc.invite(""))
			if err != nil || r.StatusCode != 407 {
				t.Errorf("407: %v %v", r, err)
				return
			}
			_, res, err := b.do(ctx, bc.invite(bizAnswer(t, r, 0, bc.ruri, digits(simBizNum), simPassword, 1)))
			if err != nil || res.StatusCode != 200 {
				t.Errorf("200: %v %v", res, err)
			}
		}()
	}
	wg.Wait()
	n := 0
	for n < 8 {
		select {
		case <-sim.Incoming():
			n++
		case <-time.After(5 * time.Second):
			t.Fatalf("%d incoming calls, want 8", n)
		}
	}
}

func TestBusinessInitiatedNoAckHangsUp(t *testing.T) {
	sim, b := simSetup(t, Config{AnswerDelay: -1, ACKTimeout: 300 * time.Millisecond})
	ctx := simCtx(t)
	bc := b.newCall(sim)
	_, r, _ := b.do(ctx, bc.invite(""))
	if _, res, err := b.do(ctx, bc.invite(bizAnswer(t, r, 0, bc.ruri, digits(simBizNum), simPassword, 1))); err != nil || res.StatusCode != 200 {
		t.Fatalf("%v %v", res, err)
	}
	c := <-sim.Incoming()
	simWaitDone(t, c, 3*time.Second)
	if c.EndedBy() != "meta" {
		t.Errorf("EndedBy %q", c.EndedBy())
	}
	select {
	case <-b.gotBye:
	case <-time.After(3 * time.Second):
		t.Fatal("no BYE after the missing ACK")
	}
}

func TestCredentialsFormat(t *testing.T) {
	ruri := sip.Uri{Scheme: "sip", User: "+12145551869", Host: "meta-voip.example.com", UriParams: params("transport", "tls")}
	mk := func(code int, hdr string, vals ...string) *sip.Response {
		res := sip.NewResponse(code, "x")
		for _, v := range vals {
			res.AppendHeader(sip.NewHeader(hdr, v))
		}
		return res
	}
	// RFC 2069 style (no qop): no cnonce/nc.
	name, val, err := credentials(mk(401, "WWW-Authenticate", `Digest realm="r", nonce="n"`), "INVITE", ruri, "12145551869", "pw")
	if err != nil || name != "Authorization" || strings.Contains(val, "cnonce") || strings.Contains(val, "nc=") {
		t.Errorf("no-qop: %s: %s (%v)", name, val, err)
	}
	if err := bizCheckDigest(val, "INVITE", "12145551869", "pw"); err != nil {
		t.Errorf("no-qop digest: %v", err)
	}
	// qop list with spaces, and an unsupported algorithm is skipped.
	_, val, err = credentials(mk(407, "Proxy-Authenticate",
		`Digest realm="r", nonce="x", algorithm=SHA-512-256, qop="auth"`,
		`Digest realm="r", nonce="n", algorithm=MD5, qop="auth-int, auth"`), "INVITE", ruri, "12145551869", "pw")
	if err != nil || !strings.Contains(val, `nonce="n"`) || !strings.Contains(val, "qop=auth, nc=00000001") {
		t.Errorf("qop list: %s (%v)", val, err)
	}
	if err := bizCheckDigest(val, "INVITE", "12145551869", "pw"); err != nil {
		t.Errorf("qop list digest: %v", err)
	}
	if _, _, err := credentials(mk(407, "Proxy-Authenticate", `Basic realm="r"`), "INVITE", ruri, "u", "p"); err == nil {
		t.Error("Basic challenge answered")
	}
}
