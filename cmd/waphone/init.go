package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/waphone/waphone/config"
)

// credentialName is the name under which the unit hands the SIP password
// to the service (LoadCredential=sip-password:/etc/waphone/sip-password) and
// the relative sip.password_file init writes. The service runs as User=waphone
// and cannot read root's 0600 file itself; systemd copies it into
// $CREDENTIALS_DIRECTORY, where config.ReadPassword looks for relative names.
// init_test.go checks the unit file says the same.
const credentialName = "sip-password"

// serviceGroup owns the config (0640 root:waphone) and the control socket.
const serviceGroup = "waphone"

// initOptions are waphone init's answers, from flags or the terminal.
type initOptions struct {
	config, hostname, number        string
	cert, key                       string
	acme                            bool
	email, challenge, dnsHook       string
	capture, playback               string
	button, led                     string
	phoneNumberID                   string
	passwordFile                    string
	passwordStdin, yes, start, doct bool
}

// cmdInit is the first-run path for someone who is not a VoIP expert: it
// asks (or takes flags for) what only the owner knows, writes a commented
// config and the password the way the unit reads them, starts the service
// when it is the packaged one, and runs doctor.
func cmdInit(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("init", stderr)
	var o initOptions
	fs.StringVar(&o.config, "config", defaultConfig, "config file to write")
	fs.StringVar(&o.hostname, "hostname", "", "the SIP hostname Meta has for this phone (on your certificate)")
	fs.StringVar(&o.number, "number", "", "the business number, E.164 (+12145551869)")
	fs.StringVar(&o.cert, "cert", "", "certificate chain file (PEM, leaf first)")
	fs.StringVar(&o.key, "key", "", "the certificate's private key file (PEM)")
	fs.BoolVar(&o.acme, "acme", false, "get the certificate from Let's Encrypt (or -ca) instead of -cert/-key")
	fs.StringVar(&o.email, "email", "", "ACME account e-mail (optional)")
	fs.StringVar(&o.challenge, "challenge", "", "ACME challenge: tls-alpn-01 (TCP 443, the default), http-01 (TCP 80) or dns-01")
	fs.StringVar(&o.dnsHook, "dns-hook", "", "dns-01: command that sets the TXT record")
	fs.StringVar(&o.capture, "capture", "", "microphone: default, device:NAME, tone:HZ or null (default \"default\")")
	fs.StringVar(&o.playback, "playback", "", "earpiece: default, device:NAME or null (default: like -capture)")
	fs.StringVar(&o.button, "button", "", "how calls are answered: headset (its call key), gpio:CHIP:LINE (a desk button) or auto (default headset)")
	fs.StringVar(&o.led, "led", "", "with -button gpio:…: the LED's GPIO line")
	fs.StringVar(&o.phoneNumberID, "phone-number-id", "", "the number's ID in WhatsApp Manager, for `waphone setup` (optional)")
	fs.StringVar(&o.passwordFile, "password-file", "", "a file holding Meta's SIP password")
	fs.BoolVar(&o.passwordStdin, "password-stdin", false, "read Meta's SIP password from the first line of stdin")
	fs.BoolVar(&o.yes, "yes", false, "never ask: take defaults, replace an existing config")
	fs.BoolVar(&o.start, "start", true, "(re)start waphone.service when writing the packaged config as root under systemd")
	fs.BoolVar(&o.doct, "doctor", true, "run `waphone doctor` at the end")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		printCommandHelp(stderr, fs)
		return errUsage
	}
	interactive := !o.yes && !o.passwordStdin && isTerminal(stdin)
	return runInit(ctx, o, stdin, interactive, stdout, stderr)
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// prompter asks one question at a time on a terminal; off a terminal it
// never asks and missing answers become a usage error naming the flags.
type prompter struct {
	in          *bufio.Reader
	raw         io.Reader // for turning echo off
	out         io.Writer
	interactive bool
	missing     []string
}

