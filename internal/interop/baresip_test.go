package interop

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
// the WAV baresip writes.
func TestInteropBaresip(t *testing.T) {
	if _, err := exec.LookPath("baresip"); err != nil {
		t.Skip("baresip not installed (Debian: apt-get install baresip-core)")
	}
	// DTLS mode is not in this list: see docs/interop.md for how far it got.
	for _, mode := range []string{"sdes"} {
		t.Run(mode, func(t *testing.T) { baresipCall(t, mode) })
	}
}

func baresipCall(t *testing.T, mode string) {
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
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := phone.New(phone.Config{
		Answer: "auto", Media: media.Config{KeyExchange: mode, BindIP: net.IPv4(127, 0, 0, 1), PortMin: 27000, PortMax: 27999},
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
	}
}

func freeCheck(port int) error {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	return l.Close()
}
