package media

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestDTLSAnswerToTheGuidesOffer(t *testing.T) {
	s, ans, err := Answer(testConfig(), []byte(guideMetaOfferDTLS))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := string(ans)
	// Meta is ICE-lite: we are the controlling agent and the DTLS client.
	for _, want := range []string{"a=setup:active", "a=fingerprint:sha-256", "UDP/TLS/RTP/SAVPF 111 126", "a=rtcp-mux",
		"a=ice-ufrag:", "127.0.0.1", "typ host", "a=mid:audio", "telephone-event/8000"} {
		if !strings.Contains(a, want) {
			t.Errorf("answer lacks %q:\n%s", want, a)
		}
	}
	if strings.Contains(a, ".local") || strings.Contains(a, "a=setup:passive") {
		t.Errorf("mDNS candidate or passive role:\n%s", a)
	}
}

func TestDTLSPublicAddressAndBadOffers(t *testing.T) {
	cfg := testConfig()
	cfg.AdvertiseIP = net.IPv4(203, 0, 113, 7)
	s, ans, err := Answer(cfg, []byte(guideMetaOfferDTLS))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if !strings.Contains(string(ans), "203.0.113.7") {
		t.Fatalf("public_address not advertised:\n%s", ans)
	}
	// No opus: 488 before any ICE work.
	noOpus := strings.ReplaceAll(guideMetaOfferDTLS, "opus/48000/2", "G729/8000")
	if _, _, err := Answer(testConfig(), []byte(noOpus)); err == nil || !strings.Contains(err.Error(), "opus") {
		t.Fatalf("no-opus offer: %v", err)
	}
}

// TestDTLSNeverCompletes: a peer that never answers ICE/DTLS ends the
// session with a reason instead of a silent, hanging call.
func TestDTLSNeverCompletes(t *testing.T) {
	offer := strings.ReplaceAll(guideMetaOfferDTLS, "57.144.135.35 3480", "127.0.0.1 9") // loopback only, nobody there
	offer = strings.ReplaceAll(offer, "2a03:2880:f343:131:face:b00c:0:699c 3480", "::1 9")
	s, _, err := Answer(testConfig(), []byte(offer))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(t.Context(), nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("session still up without ICE/DTLS")
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "ICE/DTLS") {
		t.Fatalf("reason %v", err)
	}
	if st := s.Stats(); st.PacketsSent != 0 {
		t.Fatalf("%d packets sent before DTLS", st.PacketsSent)
	}
}
