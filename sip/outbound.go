package sip

import (
	"context"
	"errors"
	"fmt"
	"time"

	ssip "github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
)

// OutboundCall is a call we placed (business-initiated) that Meta answered.
type OutboundCall struct {
	Call
	answer []byte
}

// Answer is Meta's SDP answer.
func (c *OutboundCall) Answer() []byte { return c.answer }

// CallError is a final non-2xx answer to our INVITE.
type CallError struct {
	Status  int
	Reason  string
	Warning string // Meta explains 403s in a Warning header
	// ReasonHeader is the response's Reason header (RFC 3326), if any.
	ReasonHeader string
}

func (e *CallError) Error() string {
	s := fmt.Sprintf("call failed: %d %s", e.Status, e.Reason)
	if e.Warning != "" {
		s += " (" + e.Warning + ")"
	}
	if e.Status == 407 || e.Status == 401 {
		s += ": the gateway refused our credentials (check sip.password_file; `waphone setup` fetches Meta's password)"
	}
	return s
}

// Progress reports provisional responses (180 ringing, 183 early media).
type Progress func(status int, reason string)

// maxAuthRounds bounds how often we answer a 407 for one call: a gateway
// that keeps challenging is refusing our password.
const maxAuthRounds = 2

// Dial places a call to a WhatsApp user: INVITE sip:+NUMBER@gateway;transport=tls
// (or sip:BSUID@gateway for a user known only by a business-scoped ID),
// answering Meta's 407 with Proxy-Authorization. It returns when the call
// is answered, fails, or ctx ends (then the INVITE is CANCELled).
func (e *Endpoint) Dial(ctx context.Context, number string, sdp []byte, progress Progress) (*OutboundCall, error) {
	number, err := NormalizeTarget(number)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	gw := ssip.Uri{Scheme: "sip", User: number, Host: e.gwHost, UriParams: ssip.HeaderParams{{K: "transport", V: "tls"}}}
	if e.gwPort != DefaultPort {
		gw.Port = e.gwPort
	}
	d := newDialog(e)
	d.callID = uuid.NewString()
	d.local = ssip.Uri{Scheme: "sip", User: e.cfg.Number, Host: e.cfg.Hostname}
	d.localTag = ssip.GenerateTagN(16)
	d.remote = ssip.Uri{Scheme: "sip", User: number, Host: e.gwHost}
	d.info = CallInfo{CallID: d.callID, Remote: number, DurationSec: -1}
	cseq := d.cseq.Add(1)

	build := func(auth string) *ssip.Request {
		req := ssip.NewRequest(ssip.INVITE, *gw.Clone())
		req.SetTransport("TLS")
		req.AppendHeader(e.newVia())
		mf := ssip.MaxForwardsHeader(70)
		req.AppendHeader(&mf)
		from := &ssip.FromHeader{Address: *d.local.Clone(), Params: ssip.NewParams()}
		from.Params.Add("tag", d.localTag)
		req.AppendHeader(from)
		req.AppendHeader(&ssip.ToHeader{Address: *d.remote.Clone(), Params: ssip.NewParams()})
		cid := ssip.CallIDHeader(d.callID)
		req.AppendHeader(&cid)
		req.AppendHeader(&ssip.CSeqHeader{SeqNo: cseq, MethodName: ssip.INVITE})
		ct := e.contact()
		req.AppendHeader(&ct)
		for _, h := range e.commonHeaders() {
			req.AppendHeader(h)
		}
		if auth != "" {
			req.AppendHeader(ssip.NewHeader("Proxy-Authorization", auth))
		}
		req.AppendHeader(ssip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody(sdp)
		req.SetDestination(e.destination(gw))
		return req
	}

	req := build("")
	e.log.Info("placing call", "to", number, "call_id", d.callID)
	for round := 0; ; round++ {
		tx, err := e.cli.TransactionRequest(ctx, req, noBuild)
		if err != nil {
			return nil, fmt.Errorf("sending INVITE to %s: %w", req.Destination(), err)
		}
		res, err := e.waitFinal(ctx, tx, req, progress)
		tx.Terminate()
		if err != nil {
			return nil, err
		}
		switch {
		case res.StatusCode == 407 && round < maxAuthRounds && e.fleet == nil: // a desk's edge answers Meta's challenges
			ch, err := pickChallenge(res)
			if err != nil {
				return nil, fmt.Errorf("gateway challenge: %w", err)
			}
			password, err := e.cfg.Password()
			if err != nil {
				return nil, fmt.Errorf("reading SIP password: %w", err)
			}
			auth, err := answerChallenge(ch, "INVITE", req.Recipient.String(), e.digits, password)
			if err != nil {
				return nil, err
			}
			e.log.Debug("answering gateway challenge", "algorithm", ch.Algorithm, "realm", ch.Realm)
			cseq = d.cseq.Add(1)
			req = build(auth)
			continue
		case res.IsSuccess():
			return e.confirm(ctx, d, req, res)
		default:
			ce := &CallError{Status: res.StatusCode, Reason: res.Reason}
			if w := res.GetHeader("Warning"); w != nil {
				ce.Warning = w.Value()
			}
			if r := res.GetHeader("Reason"); r != nil {
				ce.ReasonHeader = r.Value()
			}
			return nil, ce
		}
	}
}

// waitFinal collects responses until a final one; on ctx end it CANCELs.
func (e *Endpoint) waitFinal(ctx context.Context, tx ssip.ClientTransaction, req *ssip.Request, progress Progress) (*ssip.Response, error) {
	provisional := false
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				if res.StatusCode > 100 {
					provisional = true
				}
				if progress != nil {
					progress(res.StatusCode, res.Reason)
				}
				continue
			}
			return res, nil
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return nil, fmt.Errorf("INVITE transaction: %w", err)
			}
			return nil, errors.New("INVITE transaction ended without a final response")
		case <-ctx.Done():
			if provisional {
				e.cancel(req)
				// Give the gateway a moment to send its 487 so the transaction ends cleanly.
				t := time.NewTimer(2 * time.Second)
				defer t.Stop()
				for {
					select {
					case res := <-tx.Responses():
						if !res.IsProvisional() {
							return nil, fmt.Errorf("call cancelled (%d %s): %w", res.StatusCode, res.Reason, ctx.Err())
						}
					case <-tx.Done():
						return nil, fmt.Errorf("call cancelled: %w", ctx.Err())
					case <-t.C:
						return nil, fmt.Errorf("call cancelled: %w", ctx.Err())
					}
				}
			}
			return nil, fmt.Errorf("call abandoned: %w", ctx.Err())
		}
	}
}

