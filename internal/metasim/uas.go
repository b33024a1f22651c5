package metasim

// Business-initiated calls: metasim plays Meta receiving the business's
// INVITE for a WhatsApp user.

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

func (s *Sim) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	to, from := req.To(), req.From()
	if to == nil || from == nil || req.CallID() == nil || req.CSeq() == nil || req.Via() == nil {
		s.respond(tx, newResponse(s, req, 400, "Bad Request", respOpts{toTag: newUUID()}))
		return
	}
	if tag, _ := to.Params.Get("tag"); tag != "" {
		s.onReInvite(req, tx)
		return
	}
	log := s.log.With("call-id", req.CallID().Value())

	ruri := req.Recipient
	if !strings.EqualFold(ruri.Scheme, "sip") && !strings.EqualFold(ruri.Scheme, "sips") {
		s.respond(tx, newResponse(s, req, 416, "Unsupported URI Scheme", respOpts{toTag: newUUID()}))
		return
	}
	if !validUser(ruri.User) || !strings.EqualFold(ruri.Host, s.cfg.Hostname) {
		log.Info("INVITE for an unknown user", "ruri", ruri.String())
		s.forbiddenOr(req, tx, 404, "Not Found", "")
		return
	}
	if from.Address.User != s.cfg.BusinessNumber {
		log.Info("INVITE from a number that is not SIP-enabled", "from", from.Address.User)
		s.forbiddenOr(req, tx, 403, "Forbidden", "")
		return
	}
	if !strings.EqualFold(from.Address.Host, s.cfg.BusinessHost) {
		text := fmt.Sprintf("SIP server %s from INVITE does not match any SIP server configured for phone number id %s",
			from.Address.Host, s.cfg.PhoneNumberID)
		log.Info("INVITE from the wrong SIP server", "host", from.Address.Host)
		s.forbiddenOr(req, tx, 403, text, fmt.Sprintf(`399 %s "%s"`, s.cfg.Hostname, text))
		return
	}

	switch ar := s.verify(req); ar.verdict {
	case authChallenge:
		log.Debug("challenging INVITE", "why", ar.reason, "stale", ar.stale)
		s.challenge(req, tx, ar.stale)
		return
	case authForbidden:
		log.Info("INVITE authentication failed", "why", ar.reason)
		s.forbiddenOr(req, tx, 403, "Forbidden", "")
		return
	}
	s.accept(req, tx)
}

// forbiddenOr sends an error shaped like the guide's 403 sample (Meta's
// Record-Route pair, To tag, Allow, X-FB-External-Domain, optional Warning).
func (s *Sim) forbiddenOr(req *sip.Request, tx sip.ServerTransaction, code int, reason, warning string) {
	res := newResponse(s, req, code, reason, respOpts{toTag: newUUID(), ourRR: true})
	res.AppendHeader(sip.NewHeader("Allow", allowHeader))
	res.AppendHeader(sip.NewHeader(hdrExternalDomain, s.cfg.Hostname))
	if warning != "" {
		res.AppendHeader(sip.NewHeader("Warning", warning))
	}
	s.respond(tx, res)
}

// challenge sends the 407 shaped like the guide's: same Via/Record-Route/
// Call-ID/From/CSeq, To tagged with the top Via's branch, one
// Proxy-Authenticate per algorithm of the ChallengeMode.
func (s *Sim) challenge(req *sip.Request, tx sip.ServerTransaction, stale bool) {
	branch, _ := req.Via().Params.Get("branch")
	if branch == "" {
		branch = newUUID()
	}
	res := newResponse(s, req, 407, "Proxy Authentication Required", respOpts{toTag: branch, reqRR: true})
	for _, alg := range s.cfg.Challenge.algorithms() {
		nonce, opaque := s.nonces.issue(alg)
		res.AppendHeader(sip.NewHeader("Proxy-Authenticate", challengeValue(s.cfg.Hostname, nonce, opaque, alg, stale)))
	}
	s.respond(tx, res)
}

