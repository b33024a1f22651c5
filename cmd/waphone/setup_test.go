package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/waphone/waphone/graph"
)

func TestSetupAgainstFakeGraph(t *testing.T) {
	const token = "EAAG-secret-token"
	var mu sync.Mutex
	var posted []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+token || r.URL.Path != "/v23.0/106540352242922/settings" {
			w.WriteHeader(400)
			_, _ = io.WriteString(w, `{"error":{"message":"bad","code":100}}`)
			return
		}
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			posted = append(posted, string(b))
			_, _ = io.WriteString(w, `{"success":true}`)
			return
		}
		pw := ""
		if r.URL.Query().Get("include_sip_credentials") == "true" {
			pw = `,"sip_user_password":"meta-pw-` + string(rune('0'+len(posted))) + `"`
		}
		_, _ = io.WriteString(w, `{"calling":{"status":"ENABLED","srtp_key_exchange_protocol":"SDES","sip":{"status":"ENABLED","servers":[{"app_id":1,"hostname":"sip.example.com"`+pw+`}]}}}`)
	}))
	defer srv.Close()
	dir := t.TempDir()
	tok := filepath.Join(dir, "graph-token")
	_ = os.WriteFile(tok, []byte(token+"\n"), 0o600)
	cfgPath := filepath.Join(dir, "waphone.toml")
	cfg := `[sip]
hostname = "sip.example.com"
number = "+12145551869"
password_file = "sip-password"
[media]
key_exchange = "sdes"
[graph]
base_url = "` + srv.URL + `"
phone_number_id = "106540352242922"
token_file = "` + tok + `"
`
	_ = os.WriteFile(cfgPath, []byte(cfg), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"setup", "-config", cfgPath, "--dry-run"}, &out, &errb); code != 0 {
		t.Fatalf("dry run: %d %s", code, errb.String())
	}
	if strings.Contains(out.String(), token) || !strings.Contains(out.String(), `"srtp_key_exchange_protocol": "SDES"`) {
		t.Fatalf("dry run output:\n%s", out.String())
	}
	if len(posted) != 0 {
		t.Fatal("dry run sent something")
	}
	out.Reset()
	if code := run([]string{"setup", "-config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("setup: %d %s", code, errb.String())
	}
	var body map[string]any
	_ = json.Unmarshal([]byte(posted[0]), &body)
	if body["calling"].(map[string]any)["sip"].(map[string]any)["servers"].([]any)[0].(map[string]any)["port"] != "5061" { // a string, as the guide types it
		t.Fatalf("posted %s", posted[0])
	}
	pwFile := filepath.Join(dir, "sip-password")
	fi, err := os.Stat(pwFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file %v %v", fi, err)
	}
	if b, _ := os.ReadFile(pwFile); string(b) != "meta-pw-1\n" {
		t.Fatalf("password file %q", b)
	}
	if strings.Contains(out.String()+errb.String(), "meta-pw") || strings.Contains(out.String()+errb.String(), token) {
		t.Fatal("a secret was printed")
	}
	out.Reset()
	if code := run([]string{"setup", "-config", cfgPath, "--reset-password"}, &out, &errb); code != 0 {
		t.Fatalf("reset: %d %s", code, errb.String())
	}
	if len(posted) != 3 || !strings.Contains(posted[1], `"servers":[]`) {
		t.Fatalf("reset posts %q", posted)
	}
	if b, _ := os.ReadFile(pwFile); string(b) != "meta-pw-3\n" {
		t.Fatalf("new password not stored: %q", b)
	}
	out.Reset()
	if code := run([]string{"setup", "-config", cfgPath, "--show"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "ok   sip.status") || !strings.Contains(out.String(), "ok   sip.servers") {
		t.Fatalf("show: %d\n%s", code, out.String())
	}
}

// TestShowWithoutKeyExchange: Meta omits srtp_key_exchange_protocol when it
// was never set (the guide: default DTLS); a DTLS config is then no DIFF,
// an SDES one is.
func TestShowWithoutKeyExchange(t *testing.T) {
	var have graph.Settings
	if err := json.Unmarshal([]byte(`{"calling":{"status":"ENABLED","sip":{"status":"ENABLED","servers":[{"hostname":"sip.example.com","port":"5061"}]}}}`), &have); err != nil {
		t.Fatal(err)
	}
	for kx, mark := range map[string]string{"dtls": "ok  ", "sdes": "DIFF"} {
		var out bytes.Buffer
		if err := printSettingsDiff(&out, &have, graph.Desired("sip.example.com", 5061, kx, nil, false)); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), mark+" srtp_key_exchange_protocol") || !strings.Contains(out.String(), "ok   sip.servers") {
			t.Fatalf("%s config:\n%s", kx, out.String())
		}
	}
}
