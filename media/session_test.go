package media

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hraban/opus"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// toneSource is a Source producing a continuous sine.
type toneSource struct {
	hz    float64
	phase float64
}

func (s *toneSource) ReadFrame(pcm []int16) error {
	step := 2 * math.Pi * s.hz / SampleRate
	for i := range pcm {
		pcm[i] = int16(0.3 * 32767 * math.Sin(s.phase))
		s.phase = math.Mod(s.phase+step, 2*math.Pi)
	}
	return nil
}

type recordSink struct {
	mu  sync.Mutex
	pcm []int16
	n   int
}

func (r *recordSink) WriteFrame(pcm []int16) error {
	if len(pcm) != FrameSamples {
		panic("sink got a frame of the wrong size")
	}
	r.mu.Lock()
	r.pcm = append(r.pcm, pcm...)
	r.n++
	r.mu.Unlock()
	return nil
}

func (r *recordSink) last(n int) []int16 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pcm) < n {
		return nil
	}
	return append([]int16(nil), r.pcm[len(r.pcm)-n:]...)
}

func (r *recordSink) frames() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// toneRatio is the Goertzel power at hz relative to the total power of pcm:
// about 1 for a pure tone at hz, about 2/len(pcm) for white noise, 0 for
// silence. Choose len(pcm) so that hz falls on a DFT bin.
func toneRatio(pcm []int16, hz float64) float64 {
	n := float64(len(pcm))
	if n == 0 {
		return 0
	}
	coeff := 2 * math.Cos(2*math.Pi*hz/SampleRate)
	var s1, s2, energy float64
	for _, v := range pcm {
		x := float64(v)
		s0 := x + coeff*s1 - s2
		s2, s1 = s1, s0
		energy += x * x
	}
	if energy == 0 {
		return 0
	}
	power := s1*s1 + s2*s2 - coeff*s1*s2
	return 2 * power / (n * energy)
}

const analysisLen = SampleRate / 2 // 0.5 s: 2 Hz bins

func TestToneRatioHelper(t *testing.T) {
	tone := make([]int16, analysisLen)
	(&toneSource{hz: 440}).ReadFrame(tone)
	if r := toneRatio(tone, 440); r < 0.9 {
		t.Errorf("pure 440 Hz: ratio %.3f", r)
	}
	if r := toneRatio(tone, 1000); r > 0.01 {
		t.Errorf("440 Hz tone at 1000 Hz: ratio %.3f", r)
	}
	// Negative checks: silence and noise must fail the > 0.5 test.
	if r := toneRatio(make([]int16, analysisLen), 440); r > 0.5 {
		t.Errorf("silence: ratio %.3f", r)
	}
	noise := make([]int16, analysisLen)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = int16(rng.IntN(20000) - 10000)
	}
	if r := toneRatio(noise, 440); r > 0.5 {
		t.Errorf("noise: ratio %.3f", r)
	}
}

