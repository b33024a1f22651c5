package media

import (
	"context"
	"errors"

	"github.com/pion/rtcp"
)

// transport carries one call's RTP and RTCP to and from the peer, protected.
// The send, play and RTCP code sees only this interface; negotiation picks
// one of its two implementations and never changes it:
//   - sdesTransport: one UDP socket, SRTP keyed from a=crypto (RFC 4568),
//     rtcp-mux and symmetric RTP;
//   - dtlsTransport: a pion/ice agent, pion/dtls over its selected pair
//     and SRTP contexts keyed from the handshake.
//
// Inbound packets flow the other way: each transport is given the session's
// receiver when it is made and hands it every authenticated packet from its
// own goroutines.
type transport interface {
	// start makes the transport ready to send and starts delivering the
	// peer's packets (a DTLS transport may deliver earlier, once ICE and
	// DTLS complete). fail ends the session; the transport calls it at
	// most once, never from inside start, when it dies on its own (ICE or
	// DTLS failed). ctx ends with the session.
	start(ctx context.Context, fail func(error)) error
	// ssrc is the SSRC our packets must carry, 0 to let the sender pick.
	ssrc() uint32
	// writeRTP protects and sends one plain RTP packet. Only the send
	// goroutine calls it, and pkt may be changed. errNoPath means there is
	// nowhere to send it yet (no peer address, ICE/DTLS not connected).
	writeRTP(pkt []byte) error
	// writeRTCP sends one report, from the send goroutine as well.
	writeRTCP(p rtcp.Packet) error
	// remoteAddr is where RTP goes now, "" if the transport does not say.
	remoteAddr() string
	// close releases the socket or peer connection and waits for the
	// transport's goroutines. The session calls it once, when it ends.
	close()
}

// errNoPath: a packet had nowhere to go yet. Not a failure; the packet is
// neither sent nor counted.
var errNoPath = errors.New("media: no path to the peer yet")
