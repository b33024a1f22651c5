package metasim

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hraban/opus"
	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/waphone/waphone/internal/dsp"
)

// Meta's WebRTC media side: ICE-lite, DTLS server (a=setup:actpass in its
// offers, passive in its answers), Opus 111 + telephone-event 126, as in
// the guide's "User-initiated calls (with WebRTC media)". Built on
// pion/webrtc, independent of waphone's media package.
type metaRTC struct {
	pc    *webrtc.PeerConnection
	track *webrtc.TrackLocalStaticRTP
}

// newMetaRTC builds the peer; opusFmtp is what Meta registers for Opus
// (its own for offers, the business's for answers so pion matches it).
func newMetaRTC(m *metaMedia, opusFmtp string) (*metaRTC, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: opusFmtp,
			RTCPFeedback: []webrtc.RTCPFeedback{{Type: "transport-cc"}}},
		PayloadType: 111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: "audio/telephone-event", ClockRate: 8000},
		PayloadType:        126,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	se.SetLite(true) // Meta is ICE-lite: the business must be the controlling agent
	se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	ip := net.IP(m.ip.AsSlice())
	se.SetIPFilter(func(c net.IP) bool { return c.Equal(ip) })
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "WhatsAppTrack1")
	if err == nil {
		_, err = pc.AddTrack(track)
	}
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	r := &metaRTC{pc: pc, track: track}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		m.wg.Add(1)
		go m.rtcRecv(tr)
	})
	return r, nil
}

func (r *metaRTC) gather(desc webrtc.SessionDescription) (string, error) {
	done := webrtc.GatheringCompletePromise(r.pc)
	if err := r.pc.SetLocalDescription(desc); err != nil {
		return "", err
	}
	select {
	case <-done:
	case <-time.After(3 * time.Second):
	}
	return r.pc.LocalDescription().SDP, nil
}

// newMetaOfferDTLS is Meta's WebRTC offer for a user-initiated call.
func newMetaOfferDTLS(cfg metaMediaConfig) (*metaMedia, []byte, error) {
	m, err := newMetaMedia(cfg)
	if err != nil {
		return nil, nil, err
	}
	if m.rtc, err = newMetaRTC(m, metaOpusFmtp); err != nil {
		m.close()
		return nil, nil, fmt.Errorf("metasim webrtc: %w", err)
	}
	// Meta's offer names its one media section "audio" (the guide's sample).
	err = m.rtc.pc.GetTransceivers()[0].SetMid("audio")
	var sdp string
	if err == nil {
		var off webrtc.SessionDescription
		if off, err = m.rtc.pc.CreateOffer(nil); err == nil {
			sdp, err = m.rtc.gather(off)
		}
	}
	if err == nil {
		sdp, err = metaShapeSDP(sdp, "actpass")
	}
	if err != nil {
		m.close()
		return nil, nil, fmt.Errorf("metasim webrtc offer: %w", err)
	}
	m.offered, m.sendPT, m.recvPT, m.dtmfPT = true, 111, 111, 126
	return m, []byte(sdp), nil
}

// newMetaAnswerDTLS answers a business's WebRTC offer (ICE-lite, passive).
func newMetaAnswerDTLS(cfg metaMediaConfig, offer []byte) (*metaMedia, []byte, error) {
	m, err := newMetaMedia(cfg)
	if err != nil {
		return nil, nil, err
	}
	if m.rtc, err = newMetaRTC(m, metaOpusFmtp); err != nil { // Meta answers with its own fmtp
		m.close()
		return nil, nil, fmt.Errorf("metasim webrtc: %w", err)
	}
	err = m.rtc.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)})
	var sdp string
	if err == nil {
		var ans webrtc.SessionDescription
		if ans, err = m.rtc.pc.CreateAnswer(nil); err == nil {
			sdp, err = m.rtc.gather(ans)
		}
	}
	if err == nil {
		sdp, err = metaShapeSDP(sdp, "passive") // Meta's fmtp, not an echo of ours
	}
	if err != nil {
		m.close()
		return nil, nil, fmt.Errorf("metasim webrtc answer: %w", err)
	}
	m.sendPT, m.recvPT, m.dtmfPT = 111, 111, 126
	return m, []byte(sdp), nil
}

