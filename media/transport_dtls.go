package media

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/fingerprint"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
	"github.com/pion/stun/v4"
	"github.com/pion/transport/v5/packetio"
)

// dtlsTransport is DTLS-SRTP with ICE (Meta's default key exchange), built
// from pion's parts: a pion/ice agent, a pion/dtls handshake over the
// selected pair and pion/srtp contexts keyed from it. After the handshake
// it is the SDES transport again: one socket, our SRTP contexts, our
// receiver. (pion/webrtc's PeerConnection did this before, and brought
// SCTP, data channels, interceptors and their goroutines into every
// call, and 1 MB into the binary, for a phone that carries one audio
// stream.)
type dtlsTransport struct {
	agent   *ice.Agent
	cert    tls.Certificate
	fp      string // our certificate's fingerprint, "sha-256 AB:…"
	ufrag   string
	pwd     string
	cands   []ice.Candidate // gathered, for our SDP
	ourSSRC uint32
	log     *slog.Logger
	rx      *receiver

	// Set by negotiation before start (under the session's mu).
	peer dtlsPeer

	path      atomic.Pointer[dtlsPath] // set once DTLS completes
	out       srtpOut                  // the send goroutine only
	connected chan struct{}

	failOnce sync.Once
	failed   chan struct{} // closed when ICE fails after connecting
	failErr  error

	mu     sync.Mutex // orders spawn and close
	closed bool
	cancel context.CancelFunc
	dconn  *dtls.Conn
	wg     sync.WaitGroup
}

// dtlsPeer is what the peer's SDP says about ICE and DTLS.
type dtlsPeer struct {
	ufrag, pwd   string
	fingerprints []string // "sha-256 AB:…", as written
	controlling  bool     // our ICE role
	dtlsClient   bool     // our DTLS role: client (a=setup:active)
}

// dtlsPath is the connected path: the selected ICE pair and our send key.
type dtlsPath struct {
	conn *ice.Conn
	out  *srtp.Context
}

const dtlsTimeout = 10 * time.Second // ICE + DTLS must complete this soon after Start

const gatherTimeout = 2 * time.Second // no trickle over SIP: gather before answering

// srtpProfiles are pion/webrtc's defaults, in its order of preference.
var srtpProfiles = []dtls.SRTPProtectionProfile{
	dtls.SRTP_AEAD_AES_256_GCM, dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80,
}

// iceOptions turns Config into the ICE agent's options.
func iceOptions(cfg Config) ([]ice.AgentOption, error) {
	opts := []ice.AgentOption{
		ice.WithNetworkTypes([]ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeUDP6}),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled),
	}
	if cfg.BindIP != nil && !cfg.BindIP.IsUnspecified() {
		bind := cfg.BindIP
		opts = append(opts, ice.WithIPFilter(func(ip net.IP) bool { return ip.Equal(bind) }))
		if bind.IsLoopback() {
			opts = append(opts, ice.WithIncludeLoopback())
		}
	}
	lo, hi, err := cfg.portRange()
	if err != nil {
		return nil, err
	}
	if lo > 0 { // ICE binds its host candidates here: the only sockets of a DTLS call
		opts = append(opts, ice.WithPortRange(uint16(lo), uint16(hi)))
	}
	if cfg.STUN != "" {
		u, err := stun.ParseURI("stun:" + cfg.STUN)
		if err != nil {
			return nil, fmt.Errorf("media: stun server %q: %w", cfg.STUN, err)
		}
		opts = append(opts, ice.WithUrls([]*stun.URI{u}))
	}
	if cfg.AdvertiseIP != nil && (cfg.BindIP == nil || !cfg.AdvertiseIP.Equal(cfg.BindIP)) {
		// 1:1 NAT (a port-forwarded kiosk): advertise the public address.
		opts = append(opts, ice.WithAddressRewriteRules(ice.AddressRewriteRule{
			External: []string{cfg.AdvertiseIP.String()}, AsCandidateType: ice.CandidateTypeHost,
		}))
	}
	return opts, nil
}

// newDTLSTransport makes the ICE agent and our DTLS certificate, and
// gathers our candidates (bounded: SIP has no trickle, they go in the SDP).
func newDTLSTransport(cfg Config, rx *receiver, log *slog.Logger) (*dtlsTransport, error) {
	opts, err := iceOptions(cfg)
	if err != nil {
		return nil, err
	}
	cert, err := selfsign.GenerateSelfSigned() // ECDSA P-256, as browsers use
	if err != nil {
		return nil, fmt.Errorf("media: dtls certificate: %w", err)
	}
	x, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("media: dtls certificate: %w", err)
	}
	fp, err := fingerprint.Fingerprint(x, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("media: dtls fingerprint: %w", err)
	}
	agent, err := ice.NewAgentWithOptions(opts...)
	if err != nil {
		return nil, fmt.Errorf("media: ice agent: %w", err)
	}
	t := &dtlsTransport{agent: agent, cert: cert, fp: "sha-256 " + strings.ToUpper(fp), log: log, rx: rx,
		ourSSRC: mrand.Uint32() | 1, connected: make(chan struct{}), failed: make(chan struct{})}
	if t.ufrag, t.pwd, err = agent.GetLocalUserCredentials(); err != nil {
		_ = agent.Close()
		return nil, fmt.Errorf("media: ice credentials: %w", err)
	}
	if err := t.gather(); err != nil {
		_ = agent.Close()
		return nil, err
	}
	return t, nil
}

