package sip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ssip "github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
)

// Fleet puts the endpoint behind an edge proxy (Kamailio, deploy/kamailio):
// many desks share one business number. The desk does not listen: it
// registers the number at the edge over TLS with its own client
// certificate, keeps that connection alive, and takes calls that arrive
// over it without a digest challenge (the edge checked Meta's). Every
// request it sends goes to the edge, which answers Meta's challenges, so a
// desk never holds Meta's password. docs/fleet.md has the picture.
type Fleet struct {
	// Edge is the host:port of the edge's desk port.
	Edge string
	// EdgeName is the name on the edge's certificate; "" = Edge's host.
	EdgeName string
	// EdgeRoots verifies the edge's certificate (the fleet CA).
	EdgeRoots *x509.CertPool
	// ClientCert is this desk's certificate, shown to the edge. Called on
	// every handshake, so a renewed file is used on the next connection.
	ClientCert func() (*tls.Certificate, error)
	// Device names this desk; it makes the Contact unique in the fleet.
	Device string
	// Expires is the registration lifetime asked for; 0 = 120 s.
	Expires time.Duration
	// Q is the Contact's q value ("0.0"–"1.0") for an edge that hunts in q
	// order; "" = none (all desks ring at once).
	Q string
	// KeepAlive is the interval of RFC 5626 CRLF pings on the edge
	// connection; 0 = 25 s. A ping not answered within KeepAlive/2 (at
	// most 10 s) counts as a lost connection.
	KeepAlive time.Duration
	// RetryMin and RetryMax bound the backoff between failed
	// registrations; 0 = 500 ms and 30 s.
	RetryMin, RetryMax time.Duration
}

// Registration is the state of the desk's binding at the edge, for
// `waphone status` and `waphone doctor`.
type Registration struct {
	Edge       string    `json:"edge"`
	Device     string    `json:"device"`
	Contact    string    `json:"contact"`
	Registered bool      `json:"registered"`
	Since      time.Time `json:"since,omitzero"`   // this binding's first success (after the last loss)
	Expires    time.Time `json:"expires,omitzero"` // when the edge drops the binding unless refreshed
	LastError  string    `json:"last_error,omitempty"`
	ErrorAt    time.Time `json:"error_at,omitzero"`
	Failures   int       `json:"failures"`   // failed attempts in a row
	Reconnects int       `json:"reconnects"` // connections lost since start
}

var deviceRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// CheckDevice says whether name can be a desk's device name: one lower-case
// DNS label, since it becomes the host of the desk's Contact.
func CheckDevice(name string) error {
	if !deviceRE.MatchString(name) {
		return fmt.Errorf("%q: want a lower-case name of letters, digits and '-' (one DNS label)", name)
	}
	return nil
}

// fleetState is the running side of Fleet.
type fleetState struct {
	cfg      Fleet
	edgeHost string
	edgePort int
	callID   string
	cseq     atomic.Uint32

	// lastRead is when bytes last came from the edge (messages or CRLF pongs).
	lastRead atomic.Int64

	mu     sync.Mutex
	source string // the registered connection's remote address, as sipgo names message sources
	reg    Registration
}

func newFleetState(f Fleet) (*fleetState, error) {
	if f.Edge == "" {
		return nil, errors.New("fleet: edge is required")
	}
	host, port, err := splitHostPortDefault(f.Edge, DefaultPort)
	if err != nil {
		return nil, fmt.Errorf("fleet.edge %q: %w", f.Edge, err)
	}
	if f.EdgeName == "" {
		f.EdgeName = host
	}
	if f.ClientCert == nil {
		return nil, errors.New("fleet: a client certificate is required")
	}
	if err := CheckDevice(f.Device); err != nil {
		return nil, fmt.Errorf("fleet.device %w", err)
	}
	if f.Q != "" {
		q, err := strconv.ParseFloat(f.Q, 64)
		if err != nil || q < 0 || q > 1 {
			return nil, fmt.Errorf("fleet: q %q: want a number from 0 to 1", f.Q)
		}
	}
	if f.Expires <= 0 {
		f.Expires = 120 * time.Second
	}
	if f.KeepAlive <= 0 {
		f.KeepAlive = 25 * time.Second
	}
	if f.RetryMin <= 0 {
		f.RetryMin = 500 * time.Millisecond
	}
	if f.RetryMax < f.RetryMin {
		f.RetryMax = max(30*time.Second, f.RetryMin)
	}
	fs := &fleetState{cfg: f, edgeHost: host, edgePort: port, callID: uuid.NewString()}
	fs.cseq.Store(rand.Uint32N(1 << 20))
	fs.reg = Registration{Edge: f.Edge, Device: f.Device}
	return fs, nil
}

// clientTLS is how the desk dials the edge: the fleet CA, the edge's name,
// our certificate. No ALPN, like everywhere else.
func (f *fleetState) clientTLS() *tls.Config {
	get := f.cfg.ClientCert
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    f.cfg.EdgeRoots,
		ServerName: f.cfg.EdgeName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return get()
		},
	}
}