// okShape builds 180/200 like the guide's "SIP OK (with SDES)" from Meta.
func (s *Sim) okShape(req *sip.Request, c *Call, code int, reason string, body []byte) *sip.Response {
	res := newResponse(s, req, code, reason, respOpts{toTag: c.localTag, ourRR: true, reqRR: true})
	res.AppendHeader(sip.NewHeader("Allow", allowHeader))
	if code == 200 {
		res.AppendHeader(sip.NewHeader("Supported", "timer"))
	}
	res.AppendHeader(sip.NewHeader(hdrExternalDomain, s.cfg.Hostname))
	res.AppendHeader(s.metaContact(c.userPart, true))
	if code == 200 {
		for _, h := range userHeaders(c.user) {
			res.AppendHeader(h)
		}
	}
	if body != nil {
		ct := sip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
	}
	res.SetBody(body)
	return res
}

func (s *Sim) userInfo(user string) UserInfo {
	if u, ok := s.cfg.Users[user]; ok {
		return u
	}
	if isBSUIDish(user) {
		return UserInfo{UserID: user}
	}
	return UserInfo{}
}

var reasonPhrases = map[int]string{
	404: "Not Found", 408: "Request Timeout", 480: "Temporarily Unavailable", 486: "Busy Here",
	487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
	503: "Service Unavailable", 600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
}

func reasonPhrase(code int) string {
	if r, ok := reasonPhrases[code]; ok {
		return r
	}
	return "Rejected"
}

// accept runs an authenticated business INVITE: 100, 180 (To tag),
// AnswerDelay of ringing, then 200 with Meta's SDP answer (or the
// RejectBusinessCalls status). Media starts on the ACK.
func (s *Sim) accept(req *sip.Request, tx sip.ServerTransaction) {
	orig := req.Clone()
	c := newCall(s, false)
	c.callID = req.CallID().Value()
	c.localTag = newUUID()
	// The tag also goes into the transaction's copy of the request so that
	// sipgo's own 487 after a CANCEL carries it. Done before the first
	// response: sipgo reads the request under its FSM lock after that.
	if req.To().Params == nil {
		req.To().Params = sip.NewParams()
	}
	req.To().Params.Add("tag", c.localTag)

	var cancelOnce sync.Once
	canceled := make(chan struct{})
	tx.OnCancel(func(*sip.Request) { cancelOnce.Do(func() { close(canceled) }) })
	s.respond(tx, newResponse(s, req, 100, "Trying", respOpts{noTag: true}))

	user := req.Recipient.User
	c.userPart = user
	c.user = s.userInfo(user)
	c.wacid = newWACID(digits(s.cfg.BusinessNumber), digits(user))
	c.invite = orig
	c.provisional = []int{100}
	f := req.To().AsFrom()
	c.local = &f
	t := req.From().AsTo()
	c.remote = &t
	if ct := req.Contact(); ct != nil {
		c.remoteTarget = *ct.Address.Clone()
	} else {
		c.remoteTarget = *req.From().Address.Clone()
	}
	c.routes = s.routeSet(req.GetHeaders("Record-Route"), false)
	c.dest = req.Source()
	c.altDest = hostPort(c.remoteTarget)
	c.cseq = randCSeq()
	c.invCSeq = req.CSeq().SeqNo

	if len(req.Body()) == 0 {
		s.respond(tx, s.rejectShape(req, c, 488, "Not Acceptable Here"))
		return
	}
	m, answer, err := newMetaAnswer(s.mediaConfig(), req.Body())
	if err != nil {
		s.log.Info("business SDP offer rejected", "call-id", c.callID, "error", err)
		res := s.rejectShape(req, c, 488, "Not Acceptable Here")
		s.respond(tx, res)
		return
	}
	c.media, c.localSDP = m, answer
	if !s.register(c) {
		m.close()
		s.respond(tx, s.rejectShape(req, c, 503, "Service Unavailable"))
		return
	}

	if err := s.respond(tx, s.okShape(req, c, 180, "Ringing", nil)); err == nil {
		c.mu.Lock()
		c.provisional = append(c.provisional, 180)
		c.mu.Unlock()
		c.ringOnce.Do(func() { close(c.ringing) })
	}

	timer := time.NewTimer(s.cfg.AnswerDelay)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-canceled:
		s.endCanceled(c)
		return
	case <-tx.Done():
		c.fail(fmt.Errorf("metasim: INVITE transaction ended: %w", tx.Err()))
		return
	case <-s.ctx.Done():
		c.fail(ErrClosed)
		return
	}

	if code := s.cfg.RejectBusinessCalls; code != 0 {
		res := s.rejectShape(req, c, code, reasonPhrase(code))
		err := s.respond(tx, res)
		if isCanceled(err, canceled) {
			s.endCanceled(c)
			return
		}
		c.mu.Lock()
		c.status, c.resp = code, res
		c.mu.Unlock()
		c.finish("meta", nil)
		s.deliver(c)
		return
	}

	ok := s.okShape(req, c, 200, "OK", answer)
	c.mu.Lock()
	c.status, c.resp = 200, ok
	c.established = true
	c.answeredAt = time.Now()
	c.mu.Unlock()
	if err := s.respond(tx, ok); err != nil {
		if isCanceled(err, canceled) {
			s.endCanceled(c)
		} else {
			c.fail(fmt.Errorf("metasim: sending 200: %w", err))
		}
		return
	}
	c.finalOnce.Do(func() { close(c.final) })
	s.deliver(c)
	s.goTracked(func() {
		t := time.NewTimer(s.cfg.ACKTimeout)
		defer t.Stop()
		select {
		case <-c.ackCh:
		case <-c.done:
		case <-t.C:
			s.log.Warn("no ACK for 200, hanging up", "call-id", c.callID)
			_ = c.bye(s.ctx, "meta", reasonNoAck)
		}
	})
}

