package graph

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// permGraph serves Meta's documented call_permissions and messages shapes
// from testdata, one fixture per user.
type permGraph struct {
	mu       sync.Mutex
	fixtures map[string]string // user_wa_id -> testdata file
	status   map[string]int    // user_wa_id -> HTTP status (default 200)
	requests []string
	bodies   []string
}

func (g *permGraph) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, _ := io.ReadAll(r.Body)
	g.requests = append(g.requests, r.Method+" "+r.URL.Path+" "+r.URL.Query().Get("user_wa_id")+" "+r.Header.Get("Authorization"))
	g.bodies = append(g.bodies, string(b))
	var file string
	code := http.StatusOK
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/call_permissions"):
		u := r.URL.Query().Get("user_wa_id")
		file = g.fixtures[u]
		if c, ok := g.status[u]; ok {
			code = c
		}
		if file == "" {
			file, code = "error_sip_enabled.json", http.StatusBadRequest
		}
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/messages"):
		file = "messages_sent.json"
		var m map[string]any
		if json.Unmarshal(b, &m) == nil {
			if c, ok := g.status[m["to"].(string)]; ok {
				code, file = c, g.fixtures[m["to"].(string)]
			}
		}
	default:
		http.NotFound(w, r)
		return
	}
	body, err := os.ReadFile("testdata/" + file)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func newPermClient(t *testing.T, g *permGraph) *Client {
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return &Client{BaseURL: srv.URL, Version: "v23.0", PhoneNumberID: "106540352242922", Token: token, Retries: 1, Backoff: time.Millisecond}
}

func TestCallPermissionsShapes(t *testing.T) {
	g := &permGraph{fixtures: map[string]string{
		"+12195550714":            "call_permissions_permanent.json",
		"+12195550715":            "call_permissions_temporary.json",
		"+12195550716":            "call_permissions_none.json",
		"US.13491208655302741918": "call_permissions_limited.json",
	}}
	c := newPermClient(t, g)
	ctx := context.Background()

	p, err := c.CallPermissions(ctx, "+12195550714")
	if err != nil {
		t.Fatal(err)
	}
	if g.requests[0] != "GET /v23.0/106540352242922/call_permissions +12195550714 Bearer "+token {
		t.Fatalf("request %q", g.requests[0])
	}
	call, ok := p.Action(ActionStartCall)
	if !p.Granted() || p.Permission.Status != PermissionPermanent || p.Permission.ExpirationTime != 0 || !ok || !call.CanPerformAction ||
		call.Limits[0].MaxAllowed != 10 || call.Limits[0].CurrentUsage != 2 {
		t.Fatalf("permanent: %+v", p)
	}

	p, err = c.CallPermissions(ctx, "+12195550715")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Granted() || p.Permission.Status != PermissionTemporary || !p.Permission.ExpirationTime.Time().Equal(time.Unix(1745343479, 0)) {
		t.Fatalf("temporary: %+v", p)
	}
	req, _ := p.Action(ActionRequestPermission)
	if len(req.Limits) != 2 || req.Limits[1].TimePeriod != "P7D" || req.Limits[1].CurrentUsage != 1 {
		t.Fatalf("request limits: %+v", req)
	}

	p, err = c.CallPermissions(ctx, "+12195550716")
	if err != nil {
		t.Fatal(err)
	}
	if call, _ := p.Action(ActionStartCall); p.Granted() || p.Permission.Status != PermissionNone || call.CanPerformAction {
		t.Fatalf("no permission: %+v", p)
	}

	// A BSUID is passed as it is; a limit that is used up says when it resets.
	p, err = c.CallPermissions(ctx, "US.13491208655302741918")
	if err != nil {
		t.Fatal(err)
	}
	call, _ = p.Action(ActionStartCall)
	if call.CanPerformAction || call.Limits[0].CurrentUsage != 5 || call.Limits[0].LimitExpirationTime.Time().Unix() != 1745622600 {
		t.Fatalf("rate limited: %+v", call)
	}

	// "granted" (what some integrations say) counts as granted; a string time decodes.
	var q CallPermissions
	if err := json.Unmarshal([]byte(`{"permission":{"status":"granted","expiration_time":"1745343479"}}`), &q); err != nil || !q.Granted() || q.Permission.ExpirationTime != 1745343479 {
		t.Fatalf("granted: %+v %v", q, err)
	}
	if err := json.Unmarshal([]byte(`{"permission":{"expiration_time":"soon"}}`), &q); err == nil {
		t.Fatal("a bad time was accepted")
	}
}

func TestCallPermissionsRefusedWhileSIPEnabled(t *testing.T) {
	g := &permGraph{fixtures: map[string]string{}}
	c := newPermClient(t, g)
	_, err := c.CallPermissions(context.Background(), "+12195550714")
	var ge *Error
	if !errors.As(err, &ge) || !ge.SIPEnabled() || ge.HTTPStatus != 400 {
		t.Fatalf("err %v", err)
	}
	if !strings.Contains(err.Error(), "while SIP is enabled") || !strings.Contains(err.Error(), "AqZ1sipOn") || strings.Contains(err.Error(), token) {
		t.Fatalf("error does not say what happened: %v", err)
	}
	if len(g.requests) != 1 {
		t.Fatalf("a 400 was retried: %d requests", len(g.requests))
	}
	if (&Error{Code: 190, Message: "Error validating access token"}).SIPEnabled() {
		t.Fatal("a token error is not a SIP refusal")
	}
}

func TestRequestCallPermissionBody(t *testing.T) {
	g := &permGraph{}
	c := newPermClient(t, g)
	ctx := context.Background()
	id, err := c.RequestCallPermission(ctx, PermissionRequest{To: "+12195550714", Text: "May we call you about order ON-12853?"})
	if err != nil || id != "wamid.gBGGFlaCmZ9plHrf2Mh-o" {
		t.Fatalf("id %q err %v", id, err)
	}
	if g.requests[0] != "POST /v23.0/106540352242922/messages  Bearer "+token {
		t.Fatalf("request %q", g.requests[0])
	}
	want := `{"messaging_product":"whatsapp","recipient_type":"individual","to":"+12195550714","type":"interactive",` +
		`"interactive":{"type":"call_permission_request","action":{"name":"call_permission_request"},"body":{"text":"May we call you about order ON-12853?"}}}`
	if g.bodies[0] != want {
		t.Fatalf("body\n got %s\nwant %s", g.bodies[0], want)
	}
	// No text: the body object is left out (it is optional).
	if _, err := c.RequestCallPermission(ctx, PermissionRequest{To: "US.13491208655302741918"}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(g.bodies[1], `"body"`) || !strings.Contains(g.bodies[1], `"to":"US.13491208655302741918"`) {
		t.Fatalf("body %s", g.bodies[1])
	}
	if _, err := c.RequestCallPermission(ctx, PermissionRequest{To: "+12195550714", Template: "sample_cpr_template", Language: "en"}); err != nil {
		t.Fatal(err)
	}
	want = `{"messaging_product":"whatsapp","recipient_type":"individual","to":"+12195550714","type":"template",` +
		`"template":{"name":"sample_cpr_template","language":{"code":"en"}}}`
	if g.bodies[2] != want {
		t.Fatalf("template body\n got %s\nwant %s", g.bodies[2], want)
	}
	for _, bad := range []PermissionRequest{{}, {To: "+1", Template: "t"}, {To: "+1", Template: "t", Language: "en", Text: "x"}} {
		if _, err := bad.Body(); err == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
	if len(g.requests) != 3 {
		t.Fatalf("invalid requests reached Meta: %d", len(g.requests))
	}
}
