package acmecert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
)

// dns01 obtains certificates with DNS-01, publishing the TXT record through
// a hook command: `HOOK present|cleanup _acme-challenge.HOST. VALUE`. It is
// the way to a certificate when neither port 443 nor 80 reaches the board
// (a port-forwarded kiosk with only 5061 open). autocert has no DNS-01,
// so this is the one place we drive x/crypto/acme by hand.
type dns01 struct {
	cfg  Config
	mu   sync.Mutex
	cert *tls.Certificate
}

func (d *dns01) dir() string { return filepath.Join(d.cfg.StateDir, "acme") }

func (d *dns01) certFile() string { return filepath.Join(d.dir(), d.cfg.Hostname+".dns01.pem") }

// renewBefore is how much validity a certificate must have left to be kept.
func (d *dns01) renewBefore() time.Duration {
	if d.cfg.RenewBefore > 0 {
		return d.cfg.RenewBefore
	}
	return 30 * 24 * time.Hour
}

// load returns the cached certificate if it still has RenewBefore (30 days) left.
func (d *dns01) load() *tls.Certificate {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cert == nil {
		if c, err := tls.LoadX509KeyPair(d.certFile(), d.certFile()); err == nil {
			d.cert = &c
		}
	}
	if d.cert != nil && d.cert.Leaf != nil && time.Until(d.cert.Leaf.NotAfter) > d.renewBefore() {
		return d.cert
	}
	return nil
}

func (d *dns01) current() (*tls.Certificate, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cert == nil { // a restart: the cached one serves until renewal
		if c, err := tls.LoadX509KeyPair(d.certFile(), d.certFile()); err == nil {
			d.cert = &c
		}
	}
	if d.cert == nil {
		return nil, errors.New("acme dns-01: no certificate yet")
	}
	return d.cert, nil
}

func (d *dns01) accountKey() (crypto.Signer, error) {
	p := filepath.Join(d.dir(), "dns01-account.key")
	if b, err := os.ReadFile(p); err == nil {
		if blk, _ := pem.Decode(b); blk != nil {
			if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
				return k, nil
			}
		}
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, _ := x509.MarshalECPrivateKey(k)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

func (d *dns01) hook(ctx context.Context, action, fqdn, value string) error {
	out, err := exec.CommandContext(ctx, d.cfg.DNSHook, action, fqdn, value).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tls.dns_hook %s %s: %w: %s", action, fqdn, err, out)
	}
	return nil
}

// obtain runs one ACME order end to end and caches the result (0600).
func (d *dns01) obtain(ctx context.Context) (*tls.Certificate, error) {
	if c := d.load(); c != nil {
		return c, nil
	}
	if err := os.MkdirAll(d.dir(), 0o700); err != nil {
		return nil, err
	}
	key, err := d.accountKey()
	if err != nil {
		return nil, fmt.Errorf("acme account key: %w", err)
	}
	dirURL := d.cfg.DirectoryURL
	if dirURL == "" {
		dirURL = LetsEncrypt
	}
	cl := &acme.Client{Key: key, DirectoryURL: dirURL, HTTPClient: d.cfg.HTTPClient}
	acct := &acme.Account{}
	if d.cfg.Email != "" {
		acct.Contact = []string{"mailto:" + d.cfg.Email}
	}
	if _, err := cl.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return nil, fmt.Errorf("acme register: %w", err)
	}
	order, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(d.cfg.Hostname))
	if err != nil {
		return nil, fmt.Errorf("acme order: %w", err)
	}
	for _, u := range order.AuthzURLs {
		z, err := cl.GetAuthorization(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("acme authorization: %w", err)
		}
		if z.Status == acme.StatusValid {
			continue
		}
		var chal *acme.Challenge
		for _, c := range z.Challenges {
			if c.Type == "dns-01" {
				chal = c
			}
		}
		if chal == nil {
			return nil, errors.New("acme: the CA offers no dns-01 challenge")
		}
		val, err := cl.DNS01ChallengeRecord(chal.Token)
		if err != nil {
			return nil, err
		}
		fqdn := "_acme-challenge." + d.cfg.Hostname + "."
		if err := d.hook(ctx, "present", fqdn, val); err != nil {
			return nil, err
		}
		_, err = cl.Accept(ctx, chal)
		if err == nil {
			_, err = cl.WaitAuthorization(ctx, z.URI)
		}
		if cerr := d.hook(ctx, "cleanup", fqdn, val); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("acme dns-01 validation: %w", err)
		}
	}
	if order, err = cl.WaitOrder(ctx, order.URI); err != nil {
		return nil, fmt.Errorf("acme order: %w", err)
	}
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{d.cfg.Hostname}}, certKey)
	if err != nil {
		return nil, err
	}
	ders, _, err := cl.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return nil, fmt.Errorf("acme finalize: %w", err)
	}
	kder, _ := x509.MarshalECPrivateKey(certKey)
	out := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	for _, der := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	tmp := d.certFile() + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, d.certFile()); err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(out, out)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.cert = &c
	d.mu.Unlock()
	return &c, nil
}
