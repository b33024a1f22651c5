package metasim

// Meta's side of a call's media for the emulator: SDES-keyed SRTP with Opus,
// shaped like the SDP samples in Meta's Business Calling guide. It is a
// deliberately separate, small implementation (it must not share code with
// waphone/media, or the two could agree on the same mistake).
//
// Behaviour copied from Meta: it sends nothing until the business's first
// valid SRTP packet arrived, then sends to wherever that packet came from.

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hraban/opus"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/waphone/waphone/internal/dsp"
)

const (
	metaSampleRate  = 48000
	metaFrame       = 960 // 20 ms mono
	metaRecordLimit = 30 * metaSampleRate
	metaSuite       = "AES_CM_128_HMAC_SHA1_80"
	metaOpusFmtp    = "maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1"
)

type metaMediaConfig struct {
	BindIP         net.IP // also the c= address; nil = 127.0.0.1
	ToneHz         float64
	NoMediaTimeout time.Duration // 0 = disabled
	KeyExchange    string        // "dtls" = WebRTC media for calls metasim offers
	OpusComplexity int           // 0 = libopus's default
	Logger         *slog.Logger
}

// newMetaEncoder is metasim's Opus encoder: mono 48 kHz VoIP at bitrate,
// with in-band FEC when fec.
func newMetaEncoder(cfg metaMediaConfig, bitrate int, fec bool) (*opus.Encoder, error) {
	enc, err := opus.NewEncoder(metaSampleRate, 1, opus.AppVoIP)
	if err != nil {
		return nil, fmt.Errorf("opus encoder: %w", err)
	}
	err = errors.Join(enc.SetBitrate(bitrate), enc.SetDTX(false))
	if fec {
		err = errors.Join(err, enc.SetInBandFEC(true), enc.SetPacketLossPerc(10))
	}
	if cfg.OpusComplexity > 0 {
		err = errors.Join(err, enc.SetComplexity(min(cfg.OpusComplexity, 10)))
	}
	if err != nil {
		return nil, fmt.Errorf("opus encoder settings: %w", err)
	}
	return enc, nil
}

type metaMediaStats struct {
	PacketsReceived uint64
	PacketsSent     uint64
	AuthFailures    uint64
	FirstRecvAt     time.Time
	FirstSentAt     time.Time
	LastRecvAt      time.Time
}

type metaMedia struct {
	cfg      metaMediaConfig
	rtc      *metaRTC // WebRTC (DTLS-SRTP) media instead of SDES
	log      *slog.Logger
	conn     *net.UDPConn
	ip       netip.Addr
	port     int
	localKey []byte // 30 bytes key||salt, ours (we encrypt with it)
	tag      int
	offered  bool // we made the offer (user-initiated call)

	mu             sync.Mutex
	remoteKey      []byte
	remoteAddr     netip.AddrPort
	sendPT         uint8
	recvPT         uint8
	dtmfPT         int
	rec            []int16
	early          []byte // SDP applied from a 183
	st             metaMediaStats
	sentBeforeRecv bool
	started        bool
	sending        bool

	keyReady    chan struct{} // closed once the peer's key is known
	keyOnce     sync.Once
	noMediaCh   chan struct{}
	noMediaOnce sync.Once
	quit        chan struct{}
	closeOnce   sync.Once
	wg          sync.WaitGroup
}

