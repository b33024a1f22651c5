package media

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// relay forwards UDP between two sessions on loopback, impairing one
// direction: random loss, and a random delay (which reorders packets).
type relay struct {
	toA, toB *net.UDPConn // toA faces a (a sends here), toB faces b
	a, b     *net.UDPAddr // the sessions' real addresses
	loss     float64
	jitter   time.Duration
	rng      *rand.Rand
	mu       sync.Mutex
	dropped  int
	wg       sync.WaitGroup
}

func newRelay(t *testing.T, loss float64, jitter time.Duration) *relay {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return &relay{toA: listen(), toB: listen(), loss: loss, jitter: jitter, rng: rand.New(rand.NewPCG(7, 11))}
}

func (r *relay) run(from, to *net.UDPConn, dst func() *net.UDPAddr, impair bool) {
	defer r.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, _, err := from.ReadFromUDP(buf)
		if err != nil {
			return
		}
		pkt := append([]byte(nil), buf[:n]...)
		d := dst()
		if !impair {
			_, _ = to.WriteToUDP(pkt, d)
			continue
		}
		r.mu.Lock()
		drop := r.rng.Float64() < r.loss
		delay := time.Duration(r.rng.Int64N(int64(r.jitter)))
		if drop {
			r.dropped++
		}
		r.mu.Unlock()
		if drop {
			continue
		}
		time.AfterFunc(delay, func() { _, _ = to.WriteToUDP(pkt, d) })
	}
}

func (r *relay) close() {
	r.toA.Close()
	r.toB.Close()
	r.wg.Wait()
}

var mLineRE = regexp.MustCompile(`m=audio (\d+) `)

func sdpPort(sdp []byte) int {
	p, _ := strconv.Atoi(string(mLineRE.FindSubmatch(sdp)[1]))
	return p
}

// withPort points sdp's media at port on loopback: the m= line and, for
// WebRTC offers, the ICE host candidate that carries the same port (the
// far agent checks it and learns the relay's side as peer-reflexive).
func withPort(sdp []byte, port int) []byte {
	old := "127.0.0.1 " + strconv.Itoa(sdpPort(sdp)) + " typ host"
	sdp = bytes.ReplaceAll(sdp, []byte(old), []byte("127.0.0.1 "+strconv.Itoa(port)+" typ host"))
	return mLineRE.ReplaceAll(sdp, []byte("m=audio "+strconv.Itoa(port)+" "))
}

// TestImpairedPathStillClear: 5 % random loss and 0-40 ms jitter (which
// reorders) on the way b → a, in both key exchanges (in DTLS mode the
// relay also loses and reorders the ICE checks and the DTLS handshake).
// The tone must arrive with ≥ 20 dB SNR, and Opus in-band FEC must have
// rebuilt some of the lost frames.
func TestImpairedPathStillClear(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time impairment test")
	}
	for _, kx := range []string{"sdes", "dtls"} {
		t.Run(kx, func(t *testing.T) { impairedCall(t, kx) })
	}
}