// completeAnswer fills in, for pion, what a plain SIP endpoint's answer to
// Meta's one-section WebRTC offer may leave out (RFC 3264 needs neither):
// a=mid (baresip 1.0 sends none; pion then cannot tie the answer's a=ssrc
// to our transceiver, drops every RTP packet as "unhandled" and never
// fires OnTrack) and a media-level a=setup where the answer has it only at
// session level (pion reads only the media level, RFC 4145 allows both).
// The mid added is the offer's; any other answer passes unchanged.
func (r *metaRTC) completeAnswer(answer []byte) (string, error) {
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(answer); err != nil {
		return "", fmt.Errorf("metasim webrtc answer: %w", err)
	}
	if len(sd.MediaDescriptions) != 1 {
		return string(answer), nil
	}
	md := sd.MediaDescriptions[0]
	changed := false
	if _, ok := md.Attribute("mid"); !ok {
		mid := ""
		if ts := r.pc.GetTransceivers(); len(ts) > 0 {
			mid = ts[0].Mid()
		}
		if mid == "" {
			return string(answer), nil
		}
		md.WithValueAttribute("mid", mid)
		changed = true
	}
	if _, ok := md.Attribute("setup"); !ok {
		if setup, ok := sd.Attribute("setup"); ok {
			md.WithValueAttribute("setup", setup)
			changed = true
		}
	}
	if !changed {
		return string(answer), nil
	}
	out, err := sd.Marshal()
	if err != nil {
		return "", fmt.Errorf("metasim webrtc answer: %w", err)
	}
	return string(out), nil
}

func isWebRTCOffer(sdp []byte) bool {
	s := string(sdp)
	return strings.Contains(s, "a=fingerprint:") && !strings.Contains(s, "a=crypto:")
}

// rtcRecv records the business's audio and starts the tone once its first
// packet arrived: Meta expects the business to send first.
func (m *metaMedia) rtcRecv(tr *webrtc.TrackRemote) {
	defer m.wg.Done()
	dec, err := opus.NewDecoder(metaSampleRate, 1)
	if err != nil {
		return
	}
	pcm := make([]int16, 5760)
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		now := time.Now()
		m.mu.Lock()
		if m.st.FirstRecvAt.IsZero() {
			m.st.FirstRecvAt = now
		}
		m.st.LastRecvAt = now
		m.st.PacketsReceived++
		startSend := !m.sending
		m.sending = true
		m.mu.Unlock()
		if startSend {
			m.wg.Add(1)
			go m.rtcSend()
		}
		if pkt.PayloadType != 111 || len(pkt.Payload) == 0 {
			continue
		}
		if k, err := dec.Decode(pkt.Payload, pcm); err == nil {
			m.record(pcm[:k])
		}
	}
}

func (m *metaMedia) rtcSend() {
	defer m.wg.Done()
	enc, err := newMetaEncoder(m.cfg, 24000, false)
	if err != nil {
		m.log.Error("opus encoder", "err", err)
		return
	}
	var ids [10]byte
	_, _ = rand.Read(ids[:])
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, PayloadType: 111, SSRC: binary.BigEndian.Uint32(ids[0:]),
		Timestamp: binary.BigEndian.Uint32(ids[4:]), SequenceNumber: binary.BigEndian.Uint16(ids[8:]) & 0x7fff}}
	pcm := make([]int16, metaFrame)
	buf := make([]byte, 1500)
	tone := dsp.NewOscillator(m.cfg.ToneHz, metaSampleRate, 0.3*32767)
	pace := newFramePacer()
	defer pace.stop()
	for {
		tone.Fill(pcm)
		if n, err := enc.Encode(pcm, buf); err == nil {
			pkt.Payload = buf[:n]
			if err := m.rtc.track.WriteRTP(&pkt); err == nil {
				now := time.Now()
				m.mu.Lock()
				if m.st.FirstSentAt.IsZero() {
					m.st.FirstSentAt = now
				}
				m.st.PacketsSent++
				m.mu.Unlock()
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