func newMetaMedia(cfg metaMediaConfig) (*metaMedia, error) {
	ip := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	if a, ok := netip.AddrFromSlice(cfg.BindIP); ok {
		ip = a.Unmap()
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil, fmt.Errorf("metasim media: listen: %w", err)
	}
	key := make([]byte, 30)
	if _, err := rand.Read(key); err != nil {
		conn.Close()
		return nil, fmt.Errorf("metasim media: key: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	return &metaMedia{
		cfg: cfg, log: log.With("component", "metasim-media", "port", port),
		conn: conn, ip: ip, port: port, localKey: key, dtmfPT: -1,
		keyReady: make(chan struct{}), noMediaCh: make(chan struct{}), quit: make(chan struct{}),
	}, nil
}

func metaUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// metaSDP renders the guide's shape. Meta puts c= inside the m= section and
// answers with an o= that always says 127.0.0.1 and version 2.
func (m *metaMedia) metaSDP(opusPT uint8, dtmfPT int, tag int) []byte {
	var ssrc [4]byte
	_, _ = rand.Read(ssrc[:])
	id := metaUUID()
	fmts := strconv.Itoa(int(opusPT))
	if dtmfPT >= 0 {
		fmts += " " + strconv.Itoa(dtmfPT)
	}
	ipv := "IP4"
	if m.ip.Is6() {
		ipv = "IP6"
	}
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f+"\r\n", a...) }
	w("v=0")
	w("o=- %d 2 IN IP4 127.0.0.1", time.Now().UnixMilli())
	w("s=-")
	w("t=0 0")
	w("a=group:BUNDLE audio")
	w("a=msid-semantic: WMS %s", id)
	w("m=audio %d RTP/SAVP %s", m.port, fmts)
	w("c=IN %s %s", ipv, m.ip)
	w("a=rtcp:9 IN IP4 0.0.0.0")
	w("a=mid:audio")
	w("a=sendrecv")
	w("a=msid:%s WhatsAppTrack1", id)
	w("a=rtcp-mux")
	w("a=crypto:%d %s inline:%s", tag, metaSuite, base64.StdEncoding.EncodeToString(m.localKey))
	w("a=rtpmap:%d opus/48000/2", opusPT)
	w("a=fmtp:%d %s", opusPT, metaOpusFmtp)
	if dtmfPT >= 0 {
		w("a=rtpmap:%d telephone-event/8000", dtmfPT)
	}
	w("a=maxptime:20")
	w("a=ptime:20")
	w("a=ssrc:%d cname:WhatsAppAudioStream1", binary.BigEndian.Uint32(ssrc[:]))
	return []byte(b.String())
}

// newMetaOffer is Meta's INVITE SDP for a user-initiated call (SDES, or
// WebRTC when cfg.KeyExchange is "dtls").
func newMetaOffer(cfg metaMediaConfig) (*metaMedia, []byte, error) {
	if cfg.KeyExchange == "dtls" {
		return newMetaOfferDTLS(cfg)
	}
	m, err := newMetaMedia(cfg)
	if err != nil {
		return nil, nil, err
	}
	m.offered, m.tag, m.sendPT, m.recvPT, m.dtmfPT = true, 1, 111, 111, 126
	return m, m.metaSDP(111, 126, 1), nil
}

// metaRemote is what metasim takes from the business's SDP.
type metaRemote struct {
	addr   netip.AddrPort
	opusPT uint8
	dtmfPT int
	tag    int
	key    []byte
}