// gather collects our candidates, waiting at most gatherTimeout (a STUN
// server that never answers costs only its own srflx candidate).
func (t *dtlsTransport) gather() error {
	done := make(chan struct{})
	var mu sync.Mutex
	var found []ice.Candidate
	finished := false // later candidates (a late srflx) are not in our SDP
	if err := t.agent.OnCandidate(func(c ice.Candidate) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case finished:
		case c == nil:
			finished = true
			close(done)
		default:
			found = append(found, c)
		}
	}); err != nil {
		return fmt.Errorf("media: ice: %w", err)
	}
	if err := t.agent.OnConnectionStateChange(func(st ice.ConnectionState) {
		t.log.Debug("ice state", "state", st.String())
		if st == ice.ConnectionStateFailed {
			t.fail(errors.New("ICE/DTLS failed: the path to the peer is lost (no ICE consent)"))
		}
	}); err != nil {
		return fmt.Errorf("media: ice: %w", err)
	}
	if err := t.agent.GatherCandidates(); err != nil {
		return fmt.Errorf("media: ice gathering: %w", err)
	}
	select {
	case <-done:
	case <-time.After(gatherTimeout):
		t.log.Warn("ICE gathering incomplete; answering with the candidates found so far")
	}
	mu.Lock()
	defer mu.Unlock()
	finished = true
	if len(found) == 0 {
		return errors.New("media: no ICE candidate gathered (no usable address)")
	}
	t.cands = found
	return nil
}

// localCandidates is a copy of what gather found.
func (t *dtlsTransport) localCandidates() []ice.Candidate {
	return append([]ice.Candidate(nil), t.cands...)
}

func (t *dtlsTransport) fail(err error) {
	t.failOnce.Do(func() { t.failErr = err; close(t.failed) })
}

// spawn runs f on a goroutine that close waits for, unless close began.
func (t *dtlsTransport) spawn(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

// addRemoteCandidates gives the agent the peer's candidates (component 1,
// UDP; with no a=candidate at all, its c=/m= address as a host one).
func (t *dtlsTransport) addRemoteCandidates(lines []string, fallback netip.AddrPort) {
	n := 0
	for _, l := range lines {
		c, err := ice.UnmarshalCandidate(l)
		if err != nil {
			t.log.Debug("peer's ICE candidate ignored", "candidate", truncate(l, 80), "err", err)
			continue
		}
		if c.Component() != 1 || c.NetworkType().IsTCP() {
			continue // rtcp-mux or not, RTCP goes over component 1; no ICE-TCP
		}
		if err := t.agent.AddRemoteCandidate(c); err != nil {
			t.log.Debug("peer's ICE candidate refused", "candidate", truncate(l, 80), "err", err)
			continue
		}
		n++
	}
	if n == 0 && fallback.IsValid() && fallback.Port() != 0 {
		c, err := ice.NewCandidateHost(&ice.CandidateHostConfig{
			Network: "udp", Address: fallback.Addr().String(), Port: int(fallback.Port()), Component: 1,
		})
		if err == nil {
			_ = t.agent.AddRemoteCandidate(c)
		}
	}
}

// start connects ICE and DTLS in the background: the first packet goes out
// the moment DTLS completes, and a path that fails or never completes ends
// the session through fail.
func (t *dtlsTransport) start(ctx context.Context, fail func(error)) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return errors.New("media: transport closed")
	}
	ctx, t.cancel = context.WithCancel(ctx)
	t.mu.Unlock()
	t.spawn(func() { t.run(ctx, fail) })
	return nil
}

