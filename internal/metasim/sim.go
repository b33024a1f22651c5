// Package metasim emulates Meta's WhatsApp Business Calling SIP gateway
// (wa.meta.vc) for tests, demos and benchmarks, in the manner of
// net/http/httptest: Start one on loopback, point the business endpoint at
// Sim.Addr() for "wa.meta.vc", place user-initiated calls with Sim.Call and
// take business-initiated ones from Sim.Incoming.
//
// The SIP messages follow the samples in Meta's "SIP Configuration Guide -
// WhatsApp Business Calling" (header order, Via ;alias, Record-Route through
// wa.meta.vc and onevc-sip-proxy.fbinfra.net:8191, Contact ;ob;isfocus,
// Call-ID outgoing:wacid.…, X-FB-External-Domain, x-wa-meta-* headers, the
// 403 Warning text). Behaviour not in the guide comes from public reports:
// two Proxy-Authenticate headers (SHA-256 then MD5), re-INVITEs rejected,
// calls dropped when no media arrives.
//
// Transport is TLS only. Meta's own hosts never resolve in tests: metasim
// receives in-dialog requests at its listener or on the connection it opened,
// and sends its own in-dialog requests over the connection the dialog was set
// up on.
package metasim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/waphone/waphone/internal/testpki"
)

// UserInfo is what metasim tells the business about a WhatsApp user in the
// x-wa-meta-user-id, x-wa-meta-parent-user-id and x-wa-meta-username
// headers. Empty fields are left out.
type UserInfo struct {
	UserID       string // BSUID, e.g. "US.13491208655302741918"
	ParentUserID string
	Username     string
}

// Config configures a Sim. The zero value works: it emulates the guide's
// sample business (+12145551869 at meta-voip.example.com).
type Config struct {
	// KeyExchange is the media of calls metasim places: "sdes" (default) or
	// "dtls" (WebRTC: ICE-lite + DTLS-SRTP, Meta's default). For calls it
	// receives, the business's offer decides.
	KeyExchange string
	// Hostname is the name in metasim's TLS certificate, the realm of its
	// 407 and the host in its Record-Route/Contact. Default "wa.meta.vc".
	Hostname string
	// ListenAddr is where the TLS listener binds. Default "127.0.0.1:0".
	ListenAddr string
	// CA signs metasim's server certificate (for Hostname, 127.0.0.1 and
	// ::1). Nil means a fresh CA; get it from Sim.CA.
	CA *testpki.CA
	// BusinessNumber is the business phone number, "+" and digits.
	// Default "+12145551869".
	BusinessNumber string
	// BusinessHost is the SIP server hostname configured at "Meta" for the
	// number. Business INVITEs whose From host differs get the guide's 403.
	// It is also the name metasim verifies in the business's certificate.
	// Default "meta-voip.example.com".
	BusinessHost string
	// PhoneNumberID is the phone number id in the 403 Warning text.
	// Default "106540352242922" (made up).
	PhoneNumberID string
	// Password is the Meta-generated SIP password.
	Password string
	// BusinessRoots verifies the business's TLS certificate when metasim
	// dials it. Nil means the system roots.
	BusinessRoots *x509.CertPool
	// Challenge selects the Proxy-Authenticate headers of the 407.
	Challenge ChallengeMode
	// NoMediaTimeout makes metasim send BYE when no RTP arrives from the
	// business for this long (Meta: about 20 s at call start, 30 s
	// mid-call). 0 disables it.
	NoMediaTimeout time.Duration
	// ToneHz is the tone metasim plays once the business's audio arrives.
	// Default 1000.
	ToneHz float64
	// AnswerDelay is, for business-initiated calls, the ringing time
	// between 180 and the final response. Default 100 ms; negative means 0.
	AnswerDelay time.Duration
	// OpusComplexity is the complexity of metasim's own encoder, 1-10;
	// 0 keeps libopus's default. The board VM sets 1: Meta's encoder is
	// not under test there, and the emulated CPU is short.
	OpusComplexity int
	// RejectBusinessCalls, if non-zero, is the final status (e.g. 480, 486,
	// 603) authenticated business-initiated INVITEs get after ringing,
	// instead of 200.
	RejectBusinessCalls int
	// NonceTTL is how long an issued nonce is accepted; a later use gets a
	// fresh 407 with stale=true. Default DefaultNonceTTL.
	NonceTTL time.Duration
	// ACKTimeout is how long metasim waits for the business's ACK of its 200
	// before hanging up. Default DefaultACKTimeout.
	ACKTimeout time.Duration
	// Users holds the x-wa-meta-* identity of WhatsApp users the business
	// calls, keyed by the Request-URI user ("+12195550714" or a BSUID). A
	// BSUID target without an entry gets x-wa-meta-user-id set to itself.
	Users map[string]UserInfo
	// Logger receives metasim's and sipgo's logs. Nil discards them.
	Logger *slog.Logger
}

