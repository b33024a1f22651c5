// Package kamailio renders the fleet edge's Kamailio 5.6 configuration
// (kamailio.cfg, tls.cfg and the file holding Meta's password) from a small
// TOML file, for `waphone edge-config`. The templates beside this file are
// the one home of the edge's routing; docs/fleet.md explains it.
package kamailio

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/pelletier/go-toml/v2"
)

//go:embed kamailio.cfg.tmpl tls.cfg.tmpl
var templates embed.FS

// Config is edge.toml. Key names are a contract with users: never rename one.
type Config struct {
	// Number is the business number, E.164 with '+'.
	Number string `toml:"number"`
	// PublicName is the SIP hostname configured at Meta for the number:
	// the edge's public certificate names it, and it is the realm of the
	// edge's challenge to Meta.
	PublicName string `toml:"public_name"`
	// MetaPasswordFile holds Meta's SIP password (mode 0600/0640).
	MetaPasswordFile string   `toml:"meta_password_file"`
	Meta             Meta     `toml:"meta"`
	Desks            Desks    `toml:"desks"`
	Kamailio         Kamailio `toml:"kamailio"`
}

// Meta is [meta]: the side facing Meta's gateway.
type Meta struct {
	Listen   string `toml:"listen"` // IP:port Meta connects to (TLS)
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	Gateway  string `toml:"gateway"` // Meta's SIP host; "" = wa.meta.vc
	// GatewayAddr is dialled instead of the gateway's port 5061 (tests).
	GatewayAddr string `toml:"gateway_addr"`
	// CAFile holds the roots Meta's certificate is checked against.
	CAFile string `toml:"ca_file"`
	// Realm of Meta's challenges to our calls; "" = the gateway host.
	Realm string `toml:"realm"`
	// Allow limits who may send to the Meta port (Meta's ranges); empty = anyone.
	Allow []string `toml:"allow"`
}

// Desks is [desks]: the side facing the waphone desks.
type Desks struct {
	Listen   string `toml:"listen"` // IP:port the desks register at (mTLS)
	Name     string `toml:"name"`   // the name on this port's certificate (the desks' fleet.edge_name)
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	CAFile   string `toml:"ca_file"` // the fleet CA
	// RingTimeout is the fleet's one ring timer; "" = 60 s.
	RingTimeout string `toml:"ring_timeout"`
	// Hunt rings desks in the order of their q (fleet.q) instead of all at once.
	Hunt bool `toml:"hunt"`
}

// Kamailio is [kamailio]: where the rendered files live and how it runs.
type Kamailio struct {
	Dir        string `toml:"dir"`        // the rendered files' directory; "" = /etc/kamailio
	CtlSocket  string `toml:"ctl_socket"` // kamcmd's socket; "" = unix:/run/kamailio/kamailio_ctl
	LogLevel   string `toml:"log_level"`  // error, warn, notice, info, debug; "" = notice
	Children   int    `toml:"children"`   // TLS worker processes; 0 = 4
	ModulesDir string `toml:"modules_dir"`
}

const (
	defaultGateway = "wa.meta.vc"
	defaultDir     = "/etc/kamailio"
	defaultCtl     = "unix:/run/kamailio/kamailio_ctl"
	defaultCAFile  = "/etc/ssl/certs/ca-certificates.crt"
)

// Example is a commented edge.toml; `waphone edge-config -example` prints it.
const Example = `# waphone fleet edge (Kamailio 5.6): render with
#   waphone edge-config -config /etc/kamailio/edge.toml
# then restart kamailio (or kamcmd tls.reload after a certificate renewal).

# The business number and the SIP hostname configured for it at Meta.
number = "+12145551869"
public_name = "sip.example.com"
# Meta's SIP password (waphone setup fetches it), mode 0600: only edge-config reads it;
# Kamailio reads the rendered meta-secret.cfg (0640 root:kamailio).
meta_password_file = "/etc/kamailio/meta-password"

[meta]
# The address Meta connects to. Open TCP 5061 here.
listen = "203.0.113.10:5061"
# The public certificate for public_name (ACME, renewed outside Kamailio).
cert_file = "/etc/kamailio/fullchain.pem"
key_file = "/etc/kamailio/privkey.pem"
gateway = "wa.meta.vc"
# Dial this host:port instead of the gateway (tests). Empty in production.
gateway_addr = ""
# Roots Meta's certificate is checked against.
ca_file = "/etc/ssl/certs/ca-certificates.crt"
# Realm of Meta's challenges. Empty = the gateway host.
realm = ""
# Meta's address ranges; empty = anyone may connect to the Meta port.
allow = []

[desks]
# Where the desks register. Open TCP 5062 to the desks only.
listen = "10.0.0.1:5062"
# The name on this port's certificate: the desks' fleet.edge_name.
name = "edge.fleet.internal"
# Certificate from the fleet CA for that name, and the fleet CA itself.
cert_file = "/etc/kamailio/fleet-edge.pem"
key_file = "/etc/kamailio/fleet-edge.key"
ca_file = "/etc/kamailio/fleet-ca.pem"
# The one ring timer: unanswered calls end after this.
ring_timeout = "60s"
# Ring desks one q level at a time (higher fleet.q first) instead of all at once.
hunt = false

[kamailio]
dir = "/etc/kamailio"
ctl_socket = "unix:/run/kamailio/kamailio_ctl"
log_level = "notice"
children = 4
modules_dir = ""
`

