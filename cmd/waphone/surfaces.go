package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/metrics"
	"github.com/waphone/waphone/mqtt"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
	"github.com/waphone/waphone/web"
)

// surfacesConfig is what the daemon hands startSurfaces: the [web],
// [metrics] and [mqtt] tables as plain values, and what the surfaces read.
// Every surface whose listen/broker is empty is off.
type surfacesConfig struct {
	// [web]
	WebListen       string // host:port; "" = no console
	WebPasswordFile string // admin password or its bcrypt/argon2id hash, 0600
	WebCertFile     string // "" = the SIP certificate, or a self-signed one
	WebKeyFile      string
	// [metrics]
	MetricsListen string // host:port (plain HTTP), "web" (on the console), "" = off
	// [mqtt]
	MQTTBroker       string // tcp://host:1883 or ssl://host:8883; "" = off
	MQTTUsername     string
	MQTTPasswordFile string
	MQTTTopic        string // "" = waphone/<hostname>
	MQTTCAFile       string // extra roots for ssl://

	Hostname string // the machine's name: MQTT device, self-signed console certificate
	StateDir string // where a self-signed console certificate is kept
	Version  string

	Phone    *phone.Phone
	History  *history.Store                   // nil: no History page
	Endpoint *sip.Endpoint                    // defence counters; nil: none
	SIPCert  func() (*tls.Certificate, error) // the console's default certificate
	// HeadsetStats is the sound device's counters (nil: no device).
	HeadsetStats func() audio.HeadsetStats
	Headset      web.Headset       // test tone and mic level; nil: no headset test
	Settings     web.SettingsStore // *settings.Store; nil: no Settings page
	Devices      func() ([]string, error)
	Doctor       func(ctx context.Context) []web.Check  // see doctorChecks
	Meta         func(ctx context.Context) (any, error) // Meta's settings as last read
	Logger       *slog.Logger
}

// startSurfaces starts the console, metrics and MQTT that sc turns on.
// They run until ctx ends; wait then returns once they have stopped. An
// error means nothing was left running.
func startSurfaces(ctx context.Context, sc surfacesConfig) (wait func(), err error) {
	if sc.Phone == nil {
		return nil, errors.New("surfaces: no phone")
	}
	log := sc.Logger
	if log == nil {
		log = slog.Default()
	}
	if sc.Hostname == "" {
		sc.Hostname, _ = os.Hostname()
	}
	var wg sync.WaitGroup
	var closers []func()
	fail := func(err error) (func(), error) {
		for _, c := range closers {
			c()
		}
		return nil, err
	}
	goRun := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}

	var m *metrics.Metrics
	if sc.MetricsListen != "" {
		m = metrics.New(metrics.Config{Phone: sc.Phone, Defence: defenceCounters(sc.Endpoint), Audio: audioCounters(sc.HeadsetStats),
			CertExpiry: certExpiry(sc.SIPCert), Version: sc.Version, ProcessMetrics: true, Logger: log.With("component", "metrics")})
		if sc.MetricsListen != "web" {
			ln, err := net.Listen("tcp", sc.MetricsListen)
			if err != nil {
				return fail(fmt.Errorf("metrics.listen %s: %w", sc.MetricsListen, err))
			}
			closers = append(closers, func() { ln.Close() })
			goRun(func() {
				if err := m.Serve(ctx, ln); err != nil {
					log.Error("metrics listener stopped", "err", err)
				}
			})
			log.Info("serving Prometheus metrics", "addr", ln.Addr().String())
		} else if sc.WebListen == "" {
			return fail(errors.New(`metrics.listen = "web" but web.listen is empty`))
		}
	}

	if sc.WebListen != "" {
		cert, err := consoleCert(sc, log)
		if err != nil {
			return fail(err)
		}
		wc := web.Config{Phone: sc.Phone, PasswordFile: sc.WebPasswordFile, Certificate: cert, Headset: sc.Headset,
			Settings: sc.Settings, Devices: sc.Devices, Doctor: sc.Doctor, Meta: sc.Meta, Version: sc.Version,
			Defence: defenceMap(sc.Endpoint), Certs: sipCertInfo(sc.SIPCert), Logger: log.With("component", "web")}
		if sc.History != nil {
			wc.History = sc.History
		}
		if m != nil && sc.MetricsListen == "web" {
			wc.Metrics = m
		}
		srv, err := web.New(wc)
		if err != nil {
			return fail(err)
		}
		ln, err := net.Listen("tcp", sc.WebListen)
		if err != nil {
			return fail(fmt.Errorf("web.listen %s: %w", sc.WebListen, err))
		}
		closers = append(closers, func() { ln.Close() })
		goRun(func() {
			if err := srv.Serve(ctx, ln); err != nil {
				log.Error("web console stopped", "err", err)
			}
		})
		log.Info("serving the web console", "addr", "https://"+ln.Addr().String())
	}

	if sc.MQTTBroker != "" {
		mc := mqtt.Config{Broker: sc.MQTTBroker, Username: sc.MQTTUsername, Topic: sc.MQTTTopic, Hostname: sc.Hostname,
			Version: sc.Version, Phone: sc.Phone, Logger: log.With("component", "mqtt")}
		if sc.MQTTPasswordFile != "" {
			pw, err := config.ReadSecret(sc.MQTTPasswordFile, "mqtt.password_file")
			if err != nil {
				return fail(err)
			}
			mc.Password = pw
		}
		if sc.MQTTCAFile != "" {
			pem, err := os.ReadFile(sc.MQTTCAFile)
			if err != nil {
				return fail(fmt.Errorf("mqtt.ca_file: %w", err))
			}
			pool, _ := x509.SystemCertPool()
			if pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return fail(fmt.Errorf("mqtt.ca_file %s: no PEM certificate in it", sc.MQTTCAFile))
			}
			mc.RootCAs = pool
		}
		c, err := mqtt.New(mc)
		if err != nil {
			return fail(err)
		}
		goRun(func() {
			if err := c.Run(ctx); err != nil {
				log.Error("mqtt stopped", "err", err)
			}
		})
	}
	// Run last: every check above passed, nothing to undo.
	if m != nil {
		goRun(func() { m.Run(ctx) })
	}
	return wg.Wait, nil
}

