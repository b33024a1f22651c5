package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/webhook"
)

// TestWebhooksOverHTTPSJoinHistory: Meta subscribes, then posts signed
// call_created and terminate events over HTTPS; `waphone history` shows
// them under the call with that WACID, and an unknown WACID apart.
func TestWebhooksOverHTTPSJoinHistory(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STATE_DIRECTORY", dir)
	ca, err := testpki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("phone.example.com", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	writeSecret := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const appSecret = "0123456789abcdef0123456789abcdef"
	verifyFile, secretFile := writeSecret("verify-token", "meta-verify-1"), writeSecret("app-secret", appSecret)
	store, err := history.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-3 * time.Minute)
	if err := store.Append(history.Record{Direction: "inbound", Remote: "+16315553601", WACID: "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh",
		Start: start, End: start.Add(2 * time.Minute), Duration: 2 * time.Minute, EndedBy: "remote-bye"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws, err := startWebhooks(ctx, "127.0.0.1:0", "/meta/webhook", verifyFile, secretFile,
		func() (*tls.Certificate, error) { return &cert, nil }, store, newLogger("error"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "phone.example.com"}}}
	base := "https://" + ws.Addr().String() + "/meta/webhook"

	q := url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {"meta-verify-1"}, "hub.challenge": {"987654321"}}
	res, err := hc.Get(base + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "987654321" {
		t.Fatalf("handshake %d %q", res.StatusCode, b)
	}
	q.Set("hub.verify_token", "guess")
	if res, err = hc.Get(base + "?" + q.Encode()); err != nil || res.StatusCode != 403 {
		t.Fatalf("bad token: %v %v", res.StatusCode, err)
	}
	res.Body.Close()

	send := func(file, sig string) int {
		t.Helper()
		body, err := os.ReadFile(filepath.Join("..", "..", "webhook", "testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		if sig == "" {
			sig = webhook.Sign(body, []byte(appSecret))
		}
		req, _ := http.NewRequest("POST", base, bytes.NewReader(body))
		req.Header.Set("X-Hub-Signature-256", sig)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := send("call_created.json", ""); code != 200 {
		t.Fatalf("call_created: %d", code)
	}
	if code := send("terminate.json", "sha256=00"); code != 401 {
		t.Fatalf("bad signature: %d", code)
	}
	if code := send("terminate.json", ""); code != 200 {
		t.Fatalf("terminate: %d", code)
	}

	cfgPath := filepath.Join(dir, "waphone.toml")
	_ = os.WriteFile(cfgPath, []byte("[sip]\nhostname = \"sip.example.com\"\nnumber = \"+12145551869\"\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"history", "-config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("history: %d %s", code, errb.String())
	}
	text := out.String()
	call := text[strings.Index(text, "wacid.ABGG"):]
	for _, want := range []string{"meta: ", "call_created  USER_INITIATED", "terminate  COMPLETED  USER_INITIATED  2m0s",
		"calls not in this log", "wacid.HBgMOTE3MzU4NTgwMTgwFQIAEhgg", "FAILED", "error 138021"} {
		if !strings.Contains(call, want) {
			t.Errorf("history lacks %q:\n%s", want, text)
		}
	}
	if i, j := strings.Index(text, "COMPLETED"), strings.Index(text, "calls not in this log"); i < 0 || j < i {
		t.Fatalf("the terminate is not under its call:\n%s", text)
	}
	out.Reset()
	if code := run([]string{"history", "-config", cfgPath, "--json"}, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	if s := out.String(); !strings.Contains(s, `"webhooks":[{"wacid":"wacid.ABGG`) || !strings.Contains(s, `"webhook_for_unknown_call":{"wacid":"wacid.HBgM`) ||
		!strings.Contains(s, `"remote":"+16315553601"`) {
		t.Fatalf("--json:\n%s", s)
	}

	// The server stops with its context.
	cancel()
	select {
	case <-ws.done:
	case <-time.After(5 * time.Second):
		t.Fatal("webhook server did not stop")
	}
}

func TestStartWebhooksRefusesBadSecrets(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	_ = os.WriteFile(open, []byte("x\n"), 0o644)
	ok := filepath.Join(dir, "ok")
	_ = os.WriteFile(ok, []byte("x\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	getCert := func() (*tls.Certificate, error) { return nil, nil }
	for _, tc := range []struct{ verify, secret, want string }{
		{"", ok, "webhook.verify_token_file is not set"},
		{ok, open, "must be 0600"},
		{ok, empty, "is empty"},
		{ok, filepath.Join(dir, "missing"), "webhook.app_secret_file"},
	} {
		_, err := startWebhooks(context.Background(), "127.0.0.1:0", "/w", tc.verify, tc.secret, getCert, nil, newLogger("error"))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "x\n") {
			t.Errorf("%+v: %v", tc, err)
		}
	}
	if _, err := startWebhooks(context.Background(), "127.0.0.1:0", "w", ok, ok, getCert, nil, newLogger("error")); err == nil {
		t.Error("a path without / was accepted")
	}
}