func (p *prompter) line() (string, error) {
	s, err := p.in.ReadString('\n')
	if err != nil && (s == "" || !errors.Is(err, io.EOF)) {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	return strings.TrimSpace(s), nil
}

// ask returns *v if set, else the answer to question (def on an empty
// answer), checked by valid; re-asks until valid. Off a terminal a
// required value with no default is recorded as missing.
func (p *prompter) ask(v *string, flagName, question, def string, valid func(string) error) error {
	if *v != "" {
		if valid != nil {
			if err := valid(*v); err != nil {
				return fmt.Errorf("-%s: %w", flagName, err)
			}
		}
		return nil
	}
	if !p.interactive {
		if def == "" && valid != nil {
			if valid("") != nil {
				p.missing = append(p.missing, "-"+flagName)
				return nil
			}
		}
		*v = def
		return nil
	}
	for {
		if def != "" {
			fmt.Fprintf(p.out, "%s [%s]: ", question, def)
		} else {
			fmt.Fprintf(p.out, "%s: ", question)
		}
		ans, err := p.line()
		if err != nil {
			return err
		}
		if ans == "" {
			ans = def
		}
		if valid != nil {
			if err := valid(ans); err != nil {
				fmt.Fprintf(p.out, "  %v\n", err)
				continue
			}
		}
		*v = ans
		return nil
	}
}

// secret reads a line with the terminal's echo off.
func (p *prompter) secret(question string) (string, error) {
	fmt.Fprintf(p.out, "%s: ", question)
	if f, ok := p.raw.(*os.File); ok {
		fd := int(f.Fd())
		if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			old := *t
			t.Lflag &^= unix.ECHO
			if unix.IoctlSetTermios(fd, unix.TCSETS, t) == nil {
				defer func() {
					_ = unix.IoctlSetTermios(fd, unix.TCSETS, &old)
					fmt.Fprintln(p.out)
				}()
			}
		}
	}
	return p.line()
}

// fieldCheck validates one key with config's own rules: the example config
// (which loads) with that key replaced must not produce an error about it.
func fieldCheck(table, key string) func(string) error {
	return func(v string) error {
		text, err := setKey(config.Example(), table, key, tomlString(v))
		if err != nil {
			return err
		}
		_, err = config.Parse("answer", []byte(text))
		if err == nil {
			return nil
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if strings.Contains(line, table+"."+key) {
				_, msg, _ := strings.Cut(line, table+"."+key+" ")
				return errors.New(msg)
			}
		}
		return nil
	}
}

func fileExists(v string) error {
	if v == "" {
		return errors.New("required")
	}
	if _, err := os.Stat(v); err != nil {
		return err
	}
	return nil
}