// cancel sends CANCEL for a pending INVITE (same branch, CSeq number, R-URI).
func (e *Endpoint) cancel(inv *ssip.Request) {
	c := ssip.NewRequest(ssip.CANCEL, *inv.Recipient.Clone())
	c.SetTransport("TLS")
	c.AppendHeader(ssip.HeaderClone(inv.Via()))
	for _, name := range []string{"From", "To", "Call-ID"} {
		if h := inv.GetHeader(name); h != nil {
			c.AppendHeader(ssip.HeaderClone(h))
		}
	}
	mf := ssip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.AppendHeader(&ssip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: ssip.CANCEL})
	c.SetBody(nil)
	c.SetDestination(inv.Destination())
	ctx, done := context.WithTimeout(context.Background(), 4*time.Second)
	defer done()
	if _, err := e.cli.Do(ctx, c, noBuild); err != nil {
		e.log.Warn("CANCEL failed", "err", err)
	}
}

// confirm turns a 2xx into a dialog and sends ACK along its route set.
func (e *Endpoint) confirm(ctx context.Context, d *dialog, inv *ssip.Request, res *ssip.Response) (*OutboundCall, error) {
	d.remTag, _ = res.To().Params.Get("tag")
	d.remoteDN = res.To().DisplayName
	if c := res.Contact(); c != nil {
		d.target = *c.Address.Clone()
	} else {
		d.target = *inv.Recipient.Clone()
	}
	// UAC route set: Record-Route of the 2xx, reversed (RFC 3261 §12.1.2).
	rrs := res.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		if rr, ok := rrs[i].(*ssip.RecordRouteHeader); ok {
			d.routes = append(d.routes, *rr.Address.Clone())
		}
	}
	d.info.merge(res)
	d.mu.Lock()
	d.localSDP = inv.Body()
	d.mu.Unlock()
	// Our in-dialog requests reuse the connection the INVITE went out on:
	// that is where Meta is, whatever the route set's names resolve to.
	d.reuse = inv.Destination()

	ack := d.newRequest(ssip.ACK)
	ack.CSeq().SeqNo = inv.CSeq().SeqNo
	d.cseq.Store(inv.CSeq().SeqNo)
	ack.SetDestination(inv.Destination())
	if err := e.cli.WriteRequest(ack, noBuild); err != nil {
		// Without ACK Meta will drop the call; end it cleanly with a BYE.
		e.addDialog(d)
		_ = d.hangup(ctx, normalClearing)
		return nil, fmt.Errorf("sending ACK: %w", err)
	}
	e.addDialog(d)
	call := &OutboundCall{Call: Call{d: d}, answer: res.Body()}
	e.log.Info("call answered", "call", d.infoCopy())
	return call, nil
}
