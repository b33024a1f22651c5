package web_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/waphone/waphone/internal/testutil"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/phonerig"
	"github.com/waphone/waphone/metrics"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/settings"
	"github.com/waphone/waphone/web"
)

const adminPassword = "correct horse battery staple"

// testHeadset stands in for the daemon's audio wiring (the lead's): it
// counts tones and reports a steady microphone level.
type testHeadset struct{ tones atomic.Int32 }

func (h *testHeadset) PlayTestTone(ctx context.Context) error { h.tones.Add(1); return nil }
func (h *testHeadset) MicLevel() float64                      { return 0.2 }

// poll waits until a JavaScript expression is true.
func poll(expr string, timeout time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout))(ctx, t)
		return err
	})
}

// console is a phone on loopback with its web console.
type console struct {
	rig      *phonerig.Rig
	url      string
	store    *history.Store
	settings *settings.Store
	headset  *testHeadset
}

func record(st *history.Store) func(phone.CallSummary) {
	return func(sum phone.CallSummary) {
		in := sum.Info
		rec := history.Record{Direction: sum.Direction, Remote: in.Remote, Username: in.Username, WACID: in.WACID,
			UserID: in.UserID, CTAPayload: in.CTAPayload, DeeplinkPayload: in.DeeplinkPayload, Start: sum.Start, Answered: sum.Answered, End: sum.End, Duration: sum.Duration,
			EndedBy: sum.EndedBy, Reason: sum.Reason}
		if sum.Media != nil {
			rec.Quality = sum.Media
		}
		_ = st.Append(rec)
	}
}

