//go:build linux

// A call's steps as Meta and the headset see them.

package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/waphone/waphone/internal/metasim"
)

// ring places Meta's call and waits until waphone rings.
func (e *env) ring(name string) (*metasim.Call, error) {
	c, err := e.sim.Call(e.ctx, "127.0.0.1:5061", metasim.CallOptions{From: caller, ReturnOnRinging: true, Username: name})
	if err != nil {
		return nil, err
	}
	if _, err := waitStatus(e.ctx, 30*time.Second, "ringing", inState("ringing")); err != nil {
		return c, err
	}
	return c, nil
}

// answered waits for the 200 OK at Meta's side and the phone talking.
func (e *env) answered(c *metasim.Call) error {
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if err := c.WaitAnswer(ctx); err != nil {
		return err
	}
	if c.Status() != 200 {
		return fmt.Errorf("the answer at Meta was %d", c.Status())
	}
	_, err := waitStatus(e.ctx, 30*time.Second, "talking", inState("talking"))
	return err
}

// hungUp waits for waphone's BYE at Meta's side and the phone idle.
func (e *env) hungUp(c *metasim.Call) error {
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
		return errors.New("the call did not end within 30 s")
	}
	if by := c.EndedBy(); by != "business" {
		return fmt.Errorf("the call was ended by %s, not waphone", by)
	}
	_, err := waitStatus(e.ctx, 30*time.Second, "idle", inState("idle"))
	return err
}

// Tone checks: after both directions first reach minSNR, holdReadings
// more readings of the last second, holdEvery apart, must mostly pass too:
// the tone has to last, not just show up once.
const (
	holdReadings = 6
	holdEvery    = 500 * time.Millisecond
	holdMinPass  = 5
)

// tones reads the SNR of both directions over the last second: ours at
// Meta's side of the call, Meta's at the headset's earpiece (the loopback).
func (e *env) tones(c *metasim.Call) (up, down float64) {
	up = snrDB(c.RecordedTail(time.Second), ourTone)
	down = -60.0
	if e.hs != nil {
		down = snrDB(e.hs.tail(time.Second), metaTone)
	}
	return up, down
}

// waitTones waits until both directions carry their tone, then checks that
// they keep it for holdReadings readings (holdMinPass must pass). It
// reports each direction's worst and median reading over the hold.
func (e *env) waitTones(c *metasim.Call, timeout time.Duration) (string, error) {
	var up, down float64
	for end := time.Now().Add(timeout); ; time.Sleep(250 * time.Millisecond) {
		if up, down = e.tones(c); up >= minSNR && down >= minSNR {
			break
		}
		if time.Now().After(end) {
			return "", fmt.Errorf("after %v: mic→Meta %.0f Hz at %.1f dB, Meta→earpiece %.0f Hz at %.1f dB (want ≥ %.0f dB)\n%s",
				timeout, ourTone, up, metaTone, down, minSNR, e.soundDiag())
		}
	}
	ups, downs := make([]float64, 0, holdReadings), make([]float64, 0, holdReadings)
	pass := 0
	cpu := startCPUShare(e.phone.pid())
	for range holdReadings {
		time.Sleep(holdEvery)
		up, down := e.tones(c)
		ups, downs = append(ups, up), append(downs, down)
		if up >= minSNR && down >= minSNR {
			pass++
		}
	}
	got := fmt.Sprintf("mic→Meta %.0f Hz at %s, Meta→earpiece %.0f Hz at %s (worst/median of %d readings over %v; %s)",
		ourTone, minMedian(ups), metaTone, minMedian(downs), holdReadings, holdReadings*holdEvery, cpu.String())
	if pass < holdMinPass {
		return "", fmt.Errorf("the tones did not last: %d of %d readings ≥ %.0f dB both ways: %s\n%s", pass, holdReadings, minSNR, got, e.soundDiag())
	}
	return got, nil
}

// minMedian formats the smallest and the median of v as "A/B dB".
func minMedian(v []float64) string {
	s := slices.Clone(v)
	slices.Sort(s)
	return fmt.Sprintf("%.1f/%.1f dB", s[0], s[len(s)/2])
}

func (e *env) soundDiag() string {
	diag := alsaState()
	if e.hs != nil {
		diag += "\naplay/arecord: " + e.hs.stderr()
	}
	return diag
}

func (e *env) ledIs(want string, d time.Duration) (string, error) {
	time.Sleep(150 * time.Millisecond) // the LED is driven on a 50 ms tick
	on, off, changes, err := e.gpio.sampleLED(27, d)
	if err != nil {
		return "", err
	}
	got := fmt.Sprintf("%d samples on, %d off, %d changes in %v", on, off, changes, d)
	switch {
	case want == "off" && on == 0, want == "on" && off == 0, want == "blink" && on > 0 && off > 0 && changes >= 2:
		return got, nil
	}
	return "", fmt.Errorf("LED not %s: %s", want, got)
}
