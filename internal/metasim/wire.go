package metasim

// Builders for the header shapes Meta's gateway puts on the wire, taken from
// the sample messages in Meta's "SIP Configuration Guide - WhatsApp Business
// Calling" (see docs). Header order follows the samples: sipgo writes headers
// in the order they were appended.

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"math/big"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

const (
	// DefaultHostname is Meta's SIP domain.
	DefaultHostname = "wa.meta.vc"
	// DefaultBusinessNumber and DefaultBusinessHost are the guide's sample
	// business number and SIP server.
	DefaultBusinessNumber = "+12145551869"
	DefaultBusinessHost   = "meta-voip.example.com"
	// DefaultFrom is the guide's sample WhatsApp user.
	DefaultFrom = "+12195550714"
	// DefaultPhoneNumberID is a made-up phone number id for the 403 text.
	DefaultPhoneNumberID = "106540352242922"

	proxyHost   = "onevc-sip-proxy.fbinfra.net"
	proxyPort   = 8191
	userAgent   = "Facebook SipGateway"
	allowHeader = "INVITE, ACK, BYE, CANCEL, NOTIFY, OPTIONS"
	smcTier     = "collaboration.sip_gateway.sip.prod"

	hdrExternalDomain = "X-FB-External-Domain"
	hdrWACID          = "x-wa-meta-wacid"
	hdrUserID         = "x-wa-meta-user-id"
	hdrParentUserID   = "x-wa-meta-parent-user-id"
	hdrUsername       = "x-wa-meta-username"
	hdrCTAPayload     = "x-wa-meta-cta-payload"
	hdrDeeplink       = "x-wa-meta-deeplink-payload"
	hdrCallDuration   = "x-wa-meta-call-duration"

	reasonNormal  = `Q.850;cause=16;text="NORMAL_CLEARING"`
	reasonNoMedia = `Q.850;cause=102;text="RECOVERY_ON_TIMER_EXPIRE"` // guessed: the guide shows no Meta BYE
	reasonNoAck   = `Q.850;cause=102;text="RECOVERY_ON_TIMER_EXPIRE"`
	reasonBadSDP  = `Q.850;cause=88;text="INCOMPATIBLE_DESTINATION"`
)

// noBuild is a sipgo ClientRequestOption that leaves the request exactly as
// built here (sipgo would otherwise add its own From/To/Via defaults).
func noBuild(_ *sipgo.Client, _ *sip.Request) error { return nil }

// newBranch is a pjsip-style branch like the guide's
// "z9hG4bKPj1e6c665db16b3ecacf32cadb4497fe77".
func newBranch() string { return "z9hG4bKPj" + randHex(16) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randAlnum is like the guide's cnonce "TY2SszvYCKitUCBlVLpGiPKMQfmBbj".
func randAlnum(n int) string {
	b := make([]byte, n)
	for i := range b {
		v, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alnum))))
		b[i] = alnum[v.Int64()]
	}
	return string(b)
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randCSeq() uint32 {
	v, _ := rand.Int(rand.Reader, big.NewInt(30000))
	return uint32(v.Int64()) + 1000
}

// newWACID builds a WhatsApp call id shaped like the guide's: "wacid." and
// unpadded base64 of a Thrift-compact-like struct holding the caller, a
// 32-hex-digit id and the callee, e.g. wacid.HBgLMTIxOTU1NTA3MTQVAgASGCA...
func newWACID(caller, callee string) string {
	str := func(s string) []byte {
		if len(s) > 127 {
			s = s[:127]
		}
		return append([]byte{0x18, byte(len(s))}, s...)
	}
	var b []byte
	b = append(b, 0x1c)
	b = append(b, str(caller)...)
	b = append(b, 0x15, 0x02, 0x00, 0x12)
	b = append(b, str(strings.ToUpper(randHex(16)))...)
	b = append(b, 0x1c)
	b = append(b, str(callee)...)
	b = append(b, 0x15, 0x02, 0x00, 0x00)
	return "wacid." + base64.RawStdEncoding.EncodeToString(b)
}

// digits strips a leading '+' (the digest username and display names are the
// number without it).
func digits(num string) string { return strings.TrimPrefix(num, "+") }

