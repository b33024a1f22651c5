// Package metrics exposes the phone to Prometheus (text format, names
// prefixed waphone_): calls by direction and outcome, their duration and
// end-of-call quality, the SIP defences, the audio device and the
// certificate. It is a surface: it reads the phone's events and status
// and counter providers the daemon passes in, and never imports sip or
// media. It uses VictoriaMetrics/metrics, which costs the board's binary
// about 0.4 MB where prometheus/client_golang costs 2.7 MB
// (docs/dependencies.md).
package metrics

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/waphone/waphone/phone"
)

// Phone is what metrics reads from the phone.
type Phone interface {
	Status() phone.Status
	Subscribe(n int) (<-chan phone.Event, func())
}

// Defence is the SIP listener's counters since start.
type Defence struct {
	AuthFailures       uint64 // digest answers that failed
	Throttled          uint64 // INVITEs refused without a check (too many failures from the source)
	RefusedNotAllowed  uint64 // connections dropped by sip.allow
	RefusedOverLimit   uint64 // connections dropped by the connection cap
	TLSHandshakes      uint64 // completed
	TLSHandshakeErrors uint64 // failed
}

// Audio is the sound device's counters and state.
type Audio struct {
	Plugged          bool
	CaptureUnderruns uint64
	CaptureOverruns  uint64
	PlayUnderruns    uint64
	PlayOverruns     uint64
	Unplugs          uint64
}

// Config feeds the metrics. Phone is required; the providers may be nil
// (their metrics are then left out).
type Config struct {
	Phone      Phone
	Defence    func() Defence
	Audio      func() (Audio, bool) // false: no sound device (null/tone/wav audio)
	CertExpiry func() time.Time     // the SIP certificate's NotAfter
	Version    string
	// ProcessMetrics adds process_* and go_* (memory, CPU, goroutines).
	ProcessMetrics bool
	Logger         *slog.Logger
}

// Metrics is the registry and its feed.
type Metrics struct {
	cfg Config
	log *slog.Logger
	set *vm.Set

	mu   sync.Mutex
	seen map[string]bool // call ends counted (Start+CallID), against double counting

	busy     *vm.Counter
	duration *vm.PrometheusHistogram
	ringTime *vm.PrometheusHistogram
	mos      *vm.PrometheusHistogram
	jitter   *vm.PrometheusHistogram
	loss     *vm.PrometheusHistogram
	rtt      *vm.PrometheusHistogram
	dropped  *vm.Counter
}

// Outcomes of a call, as the calls counter labels them.
var outcomes = []string{"answered", "missed", "rejected", "cancelled", "failed", "other"}

// New builds the registry. Run feeds it.
func New(cfg Config) *Metrics {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// TYPE lines make the histograms histograms for parsers; the switch
	// is the library's, process-wide, and only this package uses it.
	vm.ExposeMetadata(true)
	s := vm.NewSet()
	m := &Metrics{cfg: cfg, log: cfg.Logger, set: s, seen: map[string]bool{}}
	for _, dir := range []string{"inbound", "outbound"} {
		for _, o := range outcomes {
			s.NewCounter(`waphone_calls_total{direction="` + dir + `",outcome="` + o + `"}`)
		}
	}
	m.busy = s.NewCounter(`waphone_calls_rejected_busy_total`)
	m.duration = s.NewPrometheusHistogramExt(`waphone_call_duration_seconds`, []float64{5, 15, 30, 60, 120, 300, 600, 1200, 3600})
	m.ringTime = s.NewPrometheusHistogramExt(`waphone_call_ring_seconds`, []float64{1, 2, 5, 10, 20, 30, 60})
	m.mos = s.NewPrometheusHistogramExt(`waphone_call_mos`, []float64{1.5, 2, 2.5, 3, 3.5, 3.8, 4, 4.2, 4.4})
	m.jitter = s.NewPrometheusHistogramExt(`waphone_call_jitter_ms`, []float64{1, 2, 5, 10, 20, 40, 80})
	m.loss = s.NewPrometheusHistogramExt(`waphone_call_loss_percent`, []float64{0.1, 0.5, 1, 2, 5, 10, 20})
	m.rtt = s.NewPrometheusHistogramExt(`waphone_call_rtt_ms`, []float64{20, 50, 100, 150, 200, 300, 500, 1000})
	m.dropped = s.NewCounter(`waphone_metrics_events_dropped_total`)
	s.NewGauge(`waphone_build_info{version="`+escape(cfg.Version)+`",goversion="`+runtime.Version()+`"}`, func() float64 { return 1 })
	s.RegisterMetricsWriter(m.writeLive)
	return m
}

// escape makes a label value safe inside double quotes.
func escape(v string) string {
	out := make([]rune, 0, len(v))
	for _, r := range v {
		switch r {
		case '\\', '"':
			out = append(out, '\\', r)
		case '\n':
			out = append(out, '\\', 'n')
		default:
			out = append(out, r)
		}
	}
	return string(out)
}

// states are the phone states the state gauge reports.
var states = []phone.State{phone.Idle, phone.Ringing, phone.Answering, phone.Dialing, phone.Ringback, phone.Talking}

// family writes scrape-time samples with one HELP/TYPE per family (the
// library's Write* helpers repeat them per sample, which parsers refuse).
type family struct {
	w    io.Writer
	last string
}

