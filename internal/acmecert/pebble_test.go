package acmecert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/testpki"
)

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type pebbleEnv struct {
	dir        string
	client     *http.Client
	mgmt       int // challtestsrv's management port
	tlsPort    int // where pebble validates tls-alpn-01
	pebbleMgmt int // pebble's management API (its roots, regenerated at every start)
}

// startPebble runs pebble and pebble-challtestsrv on loopback: pebble
// resolves every name through challtestsrv's fake DNS (127.0.0.1).
func startPebble(t *testing.T) pebbleEnv {
	t.Helper()
	for _, bin := range []string{"pebble", "pebble-challtestsrv"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (Debian: apt-get install pebble)", bin)
		}
	}
	dir := t.TempDir()
	ca, _ := testpki.NewCA("pebble web CA")
	certPEM, keyPEM, _ := ca.Issue("127.0.0.1", "localhost")
	cf, kf, _ := testpki.WriteFiles(dir, certPEM, keyPEM)
	acmePort, mgmtPort, tlsPort, dnsPort, chalMgmt := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "udp"), freePort(t, "tcp")
	cfgJSON, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": fmt.Sprintf("127.0.0.1:%d", acmePort), "managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate": cf, "privateKey": kf, "httpPort": freePort(t, "tcp"), "tlsPort": tlsPort,
	}})
	cfgFile := filepath.Join(dir, "pebble.json")
	_ = os.WriteFile(cfgFile, cfgJSON, 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	dns := exec.CommandContext(ctx, "pebble-challtestsrv", "-dns01", fmt.Sprintf("127.0.0.1:%d", dnsPort),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-management", fmt.Sprintf("127.0.0.1:%d", chalMgmt),
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	var dnsLog, pebLog strings.Builder // one per process: exec copies on its own goroutine
	dns.Stdout, dns.Stderr = &dnsLog, &dnsLog
	peb := exec.CommandContext(ctx, "pebble", "-config", cfgFile, "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dnsPort))
	peb.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	peb.Stdout, peb.Stderr = &pebLog, &pebLog
	for _, c := range []*exec.Cmd{dns, peb} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		cancel()
		_ = dns.Wait()
		_ = peb.Wait()
		if t.Failed() {
			t.Logf("pebble:\n%s\nchalltestsrv:\n%s", pebLog.String(), dnsLog.String())
		}
	})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	dirURL := fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := client.Get(dirURL)
		if err == nil {
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not start: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for { // challtestsrv's management API
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", chalMgmt)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("challtestsrv did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return pebbleEnv{dir: dirURL, client: client, mgmt: chalMgmt, tlsPort: tlsPort, pebbleMgmt: mgmtPort}
}

// roots is a pool holding pebble's issuing root, fetched from its
// management API: what a client (metasim playing Meta) must trust to
// accept the certificates pebble issues.
func (e pebbleEnv) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	res, err := e.client.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", e.pebbleMgmt))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("pebble root: %s %v", res.Status, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root is not PEM: %q", b)
	}
	return pool
}

// dnsHook writes a tls.dns_hook that publishes the TXT record through
// pebble-challtestsrv's management API, the way a DNS provider's API would.
func (e pebbleEnv) dnsHook(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	hook := filepath.Join(t.TempDir(), "dns-hook")
	script := fmt.Sprintf(`#!/bin/sh
case "$1" in
present) curl -sf -X POST -d "{\"host\":\"$2\",\"value\":\"$3\"}" http://127.0.0.1:%d/set-txt ;;
cleanup) curl -sf -X POST -d "{\"host\":\"$2\"}" http://127.0.0.1:%d/clear-txt ;;
esac
`, e.mgmt, e.mgmt)
	if err := os.WriteFile(hook, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return hook
}

// TestPebbleTLSALPN obtains a real certificate from pebble (Let's
// Encrypt's test CA) on loopback, validated with tls-alpn-01 against our
// challenge listener.
func TestPebbleTLSALPN(t *testing.T) {
	env := startPebble(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client, dirURL, tlsPort := env.client, env.dir, env.tlsPort
	state := t.TempDir()
	m, err := New(Config{Hostname: "sip.waphone.test", Email: "ops@waphone.test", DirectoryURL: dirURL,
		StateDir: state, HTTPClient: client, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", tlsPort))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = m.ServeChallenges(ctx, ln) }()
	pctx, pcancel := context.WithTimeout(ctx, 60*time.Second)
	defer pcancel()
	if err := m.Prefetch(pctx); err != nil {
		t.Fatal(err)
	}
	cert, err := m.Certificate()
	if err != nil || cert.Leaf == nil {
		t.Fatalf("%v", err)
	}
	if err := cert.Leaf.VerifyHostname("sip.waphone.test"); err != nil {
		t.Fatal(err)
	}
	// Issued by pebble, cached in the state directory (survives restarts).
	if entries, _ := os.ReadDir(filepath.Join(state, "acme")); len(entries) == 0 {
		t.Fatal("nothing cached under the state directory")
	}
	m2, _ := New(Config{Hostname: "sip.waphone.test", DirectoryURL: "https://127.0.0.1:1/unreachable", StateDir: state})
	if c2, err := m2.Certificate(); err != nil || c2.Leaf.SerialNumber.Cmp(cert.Leaf.SerialNumber) != 0 {
		t.Fatalf("restart did not reuse the cached certificate: %v", err)
	}
}

func TestDNS01AndBadChallengeAreClearErrors(t *testing.T) {
	if _, err := New(Config{Hostname: "a.example", Challenge: "dns-01"}); err == nil || !strings.Contains(err.Error(), "sip.cert_file") {
		t.Fatalf("%v", err)
	}
	if _, err := New(Config{Hostname: "a.example", Challenge: "smoke-signal"}); err == nil {
		t.Fatal("accepted an unknown challenge")
	}
}

// TestPebbleDNS01 publishes the TXT record through a hook that talks to
// pebble-challtestsrv's management API, the way a DNS provider's API would.
func TestPebbleDNS01(t *testing.T) {
	env := startPebble(t)
	hook := env.dnsHook(t)
	state := t.TempDir()
	m, err := New(Config{Hostname: "kiosk.waphone.test", Challenge: "dns-01", DNSHook: hook, DirectoryURL: env.dir,
		StateDir: state, HTTPClient: env.client, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Certificate(); err == nil {
		t.Fatal("a certificate before any was obtained")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.Prefetch(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := m.Certificate()
	if err != nil || c.Leaf.VerifyHostname("kiosk.waphone.test") != nil {
		t.Fatalf("%v", err)
	}
	fi, err := os.Stat(filepath.Join(state, "acme", "kiosk.waphone.test.dns01.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cached key+cert: %v %v", fi, err)
	}
	// Restart: the cached certificate serves at once.
	m2, _ := New(Config{Hostname: "kiosk.waphone.test", Challenge: "dns-01", DNSHook: hook, DirectoryURL: env.dir, StateDir: state})
	if c2, err := m2.Certificate(); err != nil || c2.Leaf.SerialNumber.Cmp(c.Leaf.SerialNumber) != 0 {
		t.Fatalf("restart: %v", err)
	}
}