// Load reads and checks edge.toml.
func Load(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("edge config: %w", err)
	}
	return Parse(path, raw)
}

var (
	e164RE = regexp.MustCompile(`^\+[1-9][0-9]{7,14}$`)
	hostRE = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$`)
)

// Parse decodes edge.toml strictly and fills the defaults.
func Parse(name string, raw []byte) (Config, error) {
	var c Config
	dec := toml.NewDecoder(bytes.NewReader(raw)).DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var sme *toml.StrictMissingError
		if errors.As(err, &sme) {
			var errs []error
			for _, e := range sme.Errors {
				row, _ := e.Position()
				errs = append(errs, fmt.Errorf("%s:%d: unknown key %q", name, row, strings.Join(e.Key(), ".")))
			}
			return c, errors.Join(errs...)
		}
		return c, fmt.Errorf("%s: %w", name, err)
	}
	if c.Meta.Gateway == "" {
		c.Meta.Gateway = defaultGateway
	}
	if c.Meta.Realm == "" {
		c.Meta.Realm = c.Meta.Gateway
	}
	if c.Meta.CAFile == "" {
		c.Meta.CAFile = defaultCAFile
	}
	if c.Desks.RingTimeout == "" {
		c.Desks.RingTimeout = "60s"
	}
	if c.Kamailio.Dir == "" {
		c.Kamailio.Dir = defaultDir
	}
	if c.Kamailio.CtlSocket == "" {
		c.Kamailio.CtlSocket = defaultCtl
	}
	if c.Kamailio.LogLevel == "" {
		c.Kamailio.LogLevel = "notice"
	}
	if c.Kamailio.Children == 0 {
		c.Kamailio.Children = 4
	}
	return c, c.check(name)
}

func (c *Config) check(name string) error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, a...)...))
	}
	if !e164RE.MatchString(c.Number) {
		bad("number %q: want E.164 with '+', like +12145551869", c.Number)
	}
	if !hostRE.MatchString(c.PublicName) {
		bad("public_name %q: want the DNS name configured at Meta", c.PublicName)
	}
	if c.MetaPasswordFile == "" {
		bad("meta_password_file is required")
	}
	if !hostRE.MatchString(c.Desks.Name) {
		bad("desks.name %q: want the DNS name on the desk port's certificate", c.Desks.Name)
	} else if strings.EqualFold(c.Desks.Name, c.PublicName) || strings.HasSuffix(strings.ToLower(c.Desks.Name), ".invalid") {
		// The desks' Contacts are DEVICE.desk.invalid: the edge must not claim them.
		bad("desks.name %q: must differ from public_name and not be under .invalid", c.Desks.Name)
	}
	if !hostRE.MatchString(c.Meta.Gateway) {
		bad("meta.gateway %q: want a DNS name", c.Meta.Gateway)
	}
	mp, err1 := ipPort(c.Meta.Listen)
	if err1 != nil {
		bad("meta.listen %q: %v", c.Meta.Listen, err1)
	}
	dp, err2 := ipPort(c.Desks.Listen)
	if err2 != nil {
		bad("desks.listen %q: %v", c.Desks.Listen, err2)
	}
	if err1 == nil && err2 == nil && mp.Port() == dp.Port() {
		// The routing tells the sides apart by the receiving port.
		bad("meta.listen and desks.listen must use different ports")
	}
	if c.Meta.GatewayAddr != "" {
		if _, _, err := net.SplitHostPort(c.Meta.GatewayAddr); err != nil {
			bad("meta.gateway_addr %q: want host:port", c.Meta.GatewayAddr)
		}
	}
	for _, a := range c.Meta.Allow {
		if _, err := netip.ParsePrefix(a); err != nil {
			if _, err := netip.ParseAddr(a); err != nil {
				bad("meta.allow %q: want an IP or CIDR", a)
			}
		}
	}
	for k, v := range map[string]string{"meta.cert_file": c.Meta.CertFile, "meta.key_file": c.Meta.KeyFile,
		"desks.cert_file": c.Desks.CertFile, "desks.key_file": c.Desks.KeyFile, "desks.ca_file": c.Desks.CAFile} {
		if v == "" {
			bad("%s is required", k)
		}
	}
	if d, err := time.ParseDuration(c.Desks.RingTimeout); err != nil || d < 5*time.Second || d > 10*time.Minute {
		bad("desks.ring_timeout %q: want a duration from 5s to 10m", c.Desks.RingTimeout)
	}
	if _, ok := logLevels[c.Kamailio.LogLevel]; !ok {
		bad("kamailio.log_level %q: want error, warn, notice, info or debug", c.Kamailio.LogLevel)
	}
	if c.Kamailio.Children < 1 || c.Kamailio.Children > 64 {
		bad("kamailio.children %d: want 1 to 64", c.Kamailio.Children)
	}
	if !strings.HasPrefix(c.Kamailio.CtlSocket, "unix:") && !strings.HasPrefix(c.Kamailio.CtlSocket, "tcp:") {
		bad("kamailio.ctl_socket %q: want unix:/path or tcp:host:port", c.Kamailio.CtlSocket)
	}
	for k, v := range map[string]string{"public_name": c.PublicName, "desks.name": c.Desks.Name, "kamailio.dir": c.Kamailio.Dir,
		"kamailio.ctl_socket": c.Kamailio.CtlSocket, "kamailio.modules_dir": c.Kamailio.ModulesDir, "meta.cert_file": c.Meta.CertFile,
		"meta.key_file": c.Meta.KeyFile, "meta.ca_file": c.Meta.CAFile, "desks.cert_file": c.Desks.CertFile,
		"desks.key_file": c.Desks.KeyFile, "desks.ca_file": c.Desks.CAFile, "meta.realm": c.Meta.Realm} {
		if strings.ContainsAny(v, "\"\\\n\r") {
			bad("%s must not contain quotes, backslashes or line breaks", k)
		}
	}
	return errors.Join(errs...)
}

var logLevels = map[string]int{"error": -1, "warn": 0, "notice": 1, "info": 2, "debug": 3}

func ipPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, errors.New("want IP:port (Kamailio picks the TLS profile by the listening address)")
	}
	if ap.Addr().IsUnspecified() {
		return ap, errors.New("want the interface's own IP, not an unspecified address (0.0.0.0, [::])")
	}
	return ap, nil
}

// Files are the rendered configuration, by file name.
type Files struct {
	KamailioCfg []byte // kamailio.cfg
	TLSCfg      []byte // tls.cfg
	Secret      []byte // meta-secret.cfg: Meta's password as a substitution, mode 0640
}

// File names inside Kamailio.Dir.
const (
	KamailioFile = "kamailio.cfg"
	TLSFile      = "tls.cfg"
	SecretFile   = "meta-secret.cfg"
)

// Render fills the templates; password is Meta's SIP password; source
// names edge.toml in the header comments.
func Render(c Config, password, source string) (Files, error) {
	if password == "" || strings.ContainsAny(password, "\"\\\n\r") {
		return Files{}, errors.New("meta password: empty, or holds a quote, backslash or line break, which Kamailio strings cannot carry")
	}
	// #!substdef needs a delimiter the password does not use.
	delim := ""
	for _, d := range []string{"!", "#", "%", "|", "~", "^", "@", ","} {
		if !strings.Contains(password, d) {
			delim = d
			break
		}
	}
	if delim == "" {
		return Files{}, errors.New("meta password uses every substitution delimiter Kamailio allows")
	}
	mp, _ := netip.ParseAddrPort(c.Meta.Listen)
	dp, _ := netip.ParseAddrPort(c.Desks.Listen)
	ring, _ := time.ParseDuration(c.Desks.RingTimeout)
	dial := c.Meta.GatewayAddr
	if dial == "" {
		dial = net.JoinHostPort(c.Meta.Gateway, "5061")
	}
	// Names the gateway's certificate may show: the host, or a wildcard
	// one label up.
	names := []string{c.Meta.Gateway}
	if _, parent, ok := strings.Cut(c.Meta.Gateway, "."); ok && strings.Contains(parent, ".") {
		names = append(names, "*."+parent)
	}
	var nameExpr []string
	for _, n := range names {
		nameExpr = append(nameExpr, fmt.Sprintf(`$tls_peer_san_hostname == "%s" || $tls_peer_subject_cn == "%s"`, n, n))
	}
	var allow []string
	for _, a := range c.Meta.Allow {
		if p, err := netip.ParsePrefix(a); err == nil {
			a = p.Masked().String()
		} else if ip, err := netip.ParseAddr(a); err == nil {
			a = netip.PrefixFrom(ip, ip.BitLen()).String()
		}
		allow = append(allow, fmt.Sprintf(`is_in_subnet("$si", "%s")`, a))
	}
	dir := c.Kamailio.Dir
	data := map[string]any{
		"Source": source, "Number": c.Number, "Digits": strings.TrimPrefix(c.Number, "+"),
		"PublicName": c.PublicName, "DeskName": c.Desks.Name,
		"MetaListen": c.Meta.Listen, "MetaPort": mp.Port(), "DeskListen": c.Desks.Listen, "DeskPort": dp.Port(),
		"Gateway": c.Meta.Gateway, "GatewayDial": dial, "MetaRealm": c.Meta.Realm,
		"GatewayNameExpr": strings.Join(nameExpr, " || "),
		"MetaAllow":       len(allow) > 0, "MetaAllowExpr": strings.Join(allow, " || "),
		"RingTimeout": ring, "RingMS": ring.Milliseconds(), "Hunt": c.Desks.Hunt,
		"Debug": logLevels[c.Kamailio.LogLevel], "Children": c.Kamailio.Children, "ModulesDir": c.Kamailio.ModulesDir,
		"CtlSocket": c.Kamailio.CtlSocket, "TLSFile": filepath.Join(dir, TLSFile), "SecretFile": filepath.Join(dir, SecretFile),
		"MetaCert": c.Meta.CertFile, "MetaKey": c.Meta.KeyFile, "MetaCA": c.Meta.CAFile,
		"DeskCert": c.Desks.CertFile, "DeskKey": c.Desks.KeyFile, "FleetCA": c.Desks.CAFile,
	}
	var f Files
	var err error
	if f.KamailioCfg, err = render("kamailio.cfg.tmpl", data); err != nil {
		return f, err
	}
	if f.TLSCfg, err = render("tls.cfg.tmpl", data); err != nil {
		return f, err
	}
	f.Secret = fmt.Appendf(nil, "# Meta's SIP password for the edge; rendered by waphone edge-config. Keep it 0640 root:kamailio.\n#!substdef \"%sWA_META_PASSWORD%s%s%sg\"\n", delim, delim, password, delim)
	return f, nil
}

func render(name string, data map[string]any) ([]byte, error) {
	t, err := template.New(name).Option("missingkey=error").ParseFS(templates, name)
	if err != nil {
		return nil, fmt.Errorf("edge template %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("edge template %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// Write puts the files into dir: the configuration 0644, the secret 0640
// (group kamailio when that group exists, so that Kamailio can read it).
func Write(dir string, f Files) error {
	for _, w := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{KamailioFile, f.KamailioCfg, 0o644}, {TLSFile, f.TLSCfg, 0o644}, {SecretFile, f.Secret, 0o640}} {
		path := filepath.Join(dir, w.name)
		tmp, err := os.CreateTemp(dir, "."+w.name+".*")
		if err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		if err = tmp.Chmod(w.mode); err == nil {
			if _, err = tmp.Write(w.data); err == nil {
				err = tmp.Sync()
			}
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			chownKamailio(tmp.Name(), w.mode)
			err = os.Rename(tmp.Name(), path)
		}
		if err != nil {
			_ = os.Remove(tmp.Name())
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}

// chownKamailio gives the secret to group kamailio (Debian's package runs
// Kamailio as that user) when the group exists and we may.
func chownKamailio(path string, mode os.FileMode) {
	if mode&0o040 == 0 {
		return
	}
	raw, err := os.ReadFile("/etc/group")
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Split(l, ":")
		if len(f) >= 3 && f[0] == "kamailio" {
			if gid, err := strconv.Atoi(f[2]); err == nil {
				_ = os.Chown(path, -1, gid)
			}
			return
		}
	}
}
