package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waphone/waphone/graph"
	"github.com/waphone/waphone/sip"
)

// permissionGraph answers call_permissions from graph's testdata (Meta's
// documented shapes), keyed by user_wa_id; unknown users get Meta's
// refusal while SIP is enabled. POST messages records the body.
func permissionGraph(t *testing.T, token string) (*httptest.Server, func() []string) {
	t.Helper()
	fixtures := map[string]string{
		"+12195550714":            "call_permissions_permanent.json",
		"+12195550715":            "call_permissions_temporary.json",
		"+12195550716":            "call_permissions_none.json",
		"US.13491208655302741918": "call_permissions_limited.json",
	}
	var mu sync.Mutex
	var posted []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"error":{"message":"bad token","code":190}}`)
			return
		}
		file, code := "", 200
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v23.0/106540352242922/call_permissions":
			if file = fixtures[r.URL.Query().Get("user_wa_id")]; file == "" {
				file, code = "error_sip_enabled.json", 400
			}
		case r.Method == http.MethodPost && r.URL.Path == "/v23.0/106540352242922/messages":
			b, _ := io.ReadAll(r.Body)
			posted = append(posted, string(b))
			file = "messages_sent.json"
			if strings.Contains(string(b), "+19995550000") {
				file, code = "error_sip_enabled.json", 400
			}
		default:
			http.NotFound(w, r)
			return
		}
		b, err := os.ReadFile(filepath.Join("..", "..", "graph", "testdata", file))
		if err != nil {
			t.Error(err)
		}
		w.WriteHeader(code)
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), posted...) }
}

func permissionConfig(t *testing.T, baseURL, token string) string {
	dir := t.TempDir()
	tok := filepath.Join(dir, "graph-token")
	if err := os.WriteFile(tok, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "waphone.toml")
	cfg := `[sip]
hostname = "sip.example.com"
number = "+12145551869"
password_file = "sip-password"
[graph]
base_url = "` + baseURL + `"
phone_number_id = "106540352242922"
token_file = "` + tok + `"
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath
}

func TestPermissionCommand(t *testing.T) {
	const token = "EAAG-perm-secret"
	srv, posted := permissionGraph(t, token)
	cfg := permissionConfig(t, srv.URL, token)
	runOK := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(append([]string{"permission", "-config", cfg}, args...), &out, &errb); code != 0 {
			t.Fatalf("permission %v: exit %d: %s", args, code, errb.String())
		}
		if strings.Contains(out.String()+errb.String(), token) {
			t.Fatal("token printed")
		}
		return out.String()
	}
	for _, tc := range []struct {
		target string
		want   []string
	}{
		{"+1 219-555-0714", []string{"+12195550714: permanent permission to call", "call:               allowed now (2 of 10 used in 24h)"}},
		{"12195550715", []string{"+12195550715: temporary permission", "permission request: allowed now (0 of 1 used in 24h; 1 of 2 used in 7d)"}},
		{"+12195550716", []string{"+12195550716: no permission to call", "call:               not allowed now", "ask the user: waphone permission --request +12195550716"}},
		{"US.13491208655302741918", []string{"call:               not allowed now (5 of 5 used in 24h, until ", "permission request: not allowed now (1 of 1 used in 24h, until "}},
	} {
		out := runOK(tc.target)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.target, w, out)
			}
		}
	}

	// Meta refuses while SIP is enabled: say so, and what to do.
	var out, errb bytes.Buffer
	if code := run([]string{"permission", "-config", cfg, "+19995550000"}, &out, &errb); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if msg := errb.String(); !strings.Contains(msg, "while SIP is enabled") || !strings.Contains(msg, "waphone permission --request +19995550000") {
		t.Fatalf("refusal not explained: %s", msg)
	}

	// --request sends Meta's interactive call_permission_request.
	out2 := runOK("--request", "-text", "May we call you about your order?", "+12195550716")
	if !strings.Contains(out2, "wamid.gBGGFlaCmZ9plHrf2Mh-o") {
		t.Fatalf("output %s", out2)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(posted()[0]), &m); err != nil {
		t.Fatal(err)
	}
	in, _ := m["interactive"].(map[string]any)
	if m["to"] != "+12195550716" || m["type"] != "interactive" || m["recipient_type"] != "individual" || in["type"] != "call_permission_request" ||
		in["action"].(map[string]any)["name"] != "call_permission_request" || in["body"].(map[string]any)["text"] != "May we call you about your order?" {
		t.Fatalf("posted %s", posted()[0])
	}
	runOK("--request", "-template", "sample_cpr_template", "-lang", "en", "US.13491208655302741918")
	if p := posted()[1]; !strings.Contains(p, `"type":"template","template":{"name":"sample_cpr_template","language":{"code":"en"}}`) {
		t.Fatalf("template posted %s", p)
	}

	for _, bad := range [][]string{
		{}, {"12"}, {"-text", "x", "+12195550716"}, {"--request", "-template", "t", "+12195550716"},
		{"--request", "-text", "x", "-template", "t", "-lang", "en", "+12195550716"},
	} {
		if code := run(append([]string{"permission", "-config", cfg}, bad...), io.Discard, io.Discard); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)", bad, code)
		}
	}
}

func TestPrintPermissionsExpiry(t *testing.T) {
	now := time.Unix(1745343479, 0).Add(-50 * time.Hour)
	p := &graph.CallPermissions{Permission: graph.Permission{Status: "temporary", ExpirationTime: 1745343479}}
	var b bytes.Buffer
	printPermissions(&b, "+12195550715", p, now, time.UTC)
	if want := "+12195550715: temporary permission to call, until 2025-04-22 17:37 UTC (2d2h left)\n"; b.String() != want {
		t.Fatalf("got %q want %q", b.String(), want)
	}
	b.Reset()
	printPermissions(&b, "+12195550715", p, now.Add(51*time.Hour), time.UTC)
	if !strings.Contains(b.String(), "temporary permission expired 2025-04-22 17:37 UTC") {
		t.Fatalf("got %q", b.String())
	}
}

func TestExplainCallFailure(t *testing.T) {
	ce := &sip.CallError{Status: 403, Reason: "Forbidden", Warning: `399 wa.meta.vc "No call permission from the WhatsApp user"`}
	err := explainCallFailure(ce, "+12195550716")
	var back *sip.CallError
	if !errors.As(err, &back) || !strings.Contains(err.Error(), "waphone permission --request +12195550716") {
		t.Fatalf("err %v", err)
	}
	// Through the daemon only the text arrives.
	if err := explainCallFailure(errors.New(ce.Error()), "+12195550716"); !strings.Contains(err.Error(), "not allowed this business to call") {
		t.Fatalf("daemon text: %v", err)
	}
	busy := &sip.CallError{Status: 486, Reason: "Busy Here"}
	if err := explainCallFailure(busy, "+1"); err != error(busy) {
		t.Fatalf("busy changed: %v", err)
	}
	if explainCallFailure(nil, "+1") != nil {
		t.Fatal("nil")
	}
}
