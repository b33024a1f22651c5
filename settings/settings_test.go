package settings

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSaveWritesOnlyChangesAndLoadLayers(t *testing.T) {
	base := Settings{Answer: "auto", RingTimeout: time.Minute, Capture: "default", Playback: "default"}
	st := &Store{Path: filepath.Join(t.TempDir(), "state", FileName), Base: base}
	next := base
	next.Answer, next.SpeedDial = "button", "+12195550714"
	restart, err := st.Save(next)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(restart, ",") != "phone.answer,phone.speed_dial" {
		t.Fatalf("restart %v", restart)
	}
	b, err := os.ReadFile(st.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(st.Path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	if strings.Contains(string(b), "ring_timeout") || strings.Contains(string(b), "[audio]") || !strings.Contains(string(b), "answer = 'button'") {
		t.Fatalf("file:\n%s", b)
	}
	got, err := Load(st.Path, base)
	if err != nil || got != next {
		t.Fatalf("Load = %+v, %v; want %+v", got, err, next)
	}
	// Back to the base: the file keeps no override.
	if _, err := st.Save(base); err != nil {
		t.Fatal(err)
	}
	if got, _ := Load(st.Path, base); got != base {
		t.Fatalf("after reset %+v", got)
	}
}

func TestValidate(t *testing.T) {
	ok := Settings{Answer: "auto", RingTimeout: time.Minute, Capture: "device:USB Headset", Playback: "null"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Settings{
		{Answer: "maybe", RingTimeout: time.Minute, Capture: "null", Playback: "null"},
		{Answer: "auto", RingTimeout: 0, Capture: "null", Playback: "null"},
		{Answer: "auto", RingTimeout: time.Minute, AutoAnswerDelay: -time.Second, Capture: "null", Playback: "null"},
		{Answer: "auto", RingTimeout: time.Minute, SpeedDial: "12345", Capture: "null", Playback: "null"},
		{Answer: "auto", RingTimeout: time.Minute, Capture: "hw:0", Playback: "null"},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestLoadRejectsUnknownKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), FileName)
	if err := os.WriteFile(p, []byte("[phone]\nanswr = 'auto'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p, Settings{}); err == nil {
		t.Fatal("typo accepted")
	}
}
