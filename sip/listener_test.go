package sip

import (
	"os"
	"testing"
	"time"

	ssip "github.com/emiago/sipgo/sip"
	"github.com/waphone/waphone/internal/testpki"
)

func TestCertReloaderPicksUpRenewalAndSurvivesBadFiles(t *testing.T) {
	ca, err := testpki.NewCA("reload CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c1, k1, _ := ca.Issue(tHost)
	certFile, keyFile, err := testpki.WriteFiles(dir, c1, k1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewCertReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := r.Certificate()
	serial1 := first.Leaf.SerialNumber.String()

	// Renewal: new files, newer mtimes.
	c2, k2, _ := ca.Issue(tHost)
	if _, _, err := testpki.WriteFiles(dir, c2, k2); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	_ = os.Chtimes(certFile, future, future)
	_ = os.Chtimes(keyFile, future, future)
	r.checked = time.Time{}
	second, _ := r.Certificate()
	if second.Leaf.SerialNumber.String() == serial1 {
		t.Fatal("renewed certificate not picked up")
	}

	// A half-written renewal keeps the old pair in service.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERT"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := future.Add(time.Minute)
	_ = os.Chtimes(certFile, later, later)
	r.checked = time.Time{}
	third, err := r.Certificate()
	if err != nil || third != second {
		t.Fatalf("broken file replaced the served certificate: %v", err)
	}
	if _, err := NewCertReloader(certFile, keyFile, nil); err == nil {
		t.Fatal("loading a broken pair at start must fail")
	}
}

func TestParseAllow(t *testing.T) {
	p, err := ParseAllow([]string{"31.13.24.0/21", "2a03:2880::/32", "157.240.0.1"})
	if err != nil || len(p) != 3 || p[2].Bits() != 32 {
		t.Fatalf("%v %v", p, err)
	}
	if _, err := ParseAllow([]string{"not-an-ip"}); err == nil {
		t.Fatal("accepted garbage")
	}
}

func TestCallInfoBSUIDAndWACIDFallback(t *testing.T) {
	raw := "INVITE sip:+12145551869@meta-voip.example.com;transport=tls SIP/2.0\r\n" +
		"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK1\r\n" +
		"From: <sip:US.13491208655302741918@wa.meta.vc>;tag=a\r\n" +
		"To: <sip:+12145551869@meta-voip.example.com>\r\n" +
		"Call-ID: outgoing:wacid.HBgLMTIx\r\nCSeq: 1 INVITE\r\n" +
		"X-WA-Meta-Parent-User-Id: US.P.1\r\nx-wa-meta-deeplink-payload: spring-sale\r\n" +
		"Content-Length: 0\r\n\r\n"
	msg, err := ssip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	ci := callInfoFromInvite(msg.(*ssip.Request))
	if ci.Remote != "US.13491208655302741918" || ci.WACID != "wacid.HBgLMTIx" || ci.ParentUserID != "US.P.1" ||
		ci.DeeplinkPayload != "spring-sale" || ci.DurationSec != -1 {
		t.Fatalf("%+v", ci)
	}
}
