package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/webhook"
)

// webhookServer is the HTTPS endpoint for Meta's calls webhooks.
type webhookServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Addr is where it listens.
func (w *webhookServer) Addr() net.Addr { return w.ln.Addr() }

// Close stops it and waits for its goroutine.
func (w *webhookServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := w.srv.Shutdown(ctx)
	<-w.done
	return err
}

// startWebhooks serves Meta's calls webhooks over HTTPS on listen at path,
// with the phone's certificate (getCert: the SIP hostname's, a public
// name Meta can verify), and records every event in the call history so
// that `waphone history` joins Meta's view to the call. verifyTokenFile
// and appSecretFile hold the app's webhook verify token and app secret
// (mode 0600). It stops when ctx ends.
func startWebhooks(ctx context.Context, listen, path, verifyTokenFile, appSecretFile string,
	getCert func() (*tls.Certificate, error), store *history.Store, log *slog.Logger) (*webhookServer, error) {
	if path == "" {
		path = "/webhook"
	}
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("webhook.path %q must start with /", path)
	}
	if getCert == nil {
		return nil, errors.New("webhooks need the TLS certificate: Meta only calls HTTPS endpoints")
	}
	verify, err := config.ReadSecret(verifyTokenFile, "webhook.verify_token_file")
	if err != nil {
		return nil, err
	}
	secret, err := config.ReadSecret(appSecretFile, "webhook.app_secret_file")
	if err != nil {
		return nil, err
	}
	h := &webhook.Handler{VerifyToken: verify, AppSecret: []byte(secret), Sink: historySink{store: store, log: log}, Log: log}
	mux := http.NewServeMux()
	mux.Handle(path, h)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("webhook.listen: %w", err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true) // as web.Serve: no h2 in ALPN, board builds have none
	srv := &http.Server{
		Protocols:         &protos,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return getCert() },
		},
	}
	w := &webhookServer{srv: srv, ln: ln, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("webhook server stopped", "err", err)
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			_ = w.Close()
		case <-w.done:
		}
	}()
	log.Info("receiving Meta's calls webhooks", "listen", ln.Addr().String(), "path", path)
	return w, nil
}

// historySink records webhook events beside the call log.
type historySink struct {
	store *history.Store
	log   *slog.Logger
}

func (s historySink) CallEvent(e webhook.Event) {
	if s.store == nil {
		return
	}
	he := history.WebhookEvent{WACID: e.WACID, Kind: e.Kind, Event: e.Event, Status: e.Status, Direction: e.Direction,
		From: e.From, To: e.To, Time: e.Timestamp, DurationSec: e.DurationSec, Received: time.Now()}
	if len(e.Errors) > 0 {
		he.Error = fmt.Sprintf("%d: %s", e.Errors[0].Code, e.Errors[0].Message)
	}
	if err := s.store.AppendWebhook(he); err != nil {
		s.log.Error("could not record a call webhook", "wacid", e.WACID, "err", err)
	}
}

// printHistory prints the call log with Meta's webhook events joined to
// each call by WACID, then the events for calls not in the log.
func printHistory(stdout io.Writer, recs []history.Record, events []history.WebhookEvent, asJSON bool) error {
	joined, unknown := history.Join(recs, events)
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, j := range joined {
			if err := enc.Encode(j); err != nil {
				return err
			}
		}
		for _, e := range unknown {
			if err := enc.Encode(struct {
				UnknownCall history.WebhookEvent `json:"webhook_for_unknown_call"`
			}{e}); err != nil {
				return err
			}
		}
		return nil
	}
	fmt.Fprintf(stdout, "%-19s  %-8s  %-24s  %-9s  %-11s  %s\n", "START", "DIR", "REMOTE", "DURATION", "ENDED BY", "WACID")
	for _, j := range joined {
		r := j.Record
		fmt.Fprintf(stdout, "%-19s  %-8s  %-24s  %-9s  %-11s  %s\n", r.Start.Local().Format("2006-01-02 15:04:05"),
			r.Direction, r.Remote, r.Duration.Round(time.Second), r.EndedBy, r.WACID)
		for _, e := range j.Webhooks {
			fmt.Fprintf(stdout, "    meta: %s\n", describeWebhook(e))
		}
	}
	if len(unknown) > 0 {
		fmt.Fprintf(stdout, "\nMeta's webhooks for calls not in this log (WACID unknown here):\n")
		for _, e := range unknown {
			fmt.Fprintf(stdout, "  %s  %s\n", e.WACID, describeWebhook(e))
		}
	}
	return nil
}

func describeWebhook(e history.WebhookEvent) string {
	t := e.Time
	if t.IsZero() {
		t = e.Received
	}
	parts := []string{t.Local().Format("15:04:05")}
	for _, s := range []string{e.Event, e.Status, e.Direction} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if e.DurationSec > 0 {
		parts = append(parts, (time.Duration(e.DurationSec) * time.Second).String())
	}
	if e.From != "" || e.To != "" {
		parts = append(parts, e.From+" → "+e.To)
	}
	if e.Error != "" {
		parts = append(parts, "error "+e.Error)
	}
	return strings.Join(parts, "  ")
}
