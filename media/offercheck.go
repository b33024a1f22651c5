package media

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// Offers are checked before anything is answered: a parameter that would
// make the call fail later, or that no honest peer sends, gets a 488 with
// the reason now, never a 200 followed by a failure.

// fingerprintLens is the digest length, in bytes, of each hash a DTLS
// fingerprint may use (RFC 8122 §5).
var fingerprintLens = map[string]int{"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}

// checkDTLSOffer refuses a DTLS-SRTP offer we could not complete: no ICE
// credentials, a malformed or oversized fingerprint, a=setup:holdconn, or
// media addresses no one can send to.
func checkDTLSOffer(sd *sdp.SessionDescription, md *sdp.MediaDescription) *NegotiationError {
	attr := func(key string) (string, bool) {
		if v, ok := md.Attribute(key); ok {
			return v, true
		}
		return sd.Attribute(key)
	}
	ufrag, ok1 := attr("ice-ufrag")
	pwd, ok2 := attr("ice-pwd")
	// RFC 8839 §5.4: ufrag 4-256 characters, pwd 22-256.
	if !ok1 || !ok2 || len(ufrag) < 4 || len(ufrag) > 256 || len(pwd) < 22 || len(pwd) > 256 {
		return notAcceptable("DTLS-SRTP offer without usable ICE credentials (a=ice-ufrag/a=ice-pwd)")
	}
	fp, _ := attr("fingerprint")
	if nerr := checkFingerprint(fp); nerr != nil {
		return nerr
	}
	if setup, ok := attr("setup"); ok && strings.EqualFold(strings.TrimSpace(setup), "holdconn") {
		return notAcceptable("a=setup:holdconn: the peer holds the DTLS connection back")
	}
	if ci := connection(sd, md); ci != nil {
		if ip, err := netip.ParseAddr(ci.Address.Address); err == nil && unusableAddr(ip) {
			return notAcceptable("connection address %s is multicast or broadcast", ip)
		}
	}
	return nil
}

// checkFingerprint: "HASH XX:XX:…" with a known hash and its exact length.
func checkFingerprint(v string) *NegotiationError {
	if len(v) > 256 {
		return notAcceptable("a=fingerprint of %d characters", len(v))
	}
	hash, digest, ok := strings.Cut(strings.TrimSpace(v), " ")
	n, known := fingerprintLens[strings.ToLower(hash)]
	if !ok || !known {
		return notAcceptable("a=fingerprint %q: want sha-256 (or sha-1/224/384/512) and its digest", truncate(v, 40))
	}
	parts := strings.Split(strings.TrimSpace(digest), ":")
	if len(parts) != n {
		return notAcceptable("a=fingerprint: %d bytes for %s, want %d", len(parts), hash, n)
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 16, 8); err != nil || len(p) != 2 {
			return notAcceptable("a=fingerprint: %q is not a hex byte", truncate(p, 8))
		}
	}
	return nil
}

func connection(sd *sdp.SessionDescription, md *sdp.MediaDescription) *sdp.ConnectionInformation {
	if md.ConnectionInformation != nil && md.ConnectionInformation.Address != nil {
		return md.ConnectionInformation
	}
	if sd.ConnectionInformation != nil && sd.ConnectionInformation.Address != nil {
		return sd.ConnectionInformation
	}
	return nil
}

// unusableAddr: nobody sends RTP to a group or to everyone on a link.
func unusableAddr(ip netip.Addr) bool {
	return ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// checkSDESKey refuses keys that protect nothing (all zero) and lifetimes
// outside RFC 4568's range for SRTP: fewer than 2^10 packets would need a
// rekeying we do not do, more than 2^48 is beyond what SRTP allows.
func checkSDESKey(keySalt []byte, lifetimes []string) string {
	if len(bytes.Trim(keySalt, "\x00")) == 0 {
		return "all-zero master key"
	}
	for _, l := range lifetimes {
		bits := -1
		if e, ok := strings.CutPrefix(l, "2^"); ok {
			bits, _ = strconv.Atoi(e)
		} else if n, err := strconv.ParseUint(l, 10, 64); err == nil && n > 0 {
			for bits = 0; n > 1; n >>= 1 {
				bits++
			}
		}
		if bits < 10 || bits > 48 {
			return "key lifetime " + truncate(l, 20) + " outside 2^10..2^48"
		}
	}
	return ""
}
