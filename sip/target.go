package sip

import (
	"fmt"
	"strings"
)

// NormalizeTarget says whom a business-initiated call is for, as it goes
// into the Request-URI and To. A phone number ("+12195550714",
// "12195550714", "+1 219-555-0714") becomes "+" and its digits. A WhatsApp
// user known only by a business-scoped user ID ("US.13491208655302741918")
// or a parent BSUID ("US.ENT.11815799212886844830") is kept as it is: the
// guide lets Meta omit the phone number, and the call back must work then.
func NormalizeTarget(s string) (string, error) {
	s = strings.TrimSpace(s)
	if isBSUID(s) {
		return s, nil
	}
	d := strings.TrimPrefix(strings.NewReplacer(" ", "", "-", "", "(", "", ")", "", ".", "").Replace(s), "+")
	if len(d) < 6 || len(d) > 15 || strings.TrimLeft(d, "0123456789") != "" {
		return "", fmt.Errorf("%q is neither a phone number (+ and 6 to 15 digits) nor a BSUID (like US.13491208655302741918)", s)
	}
	return "+" + d, nil
}

// isBSUID: a two-letter country code, then dot-separated runs of capital
// letters and digits (digits last), at most 128 characters.
func isBSUID(s string) bool {
	parts := strings.Split(s, ".")
	if len(s) > 128 || len(parts) < 2 || len(parts[0]) != 2 || strings.Trim(parts[0], "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		return false
	}
	for _, p := range parts[1:] {
		if p == "" || strings.Trim(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
			return false
		}
	}
	last := parts[len(parts)-1]
	return strings.Trim(last, "0123456789") == ""
}