func runInit(ctx context.Context, o initOptions, stdin io.Reader, interactive bool, stdout, stderr io.Writer) error {
	p := &prompter{in: bufio.NewReader(stdin), raw: stdin, out: stdout, interactive: interactive}
	if interactive {
		fmt.Fprintf(stdout, "waphone init: a few questions, then %s is written and checked.\nEnter takes the [default].\n\n", o.config)
	}
	if _, err := os.Stat(o.config); err == nil && !o.yes {
		if !interactive {
			return fmt.Errorf("%s exists: -yes replaces it (the old one is kept as %s.old)", o.config, o.config)
		}
		var ans string
		if err := p.ask(&ans, "yes", o.config+" exists. Replace it (the old one is kept as .old)? y/n", "n", nil); err != nil {
			return err
		}
		if !strings.HasPrefix(strings.ToLower(ans), "y") {
			return errors.New("nothing written")
		}
	}
	if err := p.ask(&o.hostname, "hostname", "SIP hostname (the name Meta has for this phone, e.g. sip.example.com)", "", fieldCheck("sip", "hostname")); err != nil {
		return err
	}
	if err := p.ask(&o.number, "number", "Business phone number, with country code (e.g. +12145551869)", "", fieldCheck("sip", "number")); err != nil {
		return err
	}
	if err := askCertificate(p, &o); err != nil {
		return err
	}
	if err := askAudio(p, &o); err != nil {
		return err
	}
	if err := askButton(p, &o); err != nil {
		return err
	}
	if len(p.missing) > 0 {
		fmt.Fprintf(stderr, "waphone init: not on a terminal, so these are needed as flags: %s\n", strings.Join(p.missing, " "))
		return errUsage
	}
	password, err := readInitPassword(p, o)
	if err != nil {
		return err
	}

	text, err := initConfigText(o, time.Now())
	if err != nil {
		return err
	}
	if _, err := config.Parse(o.config, []byte(text)); err != nil {
		return fmt.Errorf("the config init would write does not load (a bug): %w", err)
	}
	if err := writeConfigFile(o.config, text, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", o.config)
	// The password last: the unit's ConditionPathExists= on it means
	// "configured", so the phone never starts on half a config.
	pwPath := filepath.Join(filepath.Dir(o.config), credentialName)
	switch {
	case password != "":
		if err := config.WriteSecret(pwPath, password); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (mode 0600, root's; systemd hands it to the service as the credential %q)\n", pwPath, credentialName)
	case fileExists(pwPath) == nil:
		fmt.Fprintf(stdout, "kept the SIP password in %s\n", pwPath)
	default:
		fmt.Fprintf(stdout, "no SIP password yet: `waphone setup -config %s` fetches it from Meta and stores it in %s\n", o.config, pwPath)
	}
	warnUnreadableByService(o, stdout)

	if o.start && o.config == defaultConfig && fileExists(pwPath) == nil {
		startService(ctx, stdout, stderr)
	} else if o.config != defaultConfig {
		fmt.Fprintf(stdout, "note: waphone.service reads %s, not %s\n", defaultConfig, o.config)
	}
	if !o.doct {
		return nil
	}
	fmt.Fprintf(stdout, "\nwaphone doctor -config %s:\n", o.config)
	args := []string{"-config", o.config}
	if err := asUnitSeesCredentials(args, func() error { return cmdDoctor(ctx, args, stdout, stderr) }); err != nil {
		return fmt.Errorf("the config is written; doctor found what to fix above: %w", err)
	}
	return nil
}

func askCertificate(p *prompter, o *initOptions) error {
	if !o.acme && o.cert == "" && p.interactive {
		var how string
		if err := p.ask(&how, "acme", "Certificate for the hostname: 1) files you have (e.g. from certbot)  2) get one from Let's Encrypt (ACME)", "1",
			oneOf("1", "2")); err != nil {
			return err
		}
		o.acme = how == "2"
	}
	if o.acme {
		if o.cert != "" || o.key != "" {
			return errors.New("-acme and -cert/-key: choose one")
		}
		if p.interactive && o.email == "" {
			if err := p.ask(&o.email, "email", "E-mail for Let's Encrypt's expiry notices (optional)", "", nil); err != nil {
				return err
			}
		}
		q := "Challenge: tls-alpn-01 (forward TCP 443 to this box), http-01 (TCP 80) or dns-01 (no open port; needs a DNS hook)"
		if err := p.ask(&o.challenge, "challenge", q, "tls-alpn-01", oneOf("tls-alpn-01", "http-01", "dns-01")); err != nil {
			return err
		}
		if o.challenge == "dns-01" {
			return p.ask(&o.dnsHook, "dns-hook", "DNS hook command (run as: HOOK present|cleanup NAME VALUE)", "", required)
		}
		return nil
	}
	if err := p.ask(&o.cert, "cert", "Certificate chain file (fullchain.pem)", "", fileExists); err != nil {
		return err
	}
	return p.ask(&o.key, "key", "Its private key file (privkey.pem)", "", fileExists)
}

func required(v string) error {
	if v == "" {
		return errors.New("required")
	}
	return nil
}

func oneOf(choices ...string) func(string) error {
	return func(v string) error {
		for _, c := range choices {
			if v == c {
				return nil
			}
		}
		return fmt.Errorf("want one of %s", strings.Join(choices, ", "))
	}
}

// soundCards lists ALSA's cards as device:NAME specs, for the headset question.
func soundCards() []string {
	b, err := os.ReadFile("/proc/asound/cards")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		// " 1 [Headset        ]: USB-Audio - Jabra EVOLVE 20 MS"
		if _, name, ok := strings.Cut(l, "]: "); ok {
			if _, long, ok := strings.Cut(name, " - "); ok {
				out = append(out, "device:"+strings.TrimSpace(long))
			}
		}
	}
	return out
}

func askAudio(p *prompter, o *initOptions) error {
	if p.interactive && o.capture == "" {
		cards := soundCards()
		if len(cards) > 0 {
			fmt.Fprintln(p.out, "Sound cards found:")
			for _, c := range cards {
				fmt.Fprintf(p.out, "  %s\n", c)
			}
		} else {
			fmt.Fprintln(p.out, "No sound card found now (plug the headset in, or answer \"default\").")
		}
	}
	if err := p.ask(&o.capture, "capture", "Headset microphone (default, or device:NAME from the list)", "default", fieldCheck("audio", "capture")); err != nil {
		return err
	}
	return p.ask(&o.playback, "playback", "Headset earpiece", o.capture, fieldCheck("audio", "playback"))
}

func askButton(p *prompter, o *initOptions) error {
	valid := func(v string) error {
		switch {
		case v == "headset", v == "auto":
			return nil
		case strings.HasPrefix(v, "gpio:"):
			if parts := strings.Split(v, ":"); len(parts) == 3 && parts[1] != "" && parts[2] != "" {
				return nil
			}
		}
		return errors.New(`want "headset", "auto" or "gpio:CHIP:LINE" (e.g. gpio:gpiochip0:GPIO17)`)
	}
	q := "Answering calls: headset (its call key), auto (answers by itself), or gpio:CHIP:LINE (a desk button, e.g. gpio:gpiochip0:GPIO17)"
	if err := p.ask(&o.button, "button", q, "headset", valid); err != nil {
		return err
	}
	if strings.HasPrefix(o.button, "gpio:") && p.interactive && o.led == "" {
		return p.ask(&o.led, "led", "GPIO line of the LED (empty for none)", "", nil)
	}
	return nil
}

func readInitPassword(p *prompter, o initOptions) (string, error) {
	switch {
	case o.passwordFile != "" && o.passwordStdin:
		return "", errors.New("-password-file and -password-stdin: choose one")
	case o.passwordFile != "":
		b, err := os.ReadFile(o.passwordFile)
		if err != nil {
			return "", fmt.Errorf("-password-file: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", fmt.Errorf("-password-file %s is empty", o.passwordFile)
		}
		return pw, nil
	case o.passwordStdin:
		pw, err := p.line()
		if err != nil {
			return "", err
		}
		if pw == "" {
			return "", errors.New("-password-stdin: the first line of stdin is empty")
		}
		return pw, nil
	case p.interactive:
		return p.secret("Meta's SIP password (Enter to skip: `waphone setup` can fetch it)")
	}
	return "", nil
}

// initConfigText is the example config (every key, with comments) with
// the answers filled in.
func initConfigText(o initOptions, now time.Time) (string, error) {
	set := [][3]string{
		{"sip", "hostname", tomlString(o.hostname)},
		{"sip", "number", tomlString(o.number)},
		{"sip", "password_file", tomlString(credentialName)},
		{"sip", "cert_file", tomlString(o.cert)},
		{"sip", "key_file", tomlString(o.key)},
		{"tls", "acme", strconv.FormatBool(o.acme)},
		{"audio", "capture", tomlString(o.capture)},
		{"audio", "playback", tomlString(o.playback)},
		{"graph", "phone_number_id", tomlString(o.phoneNumberID)},
	}
	if o.acme {
		set = append(set, [3]string{"tls", "email", tomlString(o.email)}, [3]string{"tls", "challenge", tomlString(o.challenge)},
			[3]string{"tls", "dns_hook", tomlString(o.dnsHook)})
	}
	switch {
	case o.button == "auto":
		set = append(set, [3]string{"phone", "answer", `"auto"`})
	case strings.HasPrefix(o.button, "gpio:"):
		parts := strings.SplitN(o.button, ":", 3)
		set = append(set, [3]string{"phone", "answer", `"button"`}, [3]string{"board", "chip", tomlString(parts[1])},
			[3]string{"board", "button_line", tomlString(parts[2])}, [3]string{"board", "led_line", tomlString(o.led)})
	default: // headset
		set = append(set, [3]string{"phone", "answer", `"button"`}, [3]string{"board", "headset_keys", `"auto"`})
	}
	text := config.Example()
	for _, s := range set {
		var err error
		if text, err = setKey(text, s[0], s[1], s[2]); err != nil {
			return "", err
		}
	}
	head := fmt.Sprintf("# Written by `waphone init` on %s. Edit freely; `waphone doctor` checks it.\n"+
		"# The SIP password is not here: it is %s beside this file (root's, 0600),\n"+
		"# handed to the service by systemd as the credential %q.\n", now.Format("2006-01-02"), credentialName, credentialName)
	return head + text, nil
}

// setKey replaces the value of key in [table] of a TOML text that has one
// `key = value` line per key, keeping every comment.
func setKey(text, table, key, value string) (string, error) {
	lines := strings.Split(text, "\n")
	cur := ""
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]") {
			cur = strings.TrimSpace(strings.Trim(t, "[]"))
			continue
		}
		if cur != table || strings.HasPrefix(t, "#") {
			continue
		}
		if k, _, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) == key {
			lines[i] = key + " = " + value
			return strings.Join(lines, "\n"), nil
		}
	}
	return "", fmt.Errorf("init: no %s.%s in the example config", table, key)
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// writeConfigFile replaces path atomically, 0640 root:waphone when the
// group exists and we are root (the service reads it as group waphone;
// it holds no secret), keeping a previous file as path.old.
func writeConfigFile(path, text string, stderr io.Writer) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("config directory: %w", err)
	}
	gid := -1
	if g, err := user.LookupGroup(serviceGroup); err == nil && os.Geteuid() == 0 {
		gid, _ = strconv.Atoi(g.Gid)
	} else if os.Geteuid() == 0 {
		fmt.Fprintf(stderr, "waphone init: no %q group (is the package installed?): %s stays root's only\n", serviceGroup, path)
	}
	f, err := os.CreateTemp(dir, ".waphone-init-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	err = f.Chmod(0o640)
	if err == nil && gid >= 0 {
		err = f.Chown(0, gid)
	}
	if err == nil {
		_, err = f.WriteString(text)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if _, serr := os.Stat(path); serr == nil {
			_ = os.Remove(path + ".old")
			err = os.Link(path, path+".old")
		}
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// warnUnreadableByService says so when the service user could not read
// the certificate or key (certbot's live/ directory is root's only), the
// commonest first-run failure after the password.
func warnUnreadableByService(o initOptions, w io.Writer) {
	if o.acme {
		return
	}
	u, err := user.Lookup(serviceGroup)
	if err != nil {
		return
	}
	uid, _ := strconv.Atoi(u.Uid)
	var gids []int
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.Atoi(g); err == nil {
				gids = append(gids, n)
			}
		}
	}
	for _, f := range []string{o.cert, o.key} {
		if !readableBy(f, uid, gids) {
			fmt.Fprintf(w, "warning: user %s cannot read %s; the service will not start. Fix: chgrp %s %s && chmod g+r %s\n"+
				"  (and g+x on its directories; for certbot, do it in a --deploy-hook so renewals keep it)\n", serviceGroup, f, serviceGroup, f, f)
		}
	}
}

