package media

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/hraban/opus"
)

// The hot path's cost: allocations per frame (none in steady state, in
// either key exchange) and the time one frame takes.

// frameBench is one direction of the hot path with real keys and codecs:
// the sender's encoder, the SDES transport's SRTP contexts.
type frameBench struct {
	tx  *sender
	out *srtpOut
	in  *srtpIn
	dec *opus.Decoder
}

func newFrameBench(tb testing.TB) *frameBench {
	key, err := newSDESKey(1, suite80)
	if err != nil {
		tb.Fatal(err)
	}
	tx, err := newSender(&remoteDesc{opusPT: 111, dtmfPT: -1, opus: codecInfo{fmtp: "maxaveragebitrate=20000;maxplaybackrate=16000;useinbandfec=1"}}, 0, 0)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := key.context(false)
	if err != nil {
		tb.Fatal(err)
	}
	in, err := key.context(true)
	if err != nil {
		tb.Fatal(err)
	}
	dec, err := opus.NewDecoder(SampleRate, 1)
	if err != nil {
		tb.Fatal(err)
	}
	(&toneSource{hz: 440}).ReadFrame(tx.pcm[:])
	return &frameBench{tx: tx, out: &srtpOut{ctx: out}, in: &srtpIn{ctx: in}, dec: dec}
}

// send encodes and protects one frame.
func (f *frameBench) send() ([]byte, error) {
	pkt, err := f.tx.frame(f.tx.pcm[:])
	if err != nil {
		return nil, err
	}
	return f.out.protect(pkt)
}

// BenchmarkFrame: encode + SRTP protect + unprotect + decode of one 20 ms frame.
func BenchmarkFrame(b *testing.B) {
	f := newFrameBench(b)
	pcm := make([]int16, maxDecodeSamples)
	b.ReportAllocs()
	for b.Loop() {
		pkt, err := f.send()
		if err != nil {
			b.Fatal(err)
		}
		payload, err := f.in.unprotect(pkt)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := f.dec.Decode(payload, pcm); err != nil || n != FrameSamples {
			b.Fatal(n, err)
		}
	}
}

// TestSendPathAllocs measures the steady-state send path (encode, protect,
// UDP write) and fails if it allocates.
func TestSendPathAllocs(t *testing.T) {
	f := newFrameBench(t)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := netip.MustParseAddrPort(conn.LocalAddr().String())
	for range 5 { // warm up per-SSRC state
		f.send()
	}
	send := testing.AllocsPerRun(200, func() {
		pkt, err := f.send()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteToUDPAddrPort(pkt, dst); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("send path allocs/frame: %.1f", send)
	if send > 0 && !raceEnabled {
		t.Errorf("send path allocates %.1f times per frame", send)
	}
	pcm := make([]int16, maxDecodeSamples)
	recv := testing.AllocsPerRun(200, func() {
		pkt, _ := f.send()
		payload, err := f.in.unprotect(pkt)
		if err != nil {
			t.Fatal(err)
		}
		f.dec.Decode(payload, pcm)
	})
	t.Logf("send+receive path allocs/frame: %.1f", recv)
}

// TestSteadyStateAllocs runs a call and counts heap allocations of the whole
// process over one second of steady state (send, receive, playout: about 150
// frames of work each side).
func TestSteadyStateAllocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("timing test; the race detector allocates by itself")
	}
	// Nothing per frame in either mode: the bound is runtime noise. In
	// DTLS mode this holds only because we give pion no interceptors and
	// write through WriteRTP with a reused header (its defaults cost 6
	// allocations per frame, its Write(b) one).
	for _, c := range []struct {
		kx       string
		perFrame float64
	}{{"sdes", 0.5}, {"dtls", 0.5}} {
		t.Run(c.kx, func(t *testing.T) {
			cfgA := testConfig()
			cfgA.KeyExchange = c.kx
			a, b := pair(t, cfgA, testConfig(), nil)
			ctx := context.Background()
			_ = a.Start(ctx, &toneSource{hz: 440}, nil)
			_ = b.Start(ctx, &toneSource{hz: 1000}, nil)
			waitStat(t, b, "b receives", func(st Stats) bool { return st.PacketsReceived > 0 })
			// Past first-packet logging, latching and the first RTCP round
			// (its one-time SRTCP state); the next round is 5 s away.
			waitStat(t, a, "a gets a report", func(st Stats) bool { return st.RTCPReceived > 0 })
			waitStat(t, b, "b gets a report", func(st Stats) bool { return st.RTCPReceived > 0 })
			time.Sleep(100 * time.Millisecond) // let the round's last one-time work finish
			var m0, m1 runtime.MemStats
			f0 := a.Stats().PacketsSent + b.Stats().PacketsSent
			runtime.ReadMemStats(&m0)
			time.Sleep(time.Second)
			runtime.ReadMemStats(&m1)
			frames := a.Stats().PacketsSent + b.Stats().PacketsSent - f0
			allocs := m1.Mallocs - m0.Mallocs
			t.Logf("%s: %d heap allocations, %d bytes in 1 s of two-way media (%d frames): %.2f allocations per frame",
				c.kx, allocs, m1.TotalAlloc-m0.TotalAlloc, frames, float64(allocs)/float64(max(frames, 1)))
			if frames < 50 {
				t.Fatalf("only %d frames in a second", frames)
			}
			if float64(allocs) > c.perFrame*float64(frames) {
				t.Errorf("%d allocations for %d frames, want at most %.1f per frame", allocs, frames, c.perFrame)
			}
		})
	}
}
