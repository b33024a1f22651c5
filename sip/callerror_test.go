package sip

import "testing"

func TestCallErrorNoPermission(t *testing.T) {
	for _, tc := range []struct {
		e    CallError
		want bool
	}{
		{CallError{Status: 403, Reason: "Forbidden", Warning: `399 wa.meta.vc "No approved call permission from the recipient"`}, true},
		{CallError{Status: 480, Reason: "Temporarily Unavailable", ReasonHeader: `Q.850;cause=21;text="call permission not granted"`}, true},
		{CallError{Status: 403, Reason: "Call Permission Required"}, true},
		// The guide's own 403: a From host mismatch, not a permission.
		{CallError{Status: 403, Reason: "SIP server wa.meta.vc from INVITE does not match any SIP server configured for phone number id 1",
			Warning: `399 wa.meta.vc "SIP server wa.meta.vc from INVITE does not match any SIP server configured for phone number id 1"`}, false},
		{CallError{Status: 486, Reason: "Busy Here", Warning: "permission"}, false},
		{CallError{Status: 480, Reason: "Temporarily Unavailable"}, false},
	} {
		if got := tc.e.NoPermission(); got != tc.want {
			t.Errorf("%+v: NoPermission %v, want %v", tc.e, got, tc.want)
		}
	}
	var nilErr *CallError
	if nilErr.NoPermission() {
		t.Error("nil CallError")
	}
}
