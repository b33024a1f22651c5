package web

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Self-signed certificate files in the state directory. Kept across
// restarts so that a browser's "accept this certificate" lasts.
const (
	selfCertFile = "web-cert.pem"
	selfKeyFile  = "web-key.pem"
	selfValidity = 5 * 365 * 24 * time.Hour
	selfRenewAt  = 30 * 24 * time.Hour // renew when this close to expiry
)

// SelfSigned returns a certificate for the console on a LAN name (and the
// IPs given), made once and kept in dir. For a phone without a public name
// for its console; browsers warn once.
func SelfSigned(dir string, names []string, ips []net.IP) (func() (*tls.Certificate, error), error) {
	cp, kp := filepath.Join(dir, selfCertFile), filepath.Join(dir, selfKeyFile)
	if c, err := tls.LoadX509KeyPair(cp, kp); err == nil && c.Leaf != nil && time.Until(c.Leaf.NotAfter) > selfRenewAt && covers(c.Leaf, names, ips) {
		return func() (*tls.Certificate, error) { return &c, nil }, nil
	}
	if len(names) == 0 {
		return nil, errors.New("web: a self-signed certificate needs a name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"waphone console"}},
		DNSNames:              names,
		IPAddresses:           ips,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	if err := os.WriteFile(kp, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	if err := os.WriteFile(cp, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	return func() (*tls.Certificate, error) { return &c, nil }, nil
}

func covers(leaf *x509.Certificate, names []string, ips []net.IP) bool {
	for _, n := range names {
		if leaf.VerifyHostname(n) != nil {
			return false
		}
	}
	for _, ip := range ips {
		if leaf.VerifyHostname(ip.String()) != nil {
			return false
		}
	}
	return true
}
