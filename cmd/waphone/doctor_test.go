package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/internal/acmecert"
	"github.com/waphone/waphone/internal/testpki"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestDoctorGolden keeps doctor's whole report readable: a configured
// board whose listener answers TLS, with Graph settings that send the
// number's calls elsewhere and a key-exchange mismatch. Machine-specific
// parts (temp paths, dates, ports, the clock's sync state) are masked.
// Run with -update after a deliberate wording change, and read the diff.
func TestDoctorGolden(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STATE_DIRECTORY", filepath.Join(dir, "state")) // not this machine's /var/lib
	ca, _ := testpki.NewCA("doctor CA")
	cf, kf := writeCert(t, ca, dir, time.Now().Add(90*24*time.Hour), "sip.example.com")
	pw := filepath.Join(dir, "sip-password")
	_ = os.WriteFile(pw, []byte("meta-pw\n"), 0o600)
	tok := filepath.Join(dir, "graph-token")
	_ = os.WriteFile(tok, []byte("EAAG-doctor-token\n"), 0o600)

	cert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	graphSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"calling":{"status":"ENABLED","srtp_key_exchange_protocol":"SDES",`+
			`"sip":{"status":"ENABLED","servers":[{"app_id":1,"hostname":"old-pbx.example.com","port":5061}]}}}`)
	}))
	defer graphSrv.Close()

	cfgPath := filepath.Join(dir, "waphone.toml")
	_ = os.WriteFile(cfgPath, []byte(`[sip]
hostname = "sip.example.com"
listen = "`+ln.Addr().String()+`"
cert_file = "`+cf+`"
key_file = "`+kf+`"
number = "+12145551869"
password_file = "`+pw+`"
allow = ["31.13.24.0/21", "157.240.0.0/16"]
[media]
key_exchange = "dtls"
[audio]
capture = "null"
playback = "null"
[phone]
answer = "auto"
[graph]
base_url = "`+graphSrv.URL+`"
phone_number_id = "106540352242922"
token_file = "`+tok+`"
`), 0o644)
	var out, errb bytes.Buffer
	code := run([]string{"doctor", "-config", cfgPath}, &out, &errb)
	if code != 1 {
		t.Errorf("exit %d, want 1 (Meta routes the calls elsewhere)", code)
	}
	if strings.Contains(out.String(), "EAAG-doctor-token") || strings.Contains(out.String(), "meta-pw") {
		t.Fatal("a secret in doctor's report")
	}
	got := maskDoctor(out.String(), dir, ln.Addr().(*net.TCPAddr))
	golden := filepath.Join("testdata", "doctor.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("doctor's report changed (go test -run TestDoctorGolden -update, then read the diff):\n--- got\n%s--- want\n%s", got, want)
	}
}

var (
	dateRE  = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)
	clockRE = regexp.MustCompile(`(?m)^(ok|warn|FAIL) +(the clock|cannot read the clock).*$`)
	hidRE   = regexp.MustCompile(`(?m)^(ok|warn|FAIL) +(headset call button|no headset with a HID call button|headset HID descriptor).*$`)
)

func maskDoctor(s, dir string, addr *net.TCPAddr) string {
	s = strings.ReplaceAll(s, dir, "$DIR")
	s = strings.ReplaceAll(s, addr.String(), "127.0.0.1:$PORT")
	s = strings.ReplaceAll(s, "port "+strconv.Itoa(addr.Port), "port $PORT")
	s = dateRE.ReplaceAllString(s, "$$DATE")
	s = hidRE.ReplaceAllString(s, "----  $$HEADSET_BUTTON (depends on what is plugged in)")
	return clockRE.ReplaceAllString(s, "----  $$CLOCK (depends on this machine)")
}

// TestDoctorWarnsAboutUselessSetups: configs that run but do not work as
// a desk phone get a warning or a FAIL that says why.
func TestDoctorWarnsAboutUselessSetups(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STATE_DIRECTORY", dir)
	base := config.Default()
	for _, tc := range []struct {
		name string
		edit func(*config.Config)
		want string
	}{
		{"silent auto-answer", func(c *config.Config) { c.Audio.Capture, c.Phone.Answer = "null", "auto" }, "every call is answered and the caller hears silence"},
		{"no button", func(c *config.Config) {
			c.Audio.Capture, c.Phone.Answer, c.Board.HeadsetKeys = "tone:440", "button", "off"
		}, "calls can only be answered with `waphone answer`"},
		{"missing wav", func(c *config.Config) { c.Audio.Capture = "wav:" + filepath.Join(dir, "nope.wav") }, "FAIL  audio.capture"},
		{"state not writable", func(c *config.Config) {
			f := filepath.Join(dir, "a-file")
			_ = os.WriteFile(f, nil, 0o600)
			t.Setenv("STATE_DIRECTORY", filepath.Join(f, "state"))
		}, "is not writable: not a directory"},
	} {
		cfg := base
		tc.edit(&cfg)
		r := &tlsReport{}
		checkSetup(r, cfg)
		var out bytes.Buffer
		_ = fmtReport(&out, r)
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("%s: report lacks %q:\n%s", tc.name, tc.want, out.String())
		}
	}
}

// TestDoctorUnderstandsACME: with [tls] acme, doctor does not ask for
// sip.cert_file; it reports the certificate obtained (none yet), the
// challenge's port and whether the CA answers; check-tls says the same.
func TestDoctorUnderstandsACME(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STATE_DIRECTORY", dir)
	ca := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "{}") }))
	defer ca.Close()
	cfg := config.Default()
	cfg.SIP.Hostname, cfg.TLS.ACME, cfg.TLS.CA, cfg.TLS.ChallengeListen = "sip.example.com", true, ca.URL, "127.0.0.1:0"
	r := &tlsReport{}
	checkACME(context.Background(), r, cfg, x509.NewCertPool())
	var out bytes.Buffer
	_ = fmtReport(&out, r)
	for _, want := range []string{"no certificate for sip.example.com obtained yet", "waphone can listen on 127.0.0.1:0", "ACME CA " + ca.URL + " answers"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "cert_file") {
		t.Errorf("ACME report asks for sip.cert_file:\n%s", out.String())
	}
	// The certificate once obtained is checked like files are.
	pki, _ := testpki.NewCA("acme CA")
	c, k, _ := pki.Issue("sip.example.com")
	cached := acmecert.CachedFile(dir, "sip.example.com", "tls-alpn-01")
	_ = os.MkdirAll(filepath.Dir(cached), 0o700)
	_ = os.WriteFile(cached, append(k, c...), 0o600)
	r = &tlsReport{}
	checkACME(context.Background(), r, cfg, x509.NewCertPool())
	out.Reset()
	_ = fmtReport(&out, r)
	if !strings.Contains(out.String(), "certificate covers sip.example.com") {
		t.Errorf("cached certificate not checked:\n%s", out.String())
	}
}
