package kamailio

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleFileIsExample(t *testing.T) {
	raw, err := os.ReadFile("edge.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != Example {
		t.Fatal("edge.toml.example is out of date: regenerate it with `waphone edge-config -example`")
	}
}

func TestRenderExample(t *testing.T) {
	c, err := Parse("edge.toml", []byte(Example))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Render(c, "s3cr3t!#", "edge.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(f.KamailioCfg)
	for _, want := range []string{
		`listen=tls:203.0.113.10:5061`, `listen=tls:10.0.0.1:5062`,
		`modparam("tm", "fr_inv_timer", 60000)`, `modparam("tm", "local_cancel_reason", 1)`,
		`modparam("auth", "one_time_nonce", 1)`, `pv_proxy_authenticate("sip.example.com", "WA_META_PASSWORD", "0")`,
		`if ($au != "12145551869")`, `modparam("uac", "credential", "12145551869:wa.meta.vc:WA_META_PASSWORD")`,
		`$du = "sip:wa.meta.vc:5061;transport=tls"`, `$tls_peer_san_hostname == "wa.meta.vc"`, `$tls_peer_subject_cn == "*.meta.vc"`,
		`if ($Rp == 5062)`, `hf_iterator_rm("pa")`, `msg_apply_changes()`, `set_forward_no_connect()`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("kamailio.cfg lacks %s", want)
		}
	}
	if strings.Contains(cfg, "s3cr3t") || strings.Contains(string(f.TLSCfg), "s3cr3t") {
		t.Fatal("the password leaked into a world-readable file")
	}
	if !strings.Contains(string(f.Secret), `#!substdef "%WA_META_PASSWORD%s3cr3t!#%g"`) {
		t.Fatalf("secret file: %s", f.Secret)
	}
	if strings.Contains(cfg, "t_next_contacts") {
		t.Fatal("hunt is off but the configuration hunts")
	}
	c.Desks.Hunt = true
	f, _ = Render(c, "pw", "edge.toml")
	if !strings.Contains(string(f.KamailioCfg), "failure_route[HUNT]") {
		t.Fatal("hunt = true renders no hunt")
	}
	for _, bad := range []string{"", `a"b`, `a\b`, "a\nb"} {
		if _, err := Render(c, bad, "edge.toml"); err == nil {
			t.Errorf("password %q accepted", bad)
		}
	}
}

// TestKamailioParses runs Kamailio's own check on the rendered files.
func TestKamailioParses(t *testing.T) {
	if _, err := exec.LookPath("kamailio"); err != nil {
		t.Skip("kamailio not installed")
	}
	dir := t.TempDir()
	src := strings.NewReplacer("/etc/kamailio", dir, "203.0.113.10", "127.0.0.1", "10.0.0.1", "127.0.0.1",
		"unix:/run/kamailio/kamailio_ctl", "unix:"+filepath.Join(dir, "ctl")).Replace(Example)
	src = strings.Replace(src, "allow = []", `allow = ["127.0.0.0/8", "::1"]`, 1)
	c, err := Parse("edge.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Render(c, "pw", "edge.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, f); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, SecretFile)); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("secret file: %v %v", fi.Mode(), err)
	}
	out, err := exec.Command("kamailio", "-c", "-f", filepath.Join(dir, KamailioFile)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config file ok") {
		t.Fatalf("kamailio -c: %v\n%s", err, out)
	}
}

func TestParseErrors(t *testing.T) {
	for name, c := range map[string]struct{ from, to, want string }{
		"unknown key":   {"hunt = false", "hunt = false\nhnut = true", `unknown key "desks.hnut"`},
		"no plus":       {`number = "+12145551869"`, `number = "12145551869"`, "number"},
		"any address":   {`listen = "203.0.113.10:5061"`, `listen = "0.0.0.0:5061"`, "meta.listen"},
		"same port":     {`listen = "10.0.0.1:5062"`, `listen = "10.0.0.1:5061"`, "different ports"},
		"desk=public":   {`name = "edge.fleet.internal"`, `name = "sip.example.com"`, "must differ from public_name"},
		"short ring":    {`ring_timeout = "60s"`, `ring_timeout = "1s"`, "desks.ring_timeout"},
		"bad log level": {`log_level = "notice"`, `log_level = "loud"`, "kamailio.log_level"},
		"bad allow":     {"allow = []", `allow = ["meta"]`, `meta.allow "meta"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("edge.toml", []byte(strings.Replace(Example, c.from, c.to, 1)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}
