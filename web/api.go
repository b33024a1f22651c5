package web

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/waphone/waphone/history"
	"github.com/waphone/waphone/phone"
	"github.com/waphone/waphone/settings"
)

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// statusView is Status without its event log (the page has the stream).
type statusView struct {
	phone.Status
	Events []phone.Event `json:"events,omitempty"`
}

func view(st phone.Status) statusView { return statusView{Status: st} }

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, view(s.cfg.Phone.Status()))
}

// apiEvents streams the phone to a page (server-sent events): the status
// when it connects, every event as it happens, and the media figures once
// a second while a call is talking. No page open, no work.
func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request) {
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		http.Error(w, "too many live pages open", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives the server's write timeout
	events, stop := s.cfg.Phone.Subscribe(16)
	defer stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	send := func(name string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	st := s.cfg.Phone.Status()
	if !send("status", view(st)) {
		return
	}
	state := st.State
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	idle := 0
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			state = ev.State
			if !send("phone", ev) {
				return
			}
		case <-tick.C:
			if state == phone.Talking {
				if m := s.cfg.Phone.Status().Media; m != nil && !send("media", m) {
					return
				}
				continue
			}
			// A comment now and then tells a dead connection from a quiet phone.
			if idle++; idle >= 20 {
				idle = 0
				if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
					return
				}
			}
		}
	}
}

func (s *Server) command(w http.ResponseWriter, err error, extra map[string]any) {
	if err != nil {
		writeErr(w, http.StatusConflict, err)
		return
	}
	if extra == nil {
		extra = map[string]any{}
	}
	extra["ok"] = true
	writeJSON(w, http.StatusOK, extra)
}

func (s *Server) apiAnswer(w http.ResponseWriter, r *http.Request) {
	s.log.Info("web console: answer", "client", clientIP(r))
	s.command(w, s.cfg.Phone.Answer(), nil)
}

func (s *Server) apiHangup(w http.ResponseWriter, r *http.Request) {
	s.log.Info("web console: hang up", "client", clientIP(r))
	s.command(w, s.cfg.Phone.Hangup(), nil)
}

func (s *Server) apiMute(w http.ResponseWriter, r *http.Request) {
	muted, err := s.cfg.Phone.ToggleMute()
	s.command(w, err, map[string]any{"muted": muted})
}

var (
	dtmfRE   = regexp.MustCompile(`^[0-9*#A-Da-d]{1,32}$`)
	targetRE = regexp.MustCompile(`^(\+?[0-9][0-9 ()-]{5,20}|[A-Z]{2}\.[0-9A-Za-z.]{4,64})$`)
)

func readForm(w http.ResponseWriter, r *http.Request, dst any) error {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := json.NewDecoder(r.Body).Decode(dst); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

func (s *Server) apiDTMF(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Digits string `json:"digits"`
	}
	if err := readForm(w, r, &in); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if !dtmfRE.MatchString(in.Digits) {
		writeErr(w, http.StatusBadRequest, errors.New("digits: 0-9, *, #, A-D, at most 32"))
		return
	}
	s.command(w, s.cfg.Phone.SendDTMF(in.Digits), nil)
}

// callTimeout bounds a call placed from the console until it is answered.
const callTimeout = 2 * time.Minute

// apiCall places a call and answers at once: the page follows it on the
// event stream. The call must not end with the request, so it runs on
// the server's context.
func (s *Server) apiCall(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Number string `json:"number"`
	}
	if err := readForm(w, r, &in); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	in.Number = strings.TrimSpace(in.Number)
	if !targetRE.MatchString(in.Number) {
		writeErr(w, http.StatusBadRequest, errors.New("number: want +digits or a BSUID like US.1234"))
		return
	}
	if st := s.cfg.Phone.Status().State; st != phone.Idle {
		writeErr(w, http.StatusConflict, fmt.Errorf("phone is %s", st))
		return
	}
	s.log.Info("web console: call", "client", clientIP(r), "number", in.Number)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, callTimeout)
		defer cancel()
		if err := s.cfg.Phone.Call(ctx, in.Number); err != nil {
			s.log.Info("web console: call not answered", "number", in.Number, "err", err)
		}
	}()
	writeJSON(w, http.StatusAccepted, map[string]any{"ok": true})
}