// consoleCert picks the console's certificate: its own files, else the
// SIP certificate, else a self-signed one for the machine's LAN names.
func consoleCert(sc surfacesConfig, log *slog.Logger) (func() (*tls.Certificate, error), error) {
	if sc.WebCertFile != "" {
		r, err := sip.NewCertReloader(sc.WebCertFile, sc.WebKeyFile, log)
		if err != nil {
			return nil, fmt.Errorf("web.cert_file: %w", err)
		}
		return r.Certificate, nil
	}
	if sc.SIPCert != nil {
		if _, err := sc.SIPCert(); err == nil {
			return sc.SIPCert, nil
		}
	}
	host := strings.ToLower(strings.SplitN(sc.Hostname, ".", 2)[0])
	if host == "" {
		host = "waphone"
	}
	names := []string{host + ".local", host, "localhost"}
	var ips []net.IP
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (ipn.IP.IsPrivate() || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast()) {
				ips = append(ips, ipn.IP)
			}
		}
	}
	log.Info("web console uses a self-signed certificate", "names", names)
	return web.SelfSigned(sc.StateDir, names, ips)
}

func defenceCounters(ep *sip.Endpoint) func() metrics.Defence {
	if ep == nil {
		return nil
	}
	return func() metrics.Defence {
		na, ol := ep.Refused()
		g := ep.Guard()
		return metrics.Defence{Throttled: uint64(max(ep.Throttled(), 0)), RefusedNotAllowed: na, RefusedOverLimit: ol,
			AuthFailures: g.AuthFailures, TLSHandshakes: g.TLSHandshakes, TLSHandshakeErrors: g.TLSFailures}
	}
}

func defenceMap(ep *sip.Endpoint) func() map[string]uint64 {
	if ep == nil {
		return nil
	}
	return func() map[string]uint64 {
		na, ol := ep.Refused()
		g := ep.Guard()
		return map[string]uint64{"throttled INVITEs": uint64(max(ep.Throttled(), 0)),
			"connections refused (allow-list)": na, "connections refused (limit)": ol,
			"wrong digest answers": g.AuthFailures, "TLS handshake failures": g.TLSFailures}
	}
}

func audioCounters(stats func() audio.HeadsetStats) func() (metrics.Audio, bool) {
	if stats == nil {
		return nil
	}
	return func() (metrics.Audio, bool) {
		s := stats()
		return metrics.Audio{Plugged: s.Plugged, CaptureUnderruns: s.CaptureUnderrun, CaptureOverruns: s.CaptureOverrun,
			PlayUnderruns: s.PlayUnderrun, PlayOverruns: s.PlayOverrun, Unplugs: s.Unplugs}, true
	}
}

func leaf(c *tls.Certificate) *x509.Certificate {
	if c == nil || len(c.Certificate) == 0 {
		return nil
	}
	if c.Leaf != nil {
		return c.Leaf
	}
	l, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return l
}

func certExpiry(get func() (*tls.Certificate, error)) func() time.Time {
	if get == nil {
		return nil
	}
	return func() time.Time {
		c, err := get()
		if err != nil {
			return time.Time{}
		}
		if l := leaf(c); l != nil {
			return l.NotAfter
		}
		return time.Time{}
	}
}

func sipCertInfo(get func() (*tls.Certificate, error)) func() []web.CertInfo {
	if get == nil {
		return nil
	}
	return func() []web.CertInfo {
		c, err := get()
		if err != nil {
			return nil
		}
		l := leaf(c)
		if l == nil {
			return nil
		}
		subj := l.Subject.CommonName
		if len(l.DNSNames) > 0 {
			subj = l.DNSNames[0]
		}
		return []web.CertInfo{{Use: "sip", Subject: subj, NotAfter: l.NotAfter}}
	}
}

// doctorChecks turns the doctor's report lines ("ok    ...", "warn  ...",
// "FAIL  ...") into the console's checks.
func doctorChecks(lines []string) []web.Check {
	out := make([]web.Check, 0, len(lines))
	for _, l := range lines {
		level, text, _ := strings.Cut(l, " ")
		text = strings.TrimSpace(text)
		switch strings.ToLower(level) {
		case "ok", "warn", "fail":
			out = append(out, web.Check{Level: strings.ToLower(level), Text: text})
		default:
			out = append(out, web.Check{Level: "warn", Text: strings.TrimSpace(l)})
		}
	}
	return out
}