func (t *dtlsTransport) run(ctx context.Context, fail func(error)) {
	cctx, cancel := context.WithTimeout(ctx, dtlsTimeout)
	go func() { // a failed ICE agent ends the wait at once; ends with cctx
		select {
		case <-t.failed:
			cancel()
		case <-cctx.Done():
		}
	}()
	err := t.connect(cctx)
	timedOut := errors.Is(cctx.Err(), context.DeadlineExceeded)
	cancel()
	if err != nil {
		switch {
		case ctx.Err() != nil: // the session ended first
		case timedOut:
			fail(errors.New("ICE/DTLS did not complete within 10 s"))
		case isClosed(t.failed) && t.failErr != nil:
			fail(t.failErr)
		default:
			fail(fmt.Errorf("ICE/DTLS failed: %w", err))
		}
		return
	}
	t.log.Info("DTLS-SRTP connected", "remote", t.remoteAddr())
	select {
	case <-t.failed:
		fail(t.failErr)
	case <-ctx.Done():
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// connect runs ICE (our role from negotiation) and the DTLS handshake over
// the selected pair, checks the peer's fingerprint and keys SRTP.
func (t *dtlsTransport) connect(ctx context.Context) error {
	p := t.peer
	var conn *ice.Conn
	var err error
	if p.controlling {
		conn, err = t.agent.Dial(ctx, p.ufrag, p.pwd)
	} else {
		conn, err = t.agent.Accept(ctx, p.ufrag, p.pwd)
	}
	if err != nil {
		return fmt.Errorf("ICE: %w", err)
	}
	ep := &dtlsEndpoint{conn: conn, buf: packetio.NewBuffer()}
	ep.buf.SetLimitSize(256 << 10) // a handshake is a few kB
	st := t.rx.newStream()
	if st == nil {
		return errors.New("no remote description")
	}
	if !t.spawn(func() { t.demux(conn, ep, st) }) {
		return errors.New("transport closed")
	}
	shared := []dtls.Option{
		dtls.WithCertificates(t.cert),
		dtls.WithSRTPProtectionProfiles(srtpProfiles...),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
		// Self-signed on both sides: the SDP's fingerprint is the trust.
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyFingerprint(raw, p.fingerprints)
		}),
	}
	var dc *dtls.Conn
	if p.dtlsClient {
		opts := make([]dtls.ClientOption, 0, len(shared))
		for _, o := range shared {
			opts = append(opts, o)
		}
		dc, err = dtls.ClientWithOptions(ep, conn.RemoteAddr(), opts...)
	} else {
		opts := make([]dtls.ServerOption, 0, len(shared)+1)
		for _, o := range shared {
			opts = append(opts, o)
		}
		// Any client certificate: its fingerprint is what we check.
		opts = append(opts, dtls.WithClientAuth(dtls.RequireAnyClientCert))
		dc, err = dtls.ServerWithOptions(ep, conn.RemoteAddr(), opts...)
	}
	if err != nil {
		return fmt.Errorf("DTLS: %w", err)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = dc.Close()
		return errors.New("transport closed")
	}
	t.dconn = dc
	t.mu.Unlock()
	if err := dc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("DTLS handshake: %w", err)
	}
	in, out, err := srtpFromDTLS(dc, p.dtlsClient)
	if err != nil {
		return err
	}
	ep.in.Store(in)
	t.path.Store(&dtlsPath{conn: conn, out: out})
	close(t.connected)
	// DTLS may still speak (a retransmitted flight, close_notify): read it.
	t.spawn(func() {
		var b [1500]byte
		for {
			if _, err := dc.Read(b[:]); err != nil {
				return
			}
		}
	})
	return nil
}

// verifyFingerprint: the peer's certificate is the one its SDP names
// (RFC 8122 §5), by any of the hashes it wrote.
func verifyFingerprint(raw [][]byte, want []string) error {
	if len(raw) == 0 {
		return errors.New("the peer sent no certificate")
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return fmt.Errorf("the peer's certificate: %w", err)
	}
	for _, w := range want {
		algo, digest, ok := strings.Cut(strings.TrimSpace(w), " ")
		if !ok {
			continue
		}
		h, err := fingerprint.HashFromString(strings.ToLower(algo))
		if err != nil {
			continue
		}
		got, err := fingerprint.Fingerprint(cert, h)
		if err == nil && strings.EqualFold(got, strings.TrimSpace(digest)) {
			return nil
		}
	}
	return errors.New("the peer's certificate does not match the fingerprint in its SDP")
}

