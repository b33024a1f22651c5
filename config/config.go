// Package config reads waphone's TOML file. Decoding is strict: an
// unknown key or a bad value is an error naming the key and its line,
// because a typo on a desk phone should fail at start, not at the first call.
// A value with a grammar owned by a room (audio specs, the allow-list) is
// checked by that room's parser, called from here, so the grammar has one home.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/graph"
	"github.com/waphone/waphone/internal/atomicfile"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

// Config is the whole file. The TOML key names are a contract with outside
// scripts: never rename one.
type Config struct {
	SIP   SIP   `toml:"sip"`
	Media Media `toml:"media"`
	Audio Audio `toml:"audio"`
	Phone Phone `toml:"phone"`
	Board Board `toml:"board"`
	Graph Graph `toml:"graph"`
	// Webhook receives Meta's calls webhooks (see docs/setup.md).
	Webhook Webhook `toml:"webhook"`
	// Web, Metrics and MQTT are the surfaces (docs/console.md).
	Web     Web     `toml:"web"`
	Metrics Metrics `toml:"metrics"`
	MQTT    MQTT    `toml:"mqtt"`
	State   State   `toml:"state"`
	TLS     TLS     `toml:"tls"`
	Log     Log     `toml:"log"`
	Fleet   Fleet   `toml:"fleet"`
	Runtime Runtime `toml:"runtime"`
}

// Fleet is the [fleet] table: this desk is one of many sharing the number
// behind an edge proxy (deploy/kamailio, docs/fleet.md). Set edge to turn
// fleet mode on: the desk then registers at the edge instead of listening
// for Meta, and needs no Meta password or public certificate.
type Fleet struct {
	Edge            string   `toml:"edge"`      // host:port of the edge's desk port; "" = not in a fleet
	EdgeName        string   `toml:"edge_name"` // name on the edge's certificate; "" = edge's host
	EdgeCAFile      string   `toml:"edge_ca_file"`
	CertFile        string   `toml:"cert_file"` // this desk's client certificate (from the fleet CA)
	KeyFile         string   `toml:"key_file"`
	Device          string   `toml:"device"` // this desk's name, unique in the fleet
	RegisterExpires Duration `toml:"register_expires"`
	// Q orders the desks when the edge hunts instead of ringing all at
	// once: higher rings first. "" = no preference.
	Q string `toml:"q"`
}

// Enabled says whether this desk is in a fleet.
func (f Fleet) Enabled() bool { return f.Edge != "" }

// TLS is the [tls] table: a certificate from an ACME CA instead of files.
type TLS struct {
	ACME            bool   `toml:"acme"`
	Email           string `toml:"email"`
	CA              string `toml:"ca"`        // ACME directory URL; "" = Let's Encrypt production
	Challenge       string `toml:"challenge"` // tls-alpn-01 | http-01 | dns-01
	ChallengeListen string `toml:"challenge_listen"`
	CAFile          string `toml:"ca_file"` // extra roots to reach the ACME CA (tests: pebble)
	DNSHook         string `toml:"dns_hook"`
}

// State is the [state] table: where waphone keeps what it learns (call history).
type State struct {
	Dir string `toml:"dir"` // systemd's $STATE_DIRECTORY wins when set
}

// Graph is the [graph] table: Meta's Graph API, for `waphone setup`.
type Graph struct {
	BaseURL              string            `toml:"base_url"`
	Version              string            `toml:"version"`
	PhoneNumberID        string            `toml:"phone_number_id"`
	TokenFile            string            `toml:"token_file"`
	WebhookDelivery      bool              `toml:"webhook_delivery"`
	RequestURIUserParams map[string]string `toml:"request_uri_user_params"`
}

// Web is the console: HTTPS, one admin password. Off while listen is empty.
type Web struct {
	Listen       string `toml:"listen"`
	PasswordFile string `toml:"password_file"` // the admin password or its bcrypt/argon2id hash, 0600
	CertFile     string `toml:"cert_file"`     // "" = the SIP certificate (or a self-signed one)
	KeyFile      string `toml:"key_file"`
}

// Metrics is the Prometheus endpoint: its own plain-HTTP listener, "web"
// for /metrics on the console, or "" for none.
type Metrics struct {
	Listen string `toml:"listen"`
}

// MQTT publishes state and events and takes commands (Home Assistant).
type MQTT struct {
	Broker       string `toml:"broker"` // tcp://host:1883 or ssl://host:8883; "" = off
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	Topic        string `toml:"topic"`   // "" = waphone/<hostname>
	CAFile       string `toml:"ca_file"` // extra roots for ssl://
}

