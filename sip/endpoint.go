// Package sip is waphone's signaling: a SIP-over-TLS server and client for
// Meta's WhatsApp gateway, built on sipgo's transport and transaction
// layers. It challenges Meta's INVITEs with digest auth, answers Meta's
// challenges, keeps dialogs and route sets, and turns Meta's x-wa-meta-*
// headers into a CallInfo. SDP passes through as opaque bytes.
package sip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	ssip "github.com/emiago/sipgo/sip"
)

// Allow is what we tell peers we handle. No UPDATE, no session timer:
// Meta is reported to reject re-INVITEs, so we never need them.
const allowMethods = "INVITE, ACK, BYE, CANCEL, OPTIONS"

// Meta's SIP gateway and the SIP-over-TLS port (Meta's default for the
// business's server too): the one home of these defaults; config and cmd
// use them.
const (
	DefaultGateway = "wa.meta.vc"
	DefaultPort    = 5061
)

// Config holds what signaling needs; cmd fills it from the TOML config.
type Config struct {
	Hostname string // our SIP host: realm of our 407, From host on our INVITEs, name on our certificate
	Number   string // business number in E.164 with '+'
	// Password returns Meta's SIP password. It is called on every use so a
	// rotated password file is picked up without a restart.
	Password func() (string, error)
	// Gateway is Meta's SIP host[:port]; "" = DefaultGateway.
	Gateway string
	// GatewayAddr, when set, is the host:port actually dialled whenever a
	// request targets the gateway host (like curl --resolve). Tests and the
	// demo point it at metasim on loopback; TLS still verifies Gateway's name.
	GatewayAddr  string
	GatewayRoots *x509.CertPool // nil = system roots
	// ContactPort is the port we advertise in Contact (our listener's port).
	ContactPort int
	Allow       []netip.Prefix // empty = everyone may connect
	MaxConns    int            // concurrent TLS connections; 0 = 64
	// ReservedConns of MaxConns only sources in Allow or addresses that
	// authenticated before (Meta's gateways) may take; 0 = MaxConns/4.
	ReservedConns int
	// FirstMessage bounds the TLS handshake plus a first complete SIP
	// message, and the gap between messages until one authenticated; 0 = 10 s.
	FirstMessage time.Duration
	// PrefixV4 and PrefixV6 are the prefix lengths the connection shares
	// and the failure throttle count strangers by; 0 = 24 and 64.
	PrefixV4, PrefixV6 int
	NonceTTL           time.Duration // 0 = 60 s
	// T1 is RFC 3261's round-trip estimate: our 200 OK is retransmitted at
	// T1, 2·T1, … up to T2 = 8·T1 until the ACK comes, and the call is hung
	// up after 64·T1 without one. 0 = 500 ms; tests shorten it.
	T1        time.Duration
	UserAgent string
	Logger    *slog.Logger
	// Fleet, when set, puts the endpoint behind an edge proxy: it registers
	// there instead of listening for Meta, and Password may be nil (the
	// edge answers Meta's challenges). See Fleet.
	Fleet *Fleet
}

// Handler receives calls that passed authentication. It runs on the
// INVITE's goroutine and must return quickly; it answers or rejects the
// call later through the InboundCall's methods.
type Handler interface {
	IncomingCall(c *InboundCall)
}

// Endpoint is one SIP identity: the listener for Meta's INVITEs and the
// client for ours.
type Endpoint struct {
	cfg      Config
	digits   string
	gwHost   string
	gwPort   int
	log      *slog.Logger
	h        Handler
	ua       *sipgo.UserAgent
	srv      *sipgo.Server
	cli      *sipgo.Client
	dua      *sipgo.DialogUA
	nonces   *nonceMinter
	throttle *failThrottle
	trust    *trustSet
	allow    *allowList // sip.allow, replaceable by SetAllow
	prefix   prefixer
	// INVITEs refused by the throttle, and when that was last logged.
	throttled, throttleLog atomic.Int64
	authFailures           atomic.Uint64
	noACK                  atomic.Uint64
	fleet                  *fleetState // nil unless Config.Fleet

	mu      sync.Mutex
	dialogs map[string]*dialog
	guards  []*guardListener
}

