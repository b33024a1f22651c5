package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/internal/testpki"
)

// unitDirectives returns the values of key= in the shipped unit.
func unitDirectives(t *testing.T, key string) []string {
	t.Helper()
	f, err := os.Open("../../systemd/waphone.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vals []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key+"="); ok {
			vals = append(vals, v)
		}
	}
	return vals
}

// The unit hands over the very credential init writes: the same name (the
// relative sip.password_file) and the same source file beside the
// packaged config, and it waits for that file before starting.
func TestInitCredentialMatchesUnit(t *testing.T) {
	creds := unitDirectives(t, "LoadCredential")
	if len(creds) != 1 {
		t.Fatalf("LoadCredential= lines: %q", creds)
	}
	name, src, _ := strings.Cut(creds[0], ":")
	if name != credentialName {
		t.Errorf("unit credential %q, init writes password_file = %q", name, credentialName)
	}
	if want := filepath.Join(filepath.Dir(defaultConfig), credentialName); src != want {
		t.Errorf("unit loads the credential from %q, init writes %q", src, want)
	}
	if cond := unitDirectives(t, "ConditionPathExists"); len(cond) != 1 || cond[0] != src {
		t.Errorf("ConditionPathExists=%q, want the credential source %q", cond, src)
	}
	if ex := unitDirectives(t, "ExecStart"); len(ex) != 1 || !strings.Contains(ex[0], "-config "+defaultConfig) {
		t.Errorf("ExecStart=%q does not read %s", ex, defaultConfig)
	}
}

func initCert(t *testing.T, dir, host string) (string, string) {
	t.Helper()
	ca, err := testpki.NewCA("init CA")
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.Issue(host)
	if err != nil {
		t.Fatal(err)
	}
	cf, kf, err := testpki.WriteFiles(dir, c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cf, kf
}

func TestInitNonInteractive(t *testing.T) {
	dir := t.TempDir()
	cf, kf := initCert(t, dir, "sip.test")
	cfgPath := filepath.Join(dir, "etc", "waphone.toml")
	var out, errb bytes.Buffer
	args := []string{"-config", cfgPath, "-hostname", "sip.test", "-number", "+12145551869", "-cert", cf, "-key", kf,
		"-capture", "tone:440", "-playback", "null", "-button", "gpio:gpiochip0:GPIO17", "-led", "GPIO27",
		"-password-stdin", "-doctor=false"}
	if err := cmdInit(context.Background(), args, strings.NewReader("s3cret pass\n"), &out, &errb); err != nil {
		t.Fatalf("init: %v\n%s\n%s", err, out.String(), errb.String())
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("written config does not load: %v", err)
	}
	if cfg.SIP.Hostname != "sip.test" || cfg.SIP.Number != "+12145551869" || cfg.SIP.CertFile != cf || cfg.SIP.KeyFile != kf ||
		cfg.SIP.PasswordFile != credentialName || cfg.Audio.Capture != "tone:440" || cfg.Audio.Playback != "null" ||
		cfg.Phone.Answer != "button" || cfg.Board.Chip != "gpiochip0" || cfg.Board.ButtonLine != "GPIO17" || cfg.Board.LedLine != "GPIO27" ||
		cfg.TLS.ACME {
		t.Errorf("config: %+v", cfg)
	}
	raw, _ := os.ReadFile(cfgPath)
	if !strings.Contains(string(raw), "# Meta's SIP domain.") {
		t.Error("the written config lost the example's comments")
	}
	if strings.Contains(string(raw), "s3cret") {
		t.Error("the password is in the config")
	}
	if fi, err := os.Stat(cfgPath); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("config mode: %v %v", fi.Mode(), err)
	}
	pw := filepath.Join(filepath.Dir(cfgPath), credentialName)
	fi, err := os.Stat(pw)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v", fi, err)
	}
	// Read the way the service does: relative name, $CREDENTIALS_DIRECTORY.
	t.Setenv("CREDENTIALS_DIRECTORY", filepath.Dir(pw))
	if got, err := config.ReadPassword(cfg.SIP.PasswordFile); err != nil || got != "s3cret pass" {
		t.Errorf("password as the service reads it: %q %v", got, err)
	}

	// Again without -yes: refused, nothing replaced. With -yes: replaced,
	// the old file kept, the password kept.
	out.Reset()
	args2 := []string{"-config", cfgPath, "-hostname", "sip2.test", "-number", "+12145551869", "-acme", "-challenge", "http-01",
		"-email", "ops@example.com", "-button", "auto", "-doctor=false"}
	if err := cmdInit(context.Background(), args2, strings.NewReader(""), &out, &errb); err == nil || !strings.Contains(err.Error(), "-yes") {
		t.Fatalf("existing config replaced without -yes: %v", err)
	}
	if err := cmdInit(context.Background(), append(args2, "-yes"), strings.NewReader(""), &out, &errb); err != nil {
		t.Fatalf("init -yes: %v\n%s", err, errb.String())
	}
	cfg, err = config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.TLS.ACME || cfg.TLS.Challenge != "http-01" || cfg.TLS.Email != "ops@example.com" || cfg.SIP.CertFile != "" ||
		cfg.Phone.Answer != "auto" || cfg.Audio.Capture != "default" || cfg.Audio.Playback != "default" || cfg.Board.Chip != "" {
		t.Errorf("acme config: %+v", cfg)
	}
	if old, err := config.Load(cfgPath + ".old"); err != nil || old.SIP.Hostname != "sip.test" {
		t.Errorf("old config not kept: %v", err)
	}
	if got, err := config.ReadPassword(credentialName); err != nil || got != "s3cret pass" {
		t.Errorf("password not kept: %q %v", got, err)
	}
	if !strings.Contains(out.String(), "kept the SIP password") {
		t.Errorf("output: %s", out.String())
	}
}