// ErrClosed is returned by operations on a closed Sim.
var ErrClosed = errors.New("metasim: closed")

// Sim is a running emulated gateway.
type Sim struct {
	cfg    Config
	ca     *testpki.CA
	log    *slog.Logger
	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	cli    *sipgo.Client
	ln     net.Listener
	addr   string
	bindIP net.IP

	ctx       context.Context
	cancel    context.CancelFunc
	stopWatch func() bool
	closeOnce sync.Once

	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
	calls  map[dialogKey]*Call

	nonces   *nonceStore
	incoming chan *Call
}

type dialogKey struct{ callID, localTag string }

// Start starts a gateway listening for TLS on cfg.ListenAddr. It stops when
// ctx is done or Close is called.
func Start(ctx context.Context, cfg Config) (*Sim, error) {
	if cfg.Hostname == "" {
		cfg.Hostname = DefaultHostname
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.BusinessNumber == "" {
		cfg.BusinessNumber = DefaultBusinessNumber
	}
	if !validE164(cfg.BusinessNumber) {
		return nil, fmt.Errorf("metasim: BusinessNumber %q is not +digits", cfg.BusinessNumber)
	}
	if cfg.BusinessHost == "" {
		cfg.BusinessHost = DefaultBusinessHost
	}
	if cfg.PhoneNumberID == "" {
		cfg.PhoneNumberID = DefaultPhoneNumberID
	}
	if cfg.ToneHz == 0 {
		cfg.ToneHz = 1000
	}
	if cfg.AnswerDelay == 0 {
		cfg.AnswerDelay = 100 * time.Millisecond
	} else if cfg.AnswerDelay < 0 {
		cfg.AnswerDelay = 0
	}
	if cfg.NonceTTL <= 0 {
		cfg.NonceTTL = DefaultNonceTTL
	}
	if cfg.ACKTimeout <= 0 {
		cfg.ACKTimeout = DefaultACKTimeout
	}
	if cfg.RejectBusinessCalls != 0 && (cfg.RejectBusinessCalls < 300 || cfg.RejectBusinessCalls > 699) {
		return nil, fmt.Errorf("metasim: RejectBusinessCalls %d is not a final error status", cfg.RejectBusinessCalls)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("component", "metasim")

	ca := cfg.CA
	if ca == nil {
		var err error
		if ca, err = testpki.NewCA("metasim test CA"); err != nil {
			return nil, err
		}
	}
	certPEM, keyPEM, err := ca.Issue(cfg.Hostname, "127.0.0.1", "::1")
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("metasim: %w", err)
	}
	// No ClientAuth (Meta does no mTLS) and no NextProtos (Meta rejects "sip").
	serverTLS := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	// Dialing the business: verify its certificate for BusinessHost whatever
	// address it is reached at.
	clientTLS := &tls.Config{RootCAs: cfg.BusinessRoots, ServerName: cfg.BusinessHost, MinVersion: tls.VersionTLS12}

	ln, err := tls.Listen("tcp", cfg.ListenAddr, serverTLS)
	if err != nil {
		return nil, fmt.Errorf("metasim: listen: %w", err)
	}
	s := &Sim{
		cfg: cfg, ca: ca, log: log, ln: ln, addr: ln.Addr().String(),
		calls: map[dialogKey]*Call{}, nonces: newNonceStore(cfg.NonceTTL), incoming: make(chan *Call, 64),
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		s.bindIP = ta.IP
		if ta.IP.IsUnspecified() {
			s.bindIP = net.IPv4(127, 0, 0, 1)
			s.addr = net.JoinHostPort("127.0.0.1", fmt.Sprint(ta.Port))
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent(userAgent),
		sipgo.WithUserAgentHostname(cfg.Hostname),
		sipgo.WithUserAgenTLSConfig(clientTLS),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(log),
			sip.WithTransactionLayerUnhandledResponseHandler(s.onUnhandledResponse),
		),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(log)),
	)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("metasim: %w", err)
	}
	s.ua = ua
	if s.srv, err = sipgo.NewServer(ua, sipgo.WithServerLogger(log)); err == nil {
		s.cli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(log))
	}
	if err != nil {
		ua.Close()
		ln.Close()
		return nil, fmt.Errorf("metasim: %w", err)
	}
	// After the transaction layer's handler, in the connection's read loop:
	// 1xx codes in wire order.
	ua.TransportLayer().OnMessage(s.onWireMessage)
	s.srv.OnInvite(s.guard(s.onInvite))
	s.srv.OnAck(s.guard(s.onAck))
	s.srv.OnBye(s.guard(s.onBye))
	s.srv.OnCancel(s.guard(s.onCancel))
	s.srv.OnOptions(s.guard(s.onOptions))
	s.srv.OnNoRoute(s.guard(s.onNoRoute))

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.ServeTLS(ln); !errors.Is(err, net.ErrClosed) {
			s.log.Debug("listener stopped", "error", err)
		}
	}()
	s.stopWatch = context.AfterFunc(ctx, func() { s.Close() })
	s.log.Info("metasim listening", "addr", s.addr, "hostname", cfg.Hostname, "business", cfg.BusinessNumber)
	return s, nil
}