// Webhook is the receiver of Meta's calls webhooks (call events joined to
// the call history by WACID). Off while listen is empty.
type Webhook struct {
	Listen          string `toml:"listen"`
	Path            string `toml:"path"`
	VerifyTokenFile string `toml:"verify_token_file"`
	AppSecretFile   string `toml:"app_secret_file"`
}

// SIP is the [sip] table.
type SIP struct {
	Hostname      string   `toml:"hostname"`
	Listen        string   `toml:"listen"`
	CertFile      string   `toml:"cert_file"`
	KeyFile       string   `toml:"key_file"`
	Number        string   `toml:"number"`
	PasswordFile  string   `toml:"password_file"`
	Gateway       string   `toml:"gateway"`
	GatewayAddr   string   `toml:"gateway_addr"`
	GatewayCAFile string   `toml:"gateway_ca_file"`
	Allow         []string `toml:"allow"`
}

// Media is the [media] table.
type Media struct {
	KeyExchange   string `toml:"key_exchange"`
	PublicAddress string `toml:"public_address"`
	STUN          string `toml:"stun"`
	RTPPorts      string `toml:"rtp_ports"`
	BindAddress   string `toml:"bind_address"`
	// OpusComplexity is the encoder's complexity, 1-10; 0 = by CPU
	// (media.DefaultOpusComplexity).
	OpusComplexity int `toml:"opus_complexity"`
}

// Runtime is the [runtime] table: the Go runtime's knobs for small boards.
type Runtime struct {
	// MemoryLimitMiB is the Go runtime's soft memory limit
	// (debug.SetMemoryLimit): the GC works harder near it instead of
	// letting the heap double. 0 = none; GOMEMLIMIT, if set, wins.
	MemoryLimitMiB int `toml:"memory_limit_mib"`
	// GCPercent is the garbage collector's target (debug.SetGCPercent):
	// the heap may grow this many percent over what is live before a
	// collection. The phone's live heap is about 1 MB and a call allocates
	// almost nothing per frame, so a low target costs little CPU and keeps
	// the heap near 1.3 MB instead of Go's 4 MB floor. 0 = Go's default
	// (100); GOGC, if set, wins.
	GCPercent int `toml:"gc_percent"`
}

// Audio is the [audio] table.
type Audio struct {
	Capture  string `toml:"capture"`
	Playback string `toml:"playback"`
	Ringer   string `toml:"ringer"`
}

// Phone is the [phone] table.
type Phone struct {
	Answer          string   `toml:"answer"`
	AutoAnswerDelay Duration `toml:"auto_answer_delay"`
	RingTimeout     Duration `toml:"ring_timeout"`
	ControlSocket   string   `toml:"control_socket"`
	SpeedDial       string   `toml:"speed_dial"`
	// EarlyMedia sends our SDP in a 183 while ringing, so ICE, DTLS and
	// SRTP are up before the answer and the first words are not clipped.
	EarlyMedia bool `toml:"early_media"`
}

// Board is the [board] table (GPIO lines by name like "GPIO17" or offset like "17").
type Board struct {
	Chip       string `toml:"chip"`
	ButtonLine string `toml:"button_line"`
	LedLine    string `toml:"led_line"`
	// HeadsetKeys finds the headset's key device: "auto", "off" or a name substring.
	HeadsetKeys string `toml:"headset_keys"`
}

// Log is the [log] table.
type Log struct {
	Level string `toml:"level"`
	// SIPTrace logs every SIP message sent and received, secrets masked.
	SIPTrace bool `toml:"sip_trace"`
}

// Duration decodes TOML strings like "2s" or "1m30s".
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration like \"30s\": %w", err)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Key exchanges media.key_exchange accepts.
const (
	KeyExchangeDTLS = "dtls" // Meta's default
	KeyExchangeSDES = "sdes"
)

// Default is what an empty file means.
func Default() Config {
	return Config{
		SIP:   SIP{Listen: net.JoinHostPort("0.0.0.0", strconv.Itoa(sip.DefaultPort)), Gateway: sip.DefaultGateway},
		Media: Media{KeyExchange: KeyExchangeDTLS, RTPPorts: "10000-10100"},
		// A desk phone's defaults: the headset, and the button (or the
		// headset's call key) answers. Silence and auto-answer are opt-in.
		Audio:   Audio{Capture: "default", Playback: "default"},
		Phone:   Phone{Answer: "button", RingTimeout: Duration{phone.DefaultRingTimeout}, ControlSocket: "/run/waphone/control.sock", EarlyMedia: true},
		Board:   Board{HeadsetKeys: "auto"},
		Graph:   Graph{BaseURL: graph.DefaultBaseURL, Version: "v23.0"},
		Webhook: Webhook{Path: "/webhook"},
		State:   State{Dir: "/var/lib/waphone"},
		TLS:     TLS{Challenge: "tls-alpn-01"},
		Log:     Log{Level: "info"},
		Fleet:   Fleet{RegisterExpires: Duration{120 * time.Second}},
		Runtime: Runtime{MemoryLimitMiB: 24, GCPercent: 25},
	}
}