// New builds an endpoint. Close it to release sipgo's transports.
func New(cfg Config, h Handler) (*Endpoint, error) {
	if cfg.Hostname == "" || cfg.Number == "" || (cfg.Password == nil && cfg.Fleet == nil) {
		return nil, errors.New("sip: hostname, number and password are required")
	}
	if cfg.Password == nil {
		cfg.Password = func() (string, error) { return "", errors.New("fleet mode: the edge holds Meta's password") }
	}
	if cfg.Gateway == "" {
		cfg.Gateway = DefaultGateway
	}
	if cfg.ContactPort == 0 {
		cfg.ContactPort = DefaultPort
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 64
	}
	if cfg.ReservedConns <= 0 || cfg.ReservedConns >= cfg.MaxConns {
		cfg.ReservedConns = max(cfg.MaxConns/4, 1)
	}
	if cfg.FirstMessage == 0 {
		cfg.FirstMessage = 10 * time.Second
	}
	if cfg.PrefixV4 <= 0 || cfg.PrefixV4 > 32 {
		cfg.PrefixV4 = 24
	}
	if cfg.PrefixV6 <= 0 || cfg.PrefixV6 > 128 {
		cfg.PrefixV6 = 64
	}
	if cfg.NonceTTL == 0 {
		// Meta's retry comes one Internet round trip after the 407 (50–300 ms
		// seen); a minute also covers a retry after a TCP reconnect. Later
		// answers get stale=true and a fresh nonce, not a failure.
		cfg.NonceTTL = 60 * time.Second
	}
	if cfg.T1 == 0 {
		cfg.T1 = 500 * time.Millisecond
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "waphone"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	gwHost, gwPort, err := splitHostPortDefault(cfg.Gateway, DefaultPort)
	if err != nil {
		return nil, fmt.Errorf("sip.gateway %q: %w", cfg.Gateway, err)
	}
	allow := newAllowList(cfg.Allow)
	e := &Endpoint{
		cfg: cfg, digits: strings.TrimPrefix(cfg.Number, "+"), gwHost: gwHost, gwPort: gwPort,
		log: cfg.Logger, h: h,
		nonces:  newNonceMinter(cfg.NonceTTL),
		allow:   allow,
		trust:   newTrustSet(allow),
		prefix:  prefixer{v4: cfg.PrefixV4, v6: cfg.PrefixV6},
		dialogs: make(map[string]*dialog),
	}
	e.throttle = newFailThrottle(5, time.Minute, e.prefix.of, e.trust.trusted)
	// Outbound TLS verifies the gateway's name whatever address we dial:
	// sipgo would otherwise verify against the IP of GatewayAddr.
	clientTLS := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.GatewayRoots, ServerName: gwHost}
	uaOpts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent(cfg.UserAgent),
		sipgo.WithUserAgentHostname(cfg.Hostname),
	}
	if cfg.Fleet != nil {
		if e.fleet, err = newFleetState(*cfg.Fleet); err != nil {
			return nil, err
		}
		// Every connection goes to the edge and proves who we are.
		clientTLS = e.fleet.clientTLS()
		uaOpts = append(uaOpts, sipgo.WithUserAgentTransportLayerOptions(ssip.WithTransportLayerReadFilter(e.fleet.readFilter)))
	}
	uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(clientTLS))
	e.ua, err = sipgo.NewUA(uaOpts...)
	if err != nil {
		return nil, fmt.Errorf("sip: user agent: %w", err)
	}
	e.srv, err = sipgo.NewServer(e.ua, sipgo.WithServerLogger(cfg.Logger))
	if err != nil {
		return nil, fmt.Errorf("sip: server: %w", err)
	}
	e.cli, err = sipgo.NewClient(e.ua, sipgo.WithClientHostname(cfg.Hostname), sipgo.WithClientLogger(cfg.Logger))
	if err != nil {
		return nil, fmt.Errorf("sip: client: %w", err)
	}
	e.dua = &sipgo.DialogUA{Client: e.cli, ContactHDR: e.contact()}
	e.srv.OnInvite(e.edgeOnly(e.onInvite))
	e.srv.OnAck(e.edgeOnly(e.onAck))
	e.srv.OnBye(e.edgeOnly(e.onBye))
	e.srv.OnOptions(e.edgeOnly(e.onOptions))
	e.srv.OnCancel(e.edgeOnly(func(req *ssip.Request, tx ssip.ServerTransaction) {
		// sipgo's transaction layer answers a matching CANCEL itself; one
		// that reaches here matched no INVITE.
		e.respond(req, tx, 481, "Call/Transaction Does Not Exist")
	}))
	e.srv.OnNoRoute(func(req *ssip.Request, tx ssip.ServerTransaction) {
		res := ssip.NewResponseFromRequest(req, 405, "Method Not Allowed", nil)
		res.AppendHeader(ssip.NewHeader("Allow", allowMethods))
		_ = tx.Respond(res)
	})
	return e, nil
}