func impairedCall(t *testing.T, kx string) {
	r := newRelay(t, 0.05, 40*time.Millisecond)
	a, offer, err := Offer(Config{KeyExchange: kx, BindIP: testConfig().BindIP, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	r.a = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sdpPort(offer)}
	// b believes a lives at the relay; a believes b does.
	// As Meta does, the offer asks for 20 kbit/s wideband with in-band FEC:
	// b's encoder (the impaired sender) follows it.
	metaLike := regexp.MustCompile(`a=fmtp:111 [^\r\n]*`).ReplaceAll(offer,
		[]byte("a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;useinbandfec=1"))
	b, answer, err := Answer(testConfig(), withPort(metaLike, r.toB.LocalAddr().(*net.UDPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r.b = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sdpPort(answer)}
	if err := a.SetAnswer(withPort(answer, r.toA.LocalAddr().(*net.UDPAddr).Port)); err != nil {
		t.Fatal(err)
	}
	r.wg.Add(2)
	go r.run(r.toA, r.toB, func() *net.UDPAddr { return r.b }, false) // a → b: clean
	go r.run(r.toB, r.toA, func() *net.UDPAddr { return r.a }, true)  // b → a: impaired
	defer r.close()

	sink := &recordSink{}
	ctx := context.Background()
	if err := a.Start(ctx, nil, sink); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, &toneSource{hz: 440}, nil); err != nil {
		t.Fatal(err)
	}
	// DTLS first needs ICE and a handshake through the lossy relay: wait
	// for media to flow, then give it the same 4 s as SDES.
	waitStat(t, a, "no media through the relay", func(st Stats) bool { return st.PacketsReceived > 0 })
	// 4 s of audio played (counted in frames, not wall time).
	waitFrames(t, sink, sink.frames()+200)
	pcm := sink.last(3 * SampleRate)
	snr := blockSNR(pcm, 440)
	st := a.Stats()
	r.mu.Lock()
	dropped := r.dropped
	r.mu.Unlock()
	t.Logf("dropped %d of ~200 packets; receiver: lost %d, concealed %d (FEC %d), late %d; tone SNR %.1f dB; jitter %.1f ms",
		dropped, st.PacketsLost, st.Concealed, st.FECRecovered, st.Late, snr, st.JitterMs)
	if dropped == 0 {
		t.Fatal("the relay dropped nothing: the test proves nothing")
	}
	if snr < 20 {
		t.Fatalf("tone SNR %.1f dB through 5%% loss and 40 ms jitter, want ≥ 20 dB", snr)
	}
	if st.FECRecovered == 0 {
		t.Fatal("in-band FEC recovered no frame")
	}
}

// blockSNR is the tone-to-rest power ratio in dB, measured per 20 ms block
// so that a concealed frame's phase step costs only its own block (a
// whole-window Goertzel would call a phase step "noise" for the whole window).
func blockSNR(pcm []int16, hz float64) float64 {
	var tone, rest float64
	for i := 0; i+FrameSamples <= len(pcm); i += FrameSamples {
		b := pcm[i : i+FrameSamples]
		var e float64
		for _, v := range b {
			e += float64(v) * float64(v)
		}
		r := toneRatio(b, hz)
		tone += r * e
		rest += (1 - r) * e
	}
	return 10 * math.Log10(tone/math.Max(rest, 1e-9))
}

// BenchmarkCallSecondCPU measures the CPU one call costs per second of
// talk: two sessions on loopback, each encoding a tone, protecting,
// sending, unprotecting, buffering and decoding (capture and playback are
// in-memory). Run with -benchtime 1x; it reports cpu-ms per call-second.
func BenchmarkCallSecondCPU(b *testing.B) {
	// c0 is the default (DefaultOpusComplexity); the others show what the
	// encoder's complexity is worth.
	for _, c := range []int{0, 10, 3} {
		b.Run(fmt.Sprintf("c%d", c), func(b *testing.B) { callSecondCPU(b, c) })
	}
}

func callSecondCPU(b *testing.B, complexity int) {
	for i := 0; i < b.N; i++ {
		cfg := testConfig()
		cfg.OpusComplexity = complexity
		a, offer, err := Offer(Config{KeyExchange: "sdes", BindIP: cfg.BindIP, Logger: quietLogger(), OpusComplexity: complexity})
		if err != nil {
			b.Fatal(err)
		}
		bb, answer, err := Answer(cfg, offer)
		if err != nil {
			b.Fatal(err)
		}
		_ = a.SetAnswer(answer)
		before := cpuTime()
		_ = a.Start(context.Background(), &toneSource{hz: 440}, &recordSink{})
		_ = bb.Start(context.Background(), &toneSource{hz: 1000}, &recordSink{})
		time.Sleep(3 * time.Second)
		used := cpuTime() - before
		a.Close()
		bb.Close()
		// Two endpoints ran: one call's share is half.
		b.ReportMetric(float64(used.Milliseconds())/2/3, "cpu-ms/call-s")
	}
}
