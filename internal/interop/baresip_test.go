package interop

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/internal/dsp"
	"github.com/waphone/waphone/internal/testpki"
	"github.com/waphone/waphone/media"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

// TestInteropBaresip: waphone calls baresip (Debian's baresip-core), a SIP
// endpoint we did not write, over TLS with Opus; baresip stands in for
// Meta's gateway and answers on its own. Both sides' audio is checked:
// baresip's 1000 Hz sine in waphone's recorder, waphone's 440 Hz tone in
// the WAV baresip writes. "sdes" runs here on 127.0.0.1; "dtls" (DTLS-SRTP
// with ICE on both sides) re-runs this test binary in a network namespace
// of its own, see baresipNetns.
func TestInteropBaresip(t *testing.T) {
	if _, err := exec.LookPath("baresip"); err != nil {
		t.Skip("baresip not installed (Debian: apt-get install baresip-core)")
	}
	t.Run("sdes", func(t *testing.T) { baresipCall(t, "sdes", net.IPv4(127, 0, 0, 1)) })
	t.Run("dtls", func(t *testing.T) {
		if os.Getenv(netnsEnv) == "" {
			baresipNetns(t)
			return
		}
		setupNetns(t)
		baresipCall(t, "dtls", netnsIP)
	})
}

// baresip 1.0.0's ICE module never gathers loopback addresses (if_handler:
// "Skip loopback and link-local addresses"), and pion only gathers on a
// loopback interface when bound to a loopback IP. So the DTLS call runs in
// a user+network namespace holding only lo and a veth pair with netnsIP:
// both ICE agents gather that one address, SIP stays on 127.0.0.1, and no
// packet can leave the namespace.
const netnsEnv = "WAPHONE_INTEROP_NETNS"

var netnsIP = net.IPv4(198, 18, 0, 1) // RFC 2544 lab range, only inside the namespace

// baresipNetns re-runs this subtest in a new namespace and reports its output.
func baresipNetns(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed: the DTLS call needs a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not installed: the DTLS call needs a network namespace")
	}
	ns := []string{"--user", "--map-root-user", "--net", "--"}
	if out, err := exec.Command("unshare", append(ns, "true")...).CombinedOutput(); err != nil {
		t.Skipf("cannot create a user+network namespace here (%v): %s", err, bytes.TrimSpace(out))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{os.Args[0], "-test.run=^TestInteropBaresip$/^dtls$", "-test.v", "-test.count=1", "-test.timeout=80s"}
	cmd := exec.CommandContext(ctx, "unshare", append(ns[:len(ns):len(ns)], args...)...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log("netns: " + l)
	}
	switch {
	case err == nil && bytes.Contains(out, []byte("--- PASS: TestInteropBaresip/dtls")):
	case err == nil && bytes.Contains(out, []byte("--- SKIP: TestInteropBaresip/dtls")):
		t.Skip("skipped inside the namespace (see above)")
	default:
		t.Fatalf("the DTLS call in the namespace failed: %v", err)
	}
}

// setupNetns brings up lo and a veth pair with netnsIP, refusing to touch
// a namespace that has more than lo (it must be the fresh one we made).
func setupNetns(t *testing.T) {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Flags&net.FlagLoopback == 0 {
		t.Fatalf("%s is set but this is not a fresh network namespace (%d interfaces)", netnsEnv, len(ifs))
	}
	for _, c := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "wa0", "type", "veth", "peer", "name", "wa1"},
		{"addr", "add", netnsIP.String() + "/24", "dev", "wa0"},
		{"link", "set", "wa1", "up"},
		{"link", "set", "wa0", "up"},
		{"route", "add", "default", "dev", "wa0"}, // baresip wants a default source address
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
}

