package metasim

// A minimal sipgo "business" SIP server/client for metasim's tests (the real
// product is tested against metasim elsewhere).

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/waphone/waphone/internal/testpki"
)

const (
	simPassword = "s3cret-Meta-password"
	simBizNum   = DefaultBusinessNumber
	simBizHost  = DefaultBusinessHost
	simUser     = DefaultFrom
)

func simDiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// simTestLogger logs to the test when -v is given and the test runs.
func simTestLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return simDiscardLogger()
	}
	return slog.New(slog.NewTextHandler(simTWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type simTWriter struct{ t *testing.T }

func (w simTWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// bizSDES is an SDES offer/answer the way a business endpoint would send it.
func bizSDES(port int) []byte {
	key := make([]byte, 30)
	_, _ = rand.Read(key)
	return []byte("v=0\r\n" +
		"o=- 4242 4242 IN IP4 127.0.0.1\r\n" +
		"s=-\r\n" +
		"c=IN IP4 127.0.0.1\r\n" +
		"t=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/SAVP 111 126\r\n" +
		"a=rtpmap:111 opus/48000/2\r\n" +
		"a=fmtp:111 useinbandfec=1\r\n" +
		"a=rtpmap:126 telephone-event/8000\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.StdEncoding.EncodeToString(key) + "\r\n" +
		"a=ptime:20\r\n" +
		"a=sendrecv\r\n")
}

// bizBehavior is how the business answers metasim's INVITEs.
type bizBehavior struct {
	challenge    []string // Proxy-Authenticate values for an INVITE without credentials; nil = no challenge
	password     string   // to verify metasim's credentials
	ring         time.Duration
	final        int                       // default 200
	reinviteCode int                       // answer to re-INVITEs; default 200
	answerSDP    func(offer []byte) []byte // 200 OK body; nil = bizSDES
}

type biz struct {
	t       *testing.T
	ua      *sipgo.UserAgent
	srv     *sipgo.Server
	cli     *sipgo.Client
	ln      net.Listener
	addr    string
	port    int
	serveWG sync.WaitGroup
	once    sync.Once

	mu       sync.Mutex
	raw      strings.Builder
	behavior bizBehavior
	invites  []*sip.Request
	acks     []*sip.Request
	byes     []*sip.Request
	cancels  []*sip.Request
	authErrs []error
	gotBye   chan *sip.Request
	gotAck   chan *sip.Request
}

func newTestBiz(t *testing.T, pki *testpki.CA, simCA *testpki.CA) *biz {
	t.Helper()
	certPEM, keyPEM, err := pki.Issue(simBizHost, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	b := &biz{t: t, gotBye: make(chan *sip.Request, 16), gotAck: make(chan *sip.Request, 16)}
	b.behavior.final = 200
	b.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent("testbiz"),
		sipgo.WithUserAgentHostname(simBizHost),
		sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: simCA.Pool(), ServerName: DefaultHostname}),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerReadFilter(b.capture),
			sip.WithTransportLayerLogger(simDiscardLogger()),
		),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(simDiscardLogger())),
	)
	if err != nil {
		t.Fatal(err)
	}
	b.srv, _ = sipgo.NewServer(b.ua, sipgo.WithServerLogger(simDiscardLogger()))
	b.cli, _ = sipgo.NewClient(b.ua, sipgo.WithClientLogger(simDiscardLogger()))
	b.ln, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	b.addr = b.ln.Addr().String()
	b.port = b.ln.Addr().(*net.TCPAddr).Port
	b.srv.OnInvite(b.onInvite)
	b.srv.OnAck(func(req *sip.Request, _ sip.ServerTransaction) {
		b.mu.Lock()
		b.acks = append(b.acks, req)
		b.mu.Unlock()
		select {
		case b.gotAck <- req:
		default:
		}
	})
	b.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		b.mu.Lock()
		b.byes = append(b.byes, req)
		b.mu.Unlock()
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		select {
		case b.gotBye <- req:
		default:
		}
	})
	b.srv.OnCancel(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
	})
	b.serveWG.Add(1)
	go func() {
		defer b.serveWG.Done()
		_ = b.srv.ServeTLS(b.ln)
	}()
	t.Cleanup(b.close)
	return b
}

func (b *biz) close() {
	b.once.Do(func() {
		_ = b.ln.Close()
		_ = b.ua.Close()
		b.serveWG.Wait()
	})
}

func (b *biz) capture(_ sip.TransportReadProps, data []byte) ([]byte, error) {
	b.mu.Lock()
	b.raw.Write(data)
	b.mu.Unlock()
	return data, nil
}

