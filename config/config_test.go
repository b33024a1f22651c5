package config

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/audio"
)

const minimal = `
[sip]
hostname = "sip.example.com"
number = "12145551869"
`

func TestMinimalAndDefaults(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.SIP.Number != "+12145551869" || c.SIP.BusinessDigits() != "12145551869" {
		t.Fatalf("number %q", c.SIP.Number)
	}
	if c.SIP.Listen != "0.0.0.0:5061" || c.SIP.Gateway != "wa.meta.vc" || c.Media.KeyExchange != "dtls" || // the literals: a contract with users
		c.Phone.RingTimeout.Duration != time.Minute || c.Phone.Answer != "button" || c.Audio.Capture != "default" { // a desk phone: the headset and the button
		t.Fatalf("defaults %+v", c)
	}
	lo, hi, err := c.Media.PortRange()
	if err != nil || lo != 10000 || hi != 10100 {
		t.Fatalf("ports %d-%d %v", lo, hi, err)
	}
}

func TestErrorsNameKeyAndLine(t *testing.T) {
	cases := []struct {
		name, toml, want string
	}{
		{"unknown key", "[sip]\nhostname = \"a.example\"\nnumber = \"+12145551869\"\nhostnme = \"x\"\n", `t.toml:4: unknown key "sip.hostnme"`},
		{"unknown table", "[sip]\nhostname = \"a.example\"\nnumber = \"+12145551869\"\n[sound]\nx = 1\n", `t.toml:4: unknown key "sound"`},
		{"bad duration", minimal + "[phone]\nring_timeout = \"forever\"\n", "phone.ring_timeout"},
		{"wrong type", minimal + "[phone]\nanswer = 3\n", "t.toml:6"},
		{"missing hostname", "[sip]\nnumber = \"+12145551869\"\n", "sip.hostname is required"},
		{"ip hostname", "[sip]\nhostname = \"192.0.2.1\"\nnumber = \"+12145551869\"\n", "t.toml:2: sip.hostname"},
		{"url hostname", "[sip]\nhostname = \"sips://a.example\"\nnumber = \"+12145551869\"\n", "sip.hostname"},
		{"bad number", "[sip]\nhostname = \"a.example\"\nnumber = \"12ab\"\n", `t.toml:3: sip.number "12ab": want E.164`},
		{"bad listen", minimal + "listen = \"5061\"\n", "sip.listen"},
		{"cert without key", minimal + "cert_file = \"/x\"\n", "sip.key_file must be set together"},
		{"bad allow", minimal + "allow = [\"meta\"]\n", "sip.allow \"meta\""},
		{"bad key exchange", minimal + "[media]\nkey_exchange = \"zrtp\"\n", "t.toml:6: media.key_exchange"},
		{"long user param", minimal + "[graph]\nrequest_uri_user_params = { tgrp = \"" + strings.Repeat("w", 129) + "\" }\n", "graph.request_uri_user_params \"tgrp\": keys and values are at most 128"},
		{"user param breaks the URI", minimal + "[graph]\nrequest_uri_user_params = { tgrp = \"a;b\" }\n", "graph.request_uri_user_params \"tgrp\": keys and values may not contain"},
		{"bad speed dial", minimal + "[phone]\nspeed_dial = \"mom\"\n", "phone.speed_dial"},
		{"bad ports", minimal + "[media]\nrtp_ports = \"100-50\"\n", "media.rtp_ports"},
		{"low ports", minimal + "[media]\nrtp_ports = \"80-90\"\n", "media.rtp_ports"},
		{"bad public address", minimal + "[media]\npublic_address = \"home\"\n", "media.public_address"},
		{"bad bind address", minimal + "[media]\nbind_address = \"10.0.0\"\n", `t.toml:6: media.bind_address "10.0.0": want an IP address`},
		{"bad capture", minimal + "[audio]\ncapture = \"mic\"\n", `t.toml:6: audio.capture "mic": want default, device:NAME`},
		{"bad tone", minimal + "[audio]\ncapture = \"tone:30000\"\n", `t.toml:6: audio.capture "tone:30000": tone frequency`},
		{"tone playback", minimal + "[audio]\nplayback = \"tone:440\"\n", `t.toml:6: audio.playback "tone:440": a tone is a source only`},
		{"empty device ringer", minimal + "[audio]\nringer = \"device:\"\n", `t.toml:6: audio.ringer "device:"`},
		{"bad answer", minimal + "[phone]\nanswer = \"maybe\"\n", "phone.answer \"maybe\""},
		{"negative delay", minimal + "[phone]\nauto_answer_delay = \"-1s\"\n", "phone.auto_answer_delay must not be negative"},
		{"negative gc percent", minimal + "[runtime]\ngc_percent = -5\n", `t.toml:6: runtime.gc_percent -5: want 0`},
		{"bad log level", minimal + "[log]\nlevel = \"loud\"\n", "log.level"},
		{"syntax", "[sip\nhostname=", "t.toml:1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(c.toml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
	// All problems at once.
	_, err := Parse("t.toml", []byte("[sip]\n[media]\nkey_exchange = \"x\"\n"))
	if err == nil || !strings.Contains(err.Error(), "sip.hostname") || !strings.Contains(err.Error(), "media.key_exchange") {
		t.Fatalf("want every error, got %v", err)
	}
}

func TestExampleLoads(t *testing.T) {
	p := filepath.Join(t.TempDir(), "waphone.toml")
	if err := os.WriteFile(p, []byte(Example()), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.SIP.Hostname != "sip.example.com" || c.Phone.ControlSocket == "" {
		t.Fatalf("%+v", c)
	}
	// "defaults are shown": the example's text must not drift from Default().
	d := Default()
	if c.SIP.Listen != d.SIP.Listen || c.SIP.Gateway != d.SIP.Gateway || c.Media != d.Media || c.Audio != d.Audio ||
		c.Phone != d.Phone || c.Board != d.Board || c.TLS != d.TLS || c.State != d.State || c.Log != d.Log ||
		c.Graph.BaseURL != d.Graph.BaseURL || c.Graph.Version != d.Graph.Version {
		t.Fatalf("the example's defaults differ from Default():\n%+v\n%+v", c, d)
	}
}

func TestReadPassword(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pw")
	if err := os.WriteFile(p, []byte("hunter2-meta\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pw, err := ReadPassword(p)
	if err != nil || pw != "hunter2-meta" {
		t.Fatalf("%q %v", pw, err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err = ReadPassword(p)
	if err == nil || !strings.Contains(err.Error(), "0640") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("loose mode: %v", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatal("error leaks the password")
	}
	// systemd LoadCredential=: relative names come from $CREDENTIALS_DIRECTORY.
	_ = os.Chmod(p, 0o400)
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	if pw, err := ReadPassword("pw"); err != nil || pw != "hunter2-meta" {
		t.Fatalf("credential: %q %v", pw, err)
	}
	if _, err := ReadPassword(""); err == nil {
		t.Fatal("empty path accepted")
	}
}

func TestWriteSecretAtomic0600(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sip-password")
	if err := os.WriteFile(p, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSecret(p, "new-pw"); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	b, _ := os.ReadFile(p)
	if fi.Mode().Perm() != 0o600 || string(b) != "new-pw\n" {
		t.Fatalf("mode %o content %q", fi.Mode().Perm(), b)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".secret-*")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	if pw, err := ReadPassword(p); err != nil || pw != "new-pw" {
		t.Fatalf("%q %v", pw, err)
	}
}

// TestDocsMatchExample keeps docs/config.md equal to `waphone
// example-config`, so the documented keys are the ones the parser takes.
func TestDocsMatchExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```toml\n"+Example()+"```\n") {
		t.Fatal("docs/config.md is out of date: regenerate its toml block from `waphone example-config`")
	}
}

// TestImageConfigIsADeskPhone: the config the Buildroot image ships must
// parse, and must use the headset and the button (a null device there
// would make a flashed board ring in silence).
func TestImageConfigIsADeskPhone(t *testing.T) {
	c, err := Load("../buildroot/board/waphone/rootfs_overlay/etc/waphone/waphone.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Audio.Capture != "default" || c.Audio.Playback != "default" || c.Phone.Answer != "button" ||
		c.Board.Chip == "" || c.Board.ButtonLine == "" || c.Board.LedLine == "" {
		t.Fatalf("image config is not set up for a headset and a button: %+v %+v %+v", c.Audio, c.Phone, c.Board)
	}
}

func TestEarlyMediaDefaultsOn(t *testing.T) {
	base := "[sip]\nhostname = \"sip.example.com\"\nnumber = \"+12145551869\"\npassword_file = \"pw\"\ncert_file = \"c\"\nkey_file = \"k\"\n"
	c, err := Parse("t.toml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Phone.EarlyMedia {
		t.Fatal("early_media must default to true")
	}
	c, err = Parse("t.toml", []byte(base+"[phone]\nearly_media = false\n"))
	if err != nil || c.Phone.EarlyMedia {
		t.Fatalf("early_media = false: %v %v", c.Phone.EarlyMedia, err)
	}
}

func TestTypedValues(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal+"[media]\nbind_address = \"127.0.0.1\"\n[audio]\ncapture = \"tone:440@0.5\"\nplayback = \"device:Jabra\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if ip, err := c.Media.BindIP(); err != nil || !ip.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("bind ip %v %v", ip, err)
	}
	if ip, err := c.Media.PublicIP(); err != nil || ip != nil {
		t.Errorf("unset public ip %v %v", ip, err)
	}
	if sp, err := c.Audio.CaptureSpec(); err != nil || sp != (audio.Spec{Kind: audio.KindTone, Hz: 440, Amplitude: 0.5}) {
		t.Errorf("capture %+v %v", sp, err)
	}
	if sp, err := c.Audio.PlaybackSpec(); err != nil || sp != (audio.Spec{Kind: audio.KindDevice, Device: "Jabra"}) {
		t.Errorf("playback %+v %v", sp, err)
	}
	if _, ok, err := c.Audio.RingerSpec(); ok || err != nil {
		t.Errorf("unset ringer: %v %v", ok, err)
	}
}