// readableBy reports whether uid (with gids) may read path: x on every
// directory on the way, r on the file (symlinks followed).
func readableBy(path string, uid int, gids []int) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		abs = resolved
	}
	may := func(p string, bit uint32) bool {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			return false
		}
		switch {
		case int(st.Uid) == uid:
			return st.Mode&(bit<<6) != 0
		case containsInt(gids, int(st.Gid)):
			return st.Mode&(bit<<3) != 0
		}
		return st.Mode&bit != 0
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if !may(d, 1) {
			return false
		}
		if d == "/" {
			break
		}
	}
	return may(abs, 4)
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// startService (re)starts the packaged unit when systemd runs this box, so
// that doctor then checks the real thing.
func startService(ctx context.Context, stdout, stderr io.Writer) {
	if os.Geteuid() != 0 {
		return
	}
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for _, args := range [][]string{{"enable", "waphone.service"}, {"restart", "waphone.service"}} {
		cmd := exec.CommandContext(cctx, "systemctl", args...)
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(stdout, "systemctl %s: %v (journalctl -u waphone says why)\n", strings.Join(args, " "), err)
			return
		}
	}
	fmt.Fprintln(stdout, "waphone.service (re)started")
}

// asUnitSeesCredentials runs f (doctor, outside the unit) with
// $CREDENTIALS_DIRECTORY set to the config's directory when it is unset,
// so that a relative sip.password_file ("sip-password") resolves to the
// file the unit's LoadCredential= reads, as it does for the service.
func asUnitSeesCredentials(args []string, f func() error) error {
	if os.Getenv("CREDENTIALS_DIRECTORY") != "" {
		return f()
	}
	path := defaultConfig
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if hasVal {
			path = val
		} else if i+1 < len(args) {
			path = args[i+1]
		}
	}
	_ = os.Setenv("CREDENTIALS_DIRECTORY", filepath.Dir(path))
	defer os.Unsetenv("CREDENTIALS_DIRECTORY")
	return f()
}
