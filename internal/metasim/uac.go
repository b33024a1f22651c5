package metasim

// User-initiated calls: metasim plays Meta calling the business.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// CallOptions shape a user-initiated call.
type CallOptions struct {
	// From is the calling WhatsApp user: "+" and digits, or a BSUID like
	// "US.13491208655302741918". Default "+12195550714".
	From string
	// UserID, ParentUserID and Username fill x-wa-meta-user-id,
	// x-wa-meta-parent-user-id and x-wa-meta-username when set.
	UserID, ParentUserID, Username string
	// CTAPayload and DeeplinkPayload fill x-wa-meta-cta-payload and
	// x-wa-meta-deeplink-payload when set.
	CTAPayload, DeeplinkPayload string
	// Password overrides Config.Password when answering the business's
	// challenge (wrong-password tests).
	Password string
	// NoAuth makes metasim not answer a 401/407: the challenge is the result.
	NoAuth bool
	// ReturnOnRinging makes Call return at the first 18x (or the final
	// response if that comes first); use WaitAnswer or Cancel then.
	ReturnOnRinging bool
	// ExtraHeaders are appended to the INVITE (before Content-Type).
	ExtraHeaders []sip.Header
	// AuthDelay is the pause between the business's 407/401 and the
	// authenticated retry. Meta's retry comes one Internet round trip
	// later (50–300 ms); 0 retries at once.
	AuthDelay time.Duration
	// NoACK makes metasim never ACK the business's 200 (an ACK lost for
	// good): the business must stop resending it after 64·T1 and hang up.
	NoACK bool
}

// Call places a user-initiated call: it dials TLS to target ("host:port",
// the business's certificate is verified for Config.BusinessHost), sends an
// INVITE shaped like the guide's "First INVITE request from Meta" with an
// SDES offer, answers a 407/401 once like the guide's second INVITE, and
// returns at the final response (or the first 18x with ReturnOnRinging).
//
// A 2xx is ACKed through the business's record-route set and media starts.
// A non-2xx final response is not an error: the Call reports it in Status.
// Errors are for transport failures, Close, and ctx (whose end before the
// final response also CANCELs the INVITE).
func (s *Sim) Call(ctx context.Context, target string, opt CallOptions) (*Call, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("metasim: target %q: %w", target, err)
	}
	if opt.From == "" {
		opt.From = DefaultFrom
	}
	if !validUser(opt.From) {
		return nil, fmt.Errorf("metasim: From %q is neither +digits nor a BSUID", opt.From)
	}
	m, offer, err := newMetaOffer(s.mediaConfig())
	if err != nil {
		return nil, err
	}
	c := newCall(s, true)
	c.wacid = newWACID(digits(opt.From), digits(s.cfg.BusinessNumber))
	c.callID = "outgoing:" + c.wacid
	c.localTag = newUUID()
	c.userPart = opt.From
	c.user = UserInfo{UserID: opt.UserID, ParentUserID: opt.ParentUserID, Username: opt.Username}
	c.dest = target
	c.media, c.localSDP = m, offer
	c.opt = opt
	c.local = &sip.FromHeader{
		DisplayName: digits(opt.From),
		Address:     sip.Uri{Scheme: "sip", User: opt.From, Host: s.cfg.Hostname},
		Params:      params("tag", c.localTag),
	}
	c.remote = &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: s.cfg.BusinessNumber, Host: s.cfg.BusinessHost}}
	c.cseq = randCSeq()
	if !s.register(c) {
		m.close()
		return nil, ErrClosed
	}
	req := c.buildInvite("", "")
	if !s.goTracked(func() { c.runInvite(req) }) {
		c.finish("meta", nil)
		return nil, ErrClosed
	}

	var ringing <-chan struct{}
	if opt.ReturnOnRinging {
		ringing = c.ringing
	}
	select {
	case <-c.final:
	case <-ringing:
	case <-ctx.Done():
		c.requestCancel()
		return nil, ctx.Err()
	}
	c.mu.Lock()
	err = c.err
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// buildInvite renders the guide's INVITE from Meta; authName/authValue add
// the (Proxy-)Authorization of the retry.
func (c *Call) buildInvite(authName, authValue string) *sip.Request {
	s := c.sim
	ruri := sip.Uri{Scheme: "sip", User: s.cfg.BusinessNumber, Host: s.cfg.BusinessHost, UriParams: params("transport", "tls")}
	req := sip.NewRequest(sip.INVITE, ruri)
	branch := newBranch()
	req.AppendHeader(ourVia(branch))
	for _, h := range s.metaRecordRoute(false) {
		req.AppendHeader(h)
	}
	for _, h := range innerVias(branch) {
		req.AppendHeader(h)
	}
	mf := sip.MaxForwardsHeader(69)
	req.AppendHeader(&mf)
	c.mu.Lock()
	req.AppendHeader(sip.HeaderClone(c.local))
	req.AppendHeader(sip.HeaderClone(c.remote))
	cseq := c.cseq
	c.mu.Unlock()
	req.AppendHeader(s.metaContact(c.userPart, false))
	cid := sip.CallIDHeader(c.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.INVITE})
	req.AppendHeader(sip.NewHeader(hdrExternalDomain, s.cfg.Hostname))
	req.AppendHeader(sip.NewHeader("Allow", allowHeader))
	req.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	if authName != "" {
		req.AppendHeader(sip.NewHeader(authName, authValue))
	}
	req.AppendHeader(sip.NewHeader(hdrWACID, c.wacid))
	for _, h := range userHeaders(c.user) {
		req.AppendHeader(h)
	}
	if c.opt.CTAPayload != "" {
		req.AppendHeader(sip.NewHeader(hdrCTAPayload, c.opt.CTAPayload))
	}
	if c.opt.DeeplinkPayload != "" {
		req.AppendHeader(sip.NewHeader(hdrDeeplink, c.opt.DeeplinkPayload))
	}
	for _, h := range c.opt.ExtraHeaders {
		if h != nil {
			req.AppendHeader(sip.HeaderClone(h))
		}
	}
	ct := sip.ContentTypeHeader("application/sdp")
	req.AppendHeader(&ct)
	req.SetBody(c.localSDP)
	req.SetTransport("TLS")
	req.SetDestination(c.dest)
	return req
}