func parseMetaRemote(raw []byte, wantTag int) (metaRemote, error) {
	r := metaRemote{dtmfPT: -1}
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(raw); err != nil {
		return r, fmt.Errorf("metasim media: parse sdp: %w", err)
	}
	var md *sdp.MediaDescription
	for _, d := range sd.MediaDescriptions {
		if d.MediaName.Media == "audio" && d.MediaName.Port.Value != 0 {
			md = d
			break
		}
	}
	if md == nil {
		return r, errors.New("metasim media: no active audio m= line")
	}
	if p := strings.Join(md.MediaName.Protos, "/"); p != "RTP/SAVP" && p != "RTP/SAVPF" {
		return r, fmt.Errorf("metasim media: transport %s is not SDES SRTP", p)
	}
	names := map[string]string{}
	for _, a := range md.Attributes {
		if a.Key == "rtpmap" {
			pt, enc, _ := strings.Cut(a.Value, " ")
			names[pt] = strings.ToLower(enc)
		}
	}
	foundOpus := false
	for _, f := range md.MediaName.Formats {
		n := names[f]
		pt, err := strconv.Atoi(f)
		if err != nil || pt < 0 || pt > 127 {
			continue
		}
		switch {
		case !foundOpus && strings.HasPrefix(n, "opus/48000"):
			r.opusPT, foundOpus = uint8(pt), true
		case r.dtmfPT < 0 && n == "telephone-event/8000":
			r.dtmfPT = pt
		}
	}
	if !foundOpus {
		return r, errors.New("metasim media: no opus/48000 offered")
	}
	for _, a := range md.Attributes {
		if a.Key != "crypto" {
			continue
		}
		f := strings.Fields(a.Value)
		if len(f) < 3 || f[1] != metaSuite || !strings.HasPrefix(f[2], "inline:") {
			continue
		}
		tag, err := strconv.Atoi(f[0])
		if err != nil || (wantTag >= 0 && tag != wantTag) {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(strings.SplitN(strings.TrimPrefix(f[2], "inline:"), "|", 2)[0])
		if err != nil || len(key) != 30 {
			continue
		}
		r.tag, r.key = tag, key
		break
	}
	if r.key == nil {
		return r, errors.New("metasim media: no usable a=crypto " + metaSuite)
	}
	ci := md.ConnectionInformation
	if ci == nil {
		ci = sd.ConnectionInformation
	}
	if ci == nil || ci.Address == nil {
		return r, errors.New("metasim media: no c= line")
	}
	ip, err := netip.ParseAddr(ci.Address.Address)
	if err != nil {
		return r, fmt.Errorf("metasim media: c= address: %w", err)
	}
	r.addr = netip.AddrPortFrom(ip.Unmap(), uint16(md.MediaName.Port.Value))
	return r, nil
}

// newMetaAnswer is Meta's 200 OK SDP for a business-initiated SDES call: it
// mirrors the business's Opus/telephone-event PTs and crypto tag.
func newMetaAnswer(cfg metaMediaConfig, offer []byte) (*metaMedia, []byte, error) {
	if isWebRTCOffer(offer) {
		return newMetaAnswerDTLS(cfg, offer)
	}
	r, err := parseMetaRemote(offer, -1)
	if err != nil {
		return nil, nil, err
	}
	m, err := newMetaMedia(cfg)
	if err != nil {
		return nil, nil, err
	}
	m.tag, m.sendPT, m.recvPT, m.dtmfPT = r.tag, r.opusPT, r.opusPT, r.dtmfPT
	m.applyRemote(r)
	return m, m.metaSDP(r.opusPT, r.dtmfPT, r.tag), nil
}

// setAnswer takes the business's 200 OK SDP for Meta's offer.
// setEarly applies a 183's SDP (early media): ICE/DTLS can complete while
// the phone rings, so audio flows from the first packet after 200 OK.
func (m *metaMedia) setEarly(answer []byte) error {
	m.mu.Lock()
	done := m.early != nil
	m.mu.Unlock()
	if done {
		return nil
	}
	if err := m.setAnswer(answer); err != nil {
		return err
	}
	m.mu.Lock()
	m.early = bytes.Clone(answer)
	m.mu.Unlock()
	return nil
}

func (m *metaMedia) setAnswer(answer []byte) error {
	m.mu.Lock()
	same := m.early != nil && bytes.Equal(m.early, answer)
	m.mu.Unlock()
	if same { // the 200 repeats the 183's SDP: media is already set up
		return nil
	}
	if m.rtc != nil {
		sdp, err := m.rtc.completeAnswer(answer)
		if err != nil {
			return err
		}
		return m.rtc.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp})
	}
	if !m.offered {
		return errors.New("metasim media: setAnswer on an answering session")
	}
	r, err := parseMetaRemote(answer, m.tag)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.sendPT, m.recvPT = r.opusPT, r.opusPT
	m.mu.Unlock()
	m.applyRemote(r)
	return nil
}

