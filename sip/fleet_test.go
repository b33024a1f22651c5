package sip

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/internal/testutil"
)

const tEdgeName = "edge.fleet.test"

// fakeEdge is the edge's desk port: mTLS with the fleet CA, raw SIP text.
type fakeEdge struct {
	t     *testing.T
	ln    net.Listener
	conns chan *metaConn
}

func newFakeEdge(t *testing.T, fleetCA *testpki.CA) *fakeEdge {
	t.Helper()
	certPEM, keyPEM, err := fleetCA.Issue(tEdgeName)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: fleetCA.Pool(),
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &fakeEdge{t: t, ln: ln, conns: make(chan *metaConn, 4)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				_ = c.Close()
				continue
			}
			e.conns <- &metaConn{t: t, c: tc, rd: bufio.NewReader(tc)}
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return e
}

func (e *fakeEdge) accept() *metaConn {
	e.t.Helper()
	select {
	case c := <-e.conns:
		e.t.Cleanup(func() { _ = c.c.Close() })
		return c
	case <-time.After(10 * time.Second):
		e.t.Fatal("the desk did not connect to the edge")
		return nil
	}
}

// answerRegister reads a REGISTER and answers 200 with the granted expiry.
func (m *metaConn) answerRegister(expires string) (hdr map[string][]string) {
	m.t.Helper()
	start, hdr, _ := m.read()
	if !strings.HasPrefix(start, "REGISTER sip:"+tEdgeName) {
		m.t.Fatalf("want REGISTER to the edge, got %q", start)
	}
	ct := first(hdr["contact"])
	m.send("SIP/2.0 200 OK\r\nVia: " + first(hdr["via"]) + "\r\nFrom: " + first(hdr["from"]) + "\r\nTo: " + first(hdr["to"]) + ";tag=edge1\r\n" +
		"Call-ID: " + first(hdr["call-id"]) + "\r\nCSeq: " + first(hdr["cseq"]) + "\r\n" +
		"Contact: " + strings.SplitN(ct, ";expires", 2)[0] + ";expires=" + expires + "\r\nContent-Length: 0\r\n\r\n")
	return hdr
}

func newFleetDesk(t *testing.T, edge *fakeEdge, fleetCA *testpki.CA, keepAlive time.Duration, policy func(*InboundCall)) (*Endpoint, *testHandler, context.CancelFunc, chan error) {
	t.Helper()
	certPEM, keyPEM, err := fleetCA.Issue("desk1")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h := &testHandler{policy: policy, got: make(chan *InboundCall, 4)}
	ep, err := New(Config{
		Hostname: tHost, Number: tNumber, Logger: log,
		Fleet: &Fleet{
			Edge: edge.ln.Addr().String(), EdgeName: tEdgeName, EdgeRoots: fleetCA.Pool(),
			ClientCert: func() (*tls.Certificate, error) { return &pair, nil },
			Device:     "desk1", KeepAlive: keepAlive, RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		},
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stopped := make(chan struct{})
	go func() { done <- ep.RunFleet(ctx); close(stopped) }()
	t.Cleanup(func() {
		_ = edge.ln.Close() // the unregister fails at once instead of waiting for an answer
		cancel()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Error("RunFleet did not return")
		}
		_ = ep.Close()
	})
	return ep, h, cancel, done
}

// edgeInvite is what the edge forwards from Meta: no Proxy-Authorization,
// the desk's Contact as the Request-URI, the edge's Via on top.
func edgeInvite(callID, tag, branch string) string {
	inv := guideInvite(callID, tag, branch, 1, "")
	inv = strings.Replace(inv, "INVITE sip:+12145551869@meta-voip.example.com;transport=tls SIP/2.0\r\n",
		"INVITE sip:+12145551869@desk1.desk.invalid;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5062;branch=z9hG4bKedge"+branch+"\r\n", 1)
	return inv
}

func TestFleetRegisterRingAnsweredElsewhere(t *testing.T) {
	fleetCA, err := testpki.NewCA("fleet CA")
	if err != nil {
		t.Fatal(err)
	}
	edge := newFakeEdge(t, fleetCA)
	ep, h, cancel, done := newFleetDesk(t, edge, fleetCA, time.Minute, func(c *InboundCall) { _ = c.Ringing() })
	if err := ep.Serve(context.Background(), nil, nil); err == nil {
		t.Fatal("a fleet desk agreed to listen")
	}
	m := edge.accept()
	hdr := m.answerRegister("60")
	if ct := first(hdr["contact"]); !strings.Contains(ct, "@desk1.desk.invalid") || !strings.Contains(ct, "expires=120") {
		t.Fatalf("Contact %q: want the desk's own host and the default 120 s", ct)
	}
	if !testutil.Poll(5*time.Second, func() bool { r, _ := ep.Registration(); return r.Registered }) {
		t.Fatal("Registration() never said registered")
	}
	r, ok := ep.Registration()
	if !ok || r.Device != "desk1" || time.Until(r.Expires) > 61*time.Second || time.Until(r.Expires) < 50*time.Second {
		t.Fatalf("registration %+v: want the granted 60 s", r)
	}

	// A call from the edge rings without a challenge.
	branch := "z9hG4bKfleet1"
	m.send(edgeInvite(callID, "metatag1", branch))
	m.expect(180)
	var call *InboundCall
	select {
	case call = <-h.got:
	case <-time.After(5 * time.Second):
		t.Fatal("no call reached the handler")
	}
	// Another desk answered: the edge cancels ours.
	m.send("CANCEL sip:+12145551869@desk1.desk.invalid;transport=tls SIP/2.0\r\n" +
		"Via: SIP/2.0/TLS 127.0.0.1:5062;branch=z9hG4bKedge" + branch + "\r\n" +
		"Max-Forwards: 70\r\nFrom: \"12195550714\" <sip:+12195550714@wa.meta.vc>;tag=metatag1\r\n" +
		"To: <sip:+12145551869@meta-voip.example.com>\r\nCall-ID: " + callID + "\r\nCSeq: 1 CANCEL\r\n" +
		"Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\nContent-Length: 0\r\n\r\n")
	got := map[int]bool{}
	for len(got) < 2 {
		start, _, _ := m.read()
		if strings.HasPrefix(start, "SIP/2.0 200") || strings.HasPrefix(start, "SIP/2.0 487") {
			got[map[bool]int{true: 200, false: 487}[strings.HasPrefix(start, "SIP/2.0 200")]] = true
		}
	}
	select {
	case <-call.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("call did not end on CANCEL")
	}
	if by, why := call.Ended(); by != EndAnsweredElsewhere || !strings.Contains(why, "cause=200") {
		t.Fatalf("ended %q (%q), want %q", by, why, EndAnsweredElsewhere)
	}

	// The edge restarts: the desk registers again on a new connection.
	_ = m.c.Close()
	m2 := edge.accept()
	m2.answerRegister("60")
	if !testutil.Poll(5*time.Second, func() bool { r, _ := ep.Registration(); return r.Registered && r.Reconnects == 1 }) {
		r, _ := ep.Registration()
		t.Fatalf("after the edge's restart: %+v", r)
	}

	// Shutdown removes the binding.
	cancel()
	start, hdr, _ := m2.read()
	if !strings.HasPrefix(start, "REGISTER ") || first(hdr["expires"]) != "0" {
		t.Fatalf("want an unregister, got %q expires %q", start, first(hdr["expires"]))
	}
	m2.send("SIP/2.0 200 OK\r\nVia: " + first(hdr["via"]) + "\r\nFrom: " + first(hdr["from"]) + "\r\nTo: " + first(hdr["to"]) + ";tag=edge1\r\n" +
		"Call-ID: " + first(hdr["call-id"]) + "\r\nCSeq: " + first(hdr["cseq"]) + "\r\nContent-Length: 0\r\n\r\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunFleet: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunFleet did not return after unregistering")
	}
}

