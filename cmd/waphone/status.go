package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/waphone/waphone/control"
	"github.com/waphone/waphone/media"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/sip"
)

// controlled is the phone as the control socket drives it, with a status
// that adds what only the daemon knows: uptime, certificate, defences.
func (d *daemon) controlled(getCert func() (*tls.Certificate, error)) control.Phone {
	return statusSource{Phone: d.phone, d: d, getCert: getCert, started: time.Now()}
}

type statusSource struct {
	*phone.Phone
	d       *daemon
	getCert func() (*tls.Certificate, error)
	started time.Time
}

func (s statusSource) StatusJSON() ([]byte, error) { return json.Marshal(s.status()) }

func (s statusSource) status() control.Status {
	d, ps := s.d, s.Phone.Status()
	v, _ := buildVersion()
	st := control.Status{
		Version: v, UptimeS: roundS(time.Since(s.started)), Number: d.cfg.SIP.Number, Hostname: d.cfg.SIP.Hostname,
		Goroutines: runtime.NumGoroutine(), State: string(ps.State), Muted: ps.Muted, Dropped: ps.EventsDropped,
	}
	if d.ln != nil {
		st.Listen = d.ln.Addr().String()
	}
	if s.getCert != nil {
		if c, err := s.getCert(); err == nil && c != nil && len(c.Certificate) > 0 {
			if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
				t := leaf.NotAfter
				st.CertExpires = &t
			}
		}
	}
	if ps.Call != nil {
		c := callOf(ps.Direction, *ps.Call, ps.Since, ps.Answered)
		if !ps.Answered.IsZero() {
			c.DurationS = roundS(time.Since(ps.Answered))
		}
		st.Call = &c
	}
	st.Quality = qualityOf(ps.Media)
	if l := ps.LastCall; l != nil {
		c := callOf(l.Direction, l.Info, l.Start, l.Answered)
		c.End, c.DurationS, c.EndedBy, c.Reason, c.Quality = l.End, roundS(l.Duration), l.EndedBy, l.Reason, qualityOf(l.Media)
		st.LastCall = &c
	}
	if d.headset != nil {
		h := d.headset.Stats()
		st.Audio = &control.Audio{Device: h.Device, Plugged: h.Plugged, Underruns: h.PlayUnderrun + h.CaptureUnderrun,
			Overruns: h.PlayOverrun + h.CaptureOverrun, Unplugs: h.Unplugs}
	}
	if d.ep != nil {
		g := d.ep.Guard()
		notAllowed, overLimit := d.ep.Refused()
		st.Defence = control.Defence{RefusedNotAllowed: notAllowed, RefusedOverLimit: overLimit, ThrottledInvites: g.Throttled,
			FirstTimeouts: g.FirstTimeouts, TLSFailures: g.TLSFailures, TooLarge: g.TooLarge + g.TooLargeDrops, NoACK: g.NoACK,
			OpenConnections: g.Open}
		if r, ok := d.ep.Registration(); ok {
			st.Fleet = r
		}
	}
	return st
}

func roundS(d time.Duration) float64 {
	return float64(d.Round(100*time.Millisecond)) / float64(time.Second)
}

func callOf(dir string, in sip.CallInfo, start, answered time.Time) control.Call {
	c := control.Call{Direction: dir, Remote: in.Remote, DisplayName: in.DisplayName, Username: in.Username, UserID: in.UserID,
		ParentUserID: in.ParentUserID, WACID: in.WACID, CTAPayload: in.CTAPayload, DeeplinkPayload: in.DeeplinkPayload,
		Start: start, Answered: answered}
	if in.DurationSec > 0 {
		c.MetaDurationS = in.DurationSec
	}
	return c
}

func qualityOf(m *media.Stats) *control.Quality {
	if m == nil {
		return nil
	}
	return &control.Quality{Codec: m.Codec, PacketsSent: m.PacketsSent, PacketsReceived: m.PacketsReceived,
		PacketsLost: m.PacketsLost, JitterMs: m.JitterMs, RTTMs: m.RTTMs, LossPercent: m.LossPercent,
		ConcealedMs: m.ConcealedMs, MOS: m.MOS}
}

