package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

func serveTLS(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func issue(t *testing.T, parent *x509.Certificate, parentKey crypto.Signer, isCA bool, names ...string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "x" + strings.Join(names, ",")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour), DNSNames: names,
		IsCA: isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func TestCheckConnect(t *testing.T) {
	root, rootKey := issue(t, nil, nil, true)
	inter, interKey := issue(t, root, rootKey, true)
	leaf, leafKey := issue(t, inter, interKey, false, "sip.example.com")
	roots := x509.NewCertPool()
	roots.AddCert(root)
	full := serveTLS(t, tls.Certificate{Certificate: [][]byte{leaf.Raw, inter.Raw}, PrivateKey: leafKey})
	leafOnly := serveTLS(t, tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: leafKey})
	plain, _ := net.Listen("tcp", "127.0.0.1:0")
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("SIP/2.0 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	now := time.Now()
	cases := []struct {
		name, addr, host string
		fail             bool
		want             string
	}{
		{"good", full, "sip.example.com", false, "chain verifies"},
		{"hostname mismatch", full, "meta-inb.example.com", true, "hostname mismatch"},
		{"incomplete chain", leafOnly, "sip.example.com", true, "incomplete chain"},
		{"not TLS", plain.Addr().String(), "sip.example.com", true, "not speaking TLS"},
		{"nothing listening", closedAddr, "sip.example.com", true, "cannot connect"},
	}
	for _, c := range cases {
		r := checkConnect(context.Background(), c.addr, c.host, roots, now)
		text := strings.Join(r.lines, "\n")
		if r.fail != c.fail || !strings.Contains(text, c.want) {
			t.Errorf("%s: fail=%v\n%s", c.name, r.fail, text)
		}
	}
}