// readFilter notes traffic from the edge (the CRLF pong included, which
// sipgo swallows) and passes the bytes on untouched.
func (f *fleetState) readFilter(_ ssip.TransportReadProps, data []byte) ([]byte, error) {
	f.lastRead.Store(time.Now().UnixNano())
	return data, nil
}

// fromEdge says whether a request came over the connection we registered.
func (f *fleetState) fromEdge(src string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.source != "" && src == f.source
}

func (f *fleetState) status() Registration {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reg
	if r.Registered && !r.Expires.IsZero() && time.Now().After(r.Expires) {
		r.Registered = false
	}
	return r
}

func (f *fleetState) failed(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reg.Registered = false
	f.reg.Since = time.Time{}
	f.reg.LastError = err.Error()
	f.reg.ErrorAt = time.Now()
	f.reg.Failures++
}

// Registration reports the desk's binding at the edge; ok is false when
// the endpoint is not in fleet mode.
func (e *Endpoint) Registration() (r Registration, ok bool) {
	if e.fleet == nil {
		return Registration{}, false
	}
	return e.fleet.status(), true
}

// InFleet says whether the endpoint registers at an edge instead of listening.
func (e *Endpoint) InFleet() bool { return e.fleet != nil }

// fleetContact is unique per desk and names a host the edge never claims
// as its own (RFC 6761's .invalid never resolves): the edge reaches the desk
// by the connection it registered over, never by this name.
func (e *Endpoint) fleetContact() ssip.ContactHeader {
	return ssip.ContactHeader{Address: ssip.Uri{
		Scheme: "sip", User: e.cfg.Number, Host: e.fleet.cfg.Device + ".desk.invalid",
		UriParams: ssip.HeaderParams{{K: "transport", V: "tls"}},
	}}
}

// RunFleet keeps the desk registered at the edge until ctx ends, then
// removes the binding. It re-registers before the binding expires, pings
// the connection with CRLF (RFC 5626 §3.5.1), and after a lost connection
// or a failed attempt tries again with a jittered, doubling backoff.
// It returns once unregistered (or the edge could not be told).
func (e *Endpoint) RunFleet(ctx context.Context) error {
	f := e.fleet
	if f == nil {
		return errors.New("sip: not in fleet mode")
	}
	backoff := f.cfg.RetryMin
	for {
		granted, err := e.register(ctx, f.cfg.Expires)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			f.failed(err)
			wait := backoff/2 + rand.N(backoff/2+1)
			e.log.Warn("registration at the edge failed; retrying", "edge", f.cfg.Edge, "err", err, "retry_in", wait.Round(time.Millisecond))
			backoff = min(2*backoff, f.cfg.RetryMax)
			if !sleepCtx(ctx, wait) {
				break
			}
			continue
		}
		backoff = f.cfg.RetryMin
		if !e.holdRegistration(ctx, granted) && ctx.Err() == nil {
			f.mu.Lock()
			f.reg.Reconnects++
			f.reg.Registered = false
			f.reg.Since = time.Time{}
			f.mu.Unlock()
			e.log.Warn("connection to the edge lost; registering again", "edge", f.cfg.Edge)
		}
		if ctx.Err() != nil {
			break
		}
	}
	// Remove the binding so that the edge stops ringing this desk now,
	// not when it expires.
	uctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := e.register(uctx, 0); err != nil {
		e.log.Warn("unregistering at the edge failed; the binding lapses by itself", "edge", f.cfg.Edge, "err", err)
		return fmt.Errorf("unregistering: %w", err)
	}
	e.log.Info("unregistered at the edge", "edge", f.cfg.Edge)
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// holdRegistration watches the registered connection until the binding
// needs a refresh (true) or the connection is gone (false).
func (e *Endpoint) holdRegistration(ctx context.Context, granted time.Duration) bool {
	f := e.fleet
	f.mu.Lock()
	src := f.source
	f.mu.Unlock()
	// Refresh at half the granted time, with a little jitter so that a
	// fleet restarted together does not refresh in step.
	refresh := time.NewTimer(granted/2 - rand.N(granted/10+1))
	defer refresh.Stop()
	// A closed connection leaves sipgo's pool at once; look every second.
	check := time.NewTicker(time.Second)
	defer check.Stop()
	ping := time.NewTicker(f.cfg.KeepAlive)
	defer ping.Stop()
	// The pong (a CRLF, or any message) must come within pongWait of a ping.
	pongWait := min(f.cfg.KeepAlive/2, 10*time.Second)
	pong := time.NewTimer(pongWait)
	pong.Stop()
	defer pong.Stop()
	var pingAt time.Time
	for {
		select {
		case <-ctx.Done():
			return true
		case <-refresh.C:
			return true
		case <-ping.C:
			c, err := e.ua.TransportLayer().GetConnection("tls", src)
			if err != nil {
				return false
			}
			w, ok := c.(io.Writer)
			if !ok || !pingAt.IsZero() {
				continue // no raw writer, or a ping still outstanding
			}
			pingAt = time.Now()
			if _, err := w.Write([]byte("\r\n\r\n")); err != nil {
				e.log.Debug("fleet: keep-alive write failed", "err", err)
				_ = c.Close()
				return false
			}
			pong.Reset(pongWait)
		case <-pong.C:
			if time.Unix(0, f.lastRead.Load()).Before(pingAt) {
				e.log.Warn("edge did not answer the keep-alive; dropping the connection", "edge", f.cfg.Edge, "waited", pongWait)
				if c, err := e.ua.TransportLayer().GetConnection("tls", src); err == nil {
					_ = c.Close()
				}
				return false
			}
			pingAt = time.Time{}
		case <-check.C:
			if _, err := e.ua.TransportLayer().GetConnection("tls", src); err != nil {
				return false
			}
		}
	}
}

