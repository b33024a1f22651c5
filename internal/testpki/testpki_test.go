package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func TestIssueVerifiesForNamesAndIPs(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA {
		t.Fatal("CA certificate is not a CA")
	}
	certPEM, keyPEM, err := ca.Issue("sip.example.com", "127.0.0.1", "::1")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "sip.example.com" {
		t.Errorf("DNSNames = %v", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 2 {
		t.Errorf("IPAddresses = %v", leaf.IPAddresses)
	}
	for _, name := range []string{"sip.example.com", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool()}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: ca.Pool()}); err == nil {
		t.Error("verify for a name not in the certificate succeeded")
	}
	if d := time.Until(leaf.NotAfter); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("leaf expires in %v, want ~24h", d)
	}
	other, _ := NewCA("other")
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "sip.example.com", Roots: other.Pool()}); err == nil {
		t.Error("verify against a foreign CA succeeded")
	}
	if b, _ := pem.Decode(ca.PEM); b == nil || b.Type != "CERTIFICATE" {
		t.Error("CA PEM does not decode")
	}
}

func TestIssueExpiring(t *testing.T) {
	ca, err := NewCA("")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.IssueExpiring(time.Now().Add(-time.Minute), "old.example.com")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: "old.example.com", Roots: ca.Pool()})
	var inv x509.CertificateInvalidError
	if err == nil || !asInvalid(err, &inv) || inv.Reason != x509.Expired {
		t.Fatalf("verify expired leaf: err = %v, want Expired", err)
	}
	if _, _, err := ca.Issue(); err == nil {
		t.Error("Issue without names succeeded")
	}
}

func asInvalid(err error, target *x509.CertificateInvalidError) bool {
	e, ok := err.(x509.CertificateInvalidError)
	if ok {
		*target = e
	}
	return ok
}

func TestWriteFilesAndTLSHandshake(t *testing.T) {
	ca, err := NewCA("handshake CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile, err := WriteFiles(dir, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v, want 0600", st.Mode().Perm())
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "hello")
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "hello") {
		t.Errorf("read %q", b)
	}
}