func writePassword(t testing.TB, dir, pw string) string {
	t.Helper()
	p := filepath.Join(dir, "web-password")
	if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newConsole(t testing.TB, portMin int) *console {
	t.Helper()
	dir := t.TempDir()
	store, err := history.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	rig := phonerig.New(t, phonerig.Options{Answer: "button", OnCallEnd: record(store), PortMin: portMin})
	cert, err := web.SelfSigned(dir, []string{"waphone.local"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := metrics.New(metrics.Config{Phone: rig.Phone, Version: "test"})
	go m.Run(ctx)
	st := &settings.Store{Path: filepath.Join(dir, "state", settings.FileName),
		Base: settings.Settings{Answer: "button", RingTimeout: time.Minute, Capture: "null", Playback: "null"}}
	hs := &testHeadset{}
	srv, err := web.New(web.Config{
		Phone: rig.Phone, PasswordFile: writePassword(t, dir, adminPassword), Certificate: cert,
		History: store, Headset: hs, Settings: st, Metrics: m, Version: "test",
		Devices: func() ([]string, error) { return []string{"USB Headset"}, nil },
		Doctor: func(context.Context) []web.Check {
			return []web.Check{{Level: "ok", Text: "config is valid"}, {Level: "warn", Text: "sip.allow is empty"}}
		},
		Meta: func(context.Context) (any, error) {
			return map[string]any{"sip": map[string]any{"status": "ENABLED"}}, nil
		},
		Defence: func() map[string]uint64 { return map[string]uint64{"auth_failures": 0, "throttled": 0, "refused": 0} },
		Logger:  phonerig.Logger().With("side", "web"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, ln); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &console{rig: rig, url: "https://" + ln.Addr().String(), store: store, settings: st, headset: hs}
}

// client is a Go HTTPS client from a given loopback address (the login
// throttle counts per address).
func client(t testing.TB, from string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{DialContext: d.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the console's self-signed cert
}

func login(t testing.TB, c *http.Client, base, pw string) int {
	t.Helper()
	res, err := c.PostForm(base+"/login", url.Values{"password": {pw}})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func artifacts(t *testing.T) string {
	dir := os.Getenv("WAPHONE_ARTIFACTS")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "waphone-console-"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// TestHTTP1Only: the console never agrees to h2, which board builds
// (nethttpomithttp2) cannot speak.
func TestHTTP1Only(t *testing.T) {
	con := newConsole(t, 22000)
	addr := strings.TrimPrefix(con.url, "https://")
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}}) // self-signed
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
		t.Fatalf("ALPN chose %q, want http/1.1", got)
	}
}

func TestLoginThrottleAndCrossOrigin(t *testing.T) {
	con := newConsole(t, 23000)
	// A client that guesses is refused, then throttled even with the right password.
	guesser := client(t, "127.0.0.2")
	for i := range 5 {
		if code := login(t, guesser, con.url, fmt.Sprintf("guess-%d", i)); code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: status %d, want 401", i, code)
		}
	}
	if code := login(t, guesser, con.url, adminPassword); code != http.StatusTooManyRequests {
		t.Fatalf("after 5 wrong passwords: status %d, want 429", code)
	}
	// Another address is not punished for it.
	c := client(t, "127.0.0.1")
	if code := login(t, c, con.url, adminPassword); code != http.StatusSeeOther {
		t.Fatalf("right password: status %d, want 303", code)
	}
	u, _ := url.Parse(con.url)
	var cookie *http.Cookie
	for _, ck := range c.Jar.Cookies(u) {
		cookie = ck
	}
	if cookie == nil {
		t.Fatal("no session cookie")
	}
	// The cookie's attributes are on the Set-Cookie line; the jar hides them.
	res, err := client(t, "127.0.0.1").PostForm(con.url+"/login", url.Values{"password": {adminPassword}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	sc := res.Header.Get("Set-Cookie")
	for _, want := range []string{"__Host-waphone=", "Secure", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options"} {
		if res.Header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	if !strings.Contains(res.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("CSP %q", res.Header.Get("Content-Security-Policy"))
	}

	// A page elsewhere cannot make the logged-in browser act.
	post := func(origin, site string) int {
		req, _ := http.NewRequest(http.MethodPost, con.url+"/api/mute", nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if site != "" {
			req.Header.Set("Sec-Fetch-Site", site)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := post("https://evil.example", ""); code != http.StatusForbidden {
		t.Fatalf("foreign Origin: status %d, want 403", code)
	}
	if code := post("", "cross-site"); code != http.StatusForbidden {
		t.Fatalf("Sec-Fetch-Site cross-site: status %d, want 403", code)
	}
	if code := post(con.url, "same-origin"); code != http.StatusConflict { // allowed; no call to mute
		t.Fatalf("same origin: status %d, want 409 (no call)", code)
	}
	// Without a session nothing but the login page answers.
	res, err = client(t, "127.0.0.3").Get(con.url + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status without a session: %d", res.StatusCode)
	}
}

func TestBrowserCall(t *testing.T) {
	path, err := exec.LookPath("chromium")
	if err != nil {
		testutil.Missing(t, "chromium not installed (apt-get install chromium): the browser test cannot run")
	}
	con := newConsole(t, 24000)
	shots := artifacts(t)
	downloads := t.TempDir()

	actx, acancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Flag("ignore-certificate-errors", true),
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(412, 915))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	shot := func(name string) {
		t.Helper()
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	do("open", chromedp.EmulateViewport(412, 915), chromedp.Navigate(con.url+"/"), chromedp.WaitVisible(chromedp.CSS("#password")))
	shot("01-login")
	do("wrong password", chromedp.SendKeys(chromedp.CSS("#password"), "not the password"),
		chromedp.Click(chromedp.CSS("#login-submit")), chromedp.WaitVisible(chromedp.CSS("#login-error")))
	if got := text("#login-error"); !strings.Contains(got, "Wrong password") {
		t.Fatalf("login error %q", got)
	}
	shot("02-login-wrong")
	do("log in", chromedp.SendKeys(chromedp.CSS("#password"), adminPassword), chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS(`#state[data-state="idle"]`)))
	shot("03-now-idle")

	// Meta calls: the page shows it ringing, without a reload.
	c := con.rig.Ring(t, metasim.CallOptions{From: phonerig.User, UserID: "US.13491208655302741918", Username: "shopper42", CTAPayload: "order-77"})
	do("ringing", chromedp.WaitVisible(chromedp.CSS(`#state[data-state="ringing"]`)), chromedp.WaitEnabled(chromedp.CSS("#btn-answer")))
	caller := text("#caller")
	for _, want := range []string{phonerig.User, "shopper42", "US.13491208655302741918", "order-77", c.WACID()} {
		if !strings.Contains(caller, want) {
			t.Errorf("caller box %q lacks %q", caller, want)
		}
	}
	shot("04-now-ringing")
	do("answer", chromedp.Click(chromedp.CSS("#btn-answer")), chromedp.WaitVisible(chromedp.CSS(`#state[data-state="talking"]`)))
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := c.WaitAnswer(wctx); err != nil {
		t.Fatalf("metasim: %v", err)
	}
	wcancel()
	// The plot gets a point a second while the call talks.
	do("quality plot", chromedp.WaitVisible(chromedp.CSS("#quality")),
		poll(`Number(document.getElementById("quality").dataset.points || 0) >= 6`, 20*time.Second))
	if mos := text("#v-mos"); mos == "" || mos == "0.00" {
		t.Errorf("MOS shown %q", mos)
	}
	shot("05-now-talking")
	do("hang up", chromedp.Click(chromedp.CSS("#btn-hangup")), chromedp.WaitVisible(chromedp.CSS(`#state[data-state="idle"]`)))
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("metasim's call did not end")
	}
	if by := c.EndedBy(); by != "business" && by != "" {
		t.Logf("metasim says ended by %q", by)
	}

	// History shows the call with its WACID.
	var recs []history.Record
	for deadline := time.Now().Add(5 * time.Second); len(recs) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		recs, _, _ = con.store.Read(time.Time{})
	}
	if len(recs) != 1 {
		t.Fatalf("%d history records", len(recs))
	}
	do("history", chromedp.Click(chromedp.CSS("#nav-history")), chromedp.WaitVisible(chromedp.CSS("#history td.wacid")))
	if got := text("#history tbody"); !strings.Contains(got, c.WACID()) || !strings.Contains(got, "local-bye") {
		t.Fatalf("history table %q lacks the WACID %s or local-bye", got, c.WACID())
	}
	shot("06-history")
	do("csv", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads})
		return err
	}), chromedp.Click(chromedp.CSS("#csv")))
	var csv []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(downloads, "waphone-calls.csv")); err == nil && len(b) > 0 {
			csv = b
			break
		}
	}
	if !strings.HasPrefix(string(csv), "start,answered,end,direction,remote") || !strings.Contains(string(csv), c.WACID()) {
		t.Fatalf("downloaded CSV %q", csv)
	}
	t.Logf("CSV:\n%s", csv)

	// The page is routed on hashchange, which fires after the click returns: wait
	// for the checks themselves, not for "checking…" (hidden until the route runs).
	do("health", chromedp.Click(chromedp.CSS("#nav-health")),
		poll(`document.getElementById("checks").children.length > 0 && document.getElementById("health-loading").hidden`, 10*time.Second))
	if got := text("#checks"); !strings.Contains(got, "config is valid") {
		t.Errorf("health checks %q", got)
	}
	if got := text("#certs"); !strings.Contains(got, "web: waphone.local") {
		t.Errorf("certificates %q", got)
	}
	shot("07-health")
	do("headset", chromedp.Click(chromedp.CSS("#nav-headset")), chromedp.Click(chromedp.CSS("#btn-tone")),
		poll(`document.getElementById("tone-result").textContent === "done" && document.getElementById("meter-bar").style.width !== ""`, 5*time.Second))
	if con.headset.tones.Load() != 1 {
		t.Errorf("%d test tones played", con.headset.tones.Load())
	}
	shot("08-headset")
	do("settings", chromedp.Click(chromedp.CSS("#nav-settings")),
		poll(`document.getElementById("s-ring").value === "1m0s"`, 5*time.Second),
		chromedp.SetValue(chromedp.CSS("#s-ring"), "45s"), chromedp.SetValue(chromedp.CSS("#s-capture"), "device:USB Headset"),
		chromedp.Click(chromedp.CSS(`#form-settings button[type="submit"]`)),
		poll(`document.getElementById("settings-result").textContent.startsWith("Saved")`, 5*time.Second))
	shot("09-settings")
	b, err := os.ReadFile(con.settings.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `ring_timeout = '45s'`) || !strings.Contains(string(b), `capture = 'device:USB Headset'`) || strings.Contains(string(b), "answer =") {
		t.Fatalf("settings file:\n%s", b)
	}
	do("log out", chromedp.Click(chromedp.CSS("#logout-settings")), chromedp.WaitVisible(chromedp.CSS("#password")))
}
