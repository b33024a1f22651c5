package sip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ssip "github.com/emiago/sipgo/sip"
)

// InboundCall is a call Meta offers us (user-initiated). The handler rings,
// then answers or rejects it; CANCEL from Meta ends it early.
type InboundCall struct {
	Call
	req      *ssip.Request
	tx       ssip.ServerTransaction
	answered chan struct{} // closed once a final response went out (or the call ended)
	once     sync.Once
	finalMu  sync.Mutex
	final    bool
	// cancelEnd names the end of a call cancelled before our answer.
	cancelEnd func() (by, why string)
}

// answeredElsewhere reads a CANCEL's Reason header: cause 200 of the SIP
// protocol (RFC 3326) is what a forking proxy sends the desks that lost
// the race, "Call completed elsewhere".
func answeredElsewhere(reason string) bool {
	for _, r := range strings.Split(reason, ",") {
		parts := strings.Split(r, ";")
		if !strings.EqualFold(strings.TrimSpace(parts[0]), "SIP") {
			continue
		}
		for _, p := range parts[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(strings.TrimSpace(k), "cause") && strings.TrimSpace(v) == "200" {
				return true
			}
		}
	}
	return false
}

// Offer is Meta's SDP offer, untouched.
func (c *InboundCall) Offer() []byte { return c.req.Body() }

// Ringing sends 180.
func (c *InboundCall) Ringing() error {
	if err := c.d.srv.Respond(180, "Ringing", nil, c.d.e.commonHeaders()...); err != nil {
		return fmt.Errorf("sending 180: %w", err)
	}
	return nil
}

func (c *InboundCall) claimFinal() error {
	c.finalMu.Lock()
	defer c.finalMu.Unlock()
	if c.final {
		return errors.New("call already answered or rejected")
	}
	if by, _ := c.d.ended(); by != "" {
		return fmt.Errorf("call already ended (%s)", by)
	}
	c.final = true
	return nil
}

// Progress sends 183 Session Progress with our SDP answer, so that ICE and
// DTLS complete while the phone rings and no first word is clipped. The
// 200 OK later carries the same SDP.
func (c *InboundCall) Progress(sdp []byte) error {
	res := ssip.NewResponseFromRequest(c.d.srv.InviteRequest, 183, "Session Progress", sdp)
	res.AppendHeader(ssip.NewHeader("Content-Type", "application/sdp"))
	for _, h := range c.d.e.commonHeaders() {
		res.AppendHeader(h)
	}
	ct := c.d.e.contact()
	res.AppendHeader(&ct)
	if err := c.d.srv.WriteResponse(res); err != nil {
		return fmt.Errorf("sending 183: %w", err)
	}
	return nil
}

// Answer sends 200 OK with our SDP answer and waits for Meta's ACK,
// retransmitting the 200 as RFC 3261 §13.3.1.4 says (T1, 2·T1, … capped at
// T2). Without an ACK after 64·T1 it hangs up with a BYE (Reason: SIP
// 408) and returns an error wrapping ErrNoACK; the call then ended with
// EndNoACK.
//
// sipgo's DialogServerSession.WriteResponse (v1.7.2) is not used for the
// 200: its loop rebuilds the 64·T1 timer on every pass, so it never
// fires, and it retransmits every max(2·T1, T2) = 4 s instead of doubling
// from T1 (docs/meta-wire.md). The 200 goes to the INVITE server
// transaction directly, which in its Accepted state (RFC 6026) passes
// our retransmissions to the transport.
func (c *InboundCall) Answer(ctx context.Context, sdp []byte) error {
	if err := c.claimFinal(); err != nil {
		return err
	}
	defer c.once.Do(func() { close(c.answered) })
	c.d.mu.Lock()
	c.d.localSDP = sdp
	c.d.mu.Unlock()
	res := ssip.NewSDPResponseFromRequest(c.d.srv.InviteRequest, sdp)
	for _, h := range c.d.e.commonHeaders() {
		res.AppendHeader(h)
	}
	ct := c.d.e.contact()
	res.AppendHeader(&ct)
	select {
	case <-c.tx.Done():
		// CANCEL (or the connection's end) won the race against our answer.
		err := c.tx.Err()
		if errors.Is(err, ssip.ErrTransactionCanceled) {
			c.d.end(c.cancelEnd())
		} else {
			c.d.end(EndFailed, fmt.Sprintf("INVITE transaction ended before the answer: %v", err))
		}
		return fmt.Errorf("call ended before the answer: %w", err)
	default:
	}
	if err := c.tx.Respond(res); err != nil {
		c.d.end(EndFailed, err.Error())
		return fmt.Errorf("sending 200 OK: %w", err)
	}
	return c.d.awaitAck(ctx, c.tx, res)
}

