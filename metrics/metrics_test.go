package metrics_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/phonerig"
	"github.com/waphone/waphone/metrics"
	"github.com/waphone/waphone/phone"
)

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// value finds a sample's value (counter, gauge, untyped) or a histogram's
// count by its labels ("k=v,k=v").
func value(fams map[string]*dto.MetricFamily, name, labels string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		var got []string
		for _, l := range m.Label {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(got, ",") != labels {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsAfterCalls(t *testing.T) {
	r := phonerig.New(t, phonerig.Options{PortMin: 25000})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := metrics.New(metrics.Config{
		Phone: r.Phone, Version: "v1.2.3-test", ProcessMetrics: true,
		Defence: func() metrics.Defence {
			na, ol := r.EP.Refused()
			return metrics.Defence{Throttled: uint64(r.EP.Throttled()), RefusedNotAllowed: na, RefusedOverLimit: ol}
		},
		Audio:      func() (metrics.Audio, bool) { return metrics.Audio{Plugged: true, PlayUnderruns: 3}, true },
		CertExpiry: func() time.Time { return time.Unix(1900000000, 0) },
	})
	runDone := make(chan struct{})
	go func() { defer close(runDone); m.Run(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- m.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String() + "/metrics"

	before := scrape(t, url)
	if v, ok := value(before, "waphone_calls_total", "direction=inbound,outcome=answered"); !ok || v != 0 {
		t.Fatalf("before any call: inbound answered = %v (%v)", v, ok)
	}

	// A user calls, the phone answers (auto), the user hangs up.
	c, err := r.Sim.Call(context.Background(), r.Target, metasim.CallOptions{From: phonerig.User})
	if err != nil {
		t.Fatal(err)
	}
	r.WaitState(t, phone.Talking)
	if v, _ := value(scrape(t, url), "waphone_state", "state=talking"); v != 1 {
		t.Errorf("during the call waphone_state{talking} = %v", v)
	}
	time.Sleep(1500 * time.Millisecond) // RTCP reports and a MOS to count
	if err := c.Hangup(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.WaitState(t, phone.Idle)
	// The business calls out and hangs up.
	if err := r.Phone.Call(context.Background(), phonerig.User); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := r.Phone.Hangup(); err != nil {
		t.Fatal(err)
	}
	r.WaitState(t, phone.Idle)

	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		fams = scrape(t, url)
		if v, _ := value(fams, "waphone_calls_total", "direction=outbound,outcome=answered"); v == 1 || time.Now().After(deadline) {
			break
		}
	}
	want := []struct {
		name, labels string
		v            float64
	}{
		{"waphone_calls_total", "direction=inbound,outcome=answered", 1},
		{"waphone_calls_total", "direction=outbound,outcome=answered", 1},
		{"waphone_calls_total", "direction=inbound,outcome=missed", 0},
		{"waphone_call_duration_seconds", "", 2},
		{"waphone_call_mos", "", 2},
		{"waphone_call_jitter_ms", "", 2},
		{"waphone_call_loss_percent", "", 2},
		{"waphone_state", "state=idle", 1},
		{"waphone_state", "state=talking", 0},
		{"waphone_sip_throttled_total", "", 0},
		{"waphone_connections_refused_total", "reason=not_allowed", 0},
		{"waphone_headset_plugged", "", 1},
		{"waphone_audio_underruns_total", "stream=playback", 3},
		{"waphone_certificate_expiry_timestamp_seconds", "", 1900000000},
		{"waphone_build_info", "version=v1.2.3-test,goversion=" + goVersion(fams), 1},
	}
	for _, w := range want {
		got, ok := value(fams, w.name, w.labels)
		if !ok || got != w.v {
			t.Errorf("%s{%s} = %v (present %v), want %v", w.name, w.labels, got, ok, w.v)
		}
	}
	if fams["process_resident_memory_bytes"] == nil {
		t.Error("no process metrics")
	}
	for name := range fams {
		if !strings.HasPrefix(name, "waphone_") && !strings.HasPrefix(name, "process_") && !strings.HasPrefix(name, "go_") {
			t.Errorf("metric %s is not prefixed waphone_", name)
		}
	}
	cancel()
	<-runDone
	if err := <-serveDone; err != nil {
		t.Fatal(err)
	}
}

func goVersion(fams map[string]*dto.MetricFamily) string {
	if f := fams["waphone_build_info"]; f != nil && len(f.Metric) > 0 {
		for _, l := range f.Metric[0].Label {
			if l.GetName() == "goversion" {
				return l.GetValue()
			}
		}
	}
	return "missing"
}

// A call seen twice (Run and a daemon's OnCallEnd) is counted once.
func TestOnCallEndCountsOnce(t *testing.T) {
	r := phonerig.New(t, phonerig.Options{PortMin: 25500})
	m := metrics.New(metrics.Config{Phone: r.Phone})
	now := time.Now()
	sum := phone.CallSummary{Direction: "inbound", Start: now, End: now.Add(time.Second), EndedBy: "missed"}
	sum.Info.CallID = "abc"
	m.OnCallEnd(sum)
	m.OnCallEnd(sum)
	var b strings.Builder
	m.WritePrometheus(&b)
	if !strings.Contains(b.String(), `waphone_calls_total{direction="inbound",outcome="missed"} 1`) {
		t.Fatalf("metrics:\n%s", b.String())
	}
}
