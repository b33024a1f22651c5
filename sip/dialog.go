package sip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	ssip "github.com/emiago/sipgo/sip"
)

// End reasons, as phone and the call log show them.
const (
	EndRemoteBye = "remote-bye" // the WhatsApp user (or Meta) hung up
	EndLocalBye  = "local-bye"  // we hung up
	EndCancelled = "cancelled"  // Meta cancelled before we answered
	// EndAnsweredElsewhere: the edge cancelled our ringing because another
	// desk of the fleet answered (CANCEL with Reason: SIP;cause=200). Like a
	// cancel, but not a missed call.
	EndAnsweredElsewhere = "answered-elsewhere"
	EndRejected          = "rejected" // we declined (busy, no answer)
	EndFailed            = "failed"   // signaling failed
	// EndNoACK: we answered, Meta's ACK never came within 64·T1, and we hung
	// up (RFC 3261 §13.3.1.4).
	EndNoACK = "no-ack"
)

// ErrNoACK is wrapped by InboundCall.Answer's error when the call was hung
// up for lack of an ACK to our 200 OK.
var ErrNoACK = errors.New("sip: no ACK for our 200 OK")

// noACKReason is our BYE's Reason when the ACK never came: the 2xx
// transaction timed out (RFC 3326 with a SIP cause).
const noACKReason = `SIP;cause=408;text="no ACK for 200 OK"`

// dialog is one established (or establishing) call leg. It holds the route
// set and tags so that our BYE follows RFC 3261 §12.2.1.1, and decides how
// our in-dialog requests reach Meta.
type dialog struct {
	e        *Endpoint
	callID   string
	local    ssip.Uri // our address-of-record
	localTag string
	remote   ssip.Uri
	remoteDN string
	remTag   string
	target   ssip.Uri   // remote Contact
	routes   []ssip.Uri // route set, in the order we put them in Route headers
	cseq     atomic.Uint32
	// reuse is the peer's connection address when its Via carried ;alias:
	// in-dialog requests go back over that TLS connection (RFC 5923).
	reuse string
	srv   *sipgo.DialogServerSession
	// inviteCSeq is the CSeq number of the INVITE we answer; its ACK has it.
	inviteCSeq uint32
	acked      chan struct{}
	ackOnce    sync.Once
	// retransmits counts our 200 OK retransmissions (tests look).
	retransmits atomic.Int32

	mu       sync.Mutex
	info     CallInfo
	localSDP []byte
	endedBy  string
	reason   string
	done     chan struct{}
	bye      *ssip.Request
}

func newDialog(e *Endpoint) *dialog {
	d := &dialog{e: e, done: make(chan struct{}), acked: make(chan struct{})}
	d.cseq.Store(rand.Uint32N(1 << 20))
	return d
}

func (d *dialog) key() string { return d.callID + "|" + d.localTag }

// end marks the call over once; later calls keep the first reason.
func (d *dialog) end(by, reason string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.endedBy != "" {
		return false
	}
	d.endedBy, d.reason = by, reason
	d.e.removeDialog(d) // before Done: whoever waits on it sees the dialog gone
	close(d.done)
	return true
}

func (d *dialog) ended() (by, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.endedBy, d.reason
}

func (d *dialog) remoteBye(req *ssip.Request) {
	if d.srv != nil {
		// A BYE proves the peer got our 200 even if its ACK is still in
		// flight (sipgo handles each message on its own goroutine): stop
		// retransmitting the 200. ReadAck only compares the CSeq.
		_ = d.srv.ReadAck(d.srv.InviteRequest, nil)
	}
	d.gotAck()
	d.mu.Lock()
	d.info.merge(req)
	d.bye = req
	d.mu.Unlock()
	reason := ""
	if h := req.GetHeader("Reason"); h != nil {
		reason = h.Value()
	}
	if d.end(EndRemoteBye, reason) {
		d.e.log.Info("call ended by remote BYE", "call", d.infoCopy(), "reason", reason)
	}
}

// gotAck records the ACK to our 200 (or proof of it: the peer's BYE).
func (d *dialog) gotAck() { d.ackOnce.Do(func() { close(d.acked) }) }

// awaitAck retransmits our 200 OK until its ACK, per RFC 3261 §13.3.1.4:
// the intervals start at T1 and double up to T2; after 64·T1 without an
// ACK the call is hung up with a BYE saying so.
func (d *dialog) awaitAck(ctx context.Context, tx ssip.ServerTransaction, res *ssip.Response) error {
	t1 := d.e.cfg.T1
	t2 := 8 * t1 // RFC 3261's T2 (4 s) over T1 (500 ms)
	giveUp := time.NewTimer(64 * t1)
	defer giveUp.Stop()
	interval := t1
	resend := time.NewTimer(interval)
	defer resend.Stop()
	for {
		select {
		case <-d.acked:
			return nil
		case <-d.done:
			select {
			case <-d.acked: // a BYE proved the 200 arrived, then ended the call
				return nil
			default:
			}
			by, _ := d.ended()
			return fmt.Errorf("call ended before ACK (%s)", by)
		case <-ctx.Done():
			return ctx.Err()
		case <-resend.C:
			d.retransmits.Add(1)
			if err := tx.Respond(res); err != nil {
				// The transaction may be gone (sipgo's Timer L is 64·T1 at its
				// own T1): write to its connection directly; Meta's ACK may yet
				// come on another one, so a failed write is not the end.
				if tc, ok := tx.(interface{ Connection() ssip.Connection }); ok && tc.Connection() != nil {
					if werr := tc.Connection().WriteMsg(res); werr != nil {
						d.e.log.Debug("sip: retransmitting 200 OK failed", "err", werr)
					}
				}
			}
			interval = min(2*interval, t2)
			resend.Reset(interval)
		case <-giveUp.C:
			d.e.noACK.Add(1)
			d.e.log.Warn("no ACK for our 200 OK; hanging up", "call", d.infoCopy(), "waited", 64*t1)
			why := fmt.Sprintf("no ACK within %s", 64*t1)
			byeCtx, cancel := context.WithTimeout(context.Background(), 64*t1)
			err := d.hangupAs(byeCtx, noACKReason, EndNoACK, why, 8*t1)
			cancel()
			if err != nil {
				return fmt.Errorf("%w within %s; BYE: %v", ErrNoACK, 64*t1, err)
			}
			return fmt.Errorf("%w within %s; hung up", ErrNoACK, 64*t1)
		}
	}
}

