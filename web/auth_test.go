package web

import (
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestCheckPassword(t *testing.T) {
	h, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	bc, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	for _, stored := range []string{"s3cret", h, string(bc)} {
		if !checkPassword(stored, "s3cret") || checkPassword(stored, "s3cret!") || checkPassword(stored, "") {
			t.Errorf("stored %q", stored)
		}
	}
	// A hostile hash cannot make a login allocate gigabytes.
	if checkPassword("$argon2id$v=19$m=99999999,t=1,p=1$c2FsdA$aGFzaA", "x") {
		t.Error("huge m accepted")
	}
}

func TestLimiterBlocksAndForgets(t *testing.T) {
	l := newLimiter()
	now := time.Unix(1e9, 0)
	l.now = func() time.Time { return now }
	for range loginFailLimit {
		if b, _ := l.blocked("a"); b {
			t.Fatal("blocked early")
		}
		l.fail("a")
	}
	if b, _ := l.blocked("a"); !b {
		t.Fatal("not blocked")
	}
	if b, _ := l.blocked("b"); b {
		t.Fatal("another client blocked")
	}
	now = now.Add(loginFailWindow + time.Second)
	if b, _ := l.blocked("a"); b {
		t.Fatal("still blocked after the window")
	}
	for i := range limiterMax + 10 {
		l.fail(string(rune(i + 1000)))
	}
	if len(l.fails) > limiterMax {
		t.Fatalf("%d entries", len(l.fails))
	}
}

func TestSessionsExpire(t *testing.T) {
	s := newSessions()
	now := time.Unix(1e9, 0)
	s.now = func() time.Time { return now }
	id, err := s.create()
	if err != nil || !s.valid(id) || s.valid("forged") {
		t.Fatal("session")
	}
	now = now.Add(sessionIdle + time.Second)
	if s.valid(id) {
		t.Fatal("idle session still valid")
	}
}

func TestCSVCell(t *testing.T) {
	for in, want := range map[string]string{"+12195550714": "+12195550714", "=HYPERLINK(1)": "'=HYPERLINK(1)", "+1+1": "'+1+1", "plain": "plain"} {
		if got := csvCell(in); got != want {
			t.Errorf("csvCell(%q) = %q", in, got)
		}
	}
}