func (f *family) sample(name, typ, help string, v float64) {
	fam := name
	if i := strings.IndexByte(name, '{'); i >= 0 {
		fam = name[:i]
	}
	if fam != f.last {
		fmt.Fprintf(f.w, "# HELP %s %s\n# TYPE %s %s\n", fam, help, fam, typ)
		f.last = fam
	}
	fmt.Fprintf(f.w, "%s %s\n", name, strconv.FormatFloat(v, 'g', -1, 64))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// writeLive writes what is read at scrape time: the phone's state, the
// providers' counters and gauges.
func (m *Metrics) writeLive(w io.Writer) {
	f := &family{w: w}
	st := m.cfg.Phone.Status()
	for _, s := range states {
		f.sample(`waphone_state{state="`+string(s)+`"}`, "gauge", "The phone's state (1 for the current one).", b2f(st.State == s))
	}
	if d := m.cfg.Defence; d != nil {
		c := d()
		f.sample(`waphone_sip_auth_failures_total`, "counter", "SIP digest answers that failed.", float64(c.AuthFailures))
		f.sample(`waphone_sip_throttled_total`, "counter", "INVITEs refused unchecked: their source failed too often.", float64(c.Throttled))
		f.sample(`waphone_connections_refused_total{reason="not_allowed"}`, "counter", "SIP connections dropped before TLS.", float64(c.RefusedNotAllowed))
		f.sample(`waphone_connections_refused_total{reason="over_limit"}`, "counter", "", float64(c.RefusedOverLimit))
		f.sample(`waphone_tls_handshakes_total{result="ok"}`, "counter", "SIP TLS handshakes.", float64(c.TLSHandshakes))
		f.sample(`waphone_tls_handshakes_total{result="error"}`, "counter", "", float64(c.TLSHandshakeErrors))
	}
	if a := m.cfg.Audio; a != nil {
		if c, ok := a(); ok {
			f.sample(`waphone_headset_plugged`, "gauge", "1 when the headset is plugged in.", b2f(c.Plugged))
			f.sample(`waphone_audio_underruns_total{stream="capture"}`, "counter", "Sound device underruns.", float64(c.CaptureUnderruns))
			f.sample(`waphone_audio_underruns_total{stream="playback"}`, "counter", "", float64(c.PlayUnderruns))
			f.sample(`waphone_audio_overruns_total{stream="capture"}`, "counter", "Sound device overruns.", float64(c.CaptureOverruns))
			f.sample(`waphone_audio_overruns_total{stream="playback"}`, "counter", "", float64(c.PlayOverruns))
			f.sample(`waphone_headset_unplugs_total`, "counter", "Times the headset was unplugged.", float64(c.Unplugs))
		}
	}
	if ce := m.cfg.CertExpiry; ce != nil {
		if t := ce(); !t.IsZero() {
			f.sample(`waphone_certificate_expiry_timestamp_seconds`, "gauge", "When the SIP certificate expires (Unix time).", float64(t.Unix()))
		}
	}
	f.sample(`waphone_phone_events_dropped_total`, "counter", "Phone events a slow subscriber missed.", float64(st.EventsDropped))
}

// Run counts calls from the phone's events until ctx ends: at each end it
// reads the call's summary from Status().LastCall.
func (m *Metrics) Run(ctx context.Context) {
	events, stop := m.cfg.Phone.Subscribe(32)
	defer stop()
	var lastDropped uint64
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			switch ev.Kind {
			case phone.EvRejectedBusy:
				m.busy.Inc()
			case phone.EvEnded:
				st := m.cfg.Phone.Status()
				if st.LastCall != nil {
					m.OnCallEnd(*st.LastCall)
				}
				// The phone counts events it could not hand us; a call
				// end among them is lost to the histograms.
				if d := st.EventsDropped; d > lastDropped {
					m.dropped.Add(int(d - lastDropped))
					lastDropped = d
				}
			}
		}
	}
}

// outcome names how a call ended, from its summary.
func outcome(sum phone.CallSummary) string {
	if !sum.Answered.IsZero() {
		return "answered"
	}
	for _, o := range outcomes {
		if sum.EndedBy == o {
			return o
		}
	}
	return "other"
}

// OnCallEnd counts one finished call (Run calls it; a daemon may call it
// from phone.Config.OnCallEnd instead of running Run). A summary seen
// twice is counted once.
func (m *Metrics) OnCallEnd(sum phone.CallSummary) {
	key := sum.Start.String() + "|" + sum.Info.CallID
	m.mu.Lock()
	if m.seen[key] {
		m.mu.Unlock()
		return
	}
	if len(m.seen) > 64 {
		clear(m.seen) // only the last few calls can come twice
	}
	m.seen[key] = true
	m.mu.Unlock()
	dir := sum.Direction
	if dir != "inbound" && dir != "outbound" {
		dir = "inbound"
	}
	m.set.GetOrCreateCounter(`waphone_calls_total{direction="` + dir + `",outcome="` + outcome(sum) + `"}`).Inc()
	if sum.Answered.IsZero() {
		return
	}
	m.duration.Update(sum.Duration.Seconds())
	if ring := sum.Answered.Sub(sum.Start); ring >= 0 {
		m.ringTime.Update(ring.Seconds())
	}
	if q := sum.Media; q != nil {
		if q.MOS > 0 {
			m.mos.Update(q.MOS)
		}
		m.jitter.Update(q.JitterMs)
		m.loss.Update(q.LossPercent)
		if q.RTTMs > 0 {
			m.rtt.Update(q.RTTMs)
		}
	}
}

// WritePrometheus writes every metric in the text format.
func (m *Metrics) WritePrometheus(w io.Writer) {
	m.set.WritePrometheus(w)
	if m.cfg.ProcessMetrics {
		vm.WriteProcessMetrics(w)
	}
}

// ServeHTTP serves /metrics.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.WritePrometheus(w)
}

// Serve serves /metrics over plain HTTP on its own listener ([metrics]
// listen) until ctx ends: Prometheus scrapes without TLS or a login, so
// bind it to loopback or a trusted network.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second,
		IdleTimeout: time.Minute, ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serving %s: %w", ln.Addr(), err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	}
}