func TestInitMissingFlagsAndBadValues(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "waphone.toml")
	var out, errb bytes.Buffer
	err := cmdInit(context.Background(), []string{"-config", cfgPath, "-number", "+12145551869", "-doctor=false"}, strings.NewReader(""), &out, &errb)
	if err != errUsage || !strings.Contains(errb.String(), "-hostname") || !strings.Contains(errb.String(), "-cert") {
		t.Fatalf("missing flags: %v %q", err, errb.String())
	}
	err = cmdInit(context.Background(), []string{"-config", cfgPath, "-hostname", "https://sip.test", "-doctor=false"}, strings.NewReader(""), &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "-hostname") || !strings.Contains(err.Error(), "DNS name") {
		t.Fatalf("bad hostname: %v", err)
	}
	if _, err := os.Stat(cfgPath); !os.IsNotExist(err) {
		t.Fatal("a config was written anyway")
	}
}

// On a terminal: every question once, a bad answer asked again, then the
// config and the password written and doctor run on them.
func TestInitInteractiveThenDoctor(t *testing.T) {
	dir := t.TempDir()
	cf, kf := initCert(t, dir, "sip.test")
	cfgPath := filepath.Join(dir, "waphone.toml")
	answers := strings.Join([]string{
		"not a hostname!", // asked again
		"sip.test",
		"+12145551869",
		"1", // certificate files
		cf, kf,
		"null", "", // capture; playback like capture
		"auto",
		"typed-secret",
	}, "\n") + "\n"
	var out, errb bytes.Buffer
	o := initOptions{config: cfgPath, start: true, doct: true}
	err := runInit(context.Background(), o, strings.NewReader(answers), true, &out, &errb)
	// Doctor fails (no daemon answers TLS), which init passes on.
	if err == nil || !strings.Contains(err.Error(), "doctor") {
		t.Fatalf("init: %v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"want a DNS name", "ok    config " + cfgPath + " is valid", "ok    SIP password file readable and private",
		"nothing answers TLS", "note: waphone.service reads " + defaultConfig} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if os.Getenv("CREDENTIALS_DIRECTORY") != "" {
		t.Error("init left CREDENTIALS_DIRECTORY set")
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Audio.Capture != "null" || cfg.Audio.Playback != "null" || cfg.Phone.Answer != "auto" || cfg.SIP.CertFile != cf {
		t.Errorf("config: %+v", cfg)
	}
}

func TestSetKeyAndTOMLString(t *testing.T) {
	text, err := setKey(config.Example(), "sip", "hostname", tomlString(`a"b\c`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, `hostname = "a\"b\\c"`) {
		t.Errorf("quoting: %s", text[:200])
	}
	if _, err := setKey(config.Example(), "sip", "no_such_key", `""`); err == nil {
		t.Error("a missing key was not reported")
	}
	// Every key init sets exists in the example config.
	o := initOptions{hostname: "sip.test", number: "+12145551869", acme: true, challenge: "dns-01", dnsHook: "/bin/true",
		button: "gpio:gpiochip0:GPIO17", capture: "default", playback: "default"}
	text, err = initConfigText(o, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse("init", []byte(text)); err != nil {
		t.Fatal(err)
	}
}

func TestControlSocketWithoutValidConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "waphone.toml")
	// A typo elsewhere (unknown key) and a missing required key: the
	// control commands still find their socket.
	_ = os.WriteFile(p, []byte("[sip]\nhostnme = \"x\"\n[phone]\ncontrol_socket = \"/tmp/x.sock\"\n"), 0o600)
	var errb bytes.Buffer
	if got := socketFromConfig(p, &errb); got != "/tmp/x.sock" {
		t.Errorf("socket %q", got)
	}
	if got := socketFromConfig(filepath.Join(dir, "none.toml"), &errb); got != config.Default().Phone.ControlSocket {
		t.Errorf("no config: %q", got)
	}
	var out bytes.Buffer
	code := run([]string{"status", "-config", p, "-socket", filepath.Join(dir, "none.sock")}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "none.sock") {
		t.Errorf("status on a missing socket: %d %s", code, errb.String())
	}
}

// `waphone doctor` by hand finds the relative password where the unit's
// credential comes from: beside the config.
func TestDoctorByHandFindsTheCredential(t *testing.T) {
	dir := t.TempDir()
	cf, kf := initCert(t, dir, "sip.test")
	cfgPath := filepath.Join(dir, "waphone.toml")
	var out, errb bytes.Buffer
	args := []string{"-config", cfgPath, "-hostname", "sip.test", "-number", "+12145551869", "-cert", cf, "-key", kf,
		"-capture", "null", "-button", "auto", "-password-stdin", "-doctor=false"}
	if err := cmdInit(context.Background(), args, strings.NewReader("pw\n"), &out, &errb); err != nil {
		t.Fatal(err)
	}
	for _, a := range [][]string{{"doctor", "-config", cfgPath}, {"doctor", "--config=" + cfgPath}} {
		out.Reset()
		run(a, &out, &errb)
		if !strings.Contains(out.String(), "ok    SIP password file readable and private") {
			t.Errorf("%q:\n%s", a, out.String())
		}
	}
	if os.Getenv("CREDENTIALS_DIRECTORY") != "" {
		t.Error("CREDENTIALS_DIRECTORY left set")
	}
}
