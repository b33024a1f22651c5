// Package webhook receives Meta's "calls" webhooks for a SIP-enabled
// number (the guide: with webhook_delivery = ENABLED Meta sends call
// lifecycle events, call_created and terminate, whose id is the WACID
// that x-wa-meta-wacid carries in SIP). It is an http.Handler: Meta's
// subscription handshake on GET, signed JSON on POST, events handed to a
// Sink. Standard library only; it knows nothing of SIP or media.
package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxBody bounds a POST body; Meta's call events are a few KiB.
const DefaultMaxBody = 1 << 20

// Event is one call event from a calls webhook: an entry of value.calls[]
// (Kind "call": connect/call_created, terminate) or of value.statuses[]
// with type "call" (Kind "status": RINGING, ACCEPTED, REJECTED on
// business-initiated calls).
type Event struct {
	Kind          string    `json:"kind"`  // "call" or "status"
	WACID         string    `json:"wacid"` // the id field: wacid.…
	Event         string    `json:"event,omitempty"`
	Status        string    `json:"status,omitempty"`
	Direction     string    `json:"direction,omitempty"` // USER_INITIATED, BUSINESS_INITIATED
	From          string    `json:"from,omitempty"`
	To            string    `json:"to,omitempty"`
	Timestamp     time.Time `json:"timestamp,omitzero"`
	StartTime     time.Time `json:"start_time,omitzero"`
	EndTime       time.Time `json:"end_time,omitzero"`
	DurationSec   int       `json:"duration_s,omitempty"`
	PhoneNumberID string    `json:"phone_number_id,omitempty"`
	Errors        []Error   `json:"errors,omitempty"`
}

// Error is an entry of a call's errors[] (failed calls).
type Error struct {
	Code    int    `json:"code"`
	Title   string `json:"title,omitempty"`
	Message string `json:"message,omitempty"`
}

