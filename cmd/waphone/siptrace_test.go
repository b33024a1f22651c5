package main

import (
	"strings"
	"testing"
)

func TestMaskSIP(t *testing.T) {
	msg := "INVITE sip:+12145551869@sip.example.com SIP/2.0\r\n" +
		`Proxy-Authorization: Digest username="12145551869",realm="sip.example.com",nonce="abc",uri="sip:x",response="0123456789abcdef0123456789abcdef",qop=auth,nc=00000001,cnonce="c"` + "\r\n\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32\r\n"
	got := maskSIP([]byte(msg))
	for _, secret := range []string{"0123456789abcdef0123456789abcdef", "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"} {
		if strings.Contains(got, secret) {
			t.Fatalf("secret %q left in:\n%s", secret, got)
		}
	}
	for _, kept := range []string{`nonce="abc"`, `response="***"`, "inline:***|2^20|1:32", "INVITE sip:+12145551869"} {
		if !strings.Contains(got, kept) {
			t.Fatalf("%q missing from:\n%s", kept, got)
		}
	}
}