// register sends one REGISTER (expires 0 removes our binding) and returns
// the lifetime the edge granted.
func (e *Endpoint) register(ctx context.Context, expires time.Duration) (time.Duration, error) {
	f := e.fleet
	secs := int(expires / time.Second)
	aor := ssip.Uri{Scheme: "sip", User: e.cfg.Number, Host: e.cfg.Hostname}
	ruri := ssip.Uri{Scheme: "sip", Host: f.cfg.EdgeName, UriParams: ssip.HeaderParams{{K: "transport", V: "tls"}}}
	if f.edgePort != DefaultPort {
		ruri.Port = f.edgePort
	}
	req := ssip.NewRequest(ssip.REGISTER, ruri)
	req.SetTransport("TLS")
	req.AppendHeader(e.newVia())
	mf := ssip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	from := &ssip.FromHeader{Address: *aor.Clone(), Params: ssip.NewParams()}
	from.Params.Add("tag", ssip.GenerateTagN(16))
	req.AppendHeader(from)
	req.AppendHeader(&ssip.ToHeader{Address: *aor.Clone(), Params: ssip.NewParams()})
	cid := ssip.CallIDHeader(f.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&ssip.CSeqHeader{SeqNo: f.cseq.Add(1), MethodName: ssip.REGISTER})
	ct := e.fleetContact()
	ct.Params = ssip.NewParams()
	ct.Params.Add("expires", strconv.Itoa(secs))
	if f.cfg.Q != "" {
		ct.Params.Add("q", f.cfg.Q)
	}
	req.AppendHeader(&ct)
	req.AppendHeader(ssip.NewHeader("Expires", strconv.Itoa(secs)))
	req.AppendHeader(ssip.NewHeader("User-Agent", e.cfg.UserAgent))
	req.SetBody(nil)
	req.SetDestination(f.cfg.Edge)

	// The edge is one hop away: a REGISTER unanswered for long is lost (with
	// TLS 1.3 an edge refusing our certificate says so only by closing the
	// connection, which the transaction does not notice).
	rctx, cancel := context.WithTimeout(ctx, min(32*e.cfg.T1, 5*time.Second))
	defer cancel()
	res, err := e.cli.Do(rctx, req, noBuild)
	if err != nil {
		return 0, fmt.Errorf("REGISTER to %s: %w", f.cfg.Edge, err)
	}
	if !res.IsSuccess() {
		return 0, fmt.Errorf("REGISTER to %s: %d %s", f.cfg.Edge, res.StatusCode, res.Reason)
	}
	if expires == 0 {
		f.mu.Lock()
		f.reg.Registered, f.reg.Expires, f.reg.Since = false, time.Time{}, time.Time{}
		f.mu.Unlock()
		return 0, nil
	}
	granted := grantedExpiry(res, ct.Address, expires)
	if granted < 2*time.Second {
		return 0, fmt.Errorf("REGISTER to %s: the edge granted only %s", f.cfg.Edge, granted)
	}
	now := time.Now()
	f.mu.Lock()
	first := f.source != res.Source() || !f.reg.Registered
	f.source = res.Source()
	f.reg.Registered = true
	if first {
		f.reg.Since = now
	}
	f.reg.Expires = now.Add(granted)
	f.reg.Contact = ct.Address.String()
	f.reg.Failures = 0
	f.mu.Unlock()
	if first {
		e.log.Info("registered at the edge", "edge", f.cfg.Edge, "device", f.cfg.Device, "expires", granted, "via", res.Source())
	}
	return granted, nil
}

// grantedExpiry reads the lifetime of our binding from the 200: our
// Contact's expires parameter, else the Expires header, else what we asked.
func grantedExpiry(res *ssip.Response, ours ssip.Uri, asked time.Duration) time.Duration {
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*ssip.ContactHeader)
		if !ok || !strings.EqualFold(c.Address.Host, ours.Host) || c.Address.User != ours.User {
			continue
		}
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n >= 0 {
			return time.Duration(n) * time.Second
		}
	}
	return asked
}
