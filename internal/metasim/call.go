package metasim

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

var (
	// ErrCallEnded is returned by operations on a call that has ended.
	ErrCallEnded = errors.New("metasim: call has ended")
	// ErrNotEstablished is returned by in-dialog operations before a 2xx.
	ErrNotEstablished = errors.New("metasim: call is not established")
	// ErrAnswered is returned by Cancel once the INVITE got its final response.
	ErrAnswered = errors.New("metasim: INVITE already has a final response")
)

// DefaultACKTimeout is Config.ACKTimeout's default: RFC 3261 Timer H, 64*T1.
const DefaultACKTimeout = 32 * time.Second

// MediaStats are a call's SRTP counters on metasim's side.
type MediaStats struct {
	PacketsReceived uint64
	PacketsSent     uint64
	AuthFailures    uint64
	FirstRecvAt     time.Time
	FirstSentAt     time.Time
	LastRecvAt      time.Time
}

// Call is one call through metasim: user-initiated (Sim.Call, metasim is
// the UAC) or business-initiated (Sim.Incoming, metasim is the UAS).
type Call struct {
	sim      *Sim
	outbound bool // user-initiated: metasim sent the INVITE
	callID   string
	wacid    string
	localTag string
	userPart string   // the WhatsApp user as it appears in SIP ("+1…" or a BSUID)
	user     UserInfo // x-wa-meta-* identity headers
	dest     string   // where metasim's in-dialog requests go (host:port)
	altDest  string   // fallback: the business's Contact
	media    *metaMedia
	localSDP []byte
	opt      CallOptions

	ringing    chan struct{} // first 18x
	final      chan struct{} // final response (or failure)
	done       chan struct{} // call over
	ackCh      chan struct{} // business-initiated: ACK arrived
	ringOnce   sync.Once
	finalOnce  sync.Once
	finishOnce sync.Once
	ackOnce    sync.Once
	ackMu      sync.Mutex // serializes ACK writes (sipgo fills the Via on first send)

	mu              sync.Mutex
	local           *sip.FromHeader // metasim's party, with tag
	remote          *sip.ToHeader   // the business's party (tag once known)
	remoteTarget    sip.Uri
	routes          []sip.Uri
	cseq            uint32 // metasim's last CSeq in this dialog
	invCSeq         uint32 // CSeq of the dialog-creating INVITE
	invite          *sip.Request
	resp            *sip.Response
	status          int
	provisional     []int
	challenged      bool
	established     bool
	answeredAt      time.Time
	endedBy         string
	byeReq          *sip.Request
	byeSent         bool
	cancelRequested bool
	cancelSent      bool
	provReceived    bool   // a 1xx reached the INVITE transaction (CANCEL allowed)
	earlyMedia      bool   // a 183 carried the business's SDP (applied before the 200)
	pendingCSeq     uint32 // CSeq of the INVITE in flight
	err             error
	mediaStarted    bool
	lastAck         *sip.Request
	reinvites       int
}

func newCall(s *Sim, outbound bool) *Call {
	return &Call{
		sim: s, outbound: outbound,
		ringing: make(chan struct{}), final: make(chan struct{}),
		done: make(chan struct{}), ackCh: make(chan struct{}),
	}
}

// Status is the final status of the INVITE (0 while there is none).
func (c *Call) Status() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Provisional lists the 1xx codes seen (user-initiated) or sent
// (business-initiated), in order.
func (c *Call) Provisional() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.provisional...)
}

// Challenged reports whether metasim answered a 401/407 from the business.
func (c *Call) Challenged() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.challenged
}

// Response is the final response: the business's (user-initiated) or
// metasim's own (business-initiated; nil after a CANCEL).
func (c *Call) Response() *sip.Response {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resp
}

// Request is the last INVITE metasim sent (user-initiated) or the INVITE it
// accepted (business-initiated).
func (c *Call) Request() *sip.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.invite
}

// WACID is the WhatsApp call id ("wacid.…", as in x-wa-meta-wacid).
func (c *Call) WACID() string { return c.wacid }

// CallID is the SIP Call-ID.
func (c *Call) CallID() string { return c.callID }

// Done is closed when the call ended (a BYE either way, CANCEL, no media,
// a non-2xx final response, a transport failure, Close).
func (c *Call) Done() <-chan struct{} { return c.done }

// EndedBy says who ended the call: "meta" (Hangup, Close, a rejected
// business call), "business" (its BYE or a non-2xx answer), "no-media",
// "cancel", or "error" (transport failure). "" while the call lasts.
func (c *Call) EndedBy() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endedBy
}

// ByeRequest is the business's BYE, if it sent one.
func (c *Call) ByeRequest() *sip.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byeReq
}

// ReInvites is the number of re-INVITEs the business sent in this dialog
// (each answered 488, as Meta reportedly rejects them).
func (c *Call) ReInvites() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reinvites
}