// historyRow is a call as the History page and the CSV show it.
type historyRow struct {
	Start           time.Time `json:"start"`
	Answered        time.Time `json:"answered,omitzero"`
	End             time.Time `json:"end"`
	Direction       string    `json:"direction"`
	Remote          string    `json:"remote"`
	Username        string    `json:"username,omitempty"`
	UserID          string    `json:"user_id,omitempty"`
	WACID           string    `json:"wacid,omitempty"`
	DurationSec     float64   `json:"duration_s"`
	MetaDurationSec int       `json:"meta_duration_s,omitempty"`
	EndedBy         string    `json:"ended_by"`
	Reason          string    `json:"reason,omitempty"`
	CTAPayload      string    `json:"cta_payload,omitempty"`
	DeeplinkPayload string    `json:"deeplink_payload,omitempty"`
	MOS             *float64  `json:"mos,omitempty"`
	JitterMs        *float64  `json:"jitter_ms,omitempty"`
	LossPercent     *float64  `json:"loss_percent,omitempty"`
	RTTMs           *float64  `json:"rtt_ms,omitempty"`
}

// quality reads one figure from a record's quality (media.Stats as JSON;
// its field names are Go's).
func quality(q any, key string) *float64 {
	m, ok := q.(map[string]any)
	if !ok {
		return nil
	}
	f, ok := m[key].(float64)
	if !ok {
		return nil
	}
	return &f
}

func rowOf(rec history.Record) historyRow {
	return historyRow{
		Start: rec.Start, Answered: rec.Answered, End: rec.End, Direction: rec.Direction, Remote: rec.Remote,
		Username: rec.Username, UserID: rec.UserID, WACID: rec.WACID, DurationSec: rec.Duration.Seconds(),
		MetaDurationSec: rec.MetaDurationSec, EndedBy: rec.EndedBy, Reason: rec.Reason,
		CTAPayload: rec.CTAPayload, DeeplinkPayload: rec.DeeplinkPayload,
		MOS: quality(rec.Quality, "MOS"), JitterMs: quality(rec.Quality, "JitterMs"),
		LossPercent: quality(rec.Quality, "LossPercent"), RTTMs: quality(rec.Quality, "RTTMs"),
	}
}

// historyLimit bounds one answer: a desk phone's year is a few thousand calls.
const historyLimit = 5000

// readHistory returns the calls that started on from..to (dates in the
// phone's time zone, both inclusive, either may be empty), newest first.
func (s *Server) readHistory(r *http.Request) ([]historyRow, error) {
	if s.cfg.History == nil {
		return nil, errors.New("no call history on this phone")
	}
	day := func(key string) (time.Time, error) {
		v := r.URL.Query().Get(key)
		if v == "" {
			return time.Time{}, nil
		}
		t, err := time.ParseInLocation("2006-01-02", v, time.Local)
		if err != nil {
			return t, fmt.Errorf("%s: want a date like 2026-01-31", key)
		}
		return t, nil
	}
	from, err := day("from")
	if err != nil {
		return nil, err
	}
	to, err := day("to")
	if err != nil {
		return nil, err
	}
	recs, _, err := s.cfg.History.Read(from)
	if err != nil {
		return nil, err
	}
	rows := make([]historyRow, 0, len(recs))
	for i := len(recs) - 1; i >= 0 && len(rows) < historyLimit; i-- {
		if !to.IsZero() && !recs[i].Start.Before(to.AddDate(0, 0, 1)) {
			continue
		}
		rows = append(rows, rowOf(recs[i]))
	}
	return rows, nil
}

func (s *Server) apiHistory(w http.ResponseWriter, r *http.Request) {
	rows, err := s.readHistory(r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"calls": rows})
}

var phoneNumberRE = regexp.MustCompile(`^\+[0-9]+$`)

// csvCell keeps a spreadsheet from running a caller's payload as a
// formula (CSV injection); a plain +number stays as it is.
func csvCell(v string) string {
	if v == "" || phoneNumberRE.MatchString(v) {
		return v
	}
	switch v[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + v
	}
	return v
}

func fnum(f *float64, prec int) string {
	if f == nil {
		return ""
	}
	return strconv.FormatFloat(*f, 'f', prec, 64)
}