func baresipCall(t *testing.T, mode string, mediaIP net.IP) {
	dir := t.TempDir()
	ca, err := testpki.NewCA("baresip CA")
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.Issue("wa.meta.vc", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), append(c, k...), 0o600); err != nil {
		t.Fatal(err)
	}
	// libre listens for TLS on sip_listen's port + 1.
	port := freePort(t)
	for freeCheck(port+1) != nil {
		port = freePort(t)
	}
	mediaenc := map[string]string{"sdes": "srtp-mand", "dtls": "dtls_srtp"}[mode]
	conf := fmt.Sprintf(`sip_listen 127.0.0.1:%d
sip_certificate %s
sip_transports tls
audio_player aufile,/dev/null
audio_source ausine,1000
audio_alert aufile,/dev/null
snd_path %s
module_path /usr/lib/baresip/modules
module opus.so
module ausine.so
module aufile.so
module sndfile.so
module srtp.so
module dtls_srtp.so
module ice.so
module_app account.so
rtp_ports 26000-26999
`, port, filepath.Join(dir, "cert.pem"), dir)
	if mode == "dtls" {
		// Without it baresip's ICE wants an RTCP component (2) that our
		// rtcp-mux offer does not have, and calls us "ICE not supported".
		conf += "rtcp_mux yes\n"
	}
	_ = os.WriteFile(filepath.Join(dir, "config"), []byte(conf), 0o644)
	nat := map[string]string{"sdes": "", "dtls": ";medianat=ice"}[mode] // WebRTC needs ICE
	acct := fmt.Sprintf("<sip:+12195550714@wa.meta.vc;transport=tls>;regint=0;mediaenc=%s%s;answermode=auto;audio_codecs=opus/48000/2\n", mediaenc, nat)
	_ = os.WriteFile(filepath.Join(dir, "accounts"), []byte(acct), 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bs := exec.CommandContext(ctx, "baresip", "-f", dir)
	bs.Dir = dir
	log := &syncBuffer{}
	bs.Stdout, bs.Stderr = log, log
	if err := bs.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = bs.Wait()
		if t.Failed() {
			t.Logf("baresip:\n%s", log.String())
		}
	}()
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", port+1)
	waitTCP(t, tlsAddr)

	rec := audio.NewRecorder(audio.SampleRate * 10)
	wlog := &syncBuffer{} // waphone's own log, shown when the test fails
	quiet := slog.New(slog.NewTextHandler(wlog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	defer func() {
		if t.Failed() {
			t.Logf("waphone:\n%s", wlog.String())
		}
	}()
	p := phone.New(phone.Config{
		Answer: "auto", Media: media.Config{KeyExchange: mode, BindIP: mediaIP, PortMin: 27000, PortMax: 27999},
		Capture:  func() (phone.AudioSource, error) { return audio.NewTone(440, 0.3), nil },
		Playback: func() (phone.AudioSink, error) { return rec, nil },
		Logger:   quiet,
	})
	ep, err := sip.New(sip.Config{
		Hostname: "meta-voip.example.com", Number: "+12145551869", Password: func() (string, error) { return "unused", nil },
		GatewayAddr: tlsAddr, GatewayRoots: ca.Pool(), Logger: quiet,
	}, p)
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	p.SetDialer(ep)
	defer p.Close()
	cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
	defer ccancel()
	if err := p.Call(cctx, "+12195550714"); err != nil {
		t.Fatalf("baresip did not answer: %v", err)
	}
	time.Sleep(2500 * time.Millisecond)
	_ = p.Hangup()
	deadline := time.Now().Add(5 * time.Second)
	for p.Status().State != phone.Idle && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if ok, r := dsp.DetectTone(rec.Samples(), audio.SampleRate, 1000); !ok {
		t.Errorf("baresip's 1000 Hz sine not heard by waphone (ratio %.2f, %d samples)", r, len(rec.Samples()))
	} else {
		t.Logf("waphone heard baresip's 1000 Hz sine (ratio %.2f, %d samples)", r, len(rec.Samples()))
	}
	time.Sleep(500 * time.Millisecond) // baresip closes its WAV after the BYE
	// sndfile writes what baresip decoded from us as dump-*-dec.wav.
	dumps, _ := filepath.Glob(filepath.Join(dir, "*dec*.wav"))
	if len(dumps) == 0 {
		all, _ := filepath.Glob(filepath.Join(dir, "*"))
		t.Fatalf("baresip wrote no decoded-audio dump (files: %v)", all)
	}
	src, err := audio.OpenWAVSource(dumps[0])
	if err != nil {
		t.Fatalf("baresip's recording: %v", err)
	}
	defer src.Close()
	pcm := make([]int16, audio.SampleRate*2)
	for i := 0; i+audio.FrameSamples <= len(pcm); i += audio.FrameSamples {
		_ = src.ReadFrame(pcm[i : i+audio.FrameSamples])
	}
	if ok, r := dsp.DetectTone(pcm, audio.SampleRate, 440); !ok {
		t.Errorf("waphone's 440 Hz tone not in baresip's recording (ratio %.2f)", r)
	} else {
		t.Logf("baresip recorded waphone's 440 Hz tone (ratio %.2f, %s)", r, filepath.Base(dumps[0]))
	}
}

func freeCheck(port int) error {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	return l.Close()
}
