package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/waphone/waphone/config"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/settings"
	"github.com/waphone/waphone/web"
)

// settingsPath is the console's override file (a partial waphone.toml).
func settingsPath(cfg config.Config) string { return filepath.Join(stateDir(cfg), settings.FileName) }

func settingsOf(cfg config.Config) settings.Settings {
	return settings.Settings{Answer: cfg.Phone.Answer, AutoAnswerDelay: cfg.Phone.AutoAnswerDelay.Duration,
		RingTimeout: cfg.Phone.RingTimeout.Duration, SpeedDial: cfg.Phone.SpeedDial,
		Capture: cfg.Audio.Capture, Playback: cfg.Audio.Playback, Ringer: cfg.Audio.Ringer}
}

// withOverrides lays the console's saved settings over the config.
func withOverrides(cfg config.Config) (config.Config, error) {
	s, err := settings.Load(settingsPath(cfg), settingsOf(cfg))
	if err != nil {
		return cfg, err
	}
	if err := s.Validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", settingsPath(cfg), err)
	}
	cfg.Phone.Answer, cfg.Phone.AutoAnswerDelay.Duration, cfg.Phone.RingTimeout.Duration, cfg.Phone.SpeedDial =
		s.Answer, s.AutoAnswerDelay, s.RingTimeout, s.SpeedDial
	cfg.Audio.Capture, cfg.Audio.Playback, cfg.Audio.Ringer = s.Capture, s.Playback, s.Ringer
	return cfg, nil
}

func policyOf(cfg config.Config) phone.Policy {
	return phone.Policy{Answer: cfg.Phone.Answer, AutoAnswerDelay: cfg.Phone.AutoAnswerDelay.Duration,
		RingTimeout: cfg.Phone.RingTimeout.Duration, SpeedDial: cfg.Phone.SpeedDial}
}

// surfaces is what startSurfaces needs from the running daemon. base is
// the config without the console's overrides.
func (d *daemon) surfaces(base config.Config, getCert func() (*tls.Certificate, error)) surfacesConfig {
	cfg := d.cfg
	sc := surfacesConfig{
		WebListen: cfg.Web.Listen, WebPasswordFile: cfg.Web.PasswordFile, WebCertFile: cfg.Web.CertFile, WebKeyFile: cfg.Web.KeyFile,
		MetricsListen: cfg.Metrics.Listen,
		MQTTBroker:    cfg.MQTT.Broker, MQTTUsername: cfg.MQTT.Username, MQTTPasswordFile: cfg.MQTT.PasswordFile,
		MQTTTopic: cfg.MQTT.Topic, MQTTCAFile: cfg.MQTT.CAFile,
		StateDir: stateDir(cfg), Version: version, Phone: d.phone, Endpoint: d.ep, SIPCert: getCert,
		Logger: d.log,
		Settings: &settings.Store{Path: settingsPath(cfg), Base: settingsOf(base), Apply: func(s settings.Settings) ([]string, error) {
			d.phone.SetPolicy(phone.Policy{Answer: s.Answer, AutoAnswerDelay: s.AutoAnswerDelay, RingTimeout: s.RingTimeout, SpeedDial: s.SpeedDial})
			var restart []string
			if s.Capture != d.cfg.Audio.Capture {
				restart = append(restart, "audio.capture")
			}
			if s.Playback != d.cfg.Audio.Playback {
				restart = append(restart, "audio.playback")
			}
			if s.Ringer != d.cfg.Audio.Ringer {
				restart = append(restart, "audio.ringer")
			}
			return restart, nil
		}},
		Doctor: func(ctx context.Context) []web.Check {
			r := &tlsReport{}
			diagnose(ctx, r, d.cfg, d.reportHeadset)
			return doctorChecks(r.lines)
		},
	}
	if d.history != nil {
		sc.History = d.history
	}
	if h := d.headset; h != nil {
		sc.HeadsetStats = h.Stats
		sc.Headset = idleHeadset{d}
		sc.Devices = h.Devices
	}
	if g := cfg.Graph; g.TokenFile != "" && g.PhoneNumberID != "" {
		sc.Meta = func(ctx context.Context) (any, error) {
			c, err := graphClient(d.cfg)
			if err != nil {
				return nil, err
			}
			return c.Get(ctx, false)
		}
	}
	return sc
}

// reportHeadset is doctor's headset line from the device the daemon holds.
func (d *daemon) reportHeadset(r *tlsReport, _ config.Config) {
	if d.headset == nil {
		r.ok("audio.capture %q and audio.playback %q name no sound device", d.cfg.Audio.Capture, d.cfg.Audio.Playback)
		return
	}
	if st := d.headset.Stats(); st.Plugged {
		r.ok("headset: %s (%d unplugs since start)", st.Device, st.Unplugs)
	} else {
		r.bad("headset not found (plug it in; `aplay -l` lists sound cards)")
	}
}

// idleHeadset is the console's headset test: only while no call needs the
// earpiece.
type idleHeadset struct{ d *daemon }

func (h idleHeadset) PlayTestTone(ctx context.Context) error {
	if h.d.phone.Status().State != phone.Idle {
		return errors.New("not during a call")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return h.d.headset.PlayTestTone(ctx)
}

func (h idleHeadset) MicLevel() float64 { return h.d.headset.MicLevel() }

// reload applies what SIGHUP may change without dropping a call: the
// answer policy (the console's overrides included), the log level and
// sip.allow. The certificate needs no signal (its files are watched). The
// rest is logged as needing a restart.
func (d *daemon) reload(path string, level *slog.LevelVar) error {
	base, err := config.Load(path)
	if err != nil {
		return err
	}
	cfg, err := withOverrides(base)
	if err != nil {
		return err
	}
	d.phone.SetPolicy(policyOf(cfg))
	level.Set(logLevel(cfg.Log.Level))
	done := []any{"answer", cfg.Phone.Answer, "ring_timeout", cfg.Phone.RingTimeout.Duration, "log_level", cfg.Log.Level}
	// Certificate files are re-read whenever they change (checked each
	// second by sip.CertReloader); ACME renews by itself.
	if err := d.ep.SetAllow(cfg.SIP.Allow); err != nil {
		d.log.Error("SIGHUP: sip.allow not changed", "err", err)
	} else {
		done = append(done, "allow_entries", len(cfg.SIP.Allow))
	}
	var later []string
	if cfg.Audio != d.cfg.Audio {
		later = append(later, "audio")
	}
	if cfg.SIP.Listen != d.cfg.SIP.Listen || cfg.SIP.Hostname != d.cfg.SIP.Hostname || cfg.SIP.Number != d.cfg.SIP.Number {
		later = append(later, "sip.listen/hostname/number")
	}
	if cfg.Media != d.cfg.Media {
		later = append(later, "media")
	}
	if len(later) > 0 {
		done = append(done, "restart_needed_for", later)
	}
	d.log.Info("SIGHUP: configuration reloaded", done...)
	return nil
}
