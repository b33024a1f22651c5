package webhook

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

const secret = "app-secret-0123456789abcdef"

type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) CallEvent(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) got() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func newServer(t *testing.T) (*httptest.Server, *recorder) {
	rec := &recorder{}
	srv := httptest.NewServer(&Handler{VerifyToken: "verify-me", AppSecret: []byte(secret), Sink: rec, MaxBody: 64 << 10})
	t.Cleanup(srv.Close)
	return srv, rec
}

func TestHandshake(t *testing.T) {
	srv, _ := newServer(t)
	get := func(q url.Values) (int, string) {
		t.Helper()
		res, err := http.Get(srv.URL + "/webhook?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(res.Body)
		return res.StatusCode, b.String()
	}
	code, body := get(url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {"verify-me"}, "hub.challenge": {"1158201444"}})
	if code != 200 || body != "1158201444" {
		t.Fatalf("handshake: %d %q", code, body)
	}
	for _, q := range []url.Values{
		{"hub.mode": {"subscribe"}, "hub.verify_token": {"verify-mf"}, "hub.challenge": {"1"}},
		{"hub.mode": {"subscribe"}, "hub.verify_token": {"verify-me-too"}, "hub.challenge": {"1"}},
		{"hub.mode": {"unsubscribe"}, "hub.verify_token": {"verify-me"}, "hub.challenge": {"1"}},
		{"hub.mode": {"subscribe"}, "hub.challenge": {"1"}},
	} {
		if code, body := get(q); code != 403 || body == "1" {
			t.Fatalf("%v: %d %q", q, code, body)
		}
	}
	// No token configured: nothing verifies, not even an empty token.
	h := &Handler{}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/?hub.mode=subscribe&hub.verify_token=&hub.challenge=x", nil))
	if w.Code != 403 {
		t.Fatalf("empty token: %d", w.Code)
	}
}

func post(t *testing.T, srv *httptest.Server, body []byte, sig string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+"/webhook", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if sig != "" {
		req.Header.Set("X-Hub-Signature-256", sig)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

func TestSignatures(t *testing.T) {
	srv, rec := newServer(t)
	body, err := os.ReadFile("testdata/terminate.json")
	if err != nil {
		t.Fatal(err)
	}
	good := Sign(body, []byte(secret))
	if code := post(t, srv, body, good); code != 200 {
		t.Fatalf("good signature: %d", code)
	}
	if n := len(rec.got()); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
	wrongKey := Sign(body, []byte("another-secret"))
	tampered := append(bytes.Clone(body[:len(body)-2]), []byte(" }")...)
	for name, tc := range map[string]struct {
		body []byte
		sig  string
	}{
		"missing":       {body, ""},
		"wrong key":     {body, wrongKey},
		"tampered body": {tampered, good},
		"no prefix":     {body, strings.TrimPrefix(good, "sha256=")},
		"sha1":          {body, "sha1=" + strings.TrimPrefix(good, "sha256=")[:40]},
		"not hex":       {body, "sha256=zz"},
		"truncated":     {body, good[:len(good)-2]},
	} {
		if code := post(t, srv, tc.body, tc.sig); code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, code)
		}
	}
	if n := len(rec.got()); n != 2 {
		t.Fatalf("refused bodies reached the sink: %d events", n)
	}
	// No app secret configured: every POST is refused.
	h := &Handler{VerifyToken: "x", Sink: rec}
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
	r.Header.Set("X-Hub-Signature-256", Sign(body, nil))
	h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("no secret: %d", w.Code)
	}
}

func TestBodyLimitsAndMalformed(t *testing.T) {
	srv, rec := newServer(t)
	big := bytes.Repeat([]byte(" "), 64<<10+1)
	if code := post(t, srv, big, Sign(big, []byte(secret))); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized: %d", code)
	}
	bad := []byte(`{"entry":[{"changes":[{"value":{"calls":[{"id":"wacid.x","timestamp":"yesterday"}]}}]}]}`)
	if code := post(t, srv, bad, Sign(bad, []byte(secret))); code != http.StatusBadRequest {
		t.Fatalf("bad timestamp: %d", code)
	}
	torn := []byte(`{"entry":[{"changes":[`)
	if code := post(t, srv, torn, Sign(torn, []byte(secret))); code != http.StatusBadRequest {
		t.Fatalf("malformed: %d", code)
	}
	if len(rec.got()) != 0 {
		t.Fatal("refused bodies reached the sink")
	}
	req, _ := http.NewRequest("PUT", srv.URL, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("PUT: %d", res.StatusCode)
	}
}

func TestParseMetaShapes(t *testing.T) {
	read := func(name string) []Event {
		t.Helper()
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	ev := read("call_created.json")
	if len(ev) != 1 || ev[0].Kind != "call" || ev[0].WACID != "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh" || ev[0].Event != "call_created" ||
		ev[0].From != "16315553601" || ev[0].Direction != "USER_INITIATED" || !ev[0].Timestamp.Equal(time.Unix(1671644824, 0)) ||
		ev[0].PhoneNumberID != "436666719526789" {
		t.Fatalf("call_created: %+v", ev)
	}
	ev = read("terminate.json")
	if len(ev) != 2 || ev[0].Event != "terminate" || ev[0].Status != "COMPLETED" || ev[0].DurationSec != 120 ||
		!ev[0].StartTime.Equal(time.Unix(1671644824, 0)) || !ev[0].EndTime.Equal(time.Unix(1671644944, 0)) {
		t.Fatalf("terminate: %+v", ev)
	}
	if ev[1].Status != "FAILED" || len(ev[1].Errors) != 1 || ev[1].Errors[0].Code != 138021 {
		t.Fatalf("failed terminate: %+v", ev[1])
	}
	// Business-initiated call statuses count; message statuses and other fields do not.
	ev = read("statuses.json")
	if len(ev) != 1 || ev[0].Kind != "status" || ev[0].WACID != "wacid.BizInitiated123" || ev[0].Status != "RINGING" || ev[0].To != "16315553601" {
		t.Fatalf("statuses: %+v", ev)
	}
	// Meta's reference types a terminate's status as a list; a number may be a string.
	ev, err := Parse([]byte(`{"entry":[{"changes":[{"field":"calls","value":{"calls":[{"id":"wacid.y","event":"terminate","status":["Completed"],"duration":"31"}]}}]}]}`))
	if err != nil || len(ev) != 1 || ev[0].Status != "Completed" || ev[0].DurationSec != 31 {
		t.Fatalf("loose shapes: %+v %v", ev, err)
	}
	if ev, err := Parse([]byte(`{}`)); err != nil || len(ev) != 0 {
		t.Fatalf("empty: %v %v", ev, err)
	}
}
