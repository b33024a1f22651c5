package media

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/srtp/v3"
)

// SDES (RFC 4568) master key + salt length for the AES_CM_128 suites.
const (
	masterKeyLen  = 16
	masterSaltLen = 14
	keySaltLen    = masterKeyLen + masterSaltLen
)

// Suite we offer; Meta and Twilio both use it.
const suite80 = "AES_CM_128_HMAC_SHA1_80"

// supportedSuites maps SDES suite names to pion profiles. The _32 variant costs
// nothing extra and some SIP gateways prefer it.
var supportedSuites = map[string]srtp.ProtectionProfile{
	suite80:                   srtp.ProtectionProfileAes128CmHmacSha1_80,
	"AES_CM_128_HMAC_SHA1_32": srtp.ProtectionProfileAes128CmHmacSha1_32,
}

// sdesKey is one a=crypto line: tag, suite and inline master key||salt.
type sdesKey struct {
	tag     int
	suite   string
	profile srtp.ProtectionProfile
	keySalt []byte // keySaltLen bytes
}

var errUnsupportedCrypto = errors.New("unsupported crypto attribute")

// parseCrypto parses "tag suite inline:key[|lifetime] [session-params]".
// MKIs, multiple keys and session parameters are refused (never used by Meta,
// and pion would need extra per-packet handling for MKI).
func parseCrypto(v string) (sdesKey, error) {
	f := strings.Fields(v)
	if len(f) < 3 {
		return sdesKey{}, fmt.Errorf("%w: %q: too few fields", errUnsupportedCrypto, v)
	}
	tag, err := strconv.Atoi(f[0])
	if err != nil || tag < 0 || tag > 999999999 {
		return sdesKey{}, fmt.Errorf("%w: bad tag %q", errUnsupportedCrypto, f[0])
	}
	suite := strings.ToUpper(f[1])
	profile, ok := supportedSuites[suite]
	if !ok {
		return sdesKey{}, fmt.Errorf("%w: suite %s", errUnsupportedCrypto, f[1])
	}
	if len(f) > 3 {
		return sdesKey{}, fmt.Errorf("%w: session parameters %q", errUnsupportedCrypto, strings.Join(f[3:], " "))
	}
	kp := f[2]
	if strings.Contains(kp, ";") {
		return sdesKey{}, fmt.Errorf("%w: multiple keys", errUnsupportedCrypto)
	}
	method, rest, ok := strings.Cut(kp, ":")
	if !ok || !strings.EqualFold(method, "inline") {
		return sdesKey{}, fmt.Errorf("%w: key method %q", errUnsupportedCrypto, method)
	}
	parts := strings.Split(rest, "|")
	for _, p := range parts[1:] {
		if strings.Contains(p, ":") {
			return sdesKey{}, fmt.Errorf("%w: MKI", errUnsupportedCrypto)
		}
	}
	key, err := base64.StdEncoding.DecodeString(parts[0])
	if err != nil {
		// Some stacks drop the padding; 30 bytes needs none anyway.
		key, err = base64.RawStdEncoding.DecodeString(parts[0])
	}
	if err != nil || len(key) != keySaltLen {
		return sdesKey{}, fmt.Errorf("%w: key is not %d bytes of base64", errUnsupportedCrypto, keySaltLen)
	}
	if why := checkSDESKey(key, parts[1:]); why != "" {
		return sdesKey{}, fmt.Errorf("%w: %s", errUnsupportedCrypto, why)
	}
	return sdesKey{tag: tag, suite: suite, profile: profile, keySalt: key}, nil
}

// newSDESKey makes a fresh random key for the given tag and suite.
func newSDESKey(tag int, suite string) (sdesKey, error) {
	profile, ok := supportedSuites[suite]
	if !ok {
		return sdesKey{}, fmt.Errorf("media: suite %s not supported", suite)
	}
	k := make([]byte, keySaltLen)
	if _, err := rand.Read(k); err != nil {
		return sdesKey{}, fmt.Errorf("media: random SRTP key: %w", err)
	}
	return sdesKey{tag: tag, suite: suite, profile: profile, keySalt: k}, nil
}

func (k sdesKey) attr() string {
	return strconv.Itoa(k.tag) + " " + k.suite + " inline:" + base64.StdEncoding.EncodeToString(k.keySalt)
}

// context builds a one-direction SRTP context. Inbound contexts get replay
// protection so a replayed packet can neither replay audio nor reset the
// jitter buffer.
func (k sdesKey) context(inbound bool) (*srtp.Context, error) {
	var opts []srtp.ContextOption
	if inbound {
		opts = append(opts, srtp.SRTPReplayProtection(256), srtp.SRTCPReplayProtection(256))
	}
	c, err := srtp.CreateContext(k.keySalt[:masterKeyLen], k.keySalt[masterKeyLen:], k.profile, opts...)
	if err != nil {
		return nil, fmt.Errorf("media: srtp context: %w", err)
	}
	return c, nil
}