func (s *Server) historyCSV(w http.ResponseWriter, r *http.Request) {
	rows, err := s.readHistory(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="waphone-calls.csv"`)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"start", "answered", "end", "direction", "remote", "username", "user_id", "wacid",
		"duration_s", "meta_duration_s", "ended_by", "reason", "cta_payload", "deeplink_payload", "mos", "jitter_ms", "loss_percent", "rtt_ms"})
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Format(time.RFC3339)
	}
	for _, c := range rows {
		meta := ""
		if c.MetaDurationSec > 0 {
			meta = strconv.Itoa(c.MetaDurationSec)
		}
		_ = cw.Write([]string{ts(c.Start), ts(c.Answered), ts(c.End), c.Direction, csvCell(c.Remote), csvCell(c.Username),
			csvCell(c.UserID), csvCell(c.WACID), strconv.FormatFloat(c.DurationSec, 'f', 1, 64), meta, c.EndedBy, csvCell(c.Reason),
			csvCell(c.CTAPayload), csvCell(c.DeeplinkPayload), fnum(c.MOS, 2), fnum(c.JitterMs, 1), fnum(c.LossPercent, 1), fnum(c.RTTMs, 1)})
	}
	cw.Flush()
}

// healthTimeout bounds the doctor and Meta's settings (a Graph call).
const healthTimeout = 30 * time.Second

func (s *Server) apiHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	out := map[string]any{"version": s.cfg.Version}
	if s.cfg.Doctor != nil {
		out["checks"] = s.cfg.Doctor(ctx)
	}
	var certs []CertInfo
	if c, err := s.cfg.Certificate(); err == nil {
		if ci, ok := certInfo("web", c); ok {
			certs = append(certs, ci)
		}
	}
	if s.cfg.Certs != nil {
		certs = append(certs, s.cfg.Certs()...)
	}
	out["certs"] = certs
	if s.cfg.Meta != nil {
		if v, err := s.cfg.Meta(ctx); err != nil {
			out["meta_error"] = err.Error()
		} else {
			out["meta"] = v
		}
	}
	if s.cfg.Defence != nil {
		out["defence"] = s.cfg.Defence()
	}
	st := s.cfg.Phone.Status()
	out["audio"] = st.Audio
	out["events_dropped"] = st.EventsDropped
	writeJSON(w, http.StatusOK, out)
}

// toneTimeout bounds one headset test tone.
const toneTimeout = 10 * time.Second

func (s *Server) apiTone(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Headset == nil {
		writeErr(w, http.StatusNotImplemented, errors.New("no headset on this phone"))
		return
	}
	if st := s.cfg.Phone.Status().State; st != phone.Idle {
		writeErr(w, http.StatusConflict, fmt.Errorf("phone is %s: test the headset between calls", st))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), toneTimeout)
	defer cancel()
	s.command(w, s.cfg.Headset.PlayTestTone(ctx), nil)
}

func (s *Server) apiLevel(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Headset == nil {
		writeErr(w, http.StatusNotImplemented, errors.New("no headset on this phone"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]float64{"level": s.cfg.Headset.MicLevel()})
}

// settingsView carries durations as strings ("30s"), as waphone.toml writes them.
type settingsView struct {
	Answer          string `json:"answer"`
	AutoAnswerDelay string `json:"auto_answer_delay"`
	RingTimeout     string `json:"ring_timeout"`
	SpeedDial       string `json:"speed_dial"`
	Capture         string `json:"capture"`
	Playback        string `json:"playback"`
	Ringer          string `json:"ringer"`
}

func (s *Server) apiSettings(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Settings == nil {
		writeErr(w, http.StatusNotImplemented, errors.New("settings cannot be changed from the console on this phone"))
		return
	}
	cur, err := s.cfg.Settings.Current()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	out := map[string]any{"settings": settingsView{
		Answer: cur.Answer, AutoAnswerDelay: cur.AutoAnswerDelay.String(), RingTimeout: cur.RingTimeout.String(),
		SpeedDial: cur.SpeedDial, Capture: cur.Capture, Playback: cur.Playback, Ringer: cur.Ringer,
	}}
	if s.cfg.Devices != nil {
		devs, err := s.cfg.Devices()
		if err != nil {
			out["devices_error"] = err.Error()
		}
		out["devices"] = devs
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) apiSaveSettings(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Settings == nil {
		writeErr(w, http.StatusNotImplemented, errors.New("settings cannot be changed from the console on this phone"))
		return
	}
	var in settingsView
	if err := readForm(w, r, &in); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	dur := func(key, v string) (time.Duration, error) {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return 0, fmt.Errorf("%s %q: want a duration like 30s", key, v)
		}
		return d, nil
	}
	auto, err1 := dur("auto_answer_delay", in.AutoAnswerDelay)
	ring, err2 := dur("ring_timeout", in.RingTimeout)
	if err := errors.Join(err1, err2); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	next := settings.Settings{Answer: in.Answer, AutoAnswerDelay: auto, RingTimeout: ring,
		SpeedDial: strings.TrimSpace(in.SpeedDial), Capture: in.Capture, Playback: in.Playback, Ringer: in.Ringer}
	restart, err := s.cfg.Settings.Save(next)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	s.log.Info("web console: settings saved", "client", clientIP(r), "restart_needed", restart)
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "restart": restart})
}
