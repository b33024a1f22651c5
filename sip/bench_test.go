package sip

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkInviteTo200 is one whole authenticated user-initiated call over
// TLS on loopback: INVITE → 407 → ACK → INVITE with Proxy-Authorization →
// 100/180/200 → ACK → BYE → 200. Allocations include the raw client's
// (small) share; the server's dominate.
func BenchmarkInviteTo200(b *testing.B) {
	env := newTestEnv(b, nil, answerPolicy)
	m := env.dialMeta(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cid := fmt.Sprintf("bench-%d", i)
		_, ok := establish(b, m, cid)
		m.send("BYE sip:+12145551869@127.0.0.1;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS [2803:6080:f948:9597::]:47237;rport;branch=z9hG4bKPjB" + cid + ";alias\r\nMax-Forwards: 70\r\n" +
			`From: "12195550714" <sip:+12195550714@wa.meta.vc>;tag=ece2da15` + "\r\nTo: " + first(ok["to"]) + "\r\nCall-ID: " + cid +
			"\r\nCSeq: 9991 BYE\r\nContent-Length: 0\r\n\r\n")
		m.expect(200)
	}
	b.StopTimer()
	// The last dialog ends just after its 200 to the BYE went out.
	deadline := time.Now().Add(2 * time.Second)
	for env.ep.ActiveDialogs() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := env.ep.ActiveDialogs(); n != 0 {
		b.Fatalf("%d dialogs leaked", n)
	}
}
