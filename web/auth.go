package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// readPasswordFile reads the admin password (or its hash). Like Meta's SIP
// password it must be private to the service: a readable hash invites an
// offline guess.
func readPasswordFile(path string) (string, error) {
	if path == "" {
		return "", errors.New("web.password_file is not set")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("web.password_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("web.password_file %s is mode %04o: must be 0600 or stricter", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("web.password_file: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("web.password_file %s is empty", path)
	}
	return pw, nil
}

// checkPassword compares a login attempt with the file's content: a
// bcrypt hash ($2a$, $2b$, $2y$), an argon2id hash in the PHC format
// ($argon2id$v=19$m=65536,t=3,p=2$salt$hash, base64 without padding), or
// the password itself (compared in constant time).
func checkPassword(stored, given string) bool {
	switch {
	case strings.HasPrefix(stored, "$2a$"), strings.HasPrefix(stored, "$2b$"), strings.HasPrefix(stored, "$2y$"):
		return bcrypt.CompareHashAndPassword([]byte(stored), []byte(given)) == nil
	case strings.HasPrefix(stored, "$argon2id$"):
		return checkArgon2id(stored, given)
	default:
		return subtle.ConstantTimeCompare([]byte(stored), []byte(given)) == 1
	}
}

func checkArgon2id(stored, given string) bool {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	parts := strings.Split(stored, "$")
	if len(parts) != 6 || parts[2] != "v=19" {
		return false
	}
	var m, t uint32
	var p uint8
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return false
		}
		switch k {
		case "m":
			m = uint32(n)
		case "t":
			t = uint32(n)
		case "p":
			if n > 255 {
				return false
			}
			p = uint8(n)
		}
	}
	// Bounds keep a hostile file from making a login take all the memory.
	if m == 0 || m > 256*1024 || t == 0 || t > 16 || p == 0 {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 || len(want) > 128 {
		return false
	}
	got := argon2.IDKey([]byte(given), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// HashPassword makes an argon2id hash for web.password_file (the
// `waphone` CLI can offer it; a plain password in the file works too).
func HashPassword(pw string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("web: %w", err)
	}
	const m, t, p = 64 * 1024, 3, 2
	h := argon2.IDKey([]byte(pw), salt, t, m, p, 32)
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, t, p,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(h)), nil
}

// Login throttling: this many wrong passwords from one client address
// within the window block it for the rest of the window.
const (
	loginFailLimit  = 5
	loginFailWindow = 5 * time.Minute
	limiterMax      = 1024 // clients remembered; bounded against address floods
)

type failEntry struct {
	n     int
	first time.Time
}

// limiter counts failed logins per client address.
type limiter struct {
	mu    sync.Mutex
	fails map[string]*failEntry
	now   func() time.Time
}

func newLimiter() *limiter { return &limiter{fails: map[string]*failEntry{}, now: time.Now} }

// blocked says whether ip may try now, and if not, for how long it waits.
func (l *limiter) blocked(ip string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.fails[ip]
	if e == nil {
		return false, 0
	}
	left := loginFailWindow - l.now().Sub(e.first)
	if left <= 0 {
		delete(l.fails, ip)
		return false, 0
	}
	return e.n >= loginFailLimit, left
}

func (l *limiter) fail(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e := l.fails[ip]
	if e == nil || now.Sub(e.first) > loginFailWindow {
		if len(l.fails) >= limiterMax {
			l.pruneLocked(now)
		}
		e = &failEntry{first: now}
		l.fails[ip] = e
	}
	e.n++
}

func (l *limiter) succeed(ip string) {
	l.mu.Lock()
	delete(l.fails, ip)
	l.mu.Unlock()
}

// pruneLocked drops expired entries, and the oldest one if none expired.
func (l *limiter) pruneLocked(now time.Time) {
	var oldest string
	var oldestAt time.Time
	for ip, e := range l.fails {
		if now.Sub(e.first) > loginFailWindow {
			delete(l.fails, ip)
			continue
		}
		if oldest == "" || e.first.Before(oldestAt) {
			oldest, oldestAt = ip, e.first
		}
	}
	if len(l.fails) >= limiterMax && oldest != "" {
		delete(l.fails, oldest)
	}
}

// Sessions: a random token in a cookie, held in memory (a restart logs
// everyone out, which a desk phone can afford).
const (
	sessionCookie  = "__Host-waphone" // __Host-: Secure, Path=/, no Domain, set over HTTPS only
	sessionIdle    = 12 * time.Hour
	sessionMaxAge  = 7 * 24 * time.Hour
	sessionsMax    = 32
	sessionIDBytes = 32
)

type session struct{ created, seen time.Time }

type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	now func() time.Time
}

func newSessions() *sessions { return &sessions{m: map[string]*session{}, now: time.Now} }

func (s *sessions) create() (string, error) {
	b := make([]byte, sessionIDBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("web: session id: %w", err)
	}
	id := base64.RawURLEncoding.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.m) >= sessionsMax {
		var oldest string
		var at time.Time
		for k, v := range s.m {
			if oldest == "" || v.seen.Before(at) {
				oldest, at = k, v.seen
			}
		}
		delete(s.m, oldest)
	}
	s.m[id] = &session{created: now, seen: now}
	return id, nil
}

func (s *sessions) valid(id string) bool {
	if id == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.m[id]
	if v == nil {
		return false
	}
	now := s.now()
	if now.Sub(v.seen) > sessionIdle || now.Sub(v.created) > sessionMaxAge {
		delete(s.m, id)
		return false
	}
	v.seen = now
	return true
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}