// pair negotiates two sessions on loopback: a offers, b answers.
func pair(t *testing.T, cfgA, cfgB Config, tamper func(answer []byte) []byte) (a, b *Session) {
	t.Helper()
	a, offer, err := Offer(cfgA)
	if err != nil {
		t.Fatalf("Offer: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	b, answer, err := Answer(cfgB, offer)
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	if tamper != nil {
		answer = tamper(answer)
	}
	if err := a.SetAnswer(answer); err != nil {
		t.Fatalf("SetAnswer: %v", err)
	}
	return a, b
}

func waitFrames(t *testing.T, r *recordSink, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.frames() < n {
		if time.Now().After(deadline) {
			t.Fatalf("sink got %d frames, want %d", r.frames(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkTone(t *testing.T, who string, pcm []int16, hz, otherHz float64) {
	t.Helper()
	t.Logf("%s: ratio at %.0f Hz %.3f, at %.0f Hz %.3f", who, hz, toneRatio(pcm, hz), otherHz, toneRatio(pcm, otherHz))
	if r := toneRatio(pcm, hz); r < 0.5 {
		t.Errorf("%s: %.0f Hz ratio %.3f, want > 0.5", who, hz, r)
	}
	if r := toneRatio(pcm, otherHz); r > 0.1 {
		t.Errorf("%s: %.0f Hz (the other direction's tone) ratio %.3f", who, otherHz, r)
	}
}

func TestSessionLoopback(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b := pair(t, testConfig(), testConfig(), nil)
	var sa, sb recordSink
	ctx := context.Background()
	if err := b.Start(ctx, &toneSource{hz: 1000}, &sb); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx, &toneSource{hz: 440}, &sa); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx, nil, nil); err == nil {
		t.Error("second Start succeeded")
	}
	waitFrames(t, &sa, 50)
	waitFrames(t, &sb, 50)
	checkTone(t, "a hears b", sa.last(analysisLen), 1000, 440)
	checkTone(t, "b hears a", sb.last(analysisLen), 440, 1000)

	for name, s := range map[string]*Session{"a": a, "b": b} {
		st := s.Stats()
		if st.PacketsSent < 40 || st.PacketsReceived < 40 || st.AuthFailures != 0 || st.FirstSentAt.IsZero() || st.FirstReceivedAt.IsZero() {
			t.Errorf("%s stats %+v", name, st)
		}
		if st.Codec != "opus/48000/2 pt 111" || !strings.HasPrefix(st.RemoteAddr, "127.0.0.1:") {
			t.Errorf("%s codec %q remote %q", name, st.Codec, st.RemoteAddr)
		}
		if st.PacketsLost > 2 {
			t.Errorf("%s lost %d on loopback", name, st.PacketsLost)
		}
	}
	// Mute: packets keep flowing, the far end hears silence.
	sentBefore := a.Stats().PacketsSent
	a.SetMute(true)
	time.Sleep(600 * time.Millisecond)
	muted := sb.last(analysisLen / 2)
	var peak int16
	for _, v := range muted {
		peak = max(peak, v, -v)
	}
	if peak > 300 || toneRatio(muted, 440) > 0.5 && peak > 50 {
		t.Errorf("muted audio still audible: peak %d", peak)
	}
	if a.Stats().PacketsSent < sentBefore+20 {
		t.Error("mute paused the packet stream")
	}
	a.SetMute(false)

	if err := a.Close(); err != nil {
		t.Error(err)
	}
	if err := a.Close(); err != nil { // idempotent
		t.Error(err)
	}
	b.Close()
	<-a.Done()
	<-b.Done()
	if a.Err() != nil || b.Err() != nil {
		t.Errorf("Err after Close: %v %v", a.Err(), b.Err())
	}
	if err := a.Start(ctx, nil, nil); err == nil {
		t.Error("Start after Close succeeded")
	}
	waitGoroutines(t, before)
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d > %d\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// replaceKey swaps the inline key of the first a=crypto line.
func replaceKey(sdpText []byte) []byte {
	re := regexp.MustCompile(`inline:[A-Za-z0-9+/=]+`)
	return re.ReplaceAll(sdpText, []byte("inline:ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGC"))
}

func TestBadKeyAuthFailuresThenNoMedia(t *testing.T) {
	cfgA := testConfig()
	cfgA.NoMediaTimeout = 600 * time.Millisecond
	// a decrypts b's packets with a wrong key: nothing authenticates.
	a, b := pair(t, cfgA, testConfig(), replaceKey)
	var sa, sb recordSink
	ctx := context.Background()
	if err := a.Start(ctx, &toneSource{hz: 440}, &sa); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, &toneSource{hz: 1000}, &sb); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session with no valid media did not end")
	}
	if !errors.Is(a.Err(), ErrNoMedia) {
		t.Errorf("Err = %v, want ErrNoMedia", a.Err())
	}
	st := a.Stats()
	if st.AuthFailures < 5 || st.PacketsReceived != 0 || sa.frames() != 0 {
		t.Errorf("auth failures %d, received %d, sink frames %d", st.AuthFailures, st.PacketsReceived, sa.frames())
	}
	// b got a's (correctly keyed) audio meanwhile.
	if b.Stats().PacketsReceived == 0 {
		t.Error("b received nothing")
	}
}

func TestNoMediaMidCall(t *testing.T) {
	cfgA := testConfig()
	cfgA.NoMediaTimeout = 300 * time.Millisecond
	a, b := pair(t, cfgA, testConfig(), nil)
	ctx := context.Background()
	a.Start(ctx, nil, nil)
	b.Start(ctx, nil, nil)
	time.Sleep(200 * time.Millisecond)
	if a.Stats().PacketsReceived == 0 {
		t.Fatal("no packets")
	}
	b.Close() // peer goes silent
	start := time.Now()
	select {
	case <-a.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("no timeout")
	}
	if !errors.Is(a.Err(), ErrNoMedia) {
		t.Errorf("Err = %v", a.Err())
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("timed out after %v, before the 300 ms limit", d)
	}
}

func TestContextCancelEndsSession(t *testing.T) {
	a, b := pair(t, testConfig(), testConfig(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	a.Start(ctx, nil, nil)
	b.Start(context.Background(), nil, nil)
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case <-a.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("ctx cancel did not end the session")
	}
	if !errors.Is(a.Err(), context.Canceled) {
		t.Errorf("Err = %v", a.Err())
	}
}

func TestStartErrors(t *testing.T) {
	a, _, err := Offer(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background(), nil, nil); err == nil {
		t.Error("Start without answer succeeded")
	}
	a.Close()
	select {
	case <-a.Done():
	default:
		t.Error("Done not closed after Close of an unstarted session")
	}
	_, b := pair(t, testConfig(), testConfig(), nil)
	if err := b.SetAnswer([]byte(guideMetaAnswer107)); err == nil {
		t.Error("SetAnswer on an answering session succeeded")
	}
}

// sdesSender makes SRTP packets with a session's inbound key (what its
// peer would send), with an SSRC of its own.
type sdesSender struct {
	ctx *srtp.Context
	pkt rtp.Packet
}

func newSDESSender(t *testing.T, key sdesKey, pt uint8) *sdesSender {
	c, err := key.context(false)
	if err != nil {
		t.Fatal(err)
	}
	return &sdesSender{ctx: c, pkt: rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SSRC: 0xdead0001 + uint32(pt), SequenceNumber: 100}}}
}

func (s *sdesSender) next(t *testing.T, payload []byte, marker bool) []byte {
	s.pkt.Payload, s.pkt.Marker = payload, marker
	raw, err := s.pkt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s.pkt.SequenceNumber++
	s.pkt.Timestamp += 160
	out, err := s.ctx.EncryptRTP(nil, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDTMFAndUnknownPTDoNotBreakAudio(t *testing.T) {
	a, b := pair(t, testConfig(), testConfig(), nil)
	var sa recordSink
	ctx := context.Background()
	a.Start(ctx, nil, &sa)
	b.Start(ctx, &toneSource{hz: 1000}, nil)
	waitFrames(t, &sa, 10)

	a.mu.Lock()
	key := a.remote.key
	a.mu.Unlock()
	dst := netip.MustParseAddrPort(a.conn.LocalAddr().String())
	dtmf := newSDESSender(t, key, 126)
	unknown := newSDESSender(t, key, 99)
	// Send from b's socket so symmetric-RTP latching keeps pointing at b.
	for i := range 20 {
		ev := []byte{5, 10, 0, byte(i * 8)}
		if i >= 17 {
			ev[1] |= 0x80 // end
		}
		b.conn.WriteToUDPAddrPort(dtmf.next(t, ev, i == 0), dst)
		b.conn.WriteToUDPAddrPort(unknown.next(t, []byte{1, 2, 3}, false), dst)
		// Plus junk and a forged packet: counted, never a crash.
		b.conn.WriteToUDPAddrPort([]byte{0x80, 111, 0, 1}, dst)
		b.conn.WriteToUDPAddrPort(append([]byte{0x80, 111, 0, byte(i), 0, 0, 0, 0, 1, 2, 3, 4}, make([]byte, 40)...), dst)
		time.Sleep(10 * time.Millisecond)
	}
	start := sa.frames()
	waitFrames(t, &sa, start+30)
	checkTone(t, "a hears b with dtmf around", sa.last(analysisLen), 1000, 440)
	st := a.Stats()
	if st.TelephoneEvents != 20 || st.UnknownPT != 20 || st.AuthFailures < 40 || st.PacketsLost > 2 {
		t.Errorf("stats %+v", st)
	}
	if !strings.HasPrefix(st.RemoteAddr, "127.0.0.1:") || st.RemoteAddr != b.conn.LocalAddr().String() {
		t.Errorf("remote %q, want b %s", st.RemoteAddr, b.conn.LocalAddr())
	}
}

// lossyRelay sits between a and b, each side told (via SDP) to talk to
// its own relay socket, and drops every nth packet in the b→a direction.
type lossyRelay struct {
	sideA, sideB *net.UDPConn
	mu           sync.Mutex
	aAddr, bAddr netip.AddrPort
	wg           sync.WaitGroup
}

func newLossyRelay(t *testing.T, dropEvery int) *lossyRelay {
	l := &lossyRelay{}
	var err error
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	if l.sideA, err = net.ListenUDP("udp4", lo); err != nil {
		t.Fatal(err)
	}
	if l.sideB, err = net.ListenUDP("udp4", lo); err != nil {
		t.Fatal(err)
	}
	forward := func(in, out *net.UDPConn, to *netip.AddrPort, dropEvery int) {
		defer l.wg.Done()
		buf := make([]byte, 2048)
		for i := 1; ; i++ {
			n, _, err := in.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			l.mu.Lock()
			dst := *to
			l.mu.Unlock()
			if (dropEvery > 0 && i%dropEvery == 0) || !dst.IsValid() {
				continue
			}
			out.WriteToUDPAddrPort(buf[:n], dst)
		}
	}
	l.wg.Add(2)
	go forward(l.sideA, l.sideB, &l.bAddr, 0)         // a → b
	go forward(l.sideB, l.sideA, &l.aAddr, dropEvery) // b → a, lossy
	t.Cleanup(func() { l.sideA.Close(); l.sideB.Close(); l.wg.Wait() })
	return l
}

func setPort(sdpText []byte, c *net.UDPConn) []byte {
	p := c.LocalAddr().(*net.UDPAddr).Port
	return regexp.MustCompile(`m=audio \d+`).ReplaceAll(sdpText, []byte("m=audio "+strconv.Itoa(p)))
}

func TestLossConcealedWithFEC(t *testing.T) {
	relay := newLossyRelay(t, 7)
	a, offer, err := Offer(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// Meta's fmtp (20 kbit/s wideband, FEC) makes b's encoder use SILK with
	// in-band FEC, as it will against Meta.
	offer = bytes.Replace(offer, []byte("a=fmtp:111 minptime=10;useinbandfec=1"),
		[]byte("a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1"), 1)
	b, answer, err := Answer(testConfig(), setPort(offer, relay.sideB))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	relay.mu.Lock()
	relay.aAddr = netip.MustParseAddrPort(a.conn.LocalAddr().String())
	relay.bAddr = netip.MustParseAddrPort(b.conn.LocalAddr().String())
	relay.mu.Unlock()
	if err := a.SetAnswer(setPort(answer, relay.sideA)); err != nil {
		t.Fatal(err)
	}
	var sa recordSink
	ctx := context.Background()
	a.Start(ctx, &toneSource{hz: 440}, &sa)
	b.Start(ctx, &toneSource{hz: 1000}, nil)
	waitFrames(t, &sa, 60)
	st := a.Stats()
	t.Logf("lost %d concealed %d (fec %d) late %d", st.PacketsLost, st.Concealed, st.FECRecovered, st.Late)
	if st.Concealed < 3 || st.PacketsLost < 3 || st.FECRecovered == 0 {
		t.Errorf("with 1/7 loss: concealed %d lost %d", st.Concealed, st.PacketsLost)
	}
	if st.RemoteAddr != relay.sideA.LocalAddr().String() {
		t.Errorf("a sends to %s, want the relay %s", st.RemoteAddr, relay.sideA.LocalAddr())
	}
	// The tone survives 14% loss (FEC/PLC), still clearly 1000 Hz. Concealed
	// frames jump in phase, which a 0.5 s Goertzel punishes out of all
	// proportion; judge 100 ms windows instead.
	pcm := sa.last(analysisLen)
	r := medianToneRatio(pcm, 1000, SampleRate/10)
	t.Logf("a hears b through loss: median 100 ms ratio at 1000 Hz %.3f (0.5 s: %.3f)", r, toneRatio(pcm, 1000))
	if r < 0.5 || medianToneRatio(pcm, 440, SampleRate/10) > 0.1 {
		t.Errorf("tone lost under packet loss: %.3f", r)
	}
}

// medianToneRatio is the median toneRatio over consecutive windows.
func medianToneRatio(pcm []int16, hz float64, win int) float64 {
	var rs []float64
	for i := 0; i+win <= len(pcm); i += win {
		rs = append(rs, toneRatio(pcm[i:i+win], hz))
	}
	if len(rs) == 0 {
		return 0
	}
	slices.Sort(rs)
	return rs[len(rs)/2]
}

// frameBench is one direction of the hot path with real keys and codecs.
func newFrameBench(tb testing.TB) (*sender, *receiver, *opus.Decoder) {
	key, err := newSDESKey(1, suite80)
	if err != nil {
		tb.Fatal(err)
	}
	tx, err := newSender(key, &remoteDesc{opusPT: 111, opus: codecInfo{fmtp: "maxaveragebitrate=20000;maxplaybackrate=16000;useinbandfec=1"}})
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
	return tx, &receiver{ctx: in, opusPT: 111}, dec
}

// BenchmarkFrame: encode + SRTP protect + unprotect + decode of one 20 ms frame.
func BenchmarkFrame(b *testing.B) {
	tx, rx, dec := newFrameBench(b)
	pcm := make([]int16, maxDecodeSamples)
	b.ReportAllocs()
	for b.Loop() {
		pkt, err := tx.frame(tx.pcm[:])
		if err != nil {
			b.Fatal(err)
		}
		payload, err := rx.unprotect(pkt)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := dec.Decode(payload, pcm); err != nil || n != FrameSamples {
			b.Fatal(n, err)
		}
	}
}

// TestSendPathAllocs measures the steady-state send path (encode, protect,
// UDP write) and fails if it allocates.
func TestSendPathAllocs(t *testing.T) {
	tx, rx, dec := newFrameBench(t)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := netip.MustParseAddrPort(conn.LocalAddr().String())
	for range 5 { // warm up per-SSRC state
		tx.frame(tx.pcm[:])
	}
	send := testing.AllocsPerRun(200, func() {
		pkt, err := tx.frame(tx.pcm[:])
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
		pkt, _ := tx.frame(tx.pcm[:])
		payload, err := rx.unprotect(pkt)
		if err != nil {
			t.Fatal(err)
		}
		dec.Decode(payload, pcm)
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
			deadline := time.Now().Add(10 * time.Second)
			for b.Stats().PacketsReceived == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			// Past first-packet logging, latching and the first RTCP round
			// (its one-time SRTCP state); the next round is 5 s away.
			for (a.Stats().RTCPReceived == 0 || b.Stats().RTCPReceived == 0) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
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

func TestIPv6Loopback(t *testing.T) {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	c.Close()
	cfg := testConfig()
	cfg.BindIP = net.IPv6loopback
	a, offer, err := Offer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if !strings.Contains(string(offer), "c=IN IP6 ::1\r\n") {
		t.Errorf("offer:\n%s", offer)
	}
	// An IPv4-bound answerer cannot take an IPv6 offer.
	if _, _, err := Answer(testConfig(), offer); err == nil {
		t.Error("IPv4 answerer accepted an IPv6 offer")
	}
	b, answer, err := Answer(cfg, offer)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.SetAnswer(answer); err != nil {
		t.Fatal(err)
	}
	var sa recordSink
	a.Start(context.Background(), nil, &sa)
	b.Start(context.Background(), &toneSource{hz: 1000}, nil)
	waitFrames(t, &sa, 30)
	checkTone(t, "ipv6", sa.last(analysisLen), 1000, 440)
	if ra := a.Stats().RemoteAddr; !strings.HasPrefix(ra, "[::1]:") {
		t.Errorf("remote %q", ra)
	}
}