// srtpFromDTLS makes our two SRTP contexts from the handshake (RFC 5764 §4.2).
func srtpFromDTLS(dc *dtls.Conn, isClient bool) (in, out *srtp.Context, err error) {
	dp, ok := dc.SelectedSRTPProtectionProfile()
	if !ok {
		return nil, nil, errors.New("DTLS: no SRTP protection profile agreed (use_srtp)")
	}
	var profile srtp.ProtectionProfile
	switch dp {
	case dtls.SRTP_AEAD_AES_256_GCM:
		profile = srtp.ProtectionProfileAeadAes256Gcm
	case dtls.SRTP_AEAD_AES_128_GCM:
		profile = srtp.ProtectionProfileAeadAes128Gcm
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		profile = srtp.ProtectionProfileAes128CmHmacSha1_80
	default:
		return nil, nil, fmt.Errorf("DTLS: SRTP profile %#x not supported", uint16(dp))
	}
	state, ok := dc.ConnectionState()
	if !ok {
		return nil, nil, errors.New("DTLS: no connection state")
	}
	sc := srtp.Config{Profile: profile}
	if err := sc.ExtractSessionKeysFromDTLS(&state, isClient); err != nil {
		return nil, nil, fmt.Errorf("DTLS: SRTP keys: %w", err)
	}
	k := sc.Keys
	if out, err = srtp.CreateContext(k.LocalMasterKey, k.LocalMasterSalt, profile); err != nil {
		return nil, nil, fmt.Errorf("media: srtp context: %w", err)
	}
	// Replay protection, as with SDES: a replayed packet can neither replay
	// audio nor reset the jitter buffer.
	in, err = srtp.CreateContext(k.RemoteMasterKey, k.RemoteMasterSalt, profile,
		srtp.SRTPReplayProtection(256), srtp.SRTCPReplayProtection(256))
	if err != nil {
		return nil, nil, fmt.Errorf("media: srtp context: %w", err)
	}
	return in, out, nil
}

// demux reads the selected pair until the agent closes and sorts each
// datagram by its first byte (RFC 7983 §7): DTLS to the handshake, SRTP
// and SRTCP, once keyed, to the receiver; STUN never gets here (the agent
// answers it).
func (t *dtlsTransport) demux(conn *ice.Conn, ep *dtlsEndpoint, st *rtpStream) {
	defer ep.buf.Close()
	in := &srtpIn{}
	from := netip.AddrPort{}
	var buf [8192]byte
	for {
		n, err := conn.Read(buf[:])
		if err != nil {
			return
		}
		if n == 0 {
			continue
		}
		pkt := buf[:n]
		switch b := pkt[0]; {
		case b >= 20 && b <= 63:
			_, _ = ep.buf.Write(pkt, nil) // full only if flooded: dropped, DTLS retransmits
		case b >= 128 && b <= 191:
			if in.ctx == nil {
				if in.ctx = ep.in.Load(); in.ctx == nil {
					continue // before our handshake completed: nothing to check it with
				}
			}
			unprotectPacket(t.rx, in, st, pkt, from)
		default:
			t.rx.malformedPacket(from, n)
		}
	}
}

func (t *dtlsTransport) ssrc() uint32 { return t.ourSSRC }

// writeRTP protects one plain RTP packet and sends it on the selected pair.
func (t *dtlsTransport) writeRTP(pkt []byte) error {
	p := t.path.Load()
	if p == nil {
		return errNoPath
	}
	t.out.ctx = p.out
	b, err := t.out.protect(pkt)
	if err != nil {
		return err
	}
	_, err = p.conn.Write(b)
	return err
}

func (t *dtlsTransport) writeRTCP(r rtcp.Packet) error {
	p := t.path.Load()
	if p == nil {
		return errNoPath
	}
	b, err := sealRTCP(p.out, r)
	if err != nil {
		return err
	}
	_, err = p.conn.Write(b)
	return err
}

// remoteAddr is the selected pair's remote address once connected.
func (t *dtlsTransport) remoteAddr() string {
	if p := t.path.Load(); p != nil {
		if a := p.conn.RemoteAddr(); a != nil {
			return a.String()
		}
	}
	return ""
}

func (t *dtlsTransport) close() {
	t.mu.Lock()
	t.closed = true
	cancel, dc := t.cancel, t.dconn
	t.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if dc != nil {
		_ = dc.Close() // close_notify to the peer
	}
	_ = t.agent.Close() // closes the pair: demux and the DTLS reader end
	t.wg.Wait()
}

// dtlsEndpoint is the net.PacketConn pion/dtls reads and writes: its
// datagrams come from demux and go out on the selected pair.
type dtlsEndpoint struct {
	conn *ice.Conn
	buf  *packetio.Buffer
	in   atomic.Pointer[srtp.Context] // the peer's key, once DTLS completes
}

func (e *dtlsEndpoint) ReadFrom(p []byte) (int, net.Addr, error) {
	n, _, err := e.buf.Read(p, nil)
	return n, e.conn.RemoteAddr(), err
}

func (e *dtlsEndpoint) WriteTo(p []byte, _ net.Addr) (int, error) { return e.conn.Write(p) }
func (e *dtlsEndpoint) Close() error                              { return e.buf.Close() }
func (e *dtlsEndpoint) LocalAddr() net.Addr                       { return e.conn.LocalAddr() }
func (e *dtlsEndpoint) SetDeadline(t time.Time) error             { return e.buf.SetReadDeadline(t) }
func (e *dtlsEndpoint) SetReadDeadline(t time.Time) error         { return e.buf.SetReadDeadline(t) }
func (e *dtlsEndpoint) SetWriteDeadline(time.Time) error          { return nil }
