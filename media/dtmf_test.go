package media

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// Two real SDES sessions on loopback: digits sent by one arrive, each
// exactly once, at the other's OnDTMF, and audio goes on around them.
func TestDTMFRoundTrip(t *testing.T) {
	var mu sync.Mutex
	var got []rune
	a, offer, err := Offer(Config{KeyExchange: "sdes", BindIP: testConfig().BindIP, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, answer, err := Answer(Config{BindIP: testConfig().BindIP, Logger: quietLogger(), OnDTMF: func(d rune) {
		mu.Lock()
		got = append(got, d)
		mu.Unlock()
	}}, offer)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.SetAnswer(answer); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Start(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.SendDTMF("1#9d"); err != nil {
		t.Fatal(err)
	}
	if err := a.SendDTMF("x"); err == nil || !strings.Contains(err.Error(), "not a DTMF digit") {
		t.Fatalf("bad digit: %v", err)
	}
	// Each digit is 4 event packets and 3 copies of the end packet. Once
	// all 28 are counted, a repeat from a trailing end packet would have
	// been reported already.
	waitStat(t, b, "event packets", func(st Stats) bool { return st.TelephoneEvents >= 4*(4+dtmfEndCopys) })
	waitFor(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 4
	}, func() string { return "fewer than 4 digits" })
	mu.Lock()
	digits := string(got)
	mu.Unlock()
	if digits != "1#9D" {
		t.Fatalf("received %q, want \"1#9D\"", digits)
	}
	if st := b.Stats(); st.TelephoneEvents < 4*(5+2) {
		t.Fatalf("only %d event packets", st.TelephoneEvents)
	}
	// Audio goes on around and after the digits.
	waitStat(t, b, "audio stopped around the digits", func(st Stats) bool { return st.PacketsReceived-st.TelephoneEvents >= 10 })
}