// edgeOnly, for a fleet desk, refuses requests that did not come over the
// connection it registered at the edge (nothing else should reach a desk
// that never listens, but sipgo would serve any connection it holds).
func (e *Endpoint) edgeOnly(h func(*ssip.Request, ssip.ServerTransaction)) func(*ssip.Request, ssip.ServerTransaction) {
	if e.fleet == nil {
		return h
	}
	return func(req *ssip.Request, tx ssip.ServerTransaction) {
		if !e.fleet.fromEdge(req.Source()) {
			e.log.Warn("fleet: request not from the registered edge connection; refused", "method", req.Method, "remote", req.Source())
			if !req.IsAck() {
				e.respond(req, tx, 403, "Forbidden")
			}
			return
		}
		h(req, tx)
	}
}

func splitHostPortDefault(s string, def int) (string, int, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return strings.Trim(s, "[]"), def, nil
		}
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", portStr)
	}
	return host, port, nil
}

// Serve accepts SIP over TLS on ln until ctx ends. The allow-list and
// connection cap run before the TLS handshake. A fleet desk does not
// listen: it takes requests over its connection to the edge (RunFleet).
func (e *Endpoint) Serve(ctx context.Context, ln net.Listener, tlsConf *tls.Config) error {
	if e.fleet != nil {
		return errors.New("sip: a fleet desk does not listen; it registers at the edge (RunFleet)")
	}
	g := newGuardListener(ln, tlsConf, guardConfig{
		allow: e.allow, trusted: e.trust.trusted, prefixOf: e.prefix.of,
		maxConns: e.cfg.MaxConns, reserved: e.cfg.ReservedConns,
		// idle outlasts a long call: Meta's connection may carry nothing for
		// the whole call, and closing it would send our BYE the long way.
		first: e.cfg.FirstMessage, idle: 2 * time.Hour,
		maxMsg: ssip.ParseMaxMessageLength, log: e.log,
	})
	e.mu.Lock()
	e.guards = append(e.guards, g)
	e.mu.Unlock()
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	err := e.srv.ServeTLS(g)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("sip: serving %s: %w", ln.Addr(), err)
}

// Throttled counts INVITEs refused without a check because their source
// gave too many wrong digest answers.
func (e *Endpoint) Throttled() int64 { return e.throttled.Load() }

// SetAllow replaces sip.allow (SIGHUP): new connections are checked
// against it; open ones stay.
func (e *Endpoint) SetAllow(entries []string) error {
	prefixes, err := ParseAllow(entries)
	if err != nil {
		return err
	}
	e.allow.set(prefixes)
	return nil
}

// Refused reports connections dropped by the allow-list and by the
// connection caps (all of them; Guard breaks them down).
func (e *Endpoint) Refused() (notAllowed, overLimit uint64) {
	st := e.Guard()
	return st.NotAllowed, st.OverTotal + st.OverStrangers + st.OverPrefix + st.OverAddr
}

// Guard returns the defence counters of all listeners and the digest check.
func (e *Endpoint) Guard() GuardStats {
	e.mu.Lock()
	guards := append([]*guardListener(nil), e.guards...)
	e.mu.Unlock()
	var st GuardStats
	for _, g := range guards {
		s := g.stats()
		st.NotAllowed += s.NotAllowed
		st.OverTotal += s.OverTotal
		st.OverStrangers += s.OverStrangers
		st.OverPrefix += s.OverPrefix
		st.OverAddr += s.OverAddr
		st.FirstTimeouts += s.FirstTimeouts
		st.IdleTimeouts += s.IdleTimeouts
		st.TLSFailures += s.TLSFailures
		st.TLSHandshakes += s.TLSHandshakes
		st.TooLarge += s.TooLarge
		st.TooLargeDrops += s.TooLargeDrops
		st.Open += s.Open
		st.Authenticated += s.Authenticated
	}
	st.Throttled = e.throttled.Load()
	st.AuthFailures = e.authFailures.Load()
	st.NoACK = e.noACK.Load()
	st.Trusted = e.trust.len()
	return st
}

