package acmecert

// ACME end to end on loopback: pebble issues the SIP certificate, waphone
// (sip.Endpoint + phone.Phone) serves it exactly as the daemon does
// (sip.ServerTLSConfig(m.Certificate)), metasim (playing Meta, trusting
// only pebble's root) calls in, and a renewal is swapped in while the
// call is up.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/media"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

const (
	callBusiness = "+12145551869"
	callUser     = "+12195550714"
	callPassword = "meta-generated-password"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// callRig is waphone's SIP/TLS listener and phone, and metasim, on loopback.
type callRig struct {
	sim   *metasim.Sim
	phone *phone.Phone
	addr  string // waphone's SIP/TLS listener
}

// startWaphone serves waphone's SIP listener with getCert the way the
// daemon's serve does, and starts metasim verifying hostname against
// metaRoots when it dials in.
func startWaphone(t *testing.T, hostname string, metaRoots *x509.CertPool, getCert func() (*tls.Certificate, error)) *callRig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sim, err := metasim.Start(ctx, metasim.Config{
		BusinessNumber: callBusiness, BusinessHost: hostname, Password: callPassword,
		BusinessRoots: metaRoots, ToneHz: 1000, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ph := phone.New(phone.Config{
		Answer:   "auto",
		Media:    media.Config{BindIP: net.IPv4(127, 0, 0, 1)}, // ports from the kernel
		Capture:  func() (phone.AudioSource, error) { return audio.NewTone(440, 0.3), nil },
		Playback: func() (phone.AudioSink, error) { return audio.Null{}, nil },
		Ringer:   func() (phone.AudioSink, error) { return audio.Null{}, nil },
		Logger:   quiet(),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := sip.New(sip.Config{
		Hostname: hostname, Number: callBusiness, Password: func() (string, error) { return callPassword, nil },
		GatewayAddr: sim.Addr(), GatewayRoots: sim.CA().Pool(), ContactPort: ln.Addr().(*net.TCPAddr).Port,
		Logger: quiet(),
	}, ph)
	if err != nil {
		t.Fatal(err)
	}
	ph.SetDialer(ep)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ep.Serve(ctx, ln, sip.ServerTLSConfig(getCert)) // as cmd/waphone's daemon.serve
	}()
	t.Cleanup(func() {
		ph.Close()
		_ = sim.Close()
		cancel()
		<-done
		_ = ep.Close()
	})
	return &callRig{sim: sim, phone: ph, addr: ln.Addr().String()}
}

// servedLeaf makes a new TLS handshake (no session resumption) to the SIP
// listener, verifying the chain for hostname against roots, and returns
// the leaf it was served.
func servedLeaf(t *testing.T, addr, hostname string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: hostname, RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS handshake with the SIP listener: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func leafOf(t *testing.T, get func() (*tls.Certificate, error)) *x509.Certificate {
	t.Helper()
	c, err := get()
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf != nil {
		return c.Leaf
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func waitPhone(t *testing.T, p *phone.Phone, want phone.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.Status().State != want {
		if time.Now().After(deadline) {
			t.Fatalf("phone state %s, want %s", p.Status().State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitPackets waits until metasim has received more than n SRTP packets
// from waphone and returns the count.
func waitPackets(t *testing.T, c *metasim.Call, n uint64, what string) uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := c.MediaStats().PacketsReceived
		if got > n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: metasim's packets from waphone stuck at %d", what, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// placeCall has metasim call waphone and waits until it is Talking with
// media flowing; it returns metasim's side of the call.
func (r *callRig) placeCall(t *testing.T) *metasim.Call {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := r.sim.Call(ctx, r.addr, metasim.CallOptions{From: callUser})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status() != 200 {
		t.Fatalf("INVITE answered %d, want 200", c.Status())
	}
	waitPhone(t, r.phone, phone.Talking)
	waitPackets(t, c, 10, "call start")
	return c
}

// checkCallSurvived asserts the call is still up and media still flows
// both ways after the swap, then ends it with Meta's BYE.
func (r *callRig) checkCallSurvived(t *testing.T, c *metasim.Call, before uint64) {
	t.Helper()
	select {
	case <-c.Done():
		t.Fatalf("metasim's call ended during the renewal (by %q)", c.EndedBy())
	default:
	}
	if st := r.phone.Status().State; st != phone.Talking {
		t.Fatalf("phone %s after the renewal, want talking", st)
	}
	// 20 ms packets: 50 a second each way.
	after := waitPackets(t, c, before+25, "after the swap")
	var ourRecv uint64
	if ms := r.phone.Status().Media; ms != nil {
		ourRecv = ms.PacketsReceived
	}
	time.Sleep(500 * time.Millisecond)
	later := waitPackets(t, c, after+10, "500 ms later")
	if ms := r.phone.Status().Media; ms == nil || ms.PacketsReceived < ourRecv+10 {
		t.Fatalf("waphone's received packets %v, were %d 500 ms ago: Meta's audio stopped", ms, ourRecv)
	}
	if a := c.MediaStats().AuthFailures; a != 0 {
		t.Fatalf("%d SRTP auth failures at metasim", a)
	}
	t.Logf("call up across the swap: metasim received %d packets before, %d after, %d at the end", before, after, later)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Hangup(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	waitPhone(t, r.phone, phone.Idle)
	last := r.phone.Status().LastCall
	if last == nil || last.EndedBy != sip.EndRemoteBye || c.EndedBy() != "meta" {
		t.Fatalf("call ended by %q (summary %+v), want Meta's BYE", c.EndedBy(), last)
	}
	if last.Media == nil || last.Media.PacketsReceived < 50 || last.Media.PacketsSent < 50 {
		t.Fatalf("end-of-call media %+v", last.Media)
	}
}

func waitNewLeaf(t *testing.T, get func() (*tls.Certificate, error), old *x509.Certificate) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if l := leafOf(t, get); l.SerialNumber.Cmp(old.SerialNumber) != 0 {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatal("no renewed certificate within 60 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPebbleDNS01RenewalDuringCall: a DNS-01 certificate from pebble
// serves a call from Meta; Renew (RenewBefore longer than pebble's
// certificates live, so it renews at its first check) swaps a new one in
// mid-call. New handshakes get the new certificate; the call, on its
// existing TLS connection and SRTP session, carries on and ends with a BYE.
func TestPebbleDNS01RenewalDuringCall(t *testing.T) {
	env := startPebble(t)
	hook := env.dnsHook(t)
	roots := env.roots(t)
	const host = "kiosk.waphone.test"
	state := t.TempDir()
	renewBefore := 50 * 365 * 24 * time.Hour // longer than any pebble certificate (5 years by default)
	m, err := New(Config{Hostname: host, Challenge: "dns-01", DNSHook: hook, DirectoryURL: env.dir,
		StateDir: state, HTTPClient: env.client, Logger: quiet(),
		RenewBefore: renewBefore, RenewCheck: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.Prefetch(ctx); err != nil {
		t.Fatal(err)
	}
	first := leafOf(t, m.Certificate)
	if time.Until(first.NotAfter) >= renewBefore {
		t.Fatalf("pebble's certificate lives until %v: RenewBefore would not renew it", first.NotAfter)
	}
	t.Logf("pebble issued serial %x, not after %v", first.SerialNumber, first.NotAfter)

	r := startWaphone(t, host, roots, m.Certificate)
	if got := servedLeaf(t, r.addr, host, roots); got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("listener serves serial %x, want pebble's %x", got.SerialNumber, first.SerialNumber)
	}
	c := r.placeCall(t)
	before := c.MediaStats().PacketsReceived

	// The daemon's renewal loop, until its context ends.
	rctx, rcancel := context.WithCancel(context.Background())
	renewDone := make(chan struct{})
	go func() { defer close(renewDone); m.Renew(rctx) }()
	defer func() { rcancel(); <-renewDone }()
	renewed := waitNewLeaf(t, m.Certificate, first)
	rcancel()
	select {
	case <-renewDone:
	case <-time.After(30 * time.Second):
		t.Fatal("Renew did not return after its context ended")
	}
	current := leafOf(t, m.Certificate) // Renew may have swapped once more before it stopped
	t.Logf("renewed mid-call: serial %x (serving %x), not after %v", renewed.SerialNumber, current.SerialNumber, current.NotAfter)

	got := servedLeaf(t, r.addr, host, roots)
	if got.SerialNumber.Cmp(first.SerialNumber) == 0 || got.SerialNumber.Cmp(current.SerialNumber) != 0 {
		t.Fatalf("a new handshake got serial %x: want the renewed %x, not the first %x", got.SerialNumber, current.SerialNumber, first.SerialNumber)
	}
	r.checkCallSurvived(t, c, before)

	// The renewal is what a restart serves.
	m2, _ := New(Config{Hostname: host, Challenge: "dns-01", DNSHook: hook, DirectoryURL: "https://127.0.0.1:1/unreachable", StateDir: state})
	if l := leafOf(t, m2.Certificate); l.SerialNumber.Cmp(current.SerialNumber) != 0 {
		t.Fatalf("restart serves %x, want the renewed %x", l.SerialNumber, current.SerialNumber)
	}
}

// heldTransport holds requests to the CA until release is closed, counting
// those waiting: autocert starts a due renewal the moment it loads the
// certificate, and this keeps it from reaching pebble until the call is up.
type heldTransport struct {
	release <-chan struct{}
	held    *atomic.Int32
	next    http.RoundTripper
}

func (h heldTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h.held.Add(1)
	select {
	case <-h.release:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	return h.next.RoundTrip(req)
}

// TestPebbleTLSALPNRenewalDuringCall is the same through autocert
// (tls-alpn-01). autocert caps RenewBefore at 30 days, so a pebble
// certificate (5 years) is never due; pebble set to issue short-lived ones
// would make every renewal due again at once, and autocert's renewal
// timers cannot be stopped: they would hammer the CA for the rest of the
// test binary. Instead the cache holds an expiring certificate for the
// name (from a throwaway CA, its one hour left within RenewBefore's two):
// loading it starts the renewal, held at the HTTP client until the call
// is up, and pebble's certificate it then gets is not due for years.
func TestPebbleTLSALPNRenewalDuringCall(t *testing.T) {
	env := startPebble(t)
	pebbleRoots := env.roots(t)
	const host = "sip.waphone.test"
	state := t.TempDir()

	// The expiring certificate, where autocert's DirCache keeps it: our
	// Certificate asks for the name without a ClientHello's ECDSA
	// support, so autocert picks its RSA entry.
	old, err := testpki.NewCA("expiring certificate's CA")
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, old.Cert, &key.PublicKey, old.Key)
	if err != nil {
		t.Fatal(err)
	}
	cached := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	cached = append(cached, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	if err := os.MkdirAll(filepath.Join(state, "acme"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "acme", host+"+rsa"), cached, 0o600); err != nil {
		t.Fatal(err)
	}
	metaRoots := pebbleRoots.Clone()
	metaRoots.AddCert(old.Cert)

	release := make(chan struct{})
	var held atomic.Int32
	releaseOnce := func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}
	t.Cleanup(releaseOnce) // a failed test must not leave autocert's renewal blocked
	hc := &http.Client{Transport: heldTransport{release: release, held: &held, next: env.client.Transport}}
	m, err := New(Config{Hostname: host, Email: "ops@waphone.test", DirectoryURL: env.dir, StateDir: state,
		HTTPClient: hc, Logger: quiet(), RenewBefore: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// As the daemon starts: the challenge listener, Prefetch (which loads
	// the cached certificate) and the SIP listener on m.Certificate.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", env.tlsPort))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = m.ServeChallenges(ctx, ln) }()
	if err := m.Prefetch(ctx); err != nil {
		t.Fatal(err)
	}
	first := leafOf(t, m.Certificate)
	if first.SerialNumber.Cmp(tmpl.SerialNumber) != 0 {
		t.Fatalf("serving %x, not the cached certificate", first.SerialNumber)
	}
	r := startWaphone(t, host, metaRoots, m.Certificate)
	if got := servedLeaf(t, r.addr, host, metaRoots); got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("listener serves serial %x, want the cached %x", got.SerialNumber, first.SerialNumber)
	}
	c := r.placeCall(t)
	before := c.MediaStats().PacketsReceived

	// autocert's renewal began when Prefetch loaded the certificate and
	// now waits for the CA; let it through.
	deadline := time.Now().Add(10 * time.Second)
	for held.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("autocert started no renewal of a certificate within RenewBefore")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l := leafOf(t, m.Certificate); l.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("the certificate changed before the renewal reached the CA")
	}
	releaseOnce()
	renewed := waitNewLeaf(t, m.Certificate, first)
	t.Logf("renewed mid-call by autocert: serial %x, not after %v", renewed.SerialNumber, renewed.NotAfter)
	if time.Until(renewed.NotAfter) < 30*24*time.Hour {
		t.Fatalf("pebble's certificate ends %v: autocert would renew it again at once", renewed.NotAfter)
	}

	// Only pebble's root now: the new handshake gets pebble's chain.
	got := servedLeaf(t, r.addr, host, pebbleRoots)
	if got.SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Fatalf("a new handshake got serial %x, want the renewed %x", got.SerialNumber, renewed.SerialNumber)
	}
	r.checkCallSurvived(t, c, before)

	// autocert cached the renewal: a restart serves it without the CA.
	m2, _ := New(Config{Hostname: host, DirectoryURL: "https://127.0.0.1:1/unreachable", StateDir: state, Logger: quiet()})
	if l := leafOf(t, m2.Certificate); l.SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Fatalf("restart serves %x, want the renewed %x", l.SerialNumber, renewed.SerialNumber)
	}
}