// Reject declines the call with a final status (486 busy, 480 no answer, 603 declined).
func (c *InboundCall) Reject(code int, reason string) error {
	if err := c.claimFinal(); err != nil {
		return err
	}
	defer c.once.Do(func() { close(c.answered) })
	err := c.d.srv.Respond(code, reason, nil, c.d.e.commonHeaders()...)
	c.d.end(EndRejected, fmt.Sprintf("%d %s", code, reason))
	if err != nil {
		return fmt.Errorf("sending %d: %w", code, err)
	}
	return nil
}

func (e *Endpoint) commonHeaders() []ssip.Header {
	return []ssip.Header{
		ssip.NewHeader("Allow", allowMethods),
		ssip.NewHeader("User-Agent", e.cfg.UserAgent),
	}
}

func (e *Endpoint) onInvite(req *ssip.Request, tx ssip.ServerTransaction) {
	if why := requireHeaders(req); why != "" {
		e.respond(req, tx, 400, why)
		return
	}
	if tag, _ := req.To().Params.Get("tag"); tag != "" {
		e.onReInvite(req, tx)
		return
	}
	src := req.Source()
	ip := sourceIP(src)
	if e.fleet == nil { // a fleet desk's INVITEs come from the edge, which checked Meta's digest (edgeOnly)
		if e.throttle.blocked(ip) {
			e.noteThrottled(src)
			e.respond(req, tx, 403, "Forbidden")
			return
		}
		// Authenticate before looking at the Request-URI: every number gets the
		// same 407, so a scan cannot tell which one rings here.
		if !e.authorize(req, tx, ip) {
			return
		}
	}
	if u := strings.TrimPrefix(req.Recipient.User, "+"); u != e.digits {
		// Meta may append request_uri_user_params (";tgrp=...") to the user part.
		if i := strings.IndexByte(u, ';'); i < 0 || u[:i] != e.digits {
			e.respond(req, tx, 404, "Not Found")
			return
		}
	}
	if req.Contact() == nil {
		e.respond(req, tx, 400, "Missing Contact")
		return
	}
	if ct := req.ContentType(); ct == nil || !strings.EqualFold(strings.TrimSpace(strings.Split(ct.Value(), ";")[0]), "application/sdp") || len(req.Body()) == 0 {
		// We never do late offer: Meta always sends one.
		e.respond(req, tx, 488, "Not Acceptable Here", ssip.NewHeader("Warning", `399 waphone "an SDP offer is required"`))
		return
	}
	// The CANCEL's Reason (RFC 3326) tells a call answered at another desk
	// from one the caller gave up; sipgo answers the CANCEL itself.
	var cancelReason atomic.Value
	tx.OnCancel(func(r *ssip.Request) {
		if h := r.GetHeader("Reason"); h != nil {
			cancelReason.Store(h.Value())
		}
	})
	cancelEnd := func() (by, why string) {
		why, _ = cancelReason.Load().(string)
		if answeredElsewhere(why) {
			return EndAnsweredElsewhere, why
		}
		if why == "" {
			why = "CANCEL"
		}
		return EndCancelled, why
	}
	e.respond(req, tx, 100, "Trying")

	srv, err := e.dua.ReadInvite(req, tx)
	if err != nil {
		e.respond(req, tx, 400, "Bad Request")
		return
	}
	d := newDialog(e)
	d.srv = srv
	d.callID = req.CallID().Value()
	d.local = *req.To().Address.Clone()
	d.localTag, _ = srv.InviteRequest.To().Params.Get("tag")
	d.remote = *req.From().Address.Clone()
	d.remoteDN = req.From().DisplayName
	d.remTag, _ = req.From().Params.Get("tag")
	d.target = *req.Contact().Address.Clone()
	// UAS route set: Record-Route in order (RFC 3261 §12.1.1).
	for _, h := range req.GetHeaders("Record-Route") {
		if rr, ok := h.(*ssip.RecordRouteHeader); ok {
			d.routes = append(d.routes, *rr.Address.Clone())
		}
	}
	if v := req.Via(); (v != nil && v.Params.Has("alias")) || e.fleet != nil {
		d.reuse = src
	}
	d.info = callInfoFromInvite(req)
	if cs := req.CSeq(); cs != nil {
		d.inviteCSeq = cs.SeqNo
	}
	e.addDialog(d)
	call := &InboundCall{Call: Call{d: d}, req: req, tx: tx, answered: make(chan struct{}), cancelEnd: cancelEnd}
	e.log.Info("incoming call", "call", d.info)

	e.h.IncomingCall(call)

	// Hold the INVITE transaction until a final response went out or Meta
	// cancelled: sipgo terminates the transaction when this handler returns.
	select {
	case <-call.answered:
	case <-srv.Context().Done():
		if call.finalClaimed() {
			// Our final response is on its way (the 200 may be waiting for
			// its ACK past the transaction's end): that path ends the call.
			<-call.answered
			return
		}
		if by, why := cancelEnd(); d.end(by, why) {
			e.log.Info("call cancelled before answer", "call", d.info, "ended", by, "reason", why)
		}
	}
}

