package media

import (
	"fmt"
	"math"
	"testing"
)

// BenchmarkEncode is one 20 ms Opus encode per op for the fmtp Meta offers
// (wideband, 20 kbps, FEC) and for an unconstrained fullband peer, at the
// complexities worth choosing between on a small board.
func BenchmarkEncode(b *testing.B) {
	pcm := make([]int16, FrameSamples)
	for i := range pcm {
		pcm[i] = int16(8000 * math.Sin(2*math.Pi*440*float64(i)/SampleRate))
	}
	out := make([]byte, maxPayload)
	for _, peer := range []struct{ name, fmtp string }{
		{"meta-wb20k", "maxaveragebitrate=20000;maxplaybackrate=16000;useinbandfec=1"},
		{"fullband", "useinbandfec=1"},
	} {
		for _, c := range []int{10, 5, 3, 1} {
			b.Run(fmt.Sprintf("%s/c%d", peer.name, c), func(b *testing.B) {
				enc, err := newEncoder(parseOpusFmtp(peer.fmtp), c)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := enc.Encode(pcm, out); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
