package sip

import (
	"log/slog"
	"strconv"
	"strings"

	ssip "github.com/emiago/sipgo/sip"
)

// Meta's custom headers, as the guide names them. Header lookup in sipgo is
// case-insensitive, so the spelling here only matters for what we send.
const (
	HeaderWACID           = "x-wa-meta-wacid"
	HeaderUserID          = "x-wa-meta-user-id"
	HeaderParentUserID    = "x-wa-meta-parent-user-id"
	HeaderUsername        = "x-wa-meta-username"
	HeaderCTAPayload      = "x-wa-meta-cta-payload"
	HeaderDeeplinkPayload = "x-wa-meta-deeplink-payload"
	HeaderCallDuration    = "x-wa-meta-call-duration"
)

// CallInfo is what Meta tells us about the WhatsApp user and the call.
// Every field is optional on the wire.
type CallInfo struct {
	CallID          string `json:"call_id"`
	WACID           string `json:"wacid,omitempty"`
	Remote          string `json:"remote"` // E.164 number (with +) or a BSUID when the number is withheld
	DisplayName     string `json:"display_name,omitempty"`
	UserID          string `json:"user_id,omitempty"` // BSUID
	ParentUserID    string `json:"parent_user_id,omitempty"`
	Username        string `json:"username,omitempty"`
	CTAPayload      string `json:"cta_payload,omitempty"`
	DeeplinkPayload string `json:"deeplink_payload,omitempty"`
	// DurationSec is Meta's own count, from x-wa-meta-call-duration on its BYE; -1 when absent.
	DurationSec int `json:"duration_sec"`
}

// merge fills fields that are still empty from another message of the
// same call (Meta repeats the user headers on INVITE, 200 OK and BYE).
func (ci *CallInfo) merge(m interface{ GetHeader(string) ssip.Header }) {
	set := func(dst *string, name string) {
		if h := m.GetHeader(name); h != nil && *dst == "" {
			*dst = strings.TrimSpace(h.Value())
		}
	}
	set(&ci.WACID, HeaderWACID)
	set(&ci.UserID, HeaderUserID)
	set(&ci.ParentUserID, HeaderParentUserID)
	set(&ci.Username, HeaderUsername)
	set(&ci.CTAPayload, HeaderCTAPayload)
	set(&ci.DeeplinkPayload, HeaderDeeplinkPayload)
	if h := m.GetHeader(HeaderCallDuration); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n >= 0 {
			ci.DurationSec = n
		}
	}
}

// callInfoFromInvite builds the call info for a call Meta offers us.
func callInfoFromInvite(req *ssip.Request) CallInfo {
	ci := CallInfo{DurationSec: -1}
	if h := req.CallID(); h != nil {
		ci.CallID = h.Value()
	}
	if f := req.From(); f != nil {
		ci.Remote = f.Address.User
		ci.DisplayName = f.DisplayName
	}
	ci.merge(req)
	if ci.WACID == "" {
		ci.WACID = wacidFromCallID(ci.CallID)
	}
	return ci
}

// wacidFromCallID recovers the WACID from Meta's Call-ID
// ("outgoing:wacid.HBgL..."), for INVITEs that lack x-wa-meta-wacid.
func wacidFromCallID(callID string) string {
	if i := strings.Index(callID, "wacid."); i >= 0 {
		return callID[i:]
	}
	return ""
}

// LogValue keeps the call-info log line compact and never includes payloads
// verbatim beyond a bounded length (they are business-controlled strings).
func (ci CallInfo) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("call_id", ci.CallID),
		slog.String("remote", ci.Remote),
	}
	add := func(k, v string) {
		if v != "" {
			if len(v) > 128 {
				v = v[:128] + "…"
			}
			attrs = append(attrs, slog.String(k, v))
		}
	}
	add("wacid", ci.WACID)
	add("user_id", ci.UserID)
	add("parent_user_id", ci.ParentUserID)
	add("username", ci.Username)
	add("cta_payload", ci.CTAPayload)
	add("deeplink_payload", ci.DeeplinkPayload)
	if ci.DurationSec >= 0 {
		attrs = append(attrs, slog.Int("meta_duration_s", ci.DurationSec))
	}
	return slog.GroupValue(attrs...)
}