func (b *biz) rawText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.raw.String()
}

func (b *biz) setBehavior(f func(*bizBehavior)) {
	b.mu.Lock()
	f(&b.behavior)
	b.mu.Unlock()
}

func (b *biz) contact() *sip.ContactHeader {
	return &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: simBizNum, Host: "127.0.0.1", Port: b.port,
		UriParams: params("transport", "tls")}}
}

// onInvite is the business as UAS (metasim's user-initiated calls).
func (b *biz) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	b.mu.Lock()
	b.invites = append(b.invites, req)
	beh := b.behavior
	b.mu.Unlock()

	if tag, _ := req.To().Params.Get("tag"); tag != "" { // re-INVITE
		code := beh.reinviteCode
		if code == 0 {
			code = 200
		}
		var body []byte
		if code == 200 {
			body = bizSDES(40002)
		}
		res := sip.NewResponseFromRequest(req, code, "Whatever", body)
		if body != nil {
			res.AppendHeader(b.contact())
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		}
		_ = tx.Respond(res)
		return
	}
	if beh.challenge != nil {
		pa := req.GetHeader("Proxy-Authorization")
		if pa == nil {
			res := sip.NewResponseFromRequest(req, 407, "Proxy Authentication required", nil)
			for _, c := range beh.challenge {
				res.AppendHeader(sip.NewHeader("Proxy-Authenticate", c))
			}
			_ = tx.Respond(res)
			return
		}
		if err := bizCheckDigest(pa.Value(), "INVITE", digits(simBizNum), beh.password); err != nil {
			b.mu.Lock()
			b.authErrs = append(b.authErrs, err)
			b.mu.Unlock()
			_ = tx.Respond(sip.NewResponseFromRequest(req, 403, "Forbidden", nil))
			return
		}
	}
	// One To tag for 180 and the final response, set before the first one.
	req.To().Params.Add("tag", "biz-"+randHex(6))
	canceled := make(chan struct{})
	var once sync.Once
	tx.OnCancel(func(*sip.Request) { once.Do(func() { close(canceled) }) })
	_ = tx.Respond(sip.NewResponseFromRequest(req, 180, "Ringing", nil))
	if beh.ring > 0 {
		select {
		case <-time.After(beh.ring):
		case <-canceled:
			b.mu.Lock()
			b.cancels = append(b.cancels, req)
			b.mu.Unlock()
			return
		case <-tx.Done():
			return
		}
	}
	if beh.final != 200 {
		_ = tx.Respond(sip.NewResponseFromRequest(req, beh.final, "Nope", nil))
		return
	}
	body := bizSDES(40000)
	if beh.answerSDP != nil {
		body = beh.answerSDP(req.Body())
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", body)
	res.AppendHeader(b.contact())
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	_ = tx.Respond(res)
}

// bizCheckDigest verifies credentials the way a business would, with the uri
// the credentials carry.
func bizCheckDigest(value, method, username, password string) error {
	cred, err := digest.ParseCredentials(value)
	if err != nil {
		return err
	}
	if cred.Username != username {
		return fmt.Errorf("username %q, want %q", cred.Username, username)
	}
	chal := &digest.Challenge{Realm: cred.Realm, Nonce: cred.Nonce, Opaque: cred.Opaque, Algorithm: cred.Algorithm}
	if cred.QOP != "" {
		chal.QOP = []string{cred.QOP}
	}
	want, err := digest.Digest(chal, digest.Options{Method: method, URI: cred.URI, Username: username,
		Password: password, Cnonce: cred.Cnonce, Count: cred.Nc})
	if err != nil {
		return err
	}
	if want.Response != cred.Response {
		return fmt.Errorf("digest response mismatch")
	}
	return nil
}

// do sends a request in a client transaction and returns the 1xx codes and
// the final response.
func (b *biz) do(ctx context.Context, req *sip.Request) ([]int, *sip.Response, error) {
	tx, err := b.cli.TransactionRequest(ctx, req, noBuild)
	if err != nil {
		return nil, nil, err
	}
	defer tx.Terminate()
	var prov []int
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				prov = append(prov, res.StatusCode)
				continue
			}
			return prov, res, nil
		case <-tx.Done():
			return prov, nil, fmt.Errorf("tx done: %v", tx.Err())
		case <-ctx.Done():
			return prov, nil, ctx.Err()
		}
	}
}

// bizCall is the business's side of a business-initiated call.
type bizCall struct {
	b        *biz
	dest     string
	ruri     sip.Uri
	fromHost string
	fromUser string
	callID   string
	fromTag  string
	cseq     uint32
	offer    []byte        // INVITE body; nil = bizSDES
	res      *sip.Response // the 2xx
}