// Addr is the "host:port" of the TLS listener (what "wa.meta.vc" must
// resolve to for the business).
func (s *Sim) Addr() string { return s.addr }

// CA is the authority that signed metasim's certificate.
func (s *Sim) CA() *testpki.CA { return s.ca }

// Incoming delivers business-initiated calls once they got past
// authentication and reached a final response (200, a RejectBusinessCalls
// status, or 487 after the business's CANCEL). The channel is buffered (64);
// calls that do not fit are dropped (logged). It is closed by Close.
func (s *Sim) Incoming() <-chan *Call { return s.incoming }

// Close ends all calls (established ones get a best-effort BYE, waited for at
// most a second), stops the listener, closes all connections and waits for
// metasim's goroutines.
func (s *Sim) Close() error {
	s.closeOnce.Do(func() {
		s.stopWatch()
		s.mu.Lock()
		s.closed = true
		calls := make([]*Call, 0, len(s.calls))
		for _, c := range s.calls {
			calls = append(calls, c)
		}
		s.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var wg sync.WaitGroup
		for _, c := range calls {
			if c.isEstablished() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = c.bye(ctx, "meta", reasonNormal)
				}()
			}
		}
		wg.Wait()
		cancel()

		s.cancel()
		for _, c := range calls {
			c.fail(ErrClosed) // ends it as "meta"; an error only if it had no final response
		}
		_ = s.ln.Close()
		_ = s.ua.Close()
		s.wg.Wait()
		close(s.incoming)
	})
	return nil
}

// enter registers a goroutine or handler with Close's wait group; false
// once closing started.
func (s *Sim) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Sim) leave() { s.wg.Done() }

// goTracked runs f in a goroutine Close waits for (not at all once closed).
func (s *Sim) goTracked(f func()) bool {
	if !s.enter() {
		return false
	}
	go func() {
		defer s.leave()
		f()
	}()
	return true
}

// guard wraps a handler: requests arriving while closing get 503, a panic
// in a handler is logged instead of killing the process.
func (s *Sim) guard(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("handler panic", "panic", r, "method", req.Method)
			}
		}()
		if !s.enter() {
			if !req.IsAck() {
				s.respond(tx, newResponse(s, req, 503, "Service Unavailable", respOpts{}))
			}
			return
		}
		defer s.leave()
		h(req, tx)
	}
}

func (s *Sim) respond(tx sip.ServerTransaction, res *sip.Response) error {
	if res.ContentLength() == nil {
		res.SetBody(nil)
	}
	err := tx.Respond(res)
	if err != nil {
		s.log.Debug("respond failed", "status", res.StatusCode, "error", err)
	}
	return err
}

func (s *Sim) register(c *Call) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.calls[dialogKey{c.callID, c.localTag}] = c
	return true
}

func (s *Sim) unregister(c *Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := dialogKey{c.callID, c.localTag}
	if s.calls[k] == c {
		delete(s.calls, k)
	}
}