func (c *InboundCall) finalClaimed() bool {
	c.finalMu.Lock()
	defer c.finalMu.Unlock()
	return c.final
}

// authorize runs our digest challenge. It answers 407/403 itself and
// reports whether the INVITE may proceed.
func (e *Endpoint) authorize(req *ssip.Request, tx ssip.ServerTransaction, ip netip.Addr) bool {
	addr := ip.String()
	challenge := func(stale bool) {
		nonce, opaque := e.nonces.issue(addr)
		e.respond(req, tx, 407, "Proxy Authentication Required", challengeHeader(e.cfg.Hostname, nonce, opaque, stale))
	}
	h := req.GetHeader("Proxy-Authorization")
	if h == nil {
		challenge(false)
		return false
	}
	if !e.throttle.attempt(ip) {
		e.noteThrottled(req.Source())
		e.respond(req, tx, 403, "Forbidden")
		return false
	}
	password, err := e.cfg.Password()
	if err != nil {
		e.throttle.undo(ip)
		e.log.Error("cannot read the SIP password; refusing the call", "err", err)
		e.respond(req, tx, 500, "Server Internal Error")
		return false
	}
	creds, verr := verifyDigest(h.Value(), string(req.Method), e.cfg.Hostname, e.digits, password)
	if creds == nil {
		e.log.Warn("INVITE with malformed credentials", "remote", req.Source(), "err", verr)
		e.respond(req, tx, 400, "Bad Proxy-Authorization")
		return false
	}
	// Check the nonce before the response so that a replay costs nothing
	// and tells nothing.
	switch e.nonces.check(creds.Nonce, creds.Opaque, addr) {
	case authChallenge:
		e.throttle.undo(ip)
		challenge(false)
		return false
	case authStale:
		e.throttle.undo(ip)
		challenge(true)
		return false
	case authForbidden:
		verr = errors.New("opaque does not match the nonce")
	}
	if verr != nil {
		e.authFailures.Add(1)
		e.log.Warn("INVITE failed digest authentication", "remote", req.Source(), "username", creds.Username, "err", verr)
		e.respond(req, tx, 403, "Forbidden")
		return false
	}
	if !e.nonces.consume(creds.Nonce) {
		// Honoured a moment ago by a concurrent copy of this request.
		e.throttle.undo(ip)
		challenge(false)
		return false
	}
	e.throttle.succeed(ip)
	e.authenticated(req.Source())
	return true
}

// noteThrottled counts a request refused by the failure throttle and logs
// at most one line per 10 s, so that an attack stays visible without
// flooding the journal.
func (e *Endpoint) noteThrottled(src string) {
	n := e.throttled.Add(1)
	now := time.Now().UnixNano()
	last := e.throttleLog.Load()
	if now-last < int64(10*time.Second) || !e.throttleLog.CompareAndSwap(last, now) {
		return
	}
	e.log.Warn("refusing INVITEs from a source with too many failed digest answers", "remote", src, "throttled_total", n)
}

// onReInvite answers a re-INVITE inside a dialog with our current SDP: we
// never change media mid-call, and Meta's refreshes must not break the call.
func (e *Endpoint) onReInvite(req *ssip.Request, tx ssip.ServerTransaction) {
	d := e.findDialog(req)
	if d == nil {
		e.respond(req, tx, 481, "Call/Transaction Does Not Exist")
		return
	}
	d.mu.Lock()
	sdp := d.localSDP
	d.mu.Unlock()
	if sdp == nil {
		e.respond(req, tx, 491, "Request Pending")
		return
	}
	res := ssip.NewSDPResponseFromRequest(req, sdp)
	for _, h := range e.commonHeaders() {
		res.AppendHeader(h)
	}
	ct := e.contact()
	res.AppendHeader(&ct)
	if err := tx.Respond(res); err != nil {
		e.log.Debug("sip: re-INVITE answer failed", "err", err)
	}
}
