package audio

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// Kind is what an audio spec names.
type Kind int

// The kinds of audio end a spec can name.
const (
	KindNull   Kind = iota // "null" or "": silence in, nothing out
	KindTone               // "tone:HZ" or "tone:HZ@AMPLITUDE": a sine (capture only)
	KindWAV                // "wav:FILE": a looped file in, a recording out
	KindDevice             // "default" or "device:NAME": a sound card
)

// DefaultToneAmplitude is the amplitude of "tone:HZ" without "@AMPLITUDE".
const DefaultToneAmplitude = 0.3

// Spec is a parsed audio spec (the audio.capture, audio.playback and
// audio.ringer grammar). The zero Spec is null.
type Spec struct {
	Kind      Kind
	Hz        float64 // KindTone
	Amplitude float64 // KindTone, in (0, 1]
	Path      string  // KindWAV
	Device    string  // KindDevice: a substring of the card's name, or "default"
}

// ParseSpec parses a capture spec: "default", "device:NAME", "tone:HZ",
// "tone:HZ@AMPLITUDE", "wav:FILE" or "null" ("" is null). It is the only
// parser of this grammar: config validation, the daemon and doctor call it.
func ParseSpec(s string) (Spec, error) {
	kind, arg, hasArg := strings.Cut(s, ":")
	switch kind {
	case "", "null":
		if hasArg {
			break
		}
		return Spec{Kind: KindNull}, nil
	case "default":
		if hasArg {
			break
		}
		return Spec{Kind: KindDevice, Device: "default"}, nil
	case "device":
		if arg == "" {
			return Spec{}, fmt.Errorf("%q: device needs a name (or use \"default\")", s)
		}
		return Spec{Kind: KindDevice, Device: arg}, nil
	case "tone":
		hzs, amps, hasAmp := strings.Cut(arg, "@")
		hz, err := strconv.ParseFloat(hzs, 64)
		if err != nil || hz <= 0 || hz >= SampleRate/2 {
			return Spec{}, fmt.Errorf("%q: tone frequency must be between 0 and %d Hz", s, SampleRate/2)
		}
		amp := DefaultToneAmplitude
		if hasAmp {
			if amp, err = strconv.ParseFloat(amps, 64); err != nil || amp <= 0 || amp > 1 {
				return Spec{}, fmt.Errorf("%q: tone amplitude must be in (0, 1]", s)
			}
		}
		return Spec{Kind: KindTone, Hz: hz, Amplitude: amp}, nil
	case "wav":
		if arg == "" {
			return Spec{}, fmt.Errorf("%q: wav needs a file name", s)
		}
		return Spec{Kind: KindWAV, Path: arg}, nil
	}
	return Spec{}, fmt.Errorf("%q: want default, device:NAME, tone:HZ, wav:FILE or null", s)
}

// ParseSinkSpec is ParseSpec for playback and the ringer, which cannot
// play into a tone.
func ParseSinkSpec(s string) (Spec, error) {
	sp, err := ParseSpec(s)
	if err != nil {
		return Spec{}, err
	}
	if sp.Kind == KindTone {
		return Spec{}, fmt.Errorf("%q: a tone is a source only: want default, device:NAME, wav:FILE or null", s)
	}
	return sp, nil
}

// String gives the spec back in its grammar.
func (s Spec) String() string {
	switch s.Kind {
	case KindTone:
		if s.Amplitude == DefaultToneAmplitude {
			return "tone:" + strconv.FormatFloat(s.Hz, 'g', -1, 64)
		}
		return "tone:" + strconv.FormatFloat(s.Hz, 'g', -1, 64) + "@" + strconv.FormatFloat(s.Amplitude, 'g', -1, 64)
	case KindWAV:
		return "wav:" + s.Path
	case KindDevice:
		if s.Device == "default" {
			return "default"
		}
		return "device:" + s.Device
	}
	return "null"
}

// errDeviceSpec: a sound card is opened once as a Headset (OpenEnds), not per call.
var errDeviceSpec = errors.New("a sound device is opened with OpenEnds, not per call")

// OpenSource opens a device-free source (null, tone or WAV file).
func (s Spec) OpenSource() (Source, error) {
	switch s.Kind {
	case KindNull:
		return Null{}, nil
	case KindTone:
		return NewTone(s.Hz, s.Amplitude), nil
	case KindWAV:
		return OpenWAVSource(s.Path)
	}
	return nil, fmt.Errorf("audio %s: %w", s, errDeviceSpec)
}

// OpenSink opens a device-free sink (null or WAV recording).
func (s Spec) OpenSink() (Sink, error) {
	switch s.Kind {
	case KindNull:
		return Null{}, nil
	case KindWAV:
		return CreateWAVSink(s.Path)
	case KindTone:
		return nil, fmt.Errorf("audio %s: a tone cannot play", s)
	}
	return nil, fmt.Errorf("audio %s: %w", s, errDeviceSpec)
}

// HeadsetFor is the sound device a capture and a playback spec need: one
// duplex Headset shared by both when either names a device (the other side
// of the duplex stream is the system default). ok is false when neither does.
func HeadsetFor(capture, playback Spec) (cfg HeadsetConfig, ok bool) {
	if capture.Kind != KindDevice && playback.Kind != KindDevice {
		return HeadsetConfig{}, false
	}
	cfg.Capture, cfg.Playback = "default", "default"
	if capture.Kind == KindDevice {
		cfg.Capture = capture.Device
	}
	if playback.Kind == KindDevice {
		cfg.Playback = playback.Device
	}
	return cfg, true
}

// Ends are a phone's capture and playback, opened from their specs. A
// sound device stays open for the Ends' life (no per-call open latency;
// unplug and replug are watched in one place); the other kinds open per call.
type Ends struct {
	// Headset is the sound device, nil when neither spec names one.
	Headset           *Headset
	capture, playback Spec
}

// OpenEnds opens the sound device if a spec names one, and checks a WAV
// capture file now: a typo should not wait for the first call.
func OpenEnds(capture, playback Spec, logger *slog.Logger) (*Ends, error) {
	if playback.Kind == KindTone {
		return nil, fmt.Errorf("audio playback %s: a tone cannot play", playback)
	}
	e := &Ends{capture: capture, playback: playback}
	if capture.Kind == KindWAV {
		src, err := capture.OpenSource()
		if err != nil {
			return nil, err
		}
		_ = src.Close()
	}
	if hc, ok := HeadsetFor(capture, playback); ok {
		hc.Logger = logger
		h, err := OpenHeadset(hc)
		if err != nil {
			return nil, err
		}
		e.Headset = h
	}
	return e, nil
}

// Source opens the capture end for one call.
func (e *Ends) Source() (Source, error) {
	if e.capture.Kind == KindDevice {
		return e.Headset.Source(), nil
	}
	return e.capture.OpenSource()
}

// Sink opens the playback end for one call.
func (e *Ends) Sink() (Sink, error) {
	if e.playback.Kind == KindDevice {
		return e.Headset.Sink(), nil
	}
	return e.playback.OpenSink()
}

// Close closes the sound device, if any.
func (e *Ends) Close() error {
	if e.Headset == nil {
		return nil
	}
	return e.Headset.Close()
}
