package history

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// WebhookEvent is one of Meta's calls webhook events for a call, kept
// beside the call log (webhooks.jsonl) and joined to it by WACID: Meta's
// view (its status and duration) next to the phone's.
type WebhookEvent struct {
	WACID       string    `json:"wacid"`
	Kind        string    `json:"kind,omitempty"`  // "call" or "status"
	Event       string    `json:"event,omitempty"` // call_created, connect, terminate
	Status      string    `json:"status,omitempty"`
	Direction   string    `json:"direction,omitempty"`
	From        string    `json:"from,omitempty"`
	To          string    `json:"to,omitempty"`
	Time        time.Time `json:"time,omitzero"` // Meta's timestamp
	DurationSec int       `json:"duration_s,omitempty"`
	Error       string    `json:"error,omitempty"` // the first of Meta's errors[], "code: message"
	Received    time.Time `json:"received"`
}

func (s *Store) webhookPath() string { return filepath.Join(filepath.Dir(s.path), "webhooks.jsonl") }

// AppendWebhook writes one webhook event and fsyncs before returning.
func (s *Store) AppendWebhook(e WebhookEvent) error {
	if e.WACID == "" {
		return errors.New("history: a webhook event without a WACID")
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return s.appendLine(s.webhookPath(), b)
}

// ReadWebhooks returns the webhook events received at or after since
// (zero = all) and how many torn lines were skipped.
func (s *Store) ReadWebhooks(since time.Time) ([]WebhookEvent, int, error) {
	return readFile(s.webhookPath(), func(e WebhookEvent) bool { return e.WACID != "" },
		func(e WebhookEvent) bool { return !e.Received.Before(since) })
}

// NormalizeWACID is the WACID without a Call-ID's "outgoing:" prefix, so
// that a call logged from its Call-ID joins the webhook's id.
func NormalizeWACID(id string) string {
	id = strings.TrimSpace(id)
	if i := strings.Index(id, "wacid."); i > 0 {
		return id[i:]
	}
	return id
}

// Joined is a call with Meta's webhook events for it.
type Joined struct {
	Record
	Webhooks []WebhookEvent `json:"webhooks,omitempty"`
}

// Join attaches webhook events to the calls with the same WACID, in the
// order received. Events whose WACID is in no call (a call this phone did
// not log, or one logged without a WACID) are returned apart, kept.
func Join(recs []Record, events []WebhookEvent) (joined []Joined, unknown []WebhookEvent) {
	byID := map[string]int{}
	joined = make([]Joined, len(recs))
	for i, r := range recs {
		joined[i].Record = r
		if id := NormalizeWACID(r.WACID); id != "" {
			byID[id] = i
		}
	}
	for _, e := range events {
		if i, ok := byID[NormalizeWACID(e.WACID)]; ok {
			joined[i].Webhooks = append(joined[i].Webhooks, e)
			continue
		}
		unknown = append(unknown, e)
	}
	return joined, unknown
}