// lookup finds the dialog of an in-dialog request (its To tag is ours).
func (s *Sim) lookup(req *sip.Request) *Call {
	cid, to := req.CallID(), req.To()
	if cid == nil || to == nil {
		return nil
	}
	tag, _ := to.Params.Get("tag")
	if tag == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[dialogKey{cid.Value(), tag}]
}

func (s *Sim) deliver(c *Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case s.incoming <- c:
	default:
		s.log.Warn("Incoming channel full, dropping call", "call-id", c.callID)
	}
}

func (s *Sim) mediaConfig() metaMediaConfig {
	return metaMediaConfig{BindIP: s.bindIP, ToneHz: s.cfg.ToneHz, NoMediaTimeout: s.cfg.NoMediaTimeout, KeyExchange: s.cfg.KeyExchange, OpusComplexity: s.cfg.OpusComplexity, Logger: s.log}
}

// do sends a non-INVITE request (or a re-INVITE) in a client transaction and
// waits for its final response.
func (s *Sim) do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := s.cli.TransactionRequest(ctx, req, noBuild)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return nil, err
			}
			return nil, sip.ErrTransactionTerminated
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// onUnhandledResponse re-ACKs retransmitted 2xx to INVITEs metasim sent.
func (s *Sim) onUnhandledResponse(res *sip.Response) {
	cseq, cid, from := res.CSeq(), res.CallID(), res.From()
	if !res.IsSuccess() || cseq == nil || cseq.MethodName != sip.INVITE || cid == nil || from == nil {
		return
	}
	tag, _ := from.Params.Get("tag")
	s.mu.Lock()
	c := s.calls[dialogKey{cid.Value(), tag}]
	s.mu.Unlock()
	if c != nil {
		c.reAck(cseq.SeqNo)
	}
}

// onWireMessage sees every message in wire order; it must stay cheap.
func (s *Sim) onWireMessage(msg sip.Message) {
	res, ok := msg.(*sip.Response)
	if !ok || !res.IsProvisional() {
		return
	}
	cseq, cid, from := res.CSeq(), res.CallID(), res.From()
	if cseq == nil || cseq.MethodName != sip.INVITE || cid == nil || from == nil {
		return
	}
	tag, _ := from.Params.Get("tag")
	s.mu.Lock()
	c := s.calls[dialogKey{cid.Value(), tag}]
	s.mu.Unlock()
	if c != nil && c.outbound {
		c.onWireProvisional(res)
	}
}

func (s *Sim) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	res := newResponse(s, req, 200, "OK", respOpts{toTag: newUUID()})
	res.AppendHeader(sip.NewHeader("Allow", allowHeader))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	res.AppendHeader(sip.NewHeader(hdrExternalDomain, s.cfg.Hostname))
	s.respond(tx, res)
}

func (s *Sim) onNoRoute(req *sip.Request, tx sip.ServerTransaction) {
	if req.IsAck() {
		return
	}
	res := newResponse(s, req, 405, "Method Not Allowed", respOpts{toTag: newUUID()})
	res.AppendHeader(sip.NewHeader("Allow", allowHeader))
	s.respond(tx, res)
}

// onCancel sees only CANCELs that matched no pending INVITE (sipgo's
// transaction layer answers the others with 200 and the INVITE with 487).
func (s *Sim) onCancel(req *sip.Request, tx sip.ServerTransaction) {
	s.respond(tx, newResponse(s, req, 481, "Call/Transaction Does Not Exist", respOpts{toTag: newUUID()}))
}

func (s *Sim) onBye(req *sip.Request, tx sip.ServerTransaction) {
	c := s.lookup(req)
	if c == nil || !c.isEstablished() {
		s.respond(tx, newResponse(s, req, 481, "Call/Transaction Does Not Exist", respOpts{}))
		return
	}
	s.respond(tx, newResponse(s, req, 200, "OK", respOpts{}))
	s.log.Info("BYE from business", "call-id", c.callID)
	c.finish("business", req)
}

func (s *Sim) onAck(req *sip.Request, _ sip.ServerTransaction) {
	c := s.lookup(req)
	if c == nil || c.outbound {
		return // e.g. the ACK of a 407, or of a 487 after CANCEL
	}
	if cseq := req.CSeq(); cseq != nil && cseq.SeqNo == c.inviteCSeq() {
		c.acked()
	}
}

// isBSUIDish reports whether a user part is a BSUID rather than a number.
func isBSUIDish(user string) bool { return !strings.HasPrefix(user, "+") }