// runInvite drives the INVITE transaction(s) to a final response.
func (c *Call) runInvite(req *sip.Request) {
	s := c.sim
	answered := 0
	for {
		c.mu.Lock()
		c.pendingCSeq = req.CSeq().SeqNo
		c.provReceived = false // a CANCEL must wait for a 1xx to this INVITE
		c.mu.Unlock()
		tx, err := s.cli.TransactionRequest(s.ctx, req, noBuild)
		if err != nil {
			if s.ctx.Err() != nil {
				err = ErrClosed
			}
			c.fail(fmt.Errorf("metasim: INVITE: %w", err))
			return
		}
		c.mu.Lock()
		c.invite = req
		c.mu.Unlock()
		res, err := c.awaitFinal(tx)
		tx.Terminate()
		if err != nil {
			c.fail(err)
			return
		}
		if (res.StatusCode == sip.StatusProxyAuthRequired || res.StatusCode == sip.StatusUnauthorized) &&
			!c.opt.NoAuth && (answered == 0 || (answered == 1 && isStale(res))) {
			pw := c.opt.Password
			if pw == "" {
				pw = s.cfg.Password
			}
			name, val, err := credentials(res, string(sip.INVITE), req.Recipient, digits(s.cfg.BusinessNumber), pw)
			if err == nil && c.opt.AuthDelay > 0 {
				select {
				case <-time.After(c.opt.AuthDelay):
				case <-s.ctx.Done():
					c.fail(ErrClosed)
					return
				}
			}
			if err == nil {
				answered++
				c.mu.Lock()
				c.challenged = true
				c.cseq++
				c.mu.Unlock()
				req = c.buildInvite(name, val)
				continue
			}
			s.log.Warn("cannot answer the business's challenge", "error", err)
		}
		c.finalize(res)
		return
	}
}

func isStale(res *sip.Response) bool {
	for _, name := range []string{"Proxy-Authenticate", "WWW-Authenticate"} {
		for _, h := range res.GetHeaders(name) {
			if strings.Contains(strings.ToLower(strings.ReplaceAll(h.Value(), " ", "")), "stale=true") {
				return true
			}
		}
	}
	return false
}

func (c *Call) awaitFinal(tx sip.ClientTransaction) (*sip.Response, error) {
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				c.onProvisional(res)
				continue
			}
			return res, nil
		case <-tx.Done():
			err := tx.Err()
			if err == nil {
				err = sip.ErrTransactionTerminated
			}
			return nil, fmt.Errorf("metasim: INVITE: %w", err)
		case <-c.sim.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// onProvisional runs in the INVITE's goroutine for each 1xx the
