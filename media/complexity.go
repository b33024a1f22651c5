package media

import "runtime"

// DefaultOpusComplexity is the encoder complexity when Config leaves it 0:
// the encoder is most of a call's CPU, and libopus at 10 (its default)
// costs several times what 5 does for a barely audible gain at 20 kbps
// wideband. 32-bit ARM (Pi Zero, Pi 1-3 on a 32-bit OS) gets less still.
func DefaultOpusComplexity() int {
	if runtime.GOARCH == "arm" {
		return 3
	}
	return 5
}