func (m *metaMedia) applyRemote(r metaRemote) {
	m.mu.Lock()
	if m.remoteKey == nil {
		m.remoteKey, m.remoteAddr = r.key, r.addr
	}
	m.mu.Unlock()
	m.keyOnce.Do(func() { close(m.keyReady) })
}

// start runs the receive loop (reading begins once the peer's key is known;
// until then packets wait in the socket buffer) and the no-media watchdog.
// Sending starts only after the business's first valid packet.
func (m *metaMedia) start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return
	}
	select {
	case <-m.quit:
		return
	default:
	}
	m.started = true
	if m.rtc != nil { // pion receives; OnTrack starts the reader
		m.wg.Add(1)
		go m.watchdog()
		return
	}
	m.wg.Add(2)
	go m.recvLoop()
	go m.watchdog()
}

func (m *metaMedia) watchdog() {
	defer m.wg.Done()
	if m.cfg.NoMediaTimeout <= 0 {
		return
	}
	since := time.Now()
	t := time.NewTicker(max(m.cfg.NoMediaTimeout/10, 5*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-m.quit:
			return
		case now := <-t.C:
			m.mu.Lock()
			last := m.st.LastRecvAt
			m.mu.Unlock()
			if last.IsZero() {
				last = since
			}
			if now.Sub(last) > m.cfg.NoMediaTimeout {
				m.noMediaOnce.Do(func() { close(m.noMediaCh) })
				m.log.Info("no media from business", "timeout", m.cfg.NoMediaTimeout)
				return
			}
		}
	}
}

func (m *metaMedia) recvLoop() {
	defer m.wg.Done()
	select {
	case <-m.quit:
		return
	case <-m.keyReady:
	}
	m.mu.Lock()
	key := m.remoteKey
	m.mu.Unlock()
	in, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80, srtp.SRTPReplayProtection(256))
	if err != nil {
		m.log.Error("srtp context", "err", err)
		return
	}
	dec, err := opus.NewDecoder(metaSampleRate, 1)
	if err != nil {
		m.log.Error("opus decoder", "err", err)
		return
	}
	buf := make([]byte, 2048)
	pcm := make([]int16, 5760)
	var hdr rtp.Header
	var lastSeq uint16
	haveSeq := false
	for {
		n, from, err := m.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pkt := buf[:n]
		if n < 12 || pkt[1] >= 192 && pkt[1] <= 223 {
			continue // RTCP (muxed) or junk: Meta's sim ignores it
		}
		plain, err := in.DecryptRTP(nil, pkt, &hdr)
		if err != nil {
			m.mu.Lock()
			m.st.AuthFailures++
			m.mu.Unlock()
			continue
		}
		now := time.Now()
		m.mu.Lock()
		first := m.st.FirstRecvAt.IsZero()
		if first {
			m.st.FirstRecvAt = now
		}
		m.st.LastRecvAt = now
		m.st.PacketsReceived++
		m.remoteAddr = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		recvPT := m.recvPT
		startSend := !m.sending
		m.sending = true
		m.mu.Unlock()
		if startSend {
			m.log.Debug("first business packet, starting tone", "from", from)
			m.wg.Add(1)
			go m.sendLoop()
		}
		if hdr.PayloadType != recvPT {
			continue
		}
		hl, err := hdr.Unmarshal(plain)
		if err != nil || hl > len(plain) {
			continue
		}
		payload := plain[hl:]
		if hdr.Padding && len(payload) > 0 && int(payload[len(payload)-1]) <= len(payload) {
			payload = payload[:len(payload)-int(payload[len(payload)-1])]
		}
		// No jitter buffer: play in arrival order, conceal small gaps so the
		// recording keeps real time, skip reordered/duplicate packets.
		if haveSeq {
			gap := int(int16(hdr.SequenceNumber - lastSeq))
			if gap <= 0 {
				continue
			}
			for i := 1; i < gap && i <= 10; i++ {
				if dec.DecodePLC(pcm[:metaFrame:metaFrame]) == nil {
					m.record(pcm[:metaFrame])
				}
			}
		}
		lastSeq, haveSeq = hdr.SequenceNumber, true
		if len(payload) == 0 {
			continue
		}
		if k, err := dec.Decode(payload, pcm); err == nil {
			m.record(pcm[:k])
		}
	}
}

