// Package web is the phone's console in a browser: the call now (live,
// with Answer, Hang up, Mute and a quality plot), the call log, a health
// report, a headset test and the few settings a shop owner changes.
//
// It is a surface: it reaches the phone only through the small Phone
// interface below (which *phone.Phone satisfies) and providers the daemon
// passes in, and it costs a call nothing while nobody looks. Everything
// it serves is embedded: it works offline and loads nothing from
// elsewhere. HTTPS only, one admin password, sessions in cookies that
// scripts cannot read, cross-origin writes refused, never framed.
package web

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/settings"
)

// Phone is what the console needs from the phone.
type Phone interface {
	Answer() error
	Hangup() error
	ToggleMute() (bool, error)
	SendDTMF(digits string) error
	Call(ctx context.Context, number string) error
	Status() phone.Status
	Subscribe(n int) (<-chan phone.Event, func())
}

// History reads the call log (*history.Store).
type History interface {
	Read(since time.Time) ([]history.Record, int, error)
}

// Headset is the headset test: a tone in the earpiece, the microphone's
// level (0..1, peak of the last few frames).
type Headset interface {
	PlayTestTone(ctx context.Context) error
	MicLevel() float64
}

// SettingsStore reads and saves the console's settings (*settings.Store).
type SettingsStore interface {
	Current() (settings.Settings, error)
	Save(settings.Settings) (restart []string, err error)
}

// Check is one line of the health report, like `waphone doctor` prints.
type Check struct {
	Level string `json:"level"` // "ok", "warn" or "fail"
	Text  string `json:"text"`
}