func (d *dialog) infoCopy() CallInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.info
}

// newRequest builds an in-dialog request from our side.
func (d *dialog) newRequest(method ssip.RequestMethod) *ssip.Request {
	req := ssip.NewRequest(method, *d.target.Clone())
	req.SetTransport("TLS")
	req.AppendHeader(d.e.newVia())
	mf := ssip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	for _, r := range d.routes {
		req.AppendHeader(&ssip.RouteHeader{Address: *r.Clone()})
	}
	from := &ssip.FromHeader{Address: *d.local.Clone(), Params: ssip.NewParams()}
	from.Params.Add("tag", d.localTag)
	to := &ssip.ToHeader{DisplayName: d.remoteDN, Address: *d.remote.Clone(), Params: ssip.NewParams()}
	to.Params.Add("tag", d.remTag)
	req.AppendHeader(from)
	req.AppendHeader(to)
	cid := ssip.CallIDHeader(d.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&ssip.CSeqHeader{SeqNo: d.cseq.Add(1), MethodName: method})
	ct := d.e.contact()
	req.AppendHeader(&ct)
	req.AppendHeader(ssip.NewHeader("User-Agent", d.e.cfg.UserAgent))
	req.SetBody(nil)
	return req
}

// nextHop is where an in-dialog request goes: the top route (loose
// routing), else the remote target.
func (d *dialog) nextHop() string {
	if len(d.routes) > 0 {
		return d.e.destination(d.routes[0])
	}
	return d.e.destination(d.target)
}

// send runs one in-dialog transaction and waits for its final response.
// It tries the peer's own connection first when it offered one (;alias),
// then the route set, so a BYE still leaves if Meta closed that connection.
// hopTimeout, when set, bounds each try, so a connection that went silent
// does not hold the route set back for a whole transaction timeout.
func (d *dialog) send(ctx context.Context, hopTimeout time.Duration, build func() *ssip.Request) (*ssip.Response, error) {
	hops := []string{d.nextHop()}
	if d.reuse != "" {
		hops = []string{d.reuse, d.nextHop()}
	}
	var lastErr error
	for _, hop := range hops {
		req := build()
		req.SetDestination(hop)
		hctx, cancel := ctx, context.CancelFunc(func() {})
		if hopTimeout > 0 {
			hctx, cancel = context.WithTimeout(ctx, hopTimeout)
		}
		res, err := d.e.cli.Do(hctx, req, noBuild)
		cancel()
		if err == nil {
			return res, nil
		}
		lastErr = fmt.Errorf("%s to %s: %w", req.Method, hop, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// normalClearing is the Reason of an ordinary hang-up.
const normalClearing = `Q.850;cause=16;text="NORMAL_CLEARING"`

// hangup sends BYE with a Q.850 reason, as Meta's own BYEs carry one.
func (d *dialog) hangup(ctx context.Context, reason string) error {
	return d.hangupAs(ctx, reason, EndLocalBye, "", 0)
}

// hangupAs sends BYE with the Reason header reason and ends the call as
// (by, why).
func (d *dialog) hangupAs(ctx context.Context, reason, by, why string, hopTimeout time.Duration) error {
	if by, _ := d.ended(); by != "" {
		return nil
	}
	res, err := d.send(ctx, hopTimeout, func() *ssip.Request {
		r := d.newRequest(ssip.BYE)
		r.AppendHeader(ssip.NewHeader("Reason", reason))
		return r
	})
	d.end(by, why)
	if err != nil {
		return fmt.Errorf("sending BYE: %w", err)
	}
	if res.StatusCode >= 300 && res.StatusCode != 481 {
		return fmt.Errorf("BYE answered %d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// Call is what both directions share once a dialog exists.
type Call struct{ d *dialog }

// Info returns Meta's call info as known so far (BYE adds the duration).
func (c *Call) Info() CallInfo { return c.d.infoCopy() }

// Done is closed when the call has ended, by either side.
func (c *Call) Done() <-chan struct{} { return c.d.done }

// Ended says who ended the call and the Reason header, if any.
func (c *Call) Ended() (by, reason string) { return c.d.ended() }

// Hangup sends BYE (or does nothing if the call already ended).
func (c *Call) Hangup(ctx context.Context) error { return c.d.hangup(ctx, normalClearing) }

// HangupFailed sends BYE saying why the call failed (media broke, no
// media, DTLS never completed): Q.850 cause 41, temporary failure.
func (c *Call) HangupFailed(ctx context.Context, why string) error {
	why = strings.NewReplacer(`"`, "'", "\r", " ", "\n", " ").Replace(why)
	if len(why) > 120 {
		why = why[:120]
	}
	return c.d.hangup(ctx, fmt.Sprintf(`Q.850;cause=41;text="%s"`, why))
}