// validE164 reports whether s is '+' followed by 6..15 digits.
func validE164(s string) bool {
	if len(s) < 7 || len(s) > 16 || s[0] != '+' {
		return false
	}
	for _, r := range s[1:] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// validBSUID reports whether s looks like a business-scoped user id, e.g.
// "US.13491208655302741918": a two-letter country code, '.', digits.
func validBSUID(s string) bool {
	cc, rest, ok := strings.Cut(s, ".")
	if !ok || len(cc) != 2 || rest == "" || len(rest) > 64 {
		return false
	}
	for _, r := range cc {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	for _, r := range rest {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func validUser(s string) bool { return validE164(s) || validBSUID(s) }

func params(kv ...string) sip.HeaderParams {
	p := sip.NewParams()
	for i := 0; i+1 < len(kv); i += 2 {
		p.Add(kv[i], kv[i+1])
	}
	return p
}

// ourVia is the top Via on metasim's requests: host and port are left empty
// for sipgo's transport to fill in with the connection's local address, like
// "Via: SIP/2.0/TLS [2803:6080:f948:9597::]:47237;rport;branch=z9hG4bKPj…;alias".
func ourVia(branch string) *sip.ViaHeader {
	return &sip.ViaHeader{
		ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "TLS",
		Params: params("rport", "", "branch", branch, "alias", ""),
	}
}

// innerVias are the two Vias below the edge proxy's in the guide's INVITEs
// (Meta's internal hops). They are fixed addresses from the samples; the
// second hop repeats the top branch, as in the samples.
func innerVias(topBranch string) []sip.Header {
	return []sip.Header{
		&sip.ViaHeader{
			ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "TLS",
			Host: "2803:6080:f948:9597:7253:922a:400:0", Port: 5061,
			Params: params("branch", topBranch),
		},
		&sip.ViaHeader{
			ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "TLS",
			Host: "2803:6080:f8bc:9272:e488:9927:400:0", Port: 58279,
			Params: params("rport", "58279", "received", "2803:6080:f8bc:9272:e488:9927:400:0",
				"branch", "z9hG4bKPj"+randAlnum(32), "alias", ""),
		},
	}
}

func rrURI(host string, port int) sip.Uri {
	return sip.Uri{Scheme: "sip", Host: host, Port: port, UriParams: params("transport", "tls", "lr", "")}
}

// metaRecordRoute is "<sip:wa.meta.vc;transport=tls;lr>" then
// "<sip:onevc-sip-proxy.fbinfra.net:8191;transport=tls;lr>" as on Meta's
// INVITEs; reversed is the order on Meta's responses.
func (s *Sim) metaRecordRoute(reversed bool) []sip.Header {
	a := &sip.RecordRouteHeader{Address: rrURI(s.cfg.Hostname, 0)}
	b := &sip.RecordRouteHeader{Address: rrURI(proxyHost, proxyPort)}
	if reversed {
		return []sip.Header{b, a}
	}
	return []sip.Header{a, b}
}

// isOwnHop reports whether a route URI names one of Meta's own proxies
// (metasim drops those from the route sets it uses).
func (s *Sim) isOwnHop(u sip.Uri) bool {
	h := strings.ToLower(strings.Trim(u.Host, "[]"))
	return h == strings.ToLower(s.cfg.Hostname) || h == proxyHost
}

// metaContact is "<sip:+USER@wa.meta.vc;transport=tls;ob>;isfocus" (INVITE)
// or with ";X-FB-Sip-Smc-Tier=collaboration.sip_gateway.sip.prod" (200 OK).
func (s *Sim) metaContact(user string, tier bool) *sip.ContactHeader {
	up := params("transport", "tls", "ob", "")
	if tier {
		up.Add("X-FB-Sip-Smc-Tier", smcTier)
	}
	return &sip.ContactHeader{
		Address: sip.Uri{Scheme: "sip", User: user, Host: s.cfg.Hostname, UriParams: up},
		Params:  params("isfocus", ""),
	}
}

// userHeaders returns the x-wa-meta-* identity headers that are set.
func userHeaders(u UserInfo) []sip.Header {
	var hs []sip.Header
	if u.UserID != "" {
		hs = append(hs, sip.NewHeader(hdrUserID, u.UserID))
	}
	if u.ParentUserID != "" {
		hs = append(hs, sip.NewHeader(hdrParentUserID, u.ParentUserID))
	}
	if u.Username != "" {
		hs = append(hs, sip.NewHeader(hdrUsername, u.Username))
	}
	return hs
}

// respOpts controls the optional parts of a response built by newResponse.
type respOpts struct {
	toTag string // added to To if it has none
	noTag bool   // strip any To tag (100 Trying)
	ourRR bool   // Meta's Record-Route pair (response order) first
	reqRR bool   // copy the request's Record-Route headers
}

// newResponse builds a response in the order of the guide's samples:
// Via…, Record-Route…, Call-ID, From, To, CSeq. The top Via gets rport and
// received filled in like Meta's edge does.
func newResponse(s *Sim, req *sip.Request, code int, reason string, o respOpts) *sip.Response {
	res := sip.NewResponse(code, reason)
	res.SipVersion = "SIP/2.0"
	for i, h := range req.GetHeaders("Via") {
		v, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		v = v.Clone()
		if i == 0 {
			if host, port, err := net.SplitHostPort(req.Source()); err == nil {
				if val, ok := v.Params.Get("rport"); ok && val == "" {
					v.Params.Add("rport", port)
				}
				if v.Host != host {
					v.Params.Add("received", host)
				}
			}
		}
		res.AppendHeader(v)
	}
	if o.ourRR && s != nil {
		for _, h := range s.metaRecordRoute(true) {
			res.AppendHeader(h)
		}
	}
	if o.reqRR {
		for _, h := range req.GetHeaders("Record-Route") {
			res.AppendHeader(sip.HeaderClone(h))
		}
	}
	if h := req.CallID(); h != nil {
		res.AppendHeader(sip.HeaderClone(h))
	}
	if h := req.From(); h != nil {
		res.AppendHeader(sip.HeaderClone(h))
	}
	if h := req.To(); h != nil {
		to := sip.HeaderClone(h).(*sip.ToHeader)
		if o.noTag {
			to.Params.Remove("tag")
		} else if o.toTag != "" && !to.Params.Has("tag") {
			if to.Params == nil {
				to.Params = sip.NewParams()
			}
			to.Params.Add("tag", o.toTag)
		}
		res.AppendHeader(to)
	}
	if h := req.CSeq(); h != nil {
		res.AppendHeader(sip.HeaderClone(h))
	}
	return res
}

// reverseRoutes turns Record-Route headers into a route set (UAC order when
// reverse is true) without Meta's own hops.
func (s *Sim) routeSet(hs []sip.Header, reverse bool) []sip.Uri {
	var out []sip.Uri
	for _, h := range hs {
		rr, ok := h.(*sip.RecordRouteHeader)
		if !ok {
			continue
		}
		if s.isOwnHop(rr.Address) {
			continue
		}
		out = append(out, *rr.Address.Clone())
	}
	if reverse {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out
}

// hostPort renders a URI's host and port (default 5061) for dialing.
func hostPort(u sip.Uri) string {
	port := u.Port
	if port == 0 {
		port = sip.DefaultTlsPort
	}
	return net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(port))
}
