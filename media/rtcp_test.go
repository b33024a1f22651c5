package media

import (
	"context"
	"testing"
)

func TestMOSModel(t *testing.T) {
	good := mos(20, 2, 0)
	if good < 4.0 || good > 4.5 { // Ie = 10 caps a clean call near 4.1
		t.Fatalf("clean call MOS %.2f", good)
	}
	if lossy := mos(20, 2, 10); lossy >= good-0.5 {
		t.Fatalf("10%% loss MOS %.2f not clearly below %.2f", lossy, good)
	}
	if far := mos(600, 2, 0); far >= good-0.3 {
		t.Fatalf("300 ms one-way MOS %.2f not below %.2f", far, good)
	}
	if awful := mos(2000, 100, 60); awful < 1 || awful > 2 {
		t.Fatalf("awful call MOS %.2f", awful)
	}
}

// Two real SDES sessions exchange sender reports: each learns the RTT, the
// jitter is measured, and the MOS estimate says "good" on loopback.
// TestRTCPReportsBetweenSessions: our reports give each side an RTT, in
// both key exchanges. (In DTLS mode our reports once named another SSRC
// than our packets, so the peer's blocks never matched: RTT stayed 0.)
func TestRTCPReportsBetweenSessions(t *testing.T) {
	for _, kx := range []string{"sdes", "dtls"} {
		t.Run(kx, func(t *testing.T) {
			t.Parallel()
			rtcpBetween(t, kx)
		})
	}
}

func rtcpBetween(t *testing.T, kx string) {
	a, offer, err := Offer(Config{KeyExchange: kx, BindIP: testConfig().BindIP, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, answer, err := Answer(testConfig(), offer)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.SetAnswer(answer); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_ = a.Start(ctx, nil, nil)
	_ = b.Start(ctx, nil, nil)
	// Reports go out 1 s after start and every 5 s; the second round
	// carries LSR/DLSR of the first, giving an RTT.
	waitStat(t, a, "no RTT from two rounds of reports", func(st Stats) bool { return st.RTCPReceived >= 2 && st.RTTMs != 0 })
	st := a.Stats()
	if st.RTCPReceived < 2 || st.RTCPReceived > 3 {
		t.Fatalf("RTCP received %d, want 2 (or 3) reports in about 6 s", st.RTCPReceived)
	}
	if st.RTTMs <= 0 || st.RTTMs > 100 {
		t.Fatalf("loopback RTT %.2f ms", st.RTTMs)
	}
	if st.MOS < 3.9 {
		t.Fatalf("loopback MOS %.2f", st.MOS)
	}
	if bs := b.Stats(); bs.JitterMs < 0 || bs.JitterMs > 20 || bs.RTCPReceived == 0 {
		t.Fatalf("b: jitter %.2f ms, rtcp %d", bs.JitterMs, bs.RTCPReceived)
	}
	t.Logf("a: rtt %.2f ms, mos %.2f; b: jitter %.2f ms", st.RTTMs, st.MOS, b.Stats().JitterMs)
}