// printStatus prints the daemon's status for a person.
func printStatus(w io.Writer, raw json.RawMessage) error {
	var st control.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("status reply: %w", err)
	}
	fmt.Fprintf(w, "state: %s", st.State)
	if st.Muted {
		fmt.Fprint(w, " (microphone muted)")
	}
	fmt.Fprintln(w)
	if c := st.Call; c != nil {
		fmt.Fprintf(w, "call: %s %s since %s", c.Direction, who(*c), c.Start.Local().Format("15:04:05"))
		if !c.Answered.IsZero() {
			fmt.Fprintf(w, ", talking %s", fmtSeconds(c.DurationS))
		}
		fmt.Fprintln(w)
		printCallDetails(w, *c)
	}
	if q := st.Quality; q != nil {
		fmt.Fprintf(w, "quality: MOS %.2f, jitter %.1f ms, loss %.1f %%, RTT %.0f ms (%s; %d sent, %d received, %d lost)\n",
			q.MOS, q.JitterMs, q.LossPercent, q.RTTMs, q.Codec, q.PacketsSent, q.PacketsReceived, q.PacketsLost)
	}
	if l := st.LastCall; l != nil {
		fmt.Fprintf(w, "last call: %s %s at %s, %s, ended by %s", l.Direction, who(*l), l.Start.Local().Format("2006-01-02 15:04"),
			fmtSeconds(l.DurationS), l.EndedBy)
		if l.Reason != "" {
			fmt.Fprintf(w, " (%s)", l.Reason)
		}
		fmt.Fprintln(w)
	}
	if a := st.Audio; a != nil {
		plugged := "plugged in"
		if !a.Plugged {
			plugged = "NOT plugged in"
		}
		fmt.Fprintf(w, "headset: %s, %s (%d underruns, %d overruns, %d unplugs)\n", a.Device, plugged, a.Underruns, a.Overruns, a.Unplugs)
	}
	fmt.Fprintf(w, "waphone %s, up %s, number %s, SIP %s", st.Version, fmtSeconds(st.UptimeS), st.Number, st.Hostname)
	if st.Listen != "" {
		fmt.Fprintf(w, " on %s", st.Listen)
	}
	fmt.Fprintln(w)
	if st.CertExpires != nil {
		days := int(time.Until(*st.CertExpires).Hours() / 24)
		fmt.Fprintf(w, "certificate: expires %s (%d days)\n", st.CertExpires.Local().Format("2006-01-02"), days)
	}
	if st.Fleet != nil {
		b, _ := json.Marshal(st.Fleet)
		fmt.Fprintf(w, "fleet: %s\n", b)
	}
	if g := st.Defence; g.RefusedNotAllowed+g.RefusedOverLimit > 0 || g.ThrottledInvites > 0 {
		fmt.Fprintf(w, "refused: %d connections outside sip.allow, %d over the connection limits, %d INVITEs after failed digest answers\n",
			g.RefusedNotAllowed, g.RefusedOverLimit, g.ThrottledInvites)
	}
	return nil
}

func who(c control.Call) string {
	if c.Username != "" {
		return c.Remote + " (" + c.Username + ")"
	}
	return c.Remote
}

func printCallDetails(w io.Writer, c control.Call) {
	for _, kv := range [][2]string{{"wacid", c.WACID}, {"user_id", c.UserID}, {"parent_user_id", c.ParentUserID},
		{"cta_payload", c.CTAPayload}, {"deeplink_payload", c.DeeplinkPayload}} {
		if kv[1] != "" {
			fmt.Fprintf(w, "  %s: %s\n", kv[0], kv[1])
		}
	}
}

// fmtSeconds is a duration for a person: 42s, 3m05s, 2h01m.
func fmtSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String()
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// printEvent prints one event as a line for a person.
func printEvent(w io.Writer, ev phone.Event) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-13s %-9s", ev.At.Local().Format("15:04:05"), ev.Kind, ev.State)
	if ev.Call.Remote != "" {
		b.WriteString(" " + ev.Call.Remote)
	}
	if ev.Detail != "" && ev.Detail != ev.Call.Remote {
		b.WriteString(" " + ev.Detail)
	}
	fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
}
