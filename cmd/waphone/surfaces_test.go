package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/phonerig"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/web"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type surfaceRig struct {
	rig     *phonerig.Rig
	web     string
	metrics string
	client  *http.Client
}

func startTestSurfaces(t testing.TB, ctx context.Context, r *phonerig.Rig, webOn bool) (*surfaceRig, func()) {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := history.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	sr := &surfaceRig{rig: r, metrics: freeAddr(t)}
	sc := surfacesConfig{MetricsListen: sr.metrics, Hostname: "desk", StateDir: dir, Version: "test",
		Phone: r.Phone, History: store, Endpoint: r.EP, Logger: phonerig.Logger(),
		Doctor: func(context.Context) []web.Check {
			return doctorChecks([]string{"ok    config valid", "FAIL  no cert"})
		}}
	if webOn {
		sr.web = freeAddr(t)
		sc.WebListen, sc.WebPasswordFile = sr.web, pw
	}
	wait, err := startSurfaces(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	sr.client = &http.Client{Jar: jar, Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // self-signed console
	return sr, wait
}

func TestStartSurfaces(t *testing.T) {
	r := phonerig.New(t, phonerig.Options{PortMin: 27000})
	ctx, cancel := context.WithCancel(context.Background())
	sr, wait := startTestSurfaces(t, ctx, r, true)
	res, err := sr.client.PostForm("https://"+sr.web+"/login", url.Values{"password": {"secret"}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	res, err = sr.client.Get("https://" + sr.web + "/api/health")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), `"level":"fail","text":"no cert"`) || !strings.Contains(string(b), "throttled INVITEs") {
		t.Fatalf("health %d: %s", res.StatusCode, b)
	}
	res, err = http.Get("http://" + sr.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), `waphone_sip_throttled_total 0`) || !strings.Contains(string(b), `waphone_state{state="idle"} 1`) {
		t.Fatalf("metrics:\n%s", b)
	}
	cancel()
	wait()
	if _, err := http.Get("http://" + sr.metrics + "/metrics"); err == nil {
		t.Fatal("metrics still served after stop")
	}
}

func TestStartSurfacesErrors(t *testing.T) {
	r := phonerig.New(t, phonerig.Options{PortMin: 27500})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for name, sc := range map[string]surfacesConfig{
		"metrics on web without web": {MetricsListen: "web", Phone: r.Phone},
		"no password file":           {WebListen: "127.0.0.1:0", WebPasswordFile: "/nonexistent", StateDir: t.TempDir(), Phone: r.Phone},
		"bad broker":                 {MQTTBroker: "http://x", Phone: r.Phone},
	} {
		if _, err := startSurfaces(ctx, sc); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// procUsage is the process's CPU time and resident memory.
func procUsage(t testing.TB) (cpu time.Duration, rssKB int) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return cpu, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			rssKB, _ = strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return cpu, rssKB
}

// TestSurfacesCost logs the CPU and memory the console and metrics add,
// idle and during a call, with a live page open (its event stream) and
// a scrape a second. Figures only: no assertion on time.
func TestSurfacesCost(t *testing.T) {
	if testing.Short() {
		t.Skip("measures for ~20 s")
	}
	const window = 4 * time.Second
	r := phonerig.New(t, phonerig.Options{PortMin: 28000})
	measure := func(what string, load func(stop <-chan struct{})) (time.Duration, int) {
		runtime.GC()
		stop := make(chan struct{})
		done := make(chan struct{})
		c0, _ := procUsage(t)
		go func() { defer close(done); load(stop) }()
		time.Sleep(window)
		close(stop)
		<-done
		c1, rss := procUsage(t)
		t.Logf("%-48s CPU %5.2f%% of a core, RSS %6d kB", what, 100*float64(c1-c0)/float64(window), rss)
		return c1 - c0, rss
	}
	nothing := func(<-chan struct{}) {}
	idleCPU, idleRSS := measure("phone idle, no surfaces", nothing)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sr, wait := startTestSurfaces(t, ctx, r, true)
	res, err := sr.client.PostForm("https://"+sr.web+"/login", url.Values{"password": {"secret"}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	// A page: the event stream open, plus a scrape a second.
	page := func(stop <-chan struct{}) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+sr.web+"/api/events", nil)
		sctx, scancel := context.WithCancel(context.Background())
		defer scancel()
		req = req.WithContext(sctx)
		cl := *sr.client
		cl.Timeout = 0
		res, err := cl.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		go func() { _, _ = io.Copy(io.Discard, res.Body) }()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				res.Body.Close()
				return
			case <-tick.C:
				if mr, err := http.Get("http://" + sr.metrics + "/metrics"); err == nil {
					_, _ = io.Copy(io.Discard, mr.Body)
					mr.Body.Close()
				}
			}
		}
	}
	surfIdleCPU, _ := measure("surfaces on, idle, nobody looking", nothing)
	pageIdleCPU, pageIdleRSS := measure("surfaces on, idle, a page open + 1 scrape/s", page)

	c, err := r.Sim.Call(context.Background(), r.Target, metasim.CallOptions{From: phonerig.User})
	if err != nil {
		t.Fatal(err)
	}
	r.WaitState(t, phone.Talking)
	callCPU, _ := measure("in a call, surfaces on, nobody looking", nothing)
	callPageCPU, callRSS := measure("in a call, a page open (media 1/s) + 1 scrape/s", page)
	_ = c.Hangup(context.Background())
	r.WaitState(t, phone.Idle)
	t.Logf("added idle: CPU %+.2f%% (nobody looking), %+.2f%% (page + scrapes); RSS %+d kB",
		100*float64(surfIdleCPU-idleCPU)/float64(window), 100*float64(pageIdleCPU-idleCPU)/float64(window), pageIdleRSS-idleRSS)
	t.Logf("added in a call by a page + scrapes: CPU %+.2f%%; RSS at the end %d kB",
		100*float64(callPageCPU-callCPU)/float64(window), callRSS)
	cancel()
	wait()
}
