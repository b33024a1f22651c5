package metasim_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/waphone/waphone/internal/metasim"
)

// The business under test listens on TLS at businessAddr with a certificate
// for "meta-voip.example.com" issued from businessRoots; it must be told that
// "wa.meta.vc" is at sim.Addr() and to trust sim.CA().
func Example() {
	var businessRoots *x509.CertPool // the business certificate's CA
	businessAddr := "127.0.0.1:5061"

	ctx := context.Background()
	sim, err := metasim.Start(ctx, metasim.Config{
		BusinessNumber: "+12145551869",
		BusinessHost:   "meta-voip.example.com",
		Password:       "the-meta-generated-password",
		BusinessRoots:  businessRoots,
		NoMediaTimeout: 2 * time.Second,
	})
	if err != nil {
		return
	}
	defer sim.Close()
	_ = sim.CA().PEM // give the business this CA for "wa.meta.vc" at sim.Addr()

	// A WhatsApp user calls the business.
	call, err := sim.Call(ctx, businessAddr, metasim.CallOptions{From: "+12195550714"})
	if err != nil {
		return
	}
	fmt.Println(call.Status(), call.Challenged())
	_ = call.Hangup(ctx)

	// The business calls a WhatsApp user: sip:+12195550714@wa.meta.vc;transport=tls.
	select {
	case in := <-sim.Incoming():
		<-in.Done()
		fmt.Println(in.EndedBy(), len(in.Recorded()))
	case <-time.After(time.Second):
	}
}
