package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// waitFor polls cond until it holds, failing the test with what() after
// timeout. Tests wait for conditions with it, never for a fixed time: on a
// loaded host everything takes longer, but happens in the same order.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitFrames(t *testing.T, r *recordSink, n int) {
	t.Helper()
	waitFor(t, 10*time.Second, func() bool { return r.frames() >= n },
		func() string { return fmt.Sprintf("sink got %d frames, want %d", r.frames(), n) })
}

// waitStat polls a session's Stats until cond holds.
func waitStat(t *testing.T, s *Session, what string, cond func(Stats) bool) {
	t.Helper()
	waitFor(t, 10*time.Second, func() bool { return cond(s.Stats()) },
		func() string { return fmt.Sprintf("%s; stats %+v", what, s.Stats()) })
}

// sdesConn is an SDES session's RTP socket.
func sdesConn(t *testing.T, s *Session) *net.UDPConn {
	t.Helper()
	tr, ok := s.tr.(*sdesTransport)
	if !ok {
		t.Fatalf("transport %T, want SDES", s.tr)
	}
	return tr.conn
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
		// Counters, not time: on a loaded host 50 frames may take longer.
		waitStat(t, s, name+" sends and receives", func(st Stats) bool { return st.PacketsSent >= 40 && st.PacketsReceived >= 40 })
		st := s.Stats()
		if st.AuthFailures != 0 || st.FirstSentAt.IsZero() || st.FirstReceivedAt.IsZero() {
			t.Errorf("%s stats %+v", name, st)
		}
		if st.Codec != "opus/48000/2 pt 111" || !strings.HasPrefix(st.RemoteAddr, "127.0.0.1:") {
			t.Errorf("%s codec %q remote %q", name, st.Codec, st.RemoteAddr)
		}
		if st.PacketsLost > 2 {
			t.Errorf("%s lost %d on loopback", name, st.PacketsLost)
		}
	}
	// Mute: packets keep flowing, the far end hears silence. Every packet a
	// counts after this sample is muted but at most one (a tick that read
	// the flag just before SetMute).
	a.SetMute(true)
	sentAtMute := a.Stats().PacketsSent
	waitStat(t, a, "mute paused the packet stream", func(st Stats) bool { return st.PacketsSent >= sentAtMute+40 })
	// Once b has taken more muted packets than its jitter buffer's ring
	// holds, nothing from before the mute is left to play (loopback loses
	// at most a couple, hence the margin). Then let b play enough for the
	// window, plus a few frames for a resync's concealment to pass.
	waitStat(t, b, "b receives the muted stream", func(st Stats) bool {
		return st.PacketsReceived >= sentAtMute+1+jbSize+10
	})
	const window = analysisLen / 2
	waitFrames(t, &sb, sb.frames()+window/FrameSamples+1+maxPLCRun+5)
	muted := sb.last(window)
	var peak int16
	for _, v := range muted {
		peak = max(peak, v, -v)
	}
	if peak > 300 || toneRatio(muted, 440) > 0.5 && peak > 50 {
		t.Errorf("muted audio still audible: peak %d", peak)
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
	waitStat(t, a, "no packets", func(st Stats) bool { return st.PacketsReceived > 0 })
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
	waitStat(t, a, "a never sent", func(st Stats) bool { return st.PacketsSent > 0 })
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
	bConn := sdesConn(t, b)
	dst := netip.MustParseAddrPort(sdesConn(t, a).LocalAddr().String())
	dtmf := newSDESSender(t, key, 126)
	unknown := newSDESSender(t, key, 99)
	// Send from b's socket so symmetric-RTP latching keeps pointing at b.
	for i := range 20 {
		ev := []byte{5, 10, 0, byte(i * 8)}
		if i >= 17 {
			ev[1] |= 0x80 // end
		}
		bConn.WriteToUDPAddrPort(dtmf.next(t, ev, i == 0), dst)
		bConn.WriteToUDPAddrPort(unknown.next(t, []byte{1, 2, 3}, false), dst)
		// Plus junk and a forged packet: counted, never a crash.
		bConn.WriteToUDPAddrPort([]byte{0x80, 111, 0, 1}, dst)
		bConn.WriteToUDPAddrPort(append([]byte{0x80, 111, 0, byte(i), 0, 0, 0, 0, 1, 2, 3, 4}, make([]byte, 40)...), dst)
		time.Sleep(10 * time.Millisecond) // pacing, not waiting: no burst into the socket buffer
	}
	// Every authenticated packet counted (the forged ones fail first or last).
	waitStat(t, a, "dtmf and unknown-PT packets counted", func(st Stats) bool {
		return st.TelephoneEvents >= 20 && st.UnknownPT >= 20 && st.AuthFailures >= 40
	})
	start := sa.frames()
	waitFrames(t, &sa, start+30)
	checkTone(t, "a hears b with dtmf around", sa.last(analysisLen), 1000, 440)
	st := a.Stats()
	if st.TelephoneEvents != 20 || st.UnknownPT != 20 || st.AuthFailures < 40 || st.PacketsLost > 2 {
		t.Errorf("stats %+v", st)
	}
	if !strings.HasPrefix(st.RemoteAddr, "127.0.0.1:") || st.RemoteAddr != bConn.LocalAddr().String() {
		t.Errorf("remote %q, want b %s", st.RemoteAddr, bConn.LocalAddr())
	}
}

// lossyRelay sits between a and b, each side told (via SDP) to talk to
// its own relay socket, and drops every nth packet in the b→a direction
// (and delays every other one there by 6 ms).
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
			if dropEvery > 0 && i%2 == 0 {
				// The lossy way also has jitter (every other packet 6 ms
				// late), as a lossy path does: FEC needs the next packet
				// buffered when a lost one's turn comes, and only a
				// jittery path gets a playout depth of two. Without it,
				// whether FEC helps is down to the phase of two clocks.
				pkt := append([]byte(nil), buf[:n]...)
				l.wg.Add(1)
				time.AfterFunc(6*time.Millisecond, func() {
					defer l.wg.Done()
					out.WriteToUDPAddrPort(pkt, dst)
				})
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
	relay.aAddr = netip.MustParseAddrPort(sdesConn(t, a).LocalAddr().String())
	relay.bAddr = netip.MustParseAddrPort(sdesConn(t, b).LocalAddr().String())
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
