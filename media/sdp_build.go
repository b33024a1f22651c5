package media

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// Our SDES SDP, offer or answer. (DTLS-SRTP's is buildDTLSSDP's.)

// localDesc is what goes into our SDP.
type localDesc struct {
	sessID    uint64
	ip        netip.Addr
	port      int
	key       sdesKey
	protos    []string
	opusPT    uint8
	dtmfPT    int // -1 if none
	dtmf      codecInfo
	rtcpMux   bool
	mid       string
	direction string
}

func addrType(ip netip.Addr) string {
	if ip.Is4() {
		return "IP4"
	}
	return "IP6"
}

// buildSDP renders our description. For an answer, offer is the peer's
// session so that every offered m= line gets a line back (RFC 3264 §6),
// the ones we do not use with port 0.
func buildSDP(ld localDesc, offer *sdp.SessionDescription, audioIdx int) ([]byte, error) {
	ipStr := ld.ip.String()
	sd := &sdp.SessionDescription{
		Version: 0,
		Origin: sdp.Origin{
			Username: "-", SessionID: ld.sessID, SessionVersion: ld.sessID,
			NetworkType: "IN", AddressType: addrType(ld.ip), UnicastAddress: ipStr,
		},
		SessionName: "waphone",
		ConnectionInformation: &sdp.ConnectionInformation{
			NetworkType: "IN", AddressType: addrType(ld.ip), Address: &sdp.Address{Address: ipStr},
		},
		TimeDescriptions: []sdp.TimeDescription{{Timing: sdp.Timing{}}},
	}

	formats := []string{strconv.Itoa(int(ld.opusPT))}
	if ld.dtmfPT >= 0 {
		formats = append(formats, strconv.Itoa(ld.dtmfPT))
	}
	am := &sdp.MediaDescription{
		MediaName: sdp.MediaName{Media: "audio", Port: sdp.RangedPort{Value: ld.port}, Protos: ld.protos, Formats: formats},
	}
	add := func(k, v string) { am.Attributes = append(am.Attributes, sdp.NewAttribute(k, v)) }
	if ld.mid != "" {
		add("mid", ld.mid)
	}
	add("rtpmap", fmt.Sprintf("%d opus/48000/2", ld.opusPT))
	add("fmtp", fmt.Sprintf("%d %s", ld.opusPT, localOpusFmtp))
	if ld.dtmfPT >= 0 {
		add("rtpmap", fmt.Sprintf("%d %s", ld.dtmfPT, ld.dtmf.rtpmap()))
		if ld.dtmf.hasFmtp {
			add("fmtp", fmt.Sprintf("%d %s", ld.dtmfPT, ld.dtmf.fmtp))
		}
	}
	add("crypto", ld.key.attr())
	if ld.rtcpMux {
		am.Attributes = append(am.Attributes, sdp.NewPropertyAttribute("rtcp-mux"))
	}
	add("ptime", "20")
	add("maxptime", "20")
	am.Attributes = append(am.Attributes, sdp.NewPropertyAttribute(ld.direction))

	if offer != nil && ld.mid != "" && bundleHas(offer, ld.mid) {
		// RFC 8843 §7.3: a group only if offered, with only the sections we accept.
		sd.Attributes = append(sd.Attributes, sdp.NewAttribute("group", "BUNDLE "+ld.mid))
	}
	sd.MediaDescriptions = sections(am, offer, audioIdx)
	b, err := sd.Marshal()
	if err != nil {
		return nil, fmt.Errorf("media: marshal sdp: %w", err)
	}
	return b, nil
}

// sections are our m= lines: am alone in an offer (offer nil); in an
// answer one per offered line, in order, am at idx and the others
// rejected (RFC 3264 §6).
func sections(am *sdp.MediaDescription, offer *sdp.SessionDescription, idx int) []*sdp.MediaDescription {
	if offer == nil {
		return []*sdp.MediaDescription{am}
	}
	out := make([]*sdp.MediaDescription, 0, len(offer.MediaDescriptions))
	for i, o := range offer.MediaDescriptions {
		if i == idx {
			out = append(out, am)
			continue
		}
		out = append(out, rejectedSection(o))
	}
	return out
}

// rejectedSection answers an offered m= line we do not take: port 0, the
// offer's protocol and first format (RFC 3264 §6), its mid if it had one.
func rejectedSection(o *sdp.MediaDescription) *sdp.MediaDescription {
	f := o.MediaName.Formats
	if len(f) == 0 {
		f = []string{"0"}
	}
	md := &sdp.MediaDescription{MediaName: sdp.MediaName{Media: o.MediaName.Media, Port: sdp.RangedPort{Value: 0}, Protos: o.MediaName.Protos, Formats: f[:1]}}
	if mid, ok := o.Attribute("mid"); ok {
		md.Attributes = append(md.Attributes, sdp.NewAttribute("mid", mid))
	}
	return md
}

// bundleHas: the offer's BUNDLE group names mid.
func bundleHas(sd *sdp.SessionDescription, mid string) bool {
	for _, a := range sd.Attributes {
		if !strings.EqualFold(a.Key, "group") {
			continue
		}
		f := strings.Fields(a.Value)
		if len(f) > 0 && strings.EqualFold(f[0], "BUNDLE") && slices.Contains(f[1:], mid) {
			return true
		}
	}
	return false
}