func isCanceled(err error, canceled chan struct{}) bool {
	select {
	case <-canceled:
		return true
	default:
	}
	return errors.Is(err, sip.ErrTransactionCanceled)
}

// endCanceled ends a business call the business CANCELled (sipgo sent 487).
func (s *Sim) endCanceled(c *Call) {
	c.mu.Lock()
	c.status = sip.StatusRequestTerminated
	c.established = false
	c.mu.Unlock()
	c.finish("cancel", nil)
	s.deliver(c)
}

func (s *Sim) rejectShape(req *sip.Request, c *Call, code int, reason string) *sip.Response {
	res := newResponse(s, req, code, reason, respOpts{toTag: c.localTag, ourRR: true})
	res.AppendHeader(sip.NewHeader("Allow", allowHeader))
	res.AppendHeader(sip.NewHeader(hdrExternalDomain, s.cfg.Hostname))
	res.SetBody(nil)
	return res
}

// onReInvite answers an in-dialog INVITE: 488 Not Acceptable Here (Meta is
// reported to reject re-INVITEs; the exact code on the wire is not public),
// 481 outside a dialog.
func (s *Sim) onReInvite(req *sip.Request, tx sip.ServerTransaction) {
	c := s.lookup(req)
	if c == nil {
		s.respond(tx, newResponse(s, req, 481, "Call/Transaction Does Not Exist", respOpts{}))
		return
	}
	c.mu.Lock()
	c.reinvites++
	c.mu.Unlock()
	s.log.Info("rejecting re-INVITE", "call-id", c.callID)
	res := newResponse(s, req, 488, "Not Acceptable Here", respOpts{})
	res.AppendHeader(sip.NewHeader("Allow", allowHeader))
	res.AppendHeader(sip.NewHeader(hdrExternalDomain, s.cfg.Hostname))
	s.respond(tx, res)
}
