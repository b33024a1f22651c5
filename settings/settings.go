// Package settings is what the web console may change: a handful of
// [phone] and [audio] keys, kept in an override file of their own
// (/var/lib/waphone/settings.toml) so that waphone.toml stays the
// operator's file and is never rewritten by a program.
//
// The override file is a partial waphone.toml: same tables, same key
// names, only the keys the console changed, only where they differ from
// waphone.toml. Config decodes it after waphone.toml over the same
// struct, so its values win and the usual validation covers them.
// Deleting the file returns to waphone.toml.
package settings

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/waphone/waphone/audio"
	"github.com/waphone/waphone/internal/atomicfile"
	"github.com/waphone/waphone/sip"
)

// FileName is the override file's name in the state directory.
const FileName = "settings.toml"

// Settings are the console's knobs, with waphone.toml's key names.
type Settings struct {
	Answer          string        `json:"answer"`            // [phone] answer: "auto" or "button"
	AutoAnswerDelay time.Duration `json:"auto_answer_delay"` // [phone] auto_answer_delay
	RingTimeout     time.Duration `json:"ring_timeout"`      // [phone] ring_timeout
	SpeedDial       string        `json:"speed_dial"`        // [phone] speed_dial ("" = off)
	Capture         string        `json:"capture"`           // [audio] capture
	Playback        string        `json:"playback"`          // [audio] playback
	Ringer          string        `json:"ringer"`            // [audio] ringer ("" = the headset)
}

// Limits keep a typo in a form from making a phone that never rings out.
const (
	MaxAutoAnswerDelay = time.Minute
	MaxRingTimeout     = 10 * time.Minute
)

// Validate says what is wrong, key by key.
func (s Settings) Validate() error {
	var errs []error
	if s.Answer != "auto" && s.Answer != "button" {
		errs = append(errs, fmt.Errorf("answer %q: want auto or button", s.Answer))
	}
	if s.AutoAnswerDelay < 0 || s.AutoAnswerDelay > MaxAutoAnswerDelay {
		errs = append(errs, fmt.Errorf("auto_answer_delay %s: want 0 to %s", s.AutoAnswerDelay, MaxAutoAnswerDelay))
	}
	if s.RingTimeout < time.Second || s.RingTimeout > MaxRingTimeout {
		errs = append(errs, fmt.Errorf("ring_timeout %s: want 1s to %s", s.RingTimeout, MaxRingTimeout))
	}
	if s.SpeedDial != "" {
		if _, err := sip.NormalizeTarget(s.SpeedDial); err != nil {
			errs = append(errs, fmt.Errorf("speed_dial: %w", err))
		}
	}
	// The audio specs' one grammar is audio's (a sink takes no tone).
	if _, err := audio.ParseSpec(s.Capture); err != nil {
		errs = append(errs, fmt.Errorf("capture %w", err))
	}
	for _, a := range []struct{ key, v string }{{"playback", s.Playback}, {"ringer", s.Ringer}} {
		if a.v == "" && a.key == "ringer" {
			continue
		}
		if _, err := audio.ParseSinkSpec(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %w", a.key, err))
		}
	}
	return errors.Join(errs...)
}

// Store keeps the override file. Base is waphone.toml's values (without
// the overrides), so that only real changes are written.
type Store struct {
	Path string
	Base Settings
	// Apply, if set, puts saved settings into effect and names the keys
	// that only a restart applies (the lead wires it to the phone and the
	// audio; nil means every change waits for a restart).
	Apply func(Settings) (restart []string, err error)

	mu  sync.Mutex
	cur *Settings
}

// file is the override file's shape: a partial waphone.toml.
type file struct {
	Phone map[string]any `toml:"phone,omitempty"`
	Audio map[string]any `toml:"audio,omitempty"`
}

// Load reads the override file over Base (a missing file is no override).
func Load(path string, base Settings) (Settings, error) {
	s := base
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("settings: %w", err)
	}
	var f struct {
		Phone struct {
			Answer          *string `toml:"answer"`
			AutoAnswerDelay *string `toml:"auto_answer_delay"`
			RingTimeout     *string `toml:"ring_timeout"`
			SpeedDial       *string `toml:"speed_dial"`
		} `toml:"phone"`
		Audio struct {
			Capture  *string `toml:"capture"`
			Playback *string `toml:"playback"`
			Ringer   *string `toml:"ringer"`
		} `toml:"audio"`
	}
	if err := toml.NewDecoder(bytes.NewReader(raw)).DisallowUnknownFields().Decode(&f); err != nil {
		return s, fmt.Errorf("settings %s: %w", path, err)
	}
	str := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	dur := func(dst *time.Duration, key string, v *string) {
		if v == nil {
			return
		}
		d, perr := time.ParseDuration(*v)
		if perr != nil {
			err = errors.Join(err, fmt.Errorf("settings %s: %s: %w", path, key, perr))
			return
		}
		*dst = d
	}
	str(&s.Answer, f.Phone.Answer)
	dur(&s.AutoAnswerDelay, "phone.auto_answer_delay", f.Phone.AutoAnswerDelay)
	dur(&s.RingTimeout, "phone.ring_timeout", f.Phone.RingTimeout)
	str(&s.SpeedDial, f.Phone.SpeedDial)
	str(&s.Capture, f.Audio.Capture)
	str(&s.Playback, f.Audio.Playback)
	str(&s.Ringer, f.Audio.Ringer)
	return s, err
}

// Current is the effective settings: Base with the override file on top.
func (st *Store) Current() (Settings, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cur != nil {
		return *st.cur, nil
	}
	s, err := Load(st.Path, st.Base)
	if err != nil {
		return s, err
	}
	st.cur = &s
	return s, nil
}

// Save validates s, writes the keys that differ from Base (atomically,
// 0600), applies them and names the keys that wait for a restart.
func (st *Store) Save(s Settings) (restart []string, err error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	b := st.Base
	f := file{Phone: map[string]any{}, Audio: map[string]any{}}
	var changed []string
	put := func(m map[string]any, table, key string, v, base any, text string) {
		if v != base {
			m[key] = text
			changed = append(changed, table+"."+key)
		}
	}
	put(f.Phone, "phone", "answer", s.Answer, b.Answer, s.Answer)
	put(f.Phone, "phone", "auto_answer_delay", s.AutoAnswerDelay, b.AutoAnswerDelay, s.AutoAnswerDelay.String())
	put(f.Phone, "phone", "ring_timeout", s.RingTimeout, b.RingTimeout, s.RingTimeout.String())
	put(f.Phone, "phone", "speed_dial", s.SpeedDial, b.SpeedDial, s.SpeedDial)
	put(f.Audio, "audio", "capture", s.Capture, b.Capture, s.Capture)
	put(f.Audio, "audio", "playback", s.Playback, b.Playback, s.Playback)
	put(f.Audio, "audio", "ringer", s.Ringer, b.Ringer, s.Ringer)
	var buf bytes.Buffer
	buf.WriteString("# Written by waphone's web console: these keys override waphone.toml.\n# Delete this file to go back to waphone.toml.\n")
	if len(changed) > 0 {
		enc := toml.NewEncoder(&buf)
		if err := enc.Encode(f); err != nil {
			return nil, fmt.Errorf("settings: %w", err)
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := writeAtomic(st.Path, buf.Bytes()); err != nil {
		return nil, err
	}
	st.cur = &s
	if st.Apply == nil {
		return changed, nil
	}
	return st.Apply(s)
}

// writeAtomic replaces path with a 0600 file: a power cut leaves the old
// or the new settings, never half of them.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	return nil
}