// CertInfo is a certificate the phone relies on, for its expiry date.
type CertInfo struct {
	Use      string    `json:"use"` // "sip", "web"
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"not_after"`
}

// Config is the console. Phone, PasswordFile and Certificate are
// required; every provider may be nil (its part of a page says so).
type Config struct {
	Phone        Phone
	PasswordFile string // the admin password or its bcrypt/argon2id hash, mode 0600; read at each login
	// Certificate is the console's TLS certificate (files, the SIP one, or
	// SelfSigned); called at each handshake so renewals apply.
	Certificate func() (*tls.Certificate, error)

	History  History
	Headset  Headset
	Settings SettingsStore
	Devices  func() ([]string, error)          // sound devices for the settings page
	Doctor   func(ctx context.Context) []Check // the doctor's report
	Certs    func() []CertInfo                 // besides the console's own
	Meta     func(ctx context.Context) (any, error)
	Defence  func() map[string]uint64 // auth failures, throttled, refused...
	// Metrics, if set, is served at /metrics without a login (scrapers do
	// not log in; [metrics] listen = "web").
	Metrics http.Handler
	Version string
	Logger  *slog.Logger
}

//go:embed static
var staticFS embed.FS

// Server is the console.
type Server struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	limiter  *limiter
	handler  http.Handler
	login    string // the login page, with <!--ERROR--> and <!--VERSION--> to fill

	ctx     context.Context // the Serve context: ends streams and calls on shutdown
	streams chan struct{}   // bounds concurrent event streams
	wg      sync.WaitGroup  // calls placed from the console
}

// maxStreams bounds the live pages open at once: each is a goroutine and
// a phone subscription.
const maxStreams = 8

// New checks cfg and builds the console.
func New(cfg Config) (*Server, error) {
	if cfg.Phone == nil {
		return nil, errors.New("web: no phone")
	}
	if cfg.Certificate == nil {
		return nil, errors.New("web: no TLS certificate")
	}
	if _, err := readPasswordFile(cfg.PasswordFile); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Not html/template: its reflection (MethodByName) makes the linker
	// keep every exported method of every type, 3 MB on the board.
	login, err := staticFS.ReadFile("static/login.html")
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, sessions: newSessions(), limiter: newLimiter(), login: string(login),
		ctx: context.Background(), streams: make(chan struct{}, maxStreams)}
	s.handler = s.routes()
	return s, nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	sub, _ := fs.Sub(staticFS, "static")
	files := http.FileServerFS(sub)
	mux.Handle("GET /static/", http.StripPrefix("/static/", files))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.loginPost)
	mux.HandleFunc("POST /logout", s.logout)
	mux.Handle("GET /{$}", s.authed(http.HandlerFunc(s.index)))
	mux.Handle("GET /api/status", s.authed(http.HandlerFunc(s.apiStatus)))
	mux.Handle("GET /api/events", s.authed(http.HandlerFunc(s.apiEvents)))
	mux.Handle("POST /api/answer", s.authed(http.HandlerFunc(s.apiAnswer)))
	mux.Handle("POST /api/hangup", s.authed(http.HandlerFunc(s.apiHangup)))
	mux.Handle("POST /api/mute", s.authed(http.HandlerFunc(s.apiMute)))
	mux.Handle("POST /api/dtmf", s.authed(http.HandlerFunc(s.apiDTMF)))
	mux.Handle("POST /api/call", s.authed(http.HandlerFunc(s.apiCall)))
	mux.Handle("GET /api/history", s.authed(http.HandlerFunc(s.apiHistory)))
	mux.Handle("GET /history.csv", s.authed(http.HandlerFunc(s.historyCSV)))
	mux.Handle("GET /api/health", s.authed(http.HandlerFunc(s.apiHealth)))
	mux.Handle("POST /api/headset/tone", s.authed(http.HandlerFunc(s.apiTone)))
	mux.Handle("GET /api/headset/level", s.authed(http.HandlerFunc(s.apiLevel)))
	mux.Handle("GET /api/settings", s.authed(http.HandlerFunc(s.apiSettings)))
	mux.Handle("POST /api/settings", s.authed(http.HandlerFunc(s.apiSaveSettings)))
	if s.cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.cfg.Metrics)
	}
	// Cross-origin writes (CSRF) are refused from Sec-Fetch-Site/Origin:
	// a page elsewhere cannot make the browser answer or hang up a call.
	cop := http.NewCrossOriginProtection()
	return secureHeaders(cop.Handler(mux))
}

// csp allows this origin's script and style files and nothing else: no
// inline script, no framing, no forms posted elsewhere.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// Handler is the console's HTTP handler (tests; Serve wraps it in TLS).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves HTTPS on ln until ctx ends, then waits for what it started.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.ctx = ctx
	// HTTP/1.1 only: board builds drop net/http's bundled HTTP/2
	// (nethttpomithttp2, ~0.55 MB), yet ServeTLS would still offer h2 in
	// ALPN and a browser that took it would be reset.
	var protos http.Protocols
	protos.SetHTTP1(true)
	srv := &http.Server{
		Protocols:         &protos,
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second, // the event stream lifts it for itself
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cfg.Certificate() },
		},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
		<-errc
	}
	s.wg.Wait()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("web: serving %s: %w", ln.Addr(), err)
	}
	return nil
}

// clientIP is the peer's address: the console is reached directly on the
// LAN, so forwarding headers (which anyone can send) are not trusted.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) authed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(sessionCookie)
		if err != nil || !s.sessions.valid(c.Value) {
			if r.Method == http.MethodGet && r.URL.Path == "/" {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	page := s.login
	if msg != "" {
		page = strings.Replace(page, "<!--ERROR-->", `<p class="error" id="login-error" role="alert">`+escapeHTML(msg)+`</p>`, 1)
	}
	if s.cfg.Version != "" {
		page = strings.Replace(page, "<!--VERSION-->", `<p class="muted">waphone `+escapeHTML(s.cfg.Version)+`</p>`, 1)
	}
	_, _ = io.WriteString(w, page)
}

func (s *Server) loginPost(w http.ResponseWriter, r *http.Request) {
	ip := clientIP(r)
	if blocked, wait := s.limiter.blocked(ip); blocked {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		s.renderLogin(w, http.StatusTooManyRequests, fmt.Sprintf("Too many wrong passwords: try again in %d minutes.", int(wait.Minutes())+1))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	given := r.PostFormValue("password")
	stored, err := readPasswordFile(s.cfg.PasswordFile)
	if err != nil {
		s.log.Error("web console login impossible", "err", err)
		s.renderLogin(w, http.StatusInternalServerError, "The password file cannot be read: see the journal.")
		return
	}
	if given == "" || !checkPassword(stored, given) {
		s.limiter.fail(ip)
		s.log.Warn("web console: wrong password", "client", ip)
		s.renderLogin(w, http.StatusUnauthorized, "Wrong password.")
		return
	}
	s.limiter.succeed(ip)
	id, err := s.sessions.create()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", MaxAge: int(sessionMaxAge.Seconds()),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	s.log.Info("web console: logged in", "client", ip)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// escapeHTML is html.EscapeString without the html package's entity
// table (46 kB in the binary).
func escapeHTML(v string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(v)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.sessions.end(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	b, err := staticFS.ReadFile("static/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(b)
}

// certInfo describes a TLS certificate's leaf.
func certInfo(use string, c *tls.Certificate) (CertInfo, bool) {
	if c == nil || len(c.Certificate) == 0 {
		return CertInfo{}, false
	}
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return CertInfo{}, false
		}
	}
	subj := leaf.Subject.CommonName
	if len(leaf.DNSNames) > 0 {
		subj = leaf.DNSNames[0]
	}
	return CertInfo{Use: use, Subject: subj, NotAfter: leaf.NotAfter}, true
}
