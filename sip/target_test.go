package sip

import "testing"

func TestNormalizeTarget(t *testing.T) {
	for in, want := range map[string]string{
		"+12195550714":                "+12195550714",
		"12195550714":                 "+12195550714",
		" +1 (219) 555-0714 ":         "+12195550714",
		"US.13491208655302741918":     "US.13491208655302741918",
		"US.ENT.11815799212886844830": "US.ENT.11815799212886844830",
	} {
		if got, err := NormalizeTarget(in); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "+123", "+1234567890123456", "us.123", "US.", "US.12a", "U.123", "US.123;x=y", "sip:+12195550714@wa.meta.vc", "US..1"} {
		if got, err := NormalizeTarget(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}
