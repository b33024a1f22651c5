package graph

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const token = "EAAGm0PX4ZCpsBAsecret"

type fakeGraph struct {
	mu       sync.Mutex
	requests []string
	bodies   []string
	settings Settings
	failNext []int // statuses to answer before succeeding
	errBody  string
	password string
}

func (f *fakeGraph) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _ := io.ReadAll(r.Body)
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization"))
	f.bodies = append(f.bodies, string(b))
	if len(f.failNext) > 0 {
		code := f.failNext[0]
		f.failNext = f.failNext[1:]
		w.WriteHeader(code)
		_, _ = io.WriteString(w, f.errBody)
		return
	}
	switch r.Method {
	case http.MethodPost:
		var s Settings
		_ = json.Unmarshal(b, &s)
		f.settings = s
		if s.Calling.SIP != nil && len(s.Calling.SIP.Servers) > 0 {
			f.password = f.password + "x" // Meta generates a new one on re-add
		}
		_, _ = io.WriteString(w, `{"success":true}`)
	case http.MethodGet:
		s := f.settings
		if s.Calling.SIP != nil {
			sip := *s.Calling.SIP
			sip.Servers = append([]Server(nil), sip.Servers...)
			for i := range sip.Servers {
				sip.Servers[i].AppID = "1234"
				if r.URL.Query().Get("include_sip_credentials") == "true" {
					sip.Servers[i].SIPUserPassword = f.password
				}
			}
			s.Calling.SIP = &sip
		}
		_ = json.NewEncoder(w).Encode(s)
	}
}

func newClient(t *testing.T, f *fakeGraph) *Client {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return &Client{BaseURL: srv.URL, Version: "v23.0", PhoneNumberID: "106540352242922", Token: token, Retries: 2, Backoff: time.Millisecond}
}

func TestSetupShapesAndPassword(t *testing.T) {
	f := &fakeGraph{password: "pw"}
	c := newClient(t, f)
	ctx := context.Background()
	want := Desired("sip.example.com", 5061, "sdes", map[string]string{"tgrp": "wacall"}, true)
	if err := c.Post(ctx, want); err != nil {
		t.Fatal(err)
	}
	if f.requests[0] != "POST /v23.0/106540352242922/settings Bearer "+token {
		t.Fatalf("request %q", f.requests[0])
	}
	var body map[string]any
	_ = json.Unmarshal([]byte(f.bodies[0]), &body)
	calling := body["calling"].(map[string]any)
	sip := calling["sip"].(map[string]any)
	srv := sip["servers"].([]any)[0].(map[string]any)
	if calling["status"] != "ENABLED" || calling["srtp_key_exchange_protocol"] != "SDES" || sip["status"] != "ENABLED" ||
		sip["webhook_delivery"] != "ENABLED" || srv["hostname"] != "sip.example.com" || srv["port"] != "5061" ||
		srv["request_uri_user_params"].(map[string]any)["tgrp"] != "wacall" {
		t.Fatalf("body not shaped like the guide: %s", f.bodies[0])
	}
	s, err := c.Get(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(f.requests[1], "/settings?include_sip_credentials=true Bearer "+token) {
		t.Fatalf("GET %q", f.requests[1])
	}
	pw, err := Password(s, "SIP.example.com")
	if err != nil || pw != "pwx" {
		t.Fatalf("password %q %v", pw, err)
	}
	// Reset: disable + delete, then re-add; Meta generates a new password.
	if err := c.ResetPassword(ctx, want); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.bodies[2], `"status":"DISABLED"`) || !strings.Contains(f.bodies[2], `"servers":[]`) {
		t.Fatalf("reset's first POST: %s", f.bodies[2])
	}
	s, _ = c.Get(ctx, true)
	if pw2, _ := Password(s, "sip.example.com"); pw2 == pw {
		t.Fatal("password did not change")
	}
}

func TestErrorsAndRetries(t *testing.T) {
	f := &fakeGraph{failNext: []int{500, 503}, errBody: `{"error":{"message":"temporary","code":2,"fbtrace_id":"Abc"}}`}
	c := newClient(t, f)
	if _, err := c.Get(context.Background(), false); err != nil {
		t.Fatalf("5xx twice then ok must succeed with 2 retries: %v", err)
	}
	// A 4xx is not retried, and says what to do.
	f.failNext = []int{400, 400, 400}
	f.errBody = `{"error":{"message":"Error validating access token: Session has expired","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"AoX7"}}`
	n := len(f.requests)
	_, err := c.Get(context.Background(), false)
	var ge *Error
	if err == nil || !errorsAs(err, &ge) || ge.Code != 190 || !strings.Contains(err.Error(), "create a new one") || !strings.Contains(err.Error(), "AoX7") {
		t.Fatalf("err %v", err)
	}
	if len(f.requests) != n+1 {
		t.Fatalf("a 4xx was retried (%d requests)", len(f.requests)-n)
	}
	if strings.Contains(err.Error(), token) {
		t.Fatal("token in the error")
	}
	// A network error does not leak the token either.
	bad := &Client{BaseURL: "http://127.0.0.1:1", Version: "v23.0", PhoneNumberID: "1", Token: token}
	if _, err := bad.Get(context.Background(), false); err == nil || strings.Contains(err.Error(), token) {
		t.Fatalf("network error %v", err)
	}
	if _, err := Password(&Settings{}, "x"); err == nil {
		t.Fatal("no SIP configured must be an error")
	}
}

func errorsAs(err error, target **Error) bool {
	e, ok := err.(*Error)
	if ok {
		*target = e
	}
	return ok
}

// TestPortDecodesBothShapes: the guide types servers[].port as a string;
// a reply with a number must decode too, and so must a missing port.
func TestPortDecodesBothShapes(t *testing.T) {
	for _, tc := range []struct {
		body string
		port Port
		eff  int
	}{
		{`{"calling":{"sip":{"servers":[{"hostname":"a","port":"5062"}]}}}`, 5062, 5062},
		{`{"calling":{"sip":{"servers":[{"hostname":"a","port":5063}]}}}`, 5063, 5063},
		{`{"calling":{"sip":{"servers":[{"hostname":"a"}]}}}`, 0, DefaultPort},
	} {
		var s Settings
		if err := json.Unmarshal([]byte(tc.body), &s); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		srv := s.Calling.SIP.Servers[0]
		if srv.Port != tc.port || srv.EffectivePort() != tc.eff {
			t.Fatalf("%s: port %d (effective %d)", tc.body, srv.Port, srv.EffectivePort())
		}
	}
	for _, bad := range []string{`"50a"`, `70000`, `-1`, `true`} {
		var p Port
		if err := json.Unmarshal([]byte(bad), &p); err == nil {
			t.Fatalf("port %s accepted", bad)
		}
	}
}