// Load reads path over the defaults and validates everything, reporting
// all problems at once.
func Load(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return Parse(path, raw)
}

// Parse is Load for bytes already read; name is used in messages.
func Parse(name string, raw []byte) (Config, error) {
	cfg := Default()
	dec := toml.NewDecoder(bytes.NewReader(raw)).DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var sme *toml.StrictMissingError
		var de *toml.DecodeError
		switch {
		case errors.As(err, &sme):
			var errs []error
			for _, e := range sme.Errors {
				row, _ := e.Position()
				errs = append(errs, fmt.Errorf("config %s:%d: unknown key %q", name, row, strings.Join(e.Key(), ".")))
			}
			return cfg, errors.Join(errs...)
		case errors.As(err, &de):
			row, _ := de.Position()
			key := strings.Join(de.Key(), ".")
			if key != "" {
				return cfg, fmt.Errorf("config %s:%d: %s: %s", name, row, key, de.Error())
			}
			return cfg, fmt.Errorf("config %s:%d: %s", name, row, de.Error())
		}
		return cfg, fmt.Errorf("config %s: %w", name, err)
	}
	return cfg, cfg.validate(name, raw)
}

var (
	e164RE     = regexp.MustCompile(`^\+?[1-9][0-9]{7,14}$`)
	hostnameRE = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$`)
)

// lineOf finds the line of key in table, for messages about valid TOML
// with a bad value. 0 when not found (a default).
func lineOf(raw []byte, table, key string) int {
	cur := ""
	for i, l := range strings.Split(string(raw), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			cur = strings.TrimSpace(strings.Trim(l, "[]"))
			continue
		}
		if cur == table {
			if k, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == key {
				return i + 1
			}
		}
	}
	return 0
}

func (c *Config) validate(name string, raw []byte) error {
	var errs []error
	bad := func(table, key, format string, a ...any) {
		where := "config " + name
		if n := lineOf(raw, table, key); n > 0 {
			where += ":" + strconv.Itoa(n)
		}
		errs = append(errs, fmt.Errorf("%s: %s.%s %s", where, table, key, fmt.Sprintf(format, a...)))
	}
	s := &c.SIP
	switch {
	case s.Hostname == "":
		bad("sip", "hostname", "is required (the hostname Meta has for your SIP server, e.g. sip.example.com)")
	case net.ParseIP(s.Hostname) != nil || strings.Contains(s.Hostname, "://") || !hostnameRE.MatchString(s.Hostname):
		bad("sip", "hostname", "%q: want a DNS name like sip.example.com (not an IP or URL): Meta validates the certificate against it", s.Hostname)
	}
	if s.Number == "" {
		bad("sip", "number", "is required (the business number, e.g. +12145551869)")
	} else if !e164RE.MatchString(s.Number) {
		bad("sip", "number", "%q: want E.164 like +12145551869", s.Number)
	} else {
		s.Number = "+" + strings.TrimPrefix(s.Number, "+")
	}
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		bad("sip", "listen", "%q: want host:port like 0.0.0.0:5061", s.Listen)
	}
	if s.GatewayAddr != "" {
		if _, _, err := net.SplitHostPort(s.GatewayAddr); err != nil {
			bad("sip", "gateway_addr", "%q: want host:port", s.GatewayAddr)
		}
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		bad("sip", "cert_file", "and sip.key_file must be set together")
	}
	if c.TLS.ACME && s.CertFile != "" {
		bad("tls", "acme", "and sip.cert_file are both set: choose ACME or your own certificate files")
	}
	switch c.TLS.Challenge {
	case "tls-alpn-01", "http-01", "dns-01":
	default:
		bad("tls", "challenge", "%q: want tls-alpn-01, http-01 or dns-01", c.TLS.Challenge)
	}
	if c.TLS.ChallengeListen != "" {
		if _, _, err := net.SplitHostPort(c.TLS.ChallengeListen); err != nil {
			bad("tls", "challenge_listen", "%q: want host:port like :443", c.TLS.ChallengeListen)
		}
	}
	for _, a := range s.Allow {
		if _, err := sip.ParseAllow([]string{a}); err != nil {
			bad("sip", "allow", "%q: want an IP or CIDR like 31.13.24.0/21", a)
		}
	}
	switch c.Media.KeyExchange {
	case KeyExchangeDTLS, KeyExchangeSDES:
	default:
		bad("media", "key_exchange", "%q: want %q or %q", c.Media.KeyExchange, KeyExchangeDTLS, KeyExchangeSDES)
	}
	if _, _, err := c.Media.PortRange(); err != nil {
		bad("media", "rtp_ports", "%v", err)
	}
	if _, err := c.Media.BindIP(); err != nil {
		bad("media", "bind_address", "%v", err)
	}
	if _, err := c.Media.PublicIP(); err != nil {
		bad("media", "public_address", "%v", err)
	}
	if _, err := c.Audio.CaptureSpec(); err != nil {
		bad("audio", "capture", "%v", err)
	}
	if _, err := c.Audio.PlaybackSpec(); err != nil {
		bad("audio", "playback", "%v", err)
	}
	if _, _, err := c.Audio.RingerSpec(); err != nil {
		bad("audio", "ringer", "%v", err)
	}
	switch c.Phone.Answer {
	case "auto", "button":
	default:
		bad("phone", "answer", "%q: want \"auto\" or \"button\"", c.Phone.Answer)
	}
	if c.Phone.AutoAnswerDelay.Duration < 0 {
		bad("phone", "auto_answer_delay", "must not be negative")
	}
	if c.Phone.RingTimeout.Duration < 0 {
		bad("phone", "ring_timeout", "must not be negative")
	}
	if d := c.Phone.SpeedDial; d != "" {
		if _, err := sip.NormalizeTarget(d); err != nil {
			bad("phone", "speed_dial", "%v", err)
		}
	}
	if err := graph.CheckUserParams(c.Graph.RequestURIUserParams); err != nil {
		bad("graph", "request_uri_user_params", "%v", err)
	}
	if c.Phone.ControlSocket == "" {
		bad("phone", "control_socket", "is required")
	}
	if w := c.Web; w.Listen != "" {
		if _, _, err := net.SplitHostPort(w.Listen); err != nil {
			bad("web", "listen", "%q: want host:port like :8443", w.Listen)
		}
		if w.PasswordFile == "" {
			bad("web", "password_file", "is required with web.listen (the console's admin password)")
		}
	}
	if (c.Web.CertFile == "") != (c.Web.KeyFile == "") {
		bad("web", "cert_file", "and web.key_file must be set together")
	}
	if l := c.Metrics.Listen; l != "" && l != "web" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			bad("metrics", "listen", "%q: want host:port like 127.0.0.1:9161, or \"web\"", l)
		}
	} else if l == "web" && c.Web.Listen == "" {
		bad("metrics", "listen", "is \"web\" but web.listen is empty")
	}
	if b := c.MQTT.Broker; b != "" && !strings.HasPrefix(b, "tcp://") && !strings.HasPrefix(b, "ssl://") {
		bad("mqtt", "broker", "%q: want tcp://host:1883 or ssl://host:8883", b)
	}
	if w := c.Webhook; w.Listen != "" {
		if _, _, err := net.SplitHostPort(w.Listen); err != nil {
			bad("webhook", "listen", "%q: want host:port like :8443", w.Listen)
		}
		if !strings.HasPrefix(w.Path, "/") {
			bad("webhook", "path", "%q: want a path like /webhook", w.Path)
		}
		if w.VerifyTokenFile == "" {
			bad("webhook", "verify_token_file", "is required with webhook.listen (the token you gave Meta for the subscription)")
		}
		if w.AppSecretFile == "" {
			bad("webhook", "app_secret_file", "is required with webhook.listen (the app secret: Meta signs every webhook with it)")
		}
	}
	c.validateFleet(bad)
	if c.Media.OpusComplexity < 0 || c.Media.OpusComplexity > 10 {
		bad("media", "opus_complexity", "%d: want 1 to 10, or 0 for the CPU's default", c.Media.OpusComplexity)
	}
	if c.Runtime.MemoryLimitMiB < 0 {
		bad("runtime", "memory_limit_mib", "%d: want 0 (none) or more", c.Runtime.MemoryLimitMiB)
	}
	if c.Runtime.GCPercent < 0 {
		bad("runtime", "gc_percent", "%d: want 0 (Go's default) or more", c.Runtime.GCPercent)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log", "level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	return errors.Join(errs...)
}

// PortRange parses rtp_ports "LO-HI".
func (m Media) PortRange() (lo, hi int, err error) {
	a, b, ok := strings.Cut(m.RTPPorts, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || lo < 1024 || hi > 65535 || lo >= hi {
		return 0, 0, fmt.Errorf("%q: want a range like \"10000-10100\" within 1024-65535", m.RTPPorts)
	}
	return lo, hi, nil
}

// BindIP parses bind_address; nil when empty (all addresses).
func (m Media) BindIP() (net.IP, error) { return parseIP(m.BindAddress) }

// PublicIP parses public_address; nil when empty (the device's own address).
func (m Media) PublicIP() (net.IP, error) { return parseIP(m.PublicAddress) }

func parseIP(s string) (net.IP, error) {
	if s == "" {
		return nil, nil
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, fmt.Errorf("%q: want an IP address", s)
	}
	return ip, nil
}

// CaptureSpec parses capture with audio's grammar.
func (a Audio) CaptureSpec() (audio.Spec, error) { return audio.ParseSpec(a.Capture) }

// PlaybackSpec parses playback with audio's grammar (no tone).
func (a Audio) PlaybackSpec() (audio.Spec, error) { return audio.ParseSinkSpec(a.Playback) }

// RingerSpec parses ringer; ok is false when it is empty (ring on the
// playback end).
func (a Audio) RingerSpec() (spec audio.Spec, ok bool, err error) {
	if a.Ringer == "" {
		return audio.Spec{}, false, nil
	}
	spec, err = audio.ParseSinkSpec(a.Ringer)
	return spec, err == nil, err
}

// BusinessDigits is the number without '+', as Meta's digest username.
func (s SIP) BusinessDigits() string { return strings.TrimPrefix(s.Number, "+") }

// ReadToken reads the Graph API token with the same rules as the password.
func ReadToken(path string) (string, error) {
	tok, err := ReadSecret(path, "graph.token_file")
	if err != nil {
		return "", err
	}
	return tok, nil
}

// WriteSecret replaces path atomically with mode 0600 (temp file in the
// same directory, fsync, rename), so a power cut leaves the old or the new
// password, never half of one.
func WriteSecret(path, secret string) error {
	return atomicfile.Write(path, []byte(secret+"\n"), 0o600)
}

// ReadPassword reads Meta's SIP password. The file must not be readable by
// group or others. A relative path is looked up in $CREDENTIALS_DIRECTORY
// when systemd passes the secret with LoadCredential=. Errors never contain
// the password.
func ReadPassword(path string) (string, error) { return ReadSecret(path, "sip.password_file") }

// ReadSecret reads a one-line secret file with the password file's rules
// (mode 0600 or stricter; a relative name is looked up in systemd's
// $CREDENTIALS_DIRECTORY). key names it in errors, which never hold it.
func ReadSecret(path, key string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%s is not set", key)
	}
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" && !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s %s is mode %04o: must be 0600 or stricter (chmod 600 %s)", key, path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("%s %s is empty", key, path)
	}
	return pw, nil
}

// validateFleet checks [fleet] when edge is set; the device name's grammar
// is sip's (it becomes the Contact host).
func (c *Config) validateFleet(bad func(table, key, format string, a ...any)) {
	f := &c.Fleet
	if !f.Enabled() {
		return
	}
	if _, _, err := net.SplitHostPort(f.Edge); err != nil {
		bad("fleet", "edge", "%q: want host:port of the edge's desk port, like edge.example.com:5062", f.Edge)
	}
	if f.EdgeName != "" && !hostnameRE.MatchString(f.EdgeName) {
		bad("fleet", "edge_name", "%q: want the DNS name on the edge's certificate", f.EdgeName)
	}
	if f.EdgeCAFile == "" {
		bad("fleet", "edge_ca_file", "is required: the fleet CA that signed the edge's and the desks' certificates")
	}
	if f.CertFile == "" || f.KeyFile == "" {
		bad("fleet", "cert_file", "and fleet.key_file are required: this desk's client certificate from the fleet CA")
	}
	if f.Device == "" {
		bad("fleet", "device", "is required: this desk's name, unique in the fleet (e.g. \"front-desk\")")
	} else if err := sip.CheckDevice(f.Device); err != nil {
		bad("fleet", "device", "%v", err)
	}
	if d := f.RegisterExpires.Duration; d < 10*time.Second || d > time.Hour {
		bad("fleet", "register_expires", "%s: want 10s to 1h", d)
	}
	if f.Q != "" {
		if q, err := strconv.ParseFloat(f.Q, 64); err != nil || q < 0 || q > 1 {
			bad("fleet", "q", "%q: want a number from 0 to 1, like \"0.5\"", f.Q)
		}
	}
	if c.TLS.ACME {
		bad("tls", "acme", "is for a phone Meta reaches directly; a fleet desk uses fleet.cert_file from the fleet CA")
	}
}