// Recorded is the decoded PCM (mono, 48 kHz) received from the business.
func (c *Call) Recorded() []int16 {
	if c.media == nil {
		return nil
	}
	return c.media.recorded()
}

// RecordedTail is the last d of what Recorded holds: a cheap copy for
// polling a long call.
func (c *Call) RecordedTail(d time.Duration) []int16 {
	if c.media == nil {
		return nil
	}
	return c.media.recordedTail(int(d.Seconds() * metaSampleRate))
}

// MediaStats are metasim's SRTP counters for the call.
func (c *Call) MediaStats() MediaStats {
	if c.media == nil {
		return MediaStats{}
	}
	// Field by field: keeps compiling if metaMediaStats grows.
	st := c.media.stats()
	var out MediaStats
	out.PacketsReceived, out.PacketsSent, out.AuthFailures = st.PacketsReceived, st.PacketsSent, st.AuthFailures
	out.FirstRecvAt, out.FirstSentAt, out.LastRecvAt = st.FirstRecvAt, st.FirstSentAt, st.LastRecvAt
	return out
}

// WaitAnswer waits for the INVITE's final response (see Status). It returns
// an error only for a transport failure, Close, or ctx.
func (c *Call) WaitAnswer(ctx context.Context) error {
	select {
	case <-c.final:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	if c.status == 0 {
		return ErrClosed
	}
	return nil
}

// Hangup sends Meta's BYE: Reason: Q.850;cause=16;text="NORMAL_CLEARING",
// x-wa-meta-call-duration, x-wa-meta-wacid and the user headers. The call
// ends whatever the answer.
func (c *Call) Hangup(ctx context.Context) error {
	return c.bye(ctx, "meta", reasonNormal)
}

// ReInvite sends a re-INVITE with metasim's SDP (for testing the business's
// handling; Meta itself is not known to send them) and returns the final
// status. A 2xx is ACKed.
func (c *Call) ReInvite(ctx context.Context) (int, error) {
	c.mu.Lock()
	if err := c.inDialogErrLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	req := c.newInDialogLocked(sip.INVITE)
	req.AppendHeader(c.sim.metaContact(c.userPart, !c.outbound))
	req.AppendHeader(sip.NewHeader(hdrExternalDomain, c.sim.cfg.Hostname))
	req.AppendHeader(sip.NewHeader("Allow", allowHeader))
	ct := sip.ContentTypeHeader("application/sdp")
	req.AppendHeader(&ct)
	req.SetBody(c.localSDP)
	c.mu.Unlock()

	res, err := c.send(ctx, req)
	if err != nil {
		return 0, err
	}
	if res.IsSuccess() {
		c.mu.Lock()
		ack := c.buildAckLocked(req.CSeq().SeqNo)
		c.lastAck = ack
		c.mu.Unlock()
		c.writeAck(ack)
	}
	return res.StatusCode, nil
}

func (c *Call) isEstablished() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.established && c.endedBy == ""
}

func (c *Call) inviteCSeq() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.invCSeq
}

func (c *Call) inDialogErrLocked() error {
	if c.endedBy != "" || c.byeSent {
		return ErrCallEnded
	}
	if !c.established {
		return ErrNotEstablished
	}
	return nil
}

// newInDialogLocked builds a request inside the dialog: Request-URI the
// remote target, Route the route set, From metasim's party.
func (c *Call) newInDialogLocked(method sip.RequestMethod) *sip.Request {
	c.cseq++
	req := sip.NewRequest(method, *c.remoteTarget.Clone())
	req.AppendHeader(ourVia(newBranch()))
	for _, r := range c.routes {
		req.AppendHeader(&sip.RouteHeader{Address: *r.Clone()})
	}
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.HeaderClone(c.local))
	req.AppendHeader(sip.HeaderClone(c.remote))
	cid := sip.CallIDHeader(c.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: c.cseq, MethodName: method})
	req.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	req.SetTransport("TLS")
	req.SetDestination(c.dest)
	return req
}

// buildAckLocked is the ACK for a 2xx (its own transaction, new branch).
func (c *Call) buildAckLocked(cseq uint32) *sip.Request {
	ack := sip.NewRequest(sip.ACK, *c.remoteTarget.Clone())
	ack.AppendHeader(ourVia(newBranch()))
	for _, r := range c.routes {
		ack.AppendHeader(&sip.RouteHeader{Address: *r.Clone()})
	}
	mf := sip.MaxForwardsHeader(70)
	ack.AppendHeader(&mf)
	ack.AppendHeader(sip.HeaderClone(c.local))
	ack.AppendHeader(sip.HeaderClone(c.remote))
	cid := sip.CallIDHeader(c.callID)
	ack.AppendHeader(&cid)
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.ACK})
	ack.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	ack.SetBody(nil)
	ack.SetTransport("TLS")
	ack.SetDestination(c.dest)
	return ack
}