// An edge that stops answering the CRLF keep-alive is given up on and
// registered at again.
func TestFleetKeepAliveLost(t *testing.T) {
	fleetCA, err := testpki.NewCA("fleet CA")
	if err != nil {
		t.Fatal(err)
	}
	edge := newFakeEdge(t, fleetCA)
	ep, _, _, _ := newFleetDesk(t, edge, fleetCA, 300*time.Millisecond, nil)
	m := edge.accept()
	m.answerRegister("120")
	// The edge reads the pings but never pongs; the desk must drop it.
	go func() { _, _ = io.Copy(io.Discard, m.c) }()
	m2 := edge.accept()
	m2.answerRegister("120")
	if !testutil.Poll(5*time.Second, func() bool { r, _ := ep.Registration(); return r.Registered && r.Reconnects >= 1 }) {
		r, _ := ep.Registration()
		t.Fatalf("after a silent edge: %+v", r)
	}
	_ = m2.c.Close() // the unregister finds no edge and gives up at once
}

func TestAnsweredElsewhereReason(t *testing.T) {
	for reason, want := range map[string]bool{
		`SIP;cause=200;text="Call completed elsewhere"`:  true,
		`sip ; cause = 200`:                              true,
		`Q.850;cause=16;text="NORMAL_CLEARING"`:          false,
		`SIP;cause=487`:                                  false,
		`Q.850;cause=16, SIP;cause=200;text="elsewhere"`: true,
		``: false,
	} {
		if got := answeredElsewhere(reason); got != want {
			t.Errorf("answeredElsewhere(%q) = %v, want %v", reason, got, want)
		}
	}
}

func TestFleetConfigChecks(t *testing.T) {
	ok := Fleet{Edge: "edge.example.com:5062", ClientCert: func() (*tls.Certificate, error) { return nil, nil }, Device: "desk-1"}
	if _, err := newFleetState(ok); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Fleet){
		"no edge":    func(f *Fleet) { f.Edge = "" },
		"bad port":   func(f *Fleet) { f.Edge = "edge:99999" },
		"no cert":    func(f *Fleet) { f.ClientCert = nil },
		"bad device": func(f *Fleet) { f.Device = "Desk 1" },
		"empty dev":  func(f *Fleet) { f.Device = "" },
		"bad q":      func(f *Fleet) { f.Q = "2" },
		"not a q":    func(f *Fleet) { f.Q = "high" },
	} {
		f := ok
		mod(&f)
		if _, err := newFleetState(f); err == nil {
			t.Errorf("%s: accepted %+v", name, f)
		}
	}
}
