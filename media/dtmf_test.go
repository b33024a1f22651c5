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
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 4 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // trailing end packets must not repeat a digit
	mu.Lock()
	defer mu.Unlock()
	if string(got) != "1#9D" {
		t.Fatalf("received %q, want \"1#9D\"", string(got))
	}
	if st := b.Stats(); st.TelephoneEvents < 4*(5+2) {
		t.Fatalf("only %d event packets", st.TelephoneEvents)
	}
	if st := b.Stats(); st.PacketsReceived-st.TelephoneEvents < 10 {
		t.Fatal("audio stopped around the digits")
	}
}
