package media

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// stunTestMappedIP is what our loopback STUN responder reports as the
// reflexive address: a TEST-NET-2 address (RFC 5737), so the srflx
// candidate differs from the 127.0.0.1 host one. Nothing is sent to it.
var stunTestMappedIP = net.IPv4(198, 51, 100, 7)

// stunResponder is a minimal STUN server on 127.0.0.1: it answers each
// Binding request with XOR-MAPPED-ADDRESS stunTestMappedIP:<source port>.
type stunResponder struct {
	conn net.PacketConn
	mu   sync.Mutex
	srcs []*net.UDPAddr // where the Binding requests came from
}

func startSTUNResponder(t *testing.T) *stunResponder {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &stunResponder{conn: conn}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			src, ok := from.(*net.UDPAddr)
			if !ok || !stun.IsMessage(buf[:n]) {
				continue
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil || req.Type != stun.BindingRequest {
				continue
			}
			r.mu.Lock()
			r.srcs = append(r.srcs, src)
			r.mu.Unlock()
			resp, err := stun.Build(req, stun.BindingSuccess,
				&stun.XORMappedAddress{IP: stunTestMappedIP, Port: src.Port}, stun.Fingerprint)
			if err != nil {
				t.Errorf("stun response: %v", err)
				continue
			}
			_, _ = conn.WriteTo(resp.Raw, src)
		}
	}()
	t.Cleanup(func() { _ = conn.Close(); <-done })
	return r
}

func (r *stunResponder) addr() string { return r.conn.LocalAddr().String() }

func (r *stunResponder) sources() []*net.UDPAddr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*net.UDPAddr(nil), r.srcs...)
}

var srflxRE = regexp.MustCompile(`(?m)^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ srflx raddr (\S+) rport (\d+)`)

// checkSrflx: the SDP carries a srflx candidate with the address the STUN
// server reported, related to the 127.0.0.1 socket that asked it.
func checkSrflx(t *testing.T, what, sdpText string, r *stunResponder) {
	t.Helper()
	m := srflxRE.FindStringSubmatch(sdpText)
	if m == nil {
		t.Fatalf("%s has no srflx candidate (STUN requests seen: %v):\n%s", what, r.sources(), sdpText)
	}
	t.Logf("%s: %s", what, m[0])
	if m[1] != stunTestMappedIP.String() {
		t.Errorf("%s srflx address %s, want the STUN-reported %s", what, m[1], stunTestMappedIP)
	}
	if m[3] != "127.0.0.1" {
		t.Errorf("%s srflx raddr %s, want our 127.0.0.1 bind address", what, m[3])
	}
	if m[2] != m[4] {
		t.Errorf("%s srflx port %s is not the mapped port of rport %s", what, m[2], m[4])
	}
	port, _ := strconv.Atoi(m[2])
	asked := false
	for _, src := range r.sources() {
		if src.IP.Equal(net.IPv4(127, 0, 0, 1)) && src.Port == port {
			asked = true
		}
		if !src.IP.IsLoopback() {
			t.Errorf("STUN request from non-loopback %v", src)
		}
	}
	if !asked {
		t.Errorf("%s srflx port %d was never reported by the STUN server (requests from %v)", what, port, r.sources())
	}
	// The host candidate stays; c=/m= name the srflx one, the default most
	// likely to work from outside a NAT (RFC 8839 §4.2.1.2).
	if !strings.Contains(sdpText, "typ host") {
		t.Errorf("%s lost its host candidate:\n%s", what, sdpText)
	}
	if !strings.Contains(sdpText, "c=IN IP4 "+stunTestMappedIP.String()) || !strings.Contains(sdpText, "m=audio "+m[2]+" ") {
		t.Errorf("%s c=/m= do not name the srflx candidate:\n%s", what, sdpText)
	}
}

// TestSTUNSrflxCandidate: media.stun makes both our WebRTC offer and our
// answer to Meta's offer carry a server-reflexive candidate.
func TestSTUNSrflxCandidate(t *testing.T) {
	r := startSTUNResponder(t)
	cfg := testConfig()
	cfg.KeyExchange, cfg.STUN = "dtls", r.addr()

	t.Run("offer", func(t *testing.T) {
		s, offer, err := Offer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		checkSrflx(t, "offer", string(offer), r)
	})
	t.Run("answer", func(t *testing.T) {
		s, ans, err := Answer(cfg, []byte(guideMetaOfferDTLS))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		checkSrflx(t, "answer", string(ans), r)
	})
	if len(r.sources()) == 0 {
		t.Fatal("the STUN server was never asked")
	}
}

// TestSTUNServerSilent: a STUN server that never answers (a loopback port
// nobody reads) costs at most the bounded gathering wait; the offer still
// goes out with its host candidates, without a srflx one, and the
// session closes promptly despite the pending STUN transaction.
func TestSTUNServerSilent(t *testing.T) {
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0") // never read
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cfg := testConfig()
	cfg.KeyExchange, cfg.STUN = "dtls", sink.LocalAddr().String()

	start := time.Now()
	s, offer, err := Offer(cfg)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if limit := gatherTimeout + 2*time.Second; took > limit {
		t.Errorf("Offer took %v with a silent STUN server, want at most %v", took, limit)
	}
	o := string(offer)
	if !strings.Contains(o, "127.0.0.1") || !strings.Contains(o, "typ host") || !strings.Contains(o, "c=IN IP4 127.0.0.1") {
		t.Errorf("offer lacks the host candidate:\n%s", o)
	}
	if strings.Contains(o, "typ srflx") {
		t.Errorf("srflx candidate without a STUN answer:\n%s", o)
	}
	// The request did reach the silent server: STUN was configured and tried.
	_ = sink.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, _, rerr := sink.ReadFrom(buf)
	if rerr != nil || !stun.IsMessage(buf[:n]) {
		t.Errorf("no STUN request reached the silent server: %v", rerr)
	}

	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked by the unanswered STUN transaction")
	}
	t.Logf("offer with a silent STUN server after %v", took)
}