// transaction passes up (after c.invite is set, so a CANCEL can be built).
func (c *Call) onProvisional(res *sip.Response) {
	if res.StatusCode == 183 && len(res.Body()) > 0 {
		if err := c.media.setEarly(res.Body()); err != nil {
			c.sim.log.Info("183 SDP unusable; waiting for the 200", "call-id", c.callID, "error", err)
		} else {
			c.mu.Lock()
			c.earlyMedia = true
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	c.provReceived = true
	send := c.cancelRequested && !c.cancelSent
	if send {
		c.cancelSent = true
	}
	c.mu.Unlock()
	if send {
		c.sim.goTracked(c.sendCancel)
	}
}

// onWireProvisional records a 1xx to the INVITE in flight in wire order (it
// runs in the connection's read loop; sipgo hands responses to transactions
// from separate goroutines, which can reorder a 100 and a 180).
func (c *Call) onWireProvisional(res *sip.Response) {
	c.mu.Lock()
	if res.CSeq().SeqNo != c.pendingCSeq || c.status != 0 {
		c.mu.Unlock()
		return
	}
	c.provisional = append(c.provisional, res.StatusCode)
	c.mu.Unlock()
	if res.StatusCode >= 180 {
		c.ringOnce.Do(func() { close(c.ringing) })
	}
}

// requestCancel asks for the pending INVITE to be cancelled: now if a
// provisional response came, else at the first one (RFC 3261 9.1). False if
// the INVITE already has its final response.
func (c *Call) requestCancel() bool {
	c.mu.Lock()
	if c.status != 0 || c.err != nil || c.endedBy != "" {
		c.mu.Unlock()
		return false
	}
	c.cancelRequested = true
	send := c.provReceived && !c.cancelSent
	if send {
		c.cancelSent = true
	}
	c.mu.Unlock()
	if send {
		c.sim.goTracked(c.sendCancel)
	}
	return true
}

// sendCancel CANCELs the current INVITE (same Request-URI, top Via, From,
// To, Call-ID and CSeq number).
func (c *Call) sendCancel() {
	c.mu.Lock()
	inv := c.invite
	c.mu.Unlock()
	if inv == nil || inv.Via() == nil {
		return
	}
	req := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	req.AppendHeader(inv.Via().Clone())
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(inv.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	req.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	req.SetBody(nil)
	req.SetTransport("TLS")
	req.SetDestination(c.dest)
	ctx, cancel := context.WithTimeout(c.sim.ctx, 10*time.Second)
	defer cancel()
	res, err := c.sim.do(ctx, req)
	if err != nil {
		c.sim.log.Warn("CANCEL failed", "call-id", c.callID, "error", err)
		return
	}
	c.sim.log.Debug("CANCEL answered", "call-id", c.callID, "status", res.StatusCode)
}

// Cancel CANCELs a user-initiated call that has no final response yet
// (typically one returned by Call with ReturnOnRinging) and waits until the
// call ended: Status is then normally 487 and EndedBy "cancel". If the
// business answered 2xx anyway, metasim ACKs and hangs up (EndedBy "cancel").
func (c *Call) Cancel(ctx context.Context) error {
	if !c.outbound {
		return errors.New("metasim: Cancel is for user-initiated calls")
	}
	if !c.requestCancel() {
		return ErrAnswered
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// finalize handles the INVITE's final response.
func (c *Call) finalize(res *sip.Response) {
	c.mu.Lock()
	c.status, c.resp = res.StatusCode, res
	if !res.IsSuccess() {
		by := "business"
		if res.StatusCode == sip.StatusRequestTerminated && c.cancelRequested {
			by = "cancel"
		}
		c.mu.Unlock()
		c.finish(by, nil)
		return
	}
	if to := res.To(); to != nil {
		c.remote = sip.HeaderClone(to).(*sip.ToHeader)
	}
	if ct := res.Contact(); ct != nil {
		c.remoteTarget = *ct.Address.Clone()
	} else {
		c.remoteTarget = *c.invite.Recipient.Clone()
	}
	c.altDest = hostPort(c.remoteTarget)
	c.routes = c.sim.routeSet(res.GetHeaders("Record-Route"), true)
	c.established = true
	c.answeredAt = time.Now()
	c.invCSeq = res.CSeq().SeqNo
	cancelled := c.cancelRequested
	ack := c.buildAckLocked(c.invCSeq)
	if !c.opt.NoACK {
		c.lastAck = ack // reAck answers retransmissions with it
	}
	c.mu.Unlock()

	if !c.opt.NoACK {
		c.writeAck(ack)
	}
	ctx, cancel := context.WithTimeout(c.sim.ctx, 5*time.Second)
	defer cancel()
	if err := c.media.setAnswer(res.Body()); err != nil {
		c.sim.log.Warn("business's SDP answer unusable, hanging up", "call-id", c.callID, "error", err)
		c.finalOnce.Do(func() { close(c.final) })
		_ = c.bye(ctx, "meta", reasonBadSDP)
		return
	}
	c.startMedia()
	c.finalOnce.Do(func() { close(c.final) })
	if cancelled {
		_ = c.bye(ctx, "cancel", reasonNormal)
	}
}
