//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/waphone/waphone/internal/dsp"
)

const rate = 48000

// headsetSide is the far side of snd-aloop: what a person's voice would
// put into the headset's microphone (aplay into the loopback) and what
// the earpiece would play (arecord from it). Both ends run as real ALSA
// clients (alsa-utils) on the same loopback substream waphone does not
// hold, so the audio crosses the kernel driver both ways.
type headsetSide struct {
	dev  string
	hz   float64
	play *exec.Cmd
	rec  *exec.Cmd

	mu    sync.Mutex
	heard []int16 // the last 10 s recorded
	errs  bytes.Buffer
}

// stderr is what aplay and arecord said.
func (h *headsetSide) stderr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.TrimSpace(h.errs.String())
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func startHeadsetSide(dev string, hz float64) (*headsetSide, error) {
	h := &headsetSide{dev: dev, hz: hz}
	args := []string{"-q", "-D", dev, "-t", "raw", "-f", "S16_LE", "-r", fmt.Sprint(rate), "-c", "1"}
	h.play = exec.Command("aplay", append(args, "-B", "100000")...)
	h.play.Stderr = lockedWriter{&h.mu, &h.errs}
	stdin, err := h.play.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := h.play.Start(); err != nil {
		return nil, fmt.Errorf("aplay: %w", err)
	}
	go func() {
		// A steady tone at -10 dBFS; aplay's pace (the loopback's clock)
		// paces the pipe.
		buf := make([]byte, rate/50*2)
		pcm := make([]int16, rate/50)
		tone := dsp.NewOscillator(hz, rate, 0.3*32767)
		for {
			tone.Fill(pcm)
			for i, v := range pcm {
				binary.LittleEndian.PutUint16(buf[2*i:], uint16(v))
			}
			if _, err := stdin.Write(buf); err != nil {
				return
			}
		}
	}()
	h.rec = exec.Command("arecord", append(args, "-B", "100000")...)
	h.rec.Stderr = lockedWriter{&h.mu, &h.errs}
	stdout, err := h.rec.StdoutPipe()
	if err != nil {
		h.stop()
		return nil, err
	}
	if err := h.rec.Start(); err != nil {
		h.stop()
		return nil, fmt.Errorf("arecord: %w", err)
	}
	go func() {
		r := bufio.NewReader(stdout)
		buf := make([]byte, rate/50*2)
		for {
			if _, err := io.ReadFull(r, buf); err != nil {
				return
			}
			h.mu.Lock()
			for i := 0; i < len(buf); i += 2 {
				h.heard = append(h.heard, int16(binary.LittleEndian.Uint16(buf[i:])))
			}
			// Keep the last 10 s, trimmed every 10 s: trimming on every
			// 20 ms chunk copied 1 MB 50 times a second, which starved
			// the emulated guest (Meta's side then sent late).
			if len(h.heard) > 20*rate {
				h.heard = append(h.heard[:0:0], h.heard[len(h.heard)-10*rate:]...)
			}
			h.mu.Unlock()
		}
	}()
	return h, nil
}

// tail is the last d of what the earpiece played.
func (h *headsetSide) tail(d time.Duration) []int16 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return tailOf(h.heard, d)
}

func (h *headsetSide) stop() {
	for _, c := range []*exec.Cmd{h.play, h.rec} {
		if c != nil && c.Process != nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
}

func tailOf(pcm []int16, d time.Duration) []int16 {
	n := int(d.Seconds() * rate)
	if len(pcm) < n {
		return append([]int16(nil), pcm...)
	}
	return append([]int16(nil), pcm[len(pcm)-n:]...)
}

// snrDB is how far a tone stands above everything else in pcm: in 100 ms
// blocks, the tone's share of the block's power against the rest
// (10·log10(tone/rest), capped at 60 dB; a silent block counts as -60 dB),
// the median over the blocks. A clean tone through Opus gives 30 dB and
// more; silence, noise or another tone give less than 0.
func snrDB(pcm []int16, hz float64) float64 {
	block := rate / 10
	var dbs []float64
	for i := 0; i+block <= len(pcm); i += block {
		b := pcm[i : i+block]
		if dsp.RMS(b) < 32 {
			dbs = append(dbs, -60)
			continue
		}
		r := dsp.ToneRatio(b, rate, hz)
		db := 60.0
		if r < 1 {
			db = math.Min(60, 10*math.Log10(r/(1-r)))
		}
		dbs = append(dbs, math.Max(-60, db))
	}
	if len(dbs) == 0 {
		return -60
	}
	sort.Float64s(dbs)
	return dbs[len(dbs)/2]
}

// levelDB is pcm's RMS in dBFS.
func levelDB(pcm []int16) float64 {
	r := dsp.RMS(pcm)
	if r <= 0 {
		return -120
	}
	return 20 * math.Log10(r/32768)
}
