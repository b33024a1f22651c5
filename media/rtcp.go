package media

import (
	"errors"
	"math"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// RTCP: a sender report with one reception block every 5 s on the muxed
// port (the first 1 s after start), reports from the peer parsed for loss
// and round-trip time, RFC 3550 interarrival jitter on what we receive,
// and an E-model MOS estimate. The peer's loss feeds the Opus encoder's
// expected-loss setting, which is what makes in-band FEC worth its bits.

const (
	rtcpFirst    = time.Second
	rtcpInterval = 5 * time.Second
)

// quality holds the figures behind Stats' quality fields.
type quality struct {
	mu sync.Mutex
	// receive side
	jitter      float64 // RFC 3550 J, in 48 kHz units
	lastTransit int64
	haveTransit bool
	lastSR      uint32    // middle 32 bits of the peer's last SR NTP time
	lastSRAt    time.Time // when it arrived
	expPrior    uint64
	recvPrior   uint64
	// send side, from the peer's reports about us
	ourSSRC     uint32 // the SSRC their blocks about us carry
	rttMs       float64
	remoteLoss  uint8 // fraction lost (of 256) the peer reported
	lossChanged bool
}

var ntpEpoch = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)

func ntpTime(t time.Time) uint64 {
	d := t.Sub(ntpEpoch)
	sec := uint64(d / time.Second)
	frac := uint64(d%time.Second) * (1 << 32) / uint64(time.Second)
	return sec<<32 | frac
}

// onRTPArrival updates the interarrival jitter for an audio packet.
func (q *quality) onRTPArrival(h *rtp.Header, at time.Time) {
	arrival := at.UnixNano() * SampleRate / int64(time.Second)
	transit := arrival - int64(h.Timestamp)
	q.mu.Lock()
	if q.haveTransit {
		d := math.Abs(float64(transit - q.lastTransit))
		q.jitter += (d - q.jitter) / 16
	}
	q.lastTransit, q.haveTransit = transit, true
	q.mu.Unlock()
}

func (q *quality) setOurSSRC(ssrc uint32) {
	q.mu.Lock()
	q.ourSSRC = ssrc
	q.mu.Unlock()
}

// onRTCPPackets takes an authenticated compound RTCP packet from the peer.
func (q *quality) onRTCPPackets(pkts []rtcp.Packet, at time.Time) {
	now := uint32(ntpTime(at) >> 16)
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, p := range pkts {
		var blocks []rtcp.ReceptionReport
		switch r := p.(type) {
		case *rtcp.SenderReport:
			q.lastSR, q.lastSRAt = uint32(r.NTPTime>>16), at
			blocks = r.Reports
		case *rtcp.ReceiverReport:
			blocks = r.Reports
		}
		for _, b := range blocks {
			if b.SSRC != q.ourSSRC {
				continue
			}
			if b.FractionLost != q.remoteLoss {
				q.remoteLoss, q.lossChanged = b.FractionLost, true
			}
			if b.LastSenderReport != 0 {
				rtt := now - b.LastSenderReport - b.Delay // in 1/65536 s
				q.rttMs = float64(rtt) * 1000 / 65536
			}
		}
	}
}

// report builds our SR with a reception block for the peer's stream.
func (s *Session) report(tx *sender, now time.Time) *rtcp.SenderReport {
	sr := &rtcp.SenderReport{SSRC: tx.ssrc, NTPTime: ntpTime(now), RTPTime: tx.ts,
		PacketCount: uint32(s.sent.Load()), OctetCount: uint32(s.sent.Load() * 60)}
	s.rx.mu.Lock()
	t := s.rx.seq
	s.rx.mu.Unlock()
	if !t.init {
		return sr
	}
	q := &s.q
	q.mu.Lock()
	defer q.mu.Unlock()
	expected := t.cycles + uint64(t.maxSeq) - uint64(t.base) + 1
	expInt, recvInt := expected-q.expPrior, t.received-q.recvPrior
	q.expPrior, q.recvPrior = expected, t.received
	var frac uint8
	if expInt > 0 && expInt > recvInt {
		frac = uint8(min(255, (expInt-recvInt)*256/expInt))
	}
	var dlsr uint32
	if q.lastSR != 0 {
		dlsr = uint32(now.Sub(q.lastSRAt) * 65536 / time.Second)
	}
	sr.Reports = []rtcp.ReceptionReport{{
		SSRC: t.ssrc, FractionLost: frac, TotalLost: uint32(min(t.lost(), 0x7fffff)),
		LastSequenceNumber: uint32(t.cycles) | uint32(t.maxSeq), Jitter: uint32(q.jitter),
		LastSenderReport: q.lastSR, Delay: dlsr,
	}}
	return sr
}

// mos estimates the call's quality with a simplified ITU-T G.107 E-model:
// R = 93.2 - Id - Ie,eff. Opus wideband at 20 kbit/s is taken as Ie = 10
// with packet-loss robustness Bpl = 20 (FEC on); one-way delay is half the
// RTT plus 20 ms packetization and a 40 ms jitter buffer.
func mos(rttMs, jitterMs, lossPct float64) float64 {
	d := rttMs/2 + 20 + 40 + jitterMs*2
	id := 0.024 * d
	if d > 177.3 {
		id += 0.11 * (d - 177.3)
	}
	const ie, bpl = 10.0, 20.0
	ieEff := ie + (95-ie)*lossPct/(lossPct+bpl)
	r := 93.2 - id - ieEff
	switch {
	case r <= 0:
		return 1
	case r >= 100:
		return 4.5
	}
	return 1 + 0.035*r + r*(r-60)*(100-r)*7e-6
}

// sendRTCP sends our report (send goroutine only: the transport's
// outbound SRTP context is not safe for concurrent use).
func (s *Session) sendRTCP(tx *sender, now time.Time) {
	if err := s.tr.writeRTCP(s.report(tx, now)); err != nil && !errors.Is(err, errNoPath) {
		s.log.Debug("rtcp send failed", "err", err)
	}
}

// applyLoss tells the encoder the loss the peer reports, so that Opus
// spends bits on in-band FEC in proportion (never below our default).
func (s *Session) applyLoss(tx *sender) {
	s.q.mu.Lock()
	changed, frac := s.q.lossChanged, s.q.remoteLoss
	s.q.lossChanged = false
	s.q.mu.Unlock()
	if !changed {
		return
	}
	perc := max(fecLossPerc, int(frac)*100/256)
	if err := tx.enc.SetPacketLossPerc(min(perc, 50)); err != nil {
		s.log.Debug("opus loss setting failed", "err", err)
	}
}
