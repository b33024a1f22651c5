package sip

import "strings"

// NoPermission says whether Meta refused our INVITE because the WhatsApp
// user has not allowed the business to call (the guide's first
// prerequisite of business-initiated calls). The guide does not show
// Meta's answer for that case; this treats a 403 or 480 whose reason
// phrase, Warning or Reason header mentions permission as such (Meta
// explains its 403s in a Warning, as in the guide's example). See
// docs/meta-wire.md.
func (e *CallError) NoPermission() bool {
	if e == nil || (e.Status != 403 && e.Status != 480) {
		return false
	}
	text := strings.ToLower(e.Reason + " " + e.Warning + " " + e.ReasonHeader)
	return strings.Contains(text, "permission")
}