func (m *metaMedia) record(p []int16) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if room := metaRecordLimit - len(m.rec); room > 0 {
		m.rec = append(m.rec, p[:min(room, len(p))]...)
	}
}

func (m *metaMedia) sendLoop() {
	defer m.wg.Done()
	out, err := srtp.CreateContext(m.localKey[:16], m.localKey[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		m.log.Error("srtp context", "err", err)
		return
	}
	enc, err := newMetaEncoder(m.cfg, 24000, true)
	if err != nil {
		m.log.Error("opus encoder", "err", err)
		return
	}
	var ids [10]byte
	_, _ = rand.Read(ids[:])
	pkt := rtp.Packet{Header: rtp.Header{
		Version: 2, Marker: true, SSRC: binary.BigEndian.Uint32(ids[0:]),
		Timestamp: binary.BigEndian.Uint32(ids[4:]), SequenceNumber: binary.BigEndian.Uint16(ids[8:]) & 0x7fff,
	}}
	pcm := make([]int16, metaFrame)
	opusBuf := make([]byte, 1500)
	tone := dsp.NewOscillator(m.cfg.ToneHz, metaSampleRate, 0.3*32767)
	pace := newFramePacer()
	defer pace.stop()
	for {
		tone.Fill(pcm)
		n, err := enc.Encode(pcm, opusBuf)
		if err == nil {
			m.mu.Lock()
			pkt.PayloadType = m.sendPT
			dst := m.remoteAddr
			m.mu.Unlock()
			pkt.Payload = opusBuf[:n]
			raw, err := pkt.Marshal()
			if err == nil {
				raw, err = out.EncryptRTP(nil, raw, nil)
			}
			if err == nil {
				if _, err := m.conn.WriteToUDPAddrPort(raw, dst); err == nil {
					now := time.Now()
					m.mu.Lock()
					if m.st.FirstSentAt.IsZero() {
						m.st.FirstSentAt = now
						if m.st.FirstRecvAt.IsZero() {
							m.sentBeforeRecv = true
						}
					}
					m.st.PacketsSent++
					m.mu.Unlock()
				}
			}
		}
		pkt.Marker = false
		pkt.SequenceNumber++
		pkt.Timestamp += metaFrame
		if !pace.wait(m.quit) {
			return
		}
	}
}

// firstFromBusiness reports whether the business's first packet arrived
// before metasim sent anything (Meta requires the business to send first).
func (m *metaMedia) firstFromBusiness() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.st.FirstRecvAt.IsZero() || m.sentBeforeRecv {
		return false
	}
	return m.st.FirstSentAt.IsZero() || !m.st.FirstSentAt.Before(m.st.FirstRecvAt)
}

// recorded returns a copy of the business's decoded audio (mono 48 kHz, ≤30 s).
func (m *metaMedia) recorded() []int16 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int16(nil), m.rec...)
}

func (m *metaMedia) recordedTail(n int) []int16 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int16(nil), m.rec[max(0, len(m.rec)-n):]...)
}

func (m *metaMedia) stats() metaMediaStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st
}

// noMedia is closed when NoMediaTimeout passes without a packet from the
// business; the SIP side then sends BYE, as Meta does.
func (m *metaMedia) noMedia() <-chan struct{} { return m.noMediaCh }

func (m *metaMedia) close() {
	m.closeOnce.Do(func() {
		close(m.quit)
		m.conn.Close()
		if m.rtc != nil {
			_ = m.rtc.pc.Close()
		}
	})
	m.wg.Wait()
}
