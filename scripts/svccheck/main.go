// Command svccheck is scripts/check-service.sh's helper inside the test
// container: it makes the test PKI and places a Meta-shaped call (metasim)
// to the installed waphone service, checking audio both ways.
//
//	svccheck pki -dir DIR -host sip.test
//	svccheck call -addr 127.0.0.1:5061 -host sip.test -ca DIR/ca.pem \
//	    -number +12145551869 -password-file F -heard WAV
//
// The service's config must capture tone:440 (checked on Meta's side) and
// play into wav:WAV (checked for metasim's 1000 Hz once the call ends).
package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/waphone/waphone/internal/dsp"
	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/testpki"
)

const (
	sampleRate = 48000
	ourTone    = 440.0
	metaTone   = 1000.0
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: svccheck pki|call [flags]")
		os.Exit(2)
	}
	// sipgo's package-wide logger reports connection bookkeeping ("TCP ref
	// went negative") at warn; the check's output is for real failures.
	sip.SetDefaultLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	var err error
	switch os.Args[1] {
	case "pki":
		err = pki(os.Args[2:])
	case "call":
		err = call(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "svccheck %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// pki writes DIR/ca.pem, DIR/fullchain.pem and DIR/privkey.pem for host.
func pki(args []string) error {
	fs := flag.NewFlagSet("pki", flag.ContinueOnError)
	dir := fs.String("dir", ".", "output directory")
	host := fs.String("host", "sip.test", "the certificate's DNS name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ca, err := testpki.NewCA("waphone check-service CA")
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := ca.Issue(*host)
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{"ca.pem": ca.PEM, "fullchain.pem": certPEM, "privkey.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(*dir, name), b, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

func call(args []string) error {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:5061", "the service's SIP/TLS address")
	host := fs.String("host", "sip.test", "sip.hostname of the service")
	caFile := fs.String("ca", "ca.pem", "the CA that signed the service's certificate")
	number := fs.String("number", "+12145551869", "the business number")
	pwFile := fs.String("password-file", "/etc/waphone/sip-password", "Meta's SIP password")
	heard := fs.String("heard", "", "the WAV file the service plays into (audio.playback = wav:FILE)")
	talk := fs.Duration("talk", 2*time.Second, "how long the call talks")
	mode := fs.String("media", "dtls", "sdes or dtls (Meta's default)")
	verbose := fs.Bool("v", false, "log metasim's SIP")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s: no certificate", *caFile)
	}
	pw, err := os.ReadFile(*pwFile)
	if err != nil {
		return err
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelDebug
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sim, err := metasim.Start(ctx, metasim.Config{
		BusinessNumber: *number, BusinessHost: *host, Password: strings.TrimRight(string(pw), "\r\n"),
		BusinessRoots: roots, ToneHz: metaTone, NoMediaTimeout: 10 * time.Second, KeyExchange: *mode,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		return fmt.Errorf("starting metasim: %w", err)
	}
	defer sim.Close()
	c, err := sim.Call(ctx, *addr, metasim.CallOptions{From: "+12195550714", Username: "check_service"})
	if err != nil {
		return fmt.Errorf("calling %s: %w", *addr, err)
	}
	if c.Status() != 200 {
		return fmt.Errorf("call got %d, want 200", c.Status())
	}
	fmt.Printf("answered (%v → %d, digest challenge answered: %v)\n", c.Provisional(), c.Status(), c.Challenged())
	time.Sleep(*talk)
	if err := c.Hangup(ctx); err != nil {
		return fmt.Errorf("hanging up: %w", err)
	}
	var failed []string
	if ok, ratio := dsp.DetectTone(c.Recorded(), sampleRate, ourTone); ok {
		fmt.Printf("the service's %v Hz tone heard on Meta's side\n", ourTone)
	} else {
		failed = append(failed, fmt.Sprintf("no %v Hz from the service (ratio %.2f, %d samples)", ourTone, ratio, len(c.Recorded())))
	}
	if *heard != "" {
		pcm, err := waitWAV(ctx, *heard)
		switch {
		case err != nil:
			failed = append(failed, err.Error())
		default:
			if ok, ratio := dsp.DetectTone(pcm, sampleRate, metaTone); ok {
				fmt.Printf("Meta's %v Hz tone heard in the service's earpiece (%d ms in %s)\n", metaTone, len(pcm)*1000/sampleRate, *heard)
			} else {
				failed = append(failed, fmt.Sprintf("no %v Hz in %s (ratio %.2f)", metaTone, *heard, ratio))
			}
		}
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

// waitWAV reads the service's playback file once the call's sink closed it
// (its data size is then filled in).
func waitWAV(ctx context.Context, path string) ([]int16, error) {
	var last error
	for ctx.Err() == nil {
		pcm, err := readWAV(path)
		if err == nil && len(pcm) > 0 {
			return pcm, nil
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("%s: %v", path, last)
}

func readWAV(path string) ([]int16, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return nil, errors.New("not a WAV file")
	}
	r := bytes.NewReader(b[12:])
	for {
		var hdr struct {
			ID   [4]byte
			Size uint32
		}
		if err := binary.Read(r, binary.LittleEndian, &hdr); err != nil {
			return nil, fmt.Errorf("no data chunk: %w", err)
		}
		if string(hdr.ID[:]) != "data" {
			if _, err := r.Seek(int64(hdr.Size), io.SeekCurrent); err != nil {
				return nil, err
			}
			continue
		}
		n := min(int(hdr.Size), r.Len()) / 2
		pcm := make([]int16, n)
		if err := binary.Read(r, binary.LittleEndian, pcm); err != nil {
			return nil, err
		}
		return pcm, nil
	}
}