func (c *Call) writeAck(ack *sip.Request) {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	if err := c.sim.cli.WriteRequest(ack, noBuild); err != nil {
		c.sim.log.Warn("sending ACK failed", "call-id", c.callID, "error", err)
	}
}

// reAck answers a retransmitted 2xx with the ACK sent before.
func (c *Call) reAck(cseq uint32) {
	c.mu.Lock()
	ack := c.lastAck
	c.mu.Unlock()
	if ack != nil && ack.CSeq() != nil && ack.CSeq().SeqNo == cseq {
		c.writeAck(ack)
	}
}

// send sends an in-dialog request over the dialog's connection and, if that
// cannot be reached, to the business's Contact.
func (c *Call) send(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	res, err := c.sim.do(ctx, req)
	if err == nil || ctx.Err() != nil || c.altDest == "" || c.altDest == c.dest {
		return res, err
	}
	c.sim.log.Debug("in-dialog request failed, trying the Contact", "dest", c.dest, "alt", c.altDest, "error", err)
	req.RemoveHeader("Via")
	req.PrependHeader(ourVia(newBranch()))
	req.SetDestination(c.altDest)
	return c.sim.do(ctx, req)
}

// bye sends Meta's BYE and ends the call as endedBy.
func (c *Call) bye(ctx context.Context, endedBy, reason string) error {
	c.mu.Lock()
	if err := c.inDialogErrLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	c.byeSent = true
	req := c.newInDialogLocked(sip.BYE)
	req.AppendHeader(sip.NewHeader("Reason", reason))
	req.AppendHeader(sip.NewHeader(hdrCallDuration, strconv.Itoa(int(time.Since(c.answeredAt).Seconds()))))
	req.AppendHeader(sip.NewHeader(hdrWACID, c.wacid))
	for _, h := range userHeaders(c.user) {
		req.AppendHeader(h)
	}
	req.SetBody(nil)
	c.mu.Unlock()

	c.sim.log.Info("BYE from meta", "call-id", c.callID, "reason", reason)
	res, err := c.send(ctx, req)
	c.finish(endedBy, nil)
	if err != nil {
		return fmt.Errorf("metasim: BYE: %w", err)
	}
	if res.StatusCode >= 300 && res.StatusCode != 481 {
		return fmt.Errorf("metasim: BYE answered %d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// startMedia starts metasim's SRTP once the dialog is confirmed, and the
// no-media watch that hangs up like Meta.
func (c *Call) startMedia() {
	c.mu.Lock()
	if c.mediaStarted || c.media == nil || c.endedBy != "" {
		c.mu.Unlock()
		return
	}
	c.mediaStarted = true
	m := c.media
	// start under c.mu: finish sets endedBy under c.mu before m.close, so
	// start and close never overlap (metaMedia's WaitGroup must not see Add
	// during Wait).
	m.start()
	c.mu.Unlock()
	c.sim.goTracked(func() {
		select {
		case <-m.noMedia():
			ctx, cancel := context.WithTimeout(c.sim.ctx, 5*time.Second)
			defer cancel()
			c.sim.log.Info("no media from business, hanging up", "call-id", c.callID)
			if err := c.bye(ctx, "no-media", reasonNoMedia); err != nil {
				c.sim.log.Debug("no-media BYE", "error", err)
			}
		case <-c.done:
		}
	})
}

// acked records the business's ACK of metasim's 200 and starts media.
func (c *Call) acked() {
	c.ackOnce.Do(func() { close(c.ackCh) })
	c.startMedia()
}

// fail ends the call on a transport error (or Close) before a final response.
func (c *Call) fail(err error) {
	c.mu.Lock()
	if c.err == nil && c.status == 0 {
		c.err = err
	}
	c.mu.Unlock()
	by := "error"
	if errors.Is(err, ErrClosed) {
		by = "meta"
	}
	c.finalOnce.Do(func() { close(c.final) })
	c.finish(by, nil)
}

// finish ends the call once: records who ended it, stops media, forgets the
// dialog and closes Done.
func (c *Call) finish(by string, bye *sip.Request) {
	c.finishOnce.Do(func() {
		c.mu.Lock()
		if c.endedBy == "" {
			c.endedBy = by
		}
		if bye != nil {
			c.byeReq = bye
		}
		m := c.media
		c.mu.Unlock()
		if m != nil {
			m.close()
		}
		c.sim.unregister(c)
		c.finalOnce.Do(func() { close(c.final) })
		close(c.done)
	})
}

// EarlyMedia reports whether the business sent its SDP in a 183 (media set
// up while ringing).
func (c *Call) EarlyMedia() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.earlyMedia
}
