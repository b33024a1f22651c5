package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// sdesTransport is SDES-SRTP on one UDP socket with rtcp-mux: the keys come
// from the a=crypto lines, RTCP is told from RTP by payload type (RFC 5761
// §4), and RTP is symmetric: we send to where the peer's authenticated
// packets come from (NATs and Meta's relays send from where they listen).
type sdesTransport struct {
	conn *net.UDPConn
	log  *slog.Logger
	rx   *receiver

	// Set by negotiation before start (under the session's mu).
	local, peer sdesKey
	peerAddr    netip.AddrPort // from the peer's SDP; zero: wait for its packets

	dest atomic.Pointer[netip.AddrPort] // where RTP goes now
	out  srtpOut                        // the send goroutine only
	wg   sync.WaitGroup
}

// newSDESTransport binds the RTP socket.
func newSDESTransport(cfg Config, v6 bool, rx *receiver, log *slog.Logger) (*sdesTransport, error) {
	conn, err := listenRTP(cfg, v6)
	if err != nil {
		return nil, err
	}
	return &sdesTransport{conn: conn, rx: rx, log: log}, nil
}

func (t *sdesTransport) localAddr() netip.AddrPort {
	return t.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// listenRTP binds the UDP socket, trying even ports of the range first
// (RFC 3550 convention; some middleboxes still care).
func listenRTP(cfg Config, v6 bool) (*net.UDPConn, error) {
	network, ip := "udp4", net.IPv4zero
	if v6 {
		network, ip = "udp6", net.IPv6unspecified
	}
	if cfg.BindIP != nil {
		ip = cfg.BindIP
	}
	lo, hi, err := cfg.portRange()
	if err != nil {
		return nil, err
	}
	if lo == 0 {
		c, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
		if err != nil {
			return nil, fmt.Errorf("media: listen rtp on %s: %w", ip, err)
		}
		return c, nil
	}
	n := hi - lo + 1
	start := mrand.IntN(n)
	var lastErr error
	for _, wantEven := range []bool{true, false} {
		for i := range n {
			p := lo + (start+i)%n
			if (p%2 == 0) != wantEven {
				continue
			}
			c, err := net.ListenUDP(network, &net.UDPAddr{IP: ip, Port: p})
			if err == nil {
				return c, nil
			}
			lastErr = err
		}
	}
	return nil, fmt.Errorf("media: no free rtp port in %d-%d on %s: %w", lo, hi, ip, lastErr)
}

func (t *sdesTransport) start(context.Context, func(error)) error {
	out, err := t.local.context(false)
	if err != nil {
		return err
	}
	in, err := t.peer.context(true)
	if err != nil {
		return err
	}
	st := t.rx.newStream()
	if st == nil {
		return errors.New("media: no remote description")
	}
	t.out.ctx = out
	if t.peerAddr.IsValid() {
		a := t.peerAddr
		t.dest.Store(&a)
	}
	t.wg.Add(1)
	go t.readLoop(&srtpIn{ctx: in}, st)
	return nil
}

func (t *sdesTransport) ssrc() uint32 { return 0 }

func (t *sdesTransport) writeRTP(pkt []byte) error {
	dst := t.dest.Load()
	if dst == nil {
		return errNoPath
	}
	out, err := t.out.protect(pkt)
	if err != nil {
		return err
	}
	_, err = t.conn.WriteToUDPAddrPort(out, *dst)
	return err
}

func (t *sdesTransport) writeRTCP(p rtcp.Packet) error {
	dst := t.dest.Load()
	if dst == nil {
		return errNoPath
	}
	out, err := sealRTCP(t.out.ctx, p)
	if err != nil {
		return err
	}
	_, err = t.conn.WriteToUDPAddrPort(out, *dst)
	return err
}

func (t *sdesTransport) remoteAddr() string {
	if d := t.dest.Load(); d != nil {
		return d.String()
	}
	return ""
}

// retarget follows a changed address in a repeated answer (183, then 200
// with another c=), unless the peer's packets already told us where it is.
func (t *sdesTransport) retarget(addr netip.AddrPort) {
	if addr.IsValid() && t.rx.recv.Load() == 0 {
		t.dest.Store(&addr)
	}
}

func (t *sdesTransport) close() {
	t.conn.Close() // unblocks the read loop
	t.wg.Wait()
}

// srtpOut protects our packets; the SRTP context is not safe for
// concurrent use, so only the send goroutine has one.
type srtpOut struct {
	ctx *srtp.Context
	hdr rtp.Header
	buf [maxPayload + 32]byte
}

// protect encrypts and authenticates pkt; the result aliases o.buf.
func (o *srtpOut) protect(pkt []byte) ([]byte, error) {
	out, err := o.ctx.EncryptRTP(o.buf[:0], pkt, &o.hdr)
	if err != nil {
		return nil, fmt.Errorf("srtp protect: %w", err)
	}
	return out, nil
}

// sealRTCP marshals and protects one report (the send goroutine only).
func sealRTCP(ctx *srtp.Context, p rtcp.Packet) ([]byte, error) {
	raw, err := p.Marshal()
	if err != nil {
		return nil, fmt.Errorf("rtcp marshal: %w", err)
	}
	out, err := ctx.EncryptRTCP(nil, raw, nil)
	if err != nil {
		return nil, fmt.Errorf("srtcp protect: %w", err)
	}
	return out, nil
}

// srtpIn authenticates the peer's packets (the read goroutine only).
type srtpIn struct {
	ctx     *srtp.Context
	hdr     rtp.Header
	buf     [2048]byte
	rtcpBuf [2048]byte
}

// unprotect authenticates and decrypts one SRTP packet and returns its
// payload without padding; in.hdr holds the header.
func (in *srtpIn) unprotect(pkt []byte) ([]byte, error) {
	dec, err := in.ctx.DecryptRTP(in.buf[:0], pkt, &in.hdr)
	if err != nil {
		return nil, err
	}
	hl, err := in.hdr.Unmarshal(dec)
	if err != nil {
		return nil, err
	}
	p := dec[hl:]
	if in.hdr.Padding {
		if len(p) == 0 || int(p[len(p)-1]) == 0 || int(p[len(p)-1]) > len(p) {
			return nil, errors.New("bad rtp padding")
		}
		p = p[:len(p)-int(p[len(p)-1])]
	}
	return p, nil
}

func (t *sdesTransport) readLoop(in *srtpIn, st *rtpStream) {
	defer t.wg.Done()
	var buf [2048]byte
	var readErrs uint64
	for {
		n, from, err := t.conn.ReadFromUDPAddrPort(buf[:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if readErrs++; logEvery(readErrs) {
				t.log.Warn("rtp read failed", "err", err, "count", readErrs)
			}
			time.Sleep(time.Millisecond) // no hot loop on a persistent error
			continue
		}
		t.handle(in, st, buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	}
}

// handle takes one datagram and latches onto its source if it was ours.
func (t *sdesTransport) handle(in *srtpIn, st *rtpStream, pkt []byte, from netip.AddrPort) {
	if unprotectPacket(t.rx, in, st, pkt, from) {
		t.latch(from)
	}
}

// unprotectPacket takes one datagram for the receiver, SRTCP or SRTP
// (both transports), and says whether it authenticated; anything else is
// dropped and counted.
func unprotectPacket(rx *receiver, in *srtpIn, st *rtpStream, pkt []byte, from netip.AddrPort) bool {
	if len(pkt) < 12 || pkt[0]>>6 != 2 {
		rx.malformedPacket(from, len(pkt))
		return false
	}
	if pt := pkt[1]; pt >= 192 && pt <= 223 { // RTCP on the muxed port (RFC 5761 §4)
		dec, err := in.ctx.DecryptRTCP(in.rtcpBuf[:0], pkt, nil)
		if err != nil {
			rx.unprotectFailed(err, from, true)
			return false
		}
		pkts, _ := rtcp.Unmarshal(dec) // authenticated but unparsable: still a sign of life
		rx.rtcp(pkts, from)
		return true
	}
	payload, err := in.unprotect(pkt)
	if err != nil {
		rx.unprotectFailed(err, from, false)
		return false
	}
	rx.rtp(st, &in.hdr, payload, from)
	return true
}

// latch points our RTP at the source of an authenticated packet.
func (t *sdesTransport) latch(from netip.AddrPort) {
	if cur := t.dest.Load(); cur == nil || *cur != from {
		f := from
		t.dest.Store(&f)
		t.log.Info("remote media address latched", "addr", from.String())
	}
}