// Sink takes the parsed events. It is called from the request's
// goroutine, before Meta gets its 200: it should be quick.
type Sink interface {
	CallEvent(Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(Event)

// CallEvent calls f.
func (f SinkFunc) CallEvent(e Event) { f(e) }

// Handler serves Meta's webhook endpoint.
type Handler struct {
	VerifyToken string // the token typed in the app's webhook settings
	AppSecret   []byte // the app secret: POST bodies are signed with it
	Sink        Sink
	Log         *slog.Logger
	MaxBody     int64 // 0 = DefaultMaxBody
}

func (h *Handler) log() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Log
}

// ServeHTTP: GET is the subscription handshake, POST an event delivery.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		h.verify(w, r)
	case http.MethodPost:
		h.deliver(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// verify answers hub.mode=subscribe with hub.challenge when
// hub.verify_token is ours (compared in constant time).
func (h *Handler) verify(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tok := q.Get("hub.verify_token")
	ok := h.VerifyToken != "" && q.Get("hub.mode") == "subscribe" &&
		subtle.ConstantTimeCompare([]byte(tok), []byte(h.VerifyToken)) == 1
	if !ok {
		h.log().Warn("webhook subscription refused: wrong hub.mode or hub.verify_token", "remote", r.RemoteAddr)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = io.WriteString(w, q.Get("hub.challenge"))
	h.log().Info("webhook subscription verified", "remote", r.RemoteAddr)
}

func (h *Handler) deliver(w http.ResponseWriter, r *http.Request) {
	max := h.MaxBody
	if max <= 0 {
		max = DefaultMaxBody
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	if !h.signed(body, r.Header.Get("X-Hub-Signature-256")) {
		h.log().Warn("webhook POST refused: missing or wrong X-Hub-Signature-256", "remote", r.RemoteAddr)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	events, err := Parse(body)
	if err != nil {
		h.log().Warn("webhook POST refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "malformed JSON", http.StatusBadRequest)
		return
	}
	for _, e := range events {
		h.log().Info("call webhook", "wacid", e.WACID, "kind", e.Kind, "event", e.Event, "status", e.Status)
		if h.Sink != nil {
			h.Sink.CallEvent(e)
		}
	}
	w.WriteHeader(http.StatusOK)
}

// signed checks "sha256=<hex>" against HMAC-SHA256(body, app secret).
// Without a secret nothing is accepted.
func (h *Handler) signed(body []byte, header string) bool {
	if len(h.AppSecret) == 0 {
		return false
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, h.AppSecret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// Sign is the X-Hub-Signature-256 value Meta sends for body.
func Sign(body, appSecret []byte) string {
	mac := hmac.New(sha256.New, appSecret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// flexInt is an integer Meta sends as a string in webhooks ("1671644824")
// or as a number (duration: 480): Unix times and seconds.
type flexInt int64

func (t *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*t = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return fmt.Errorf("%s: not a number", b)
		}
		n = int64(f)
	}
	*t = flexInt(n)
	return nil
}

func (t flexInt) time() time.Time {
	if t == 0 {
		return time.Time{}
	}
	return time.Unix(int64(t), 0).UTC()
}

// looseString is a string, or (as Meta's reference shows a terminate's
// status) a list of strings, joined with "/".
type looseString string

func (s *looseString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var l []string
		if err := json.Unmarshal(b, &l); err != nil {
			return err
		}
		*s = looseString(strings.Join(l, "/"))
		return nil
	}
	if string(b) == "null" {
		*s = ""
		return nil
	}
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = looseString(v)
	return nil
}

type payload struct {
	Object string `json:"object"`
	Entry  []struct {
		ID      string `json:"id"`
		Changes []struct {
			Field string `json:"field"`
			Value struct {
				Metadata struct {
					PhoneNumberID string `json:"phone_number_id"`
				} `json:"metadata"`
				Calls []struct {
					ID        string      `json:"id"`
					Event     string      `json:"event"`
					Direction string      `json:"direction"`
					From      string      `json:"from"`
					To        string      `json:"to"`
					Timestamp flexInt     `json:"timestamp"`
					Status    looseString `json:"status"`
					StartTime flexInt     `json:"start_time"`
					EndTime   flexInt     `json:"end_time"`
					Duration  flexInt     `json:"duration"`
					Errors    []Error     `json:"errors"`
				} `json:"calls"`
				Statuses []struct {
					ID          string      `json:"id"`
					Type        string      `json:"type"`
					Status      looseString `json:"status"`
					Timestamp   flexInt     `json:"timestamp"`
					RecipientID string      `json:"recipient_id"`
					Errors      []Error     `json:"errors"`
				} `json:"statuses"`
			} `json:"value"`
		} `json:"changes"`
	} `json:"entry"`
}

// Parse extracts the call events of one webhook body. Changes of other
// fields (messages, …) and message statuses are skipped: they are not
// calls. Malformed JSON is an error.
func Parse(body []byte) ([]Event, error) {
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	var out []Event
	for _, en := range p.Entry {
		for _, ch := range en.Changes {
			v := ch.Value
			pnid := v.Metadata.PhoneNumberID
			for _, c := range v.Calls {
				if c.ID == "" {
					continue
				}
				out = append(out, Event{Kind: "call", WACID: c.ID, Event: c.Event, Status: string(c.Status), Direction: c.Direction,
					From: c.From, To: c.To, Timestamp: c.Timestamp.time(), StartTime: c.StartTime.time(), EndTime: c.EndTime.time(),
					DurationSec: int(c.Duration), PhoneNumberID: pnid, Errors: c.Errors})
			}
			for _, s := range v.Statuses {
				// Message statuses share the array; only calls' have type "call".
				if s.ID == "" || !strings.EqualFold(s.Type, "call") {
					continue
				}
				out = append(out, Event{Kind: "status", WACID: s.ID, Status: string(s.Status), To: s.RecipientID,
					Timestamp: s.Timestamp.time(), PhoneNumberID: pnid, Errors: s.Errors})
			}
		}
	}
	return out, nil
}