func (b *biz) newCall(sim *Sim) *bizCall {
	return &bizCall{
		b: b, dest: sim.Addr(), fromHost: simBizHost, fromUser: simBizNum,
		ruri:   sip.Uri{Scheme: "sip", User: simUser, Host: DefaultHostname, UriParams: params("transport", "tls")},
		callID: "biz-" + randHex(8), fromTag: randHex(6), cseq: 100,
	}
}

func bizVia() *sip.ViaHeader {
	return &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "TLS",
		Params: params("branch", sip.GenerateBranch())}
}

// invite builds the business's INVITE; auth is a Proxy-Authorization value.
func (bc *bizCall) invite(auth string) *sip.Request {
	bc.cseq++
	req := sip.NewRequest(sip.INVITE, *bc.ruri.Clone())
	req.AppendHeader(bizVia())
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: bc.fromUser, Host: bc.fromHost}, Params: params("tag", bc.fromTag)})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: bc.ruri.User, Host: bc.ruri.Host}})
	cid := sip.CallIDHeader(bc.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: bc.cseq, MethodName: sip.INVITE})
	req.AppendHeader(bc.b.contact())
	if auth != "" {
		req.AppendHeader(sip.NewHeader("Proxy-Authorization", auth))
	}
	ct := sip.ContentTypeHeader("application/sdp")
	req.AppendHeader(&ct)
	if bc.offer != nil {
		req.SetBody(bc.offer)
	} else {
		req.SetBody(bizSDES(41000))
	}
	req.SetTransport("TLS")
	req.SetDestination(bc.dest)
	return req
}

// answer computes a Proxy-Authorization for the idx-th challenge of a 407.
func bizAnswer(t *testing.T, res *sip.Response, idx int, ruri sip.Uri, username, password string, nc int) string {
	t.Helper()
	hs := res.GetHeaders("Proxy-Authenticate")
	if idx >= len(hs) {
		t.Fatalf("407 has %d Proxy-Authenticate headers, want index %d", len(hs), idx)
	}
	ch, err := digest.ParseChallenge(hs[idx].Value())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := digest.Digest(ch, digest.Options{Method: "INVITE", URI: ruri.String(), Username: username,
		Password: password, Count: nc})
	if err != nil {
		t.Fatal(err)
	}
	return cred.String()
}

// inDialog builds an in-dialog request from the business after the 2xx.
func (bc *bizCall) inDialog(method sip.RequestMethod, dest string) *sip.Request {
	bc.cseq++
	target := bc.res.Contact().Address
	req := sip.NewRequest(method, *target.Clone())
	req.AppendHeader(bizVia())
	rrs := bc.res.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		req.AppendHeader(&sip.RouteHeader{Address: rrs[i].(*sip.RecordRouteHeader).Address})
	}
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.HeaderClone(bc.res.From()))
	req.AppendHeader(sip.HeaderClone(bc.res.To()))
	cid := sip.CallIDHeader(bc.callID)
	req.AppendHeader(&cid)
	seq := bc.cseq
	if method == sip.ACK {
		seq = bc.res.CSeq().SeqNo
		bc.cseq--
	}
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.SetBody(nil)
	req.SetTransport("TLS")
	req.SetDestination(dest)
	return req
}

// establish runs INVITE, 407, authenticated INVITE (answering challenge idx)
// and ACK; it returns the 407 and the 1xx codes of the second INVITE.
func (bc *bizCall) establish(t *testing.T, ctx context.Context, idx int) (*sip.Response, []int) {
	t.Helper()
	_, r407, err := bc.b.do(ctx, bc.invite(""))
	if err != nil {
		t.Fatal(err)
	}
	if r407.StatusCode != 407 {
		t.Fatalf("first INVITE: %d, want 407", r407.StatusCode)
	}
	auth := bizAnswer(t, r407, idx, bc.ruri, digits(simBizNum), simPassword, 1)
	prov, res, err := bc.b.do(ctx, bc.invite(auth))
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("authenticated INVITE: %d %s, want 200", res.StatusCode, res.Reason)
	}
	bc.res = res
	if err := bc.b.cli.WriteRequest(bc.inDialog(sip.ACK, bc.dest), noBuild); err != nil {
		t.Fatal(err)
	}
	return r407, prov
}

func init() {
	// sipgo logs connection refcount noise at shutdown through its package
	// default logger; keep test output readable.
	sip.SetDefaultLogger(simDiscardLogger())
}