// authenticated tells the listeners that a request from src passed digest
// authentication: its connection gets the long idle limit, its address a
// reserved seat from now on.
func (e *Endpoint) authenticated(src string) {
	e.trust.add(sourceIP(src))
	e.mu.Lock()
	guards := append([]*guardListener(nil), e.guards...)
	e.mu.Unlock()
	for _, g := range guards {
		g.authenticated(src)
	}
}

// Close ends all transports. Calls still up are not hung up: the caller
// (phone) does that first.
func (e *Endpoint) Close() error {
	return e.ua.Close()
}

func (e *Endpoint) contact() ssip.ContactHeader {
	if e.fleet != nil {
		return e.fleetContact()
	}
	return ssip.ContactHeader{Address: ssip.Uri{
		Scheme: "sip", User: e.cfg.Number, Host: e.cfg.Hostname, Port: e.cfg.ContactPort,
		UriParams: ssip.HeaderParams{{K: "transport", V: "tls"}},
	}}
}

func (e *Endpoint) respond(req *ssip.Request, tx ssip.ServerTransaction, code int, reason string, hdrs ...ssip.Header) {
	res := ssip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		e.log.Debug("sip: respond failed", "code", code, "err", err)
	}
}

// destination maps a URI to the host:port we dial, applying GatewayAddr for
// the gateway's name. A fleet desk sends everything to the edge.
func (e *Endpoint) destination(u ssip.Uri) string {
	if e.fleet != nil {
		return e.fleet.cfg.Edge
	}
	port := u.Port
	if port == 0 {
		port = DefaultPort
	}
	if e.cfg.GatewayAddr != "" && strings.EqualFold(u.Host, e.gwHost) {
		return e.cfg.GatewayAddr
	}
	return net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(port))
}

func (e *Endpoint) newVia() *ssip.ViaHeader {
	v := &ssip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "TLS", Params: ssip.NewParams()}
	v.Params.Add("branch", ssip.GenerateBranchN(16))
	v.Params.Add("rport", "")
	// alias (RFC 5923): Meta may send its in-dialog requests back over our connection.
	v.Params.Add("alias", "")
	return v
}

// noBuild tells sipgo the request is complete; it must not add headers.
func noBuild(*sipgo.Client, *ssip.Request) error { return nil }

func (e *Endpoint) addDialog(d *dialog) {
	e.mu.Lock()
	e.dialogs[d.key()] = d
	e.mu.Unlock()
}

func (e *Endpoint) removeDialog(d *dialog) {
	e.mu.Lock()
	if e.dialogs[d.key()] == d {
		delete(e.dialogs, d.key())
	}
	e.mu.Unlock()
}

// findDialog matches an in-dialog request from the peer: our tag is in To.
func (e *Endpoint) findDialog(req *ssip.Request) *dialog {
	cid, to := req.CallID(), req.To()
	if cid == nil || to == nil {
		return nil
	}
	tag, _ := to.Params.Get("tag")
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dialogs[cid.Value()+"|"+tag]
}

// ActiveDialogs is the number of dialogs being tracked (for status and leak tests).
func (e *Endpoint) ActiveDialogs() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.dialogs)
}

func (e *Endpoint) onOptions(req *ssip.Request, tx ssip.ServerTransaction) {
	e.respond(req, tx, 200, "OK",
		ssip.NewHeader("Allow", allowMethods),
		ssip.NewHeader("Accept", "application/sdp"))
}

func (e *Endpoint) onAck(req *ssip.Request, tx ssip.ServerTransaction) {
	if d := e.findDialog(req); d != nil && d.srv != nil {
		if err := d.srv.ReadAck(req, tx); err != nil {
			e.log.Debug("sip: ACK not for the current INVITE", "err", err)
			return
		}
		d.gotAck()
	}
}

func (e *Endpoint) onBye(req *ssip.Request, tx ssip.ServerTransaction) {
	d := e.findDialog(req)
	if d == nil {
		e.respond(req, tx, 481, "Call/Transaction Does Not Exist")
		return
	}
	e.respond(req, tx, 200, "OK")
	d.remoteBye(req)
}

// requireHeaders reports what makes a request unusable, for a 400.
func requireHeaders(req *ssip.Request) string {
	switch {
	case req.From() == nil:
		return "Missing From"
	case req.To() == nil:
		return "Missing To"
	case req.CallID() == nil:
		return "Missing Call-ID"
	case req.CSeq() == nil:
		return "Missing CSeq"
	case req.Via() == nil:
		return "Missing Via"
	}
	return ""
}
