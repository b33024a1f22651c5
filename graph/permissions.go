package graph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Call permissions: Meta lets a business call a WhatsApp user only after
// the user allowed it (the guide's first prerequisite of business-initiated
// calls). Shapes from Meta's "Obtain User Call Permissions" page; see
// docs/meta-wire.md.

// Permission statuses Meta answers.
const (
	PermissionNone      = "no_permission"
	PermissionTemporary = "temporary"
	PermissionPermanent = "permanent"
)

// Action names in a call_permissions answer.
const (
	ActionStartCall         = "start_call"
	ActionRequestPermission = "send_call_permission_request"
)

// UnixTime is a Unix time in seconds that Meta sends as a number (or, in
// webhooks, as a string); zero when absent.
type UnixTime int64

// UnmarshalJSON takes 1745343479 or "1745343479".
func (t *UnixTime) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*t = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("graph: time %s: not a Unix time", b)
	}
	*t = UnixTime(n)
	return nil
}

// Time is t as a time.Time (zero for 0).
func (t UnixTime) Time() time.Time {
	if t == 0 {
		return time.Time{}
	}
	return time.Unix(int64(t), 0)
}

// Limit is one time-bound limit on an action.
type Limit struct {
	TimePeriod   string `json:"time_period"` // ISO 8601: PT24H, P7D
	MaxAllowed   int    `json:"max_allowed"`
	CurrentUsage int    `json:"current_usage"`
	// Only present once current_usage reached max_allowed.
	LimitExpirationTime UnixTime `json:"limit_expiration_time,omitempty"`
}

// Action is something the business may do towards the user now.
type Action struct {
	Name             string  `json:"action_name"`
	CanPerformAction bool    `json:"can_perform_action"`
	Limits           []Limit `json:"limits"`
}

// Permission is the user's permission for this business number.
type Permission struct {
	Status         string   `json:"status"`
	ExpirationTime UnixTime `json:"expiration_time,omitempty"` // absent for permanent
}

// CallPermissions is the body of GET /<PHONE_NUMBER_ID>/call_permissions.
type CallPermissions struct {
	MessagingProduct string     `json:"messaging_product"`
	Permission       Permission `json:"permission"`
	Actions          []Action   `json:"actions"`
}

// Action returns the named action, if Meta listed it.
func (p *CallPermissions) Action(name string) (Action, bool) {
	for _, a := range p.Actions {
		if a.Name == name {
			return a, true
		}
	}
	return Action{}, false
}

// Granted says whether the user has allowed calls (temporary or permanent).
// Some integrations report "granted"; it counts too.
func (p *CallPermissions) Granted() bool {
	switch strings.ToLower(p.Permission.Status) {
	case PermissionTemporary, PermissionPermanent, "granted":
		return true
	}
	return false
}

// CallPermissions reads the permission state for one WhatsApp user
// (a phone number or a BSUID).
func (c *Client) CallPermissions(ctx context.Context, user string) (*CallPermissions, error) {
	if user == "" {
		return nil, errors.New("graph: call_permissions needs the user's number or BSUID")
	}
	var p CallPermissions
	q := url.Values{"user_wa_id": {user}}
	if err := c.do(ctx, http.MethodGet, c.edgeURL("call_permissions", q), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// PermissionRequest is a call permission request message: free form (a
// body text, inside a customer service window) or an approved template
// (outside one).
type PermissionRequest struct {
	To       string // phone number or BSUID
	Text     string // free form body; optional but Meta recommends it
	Template string // approved call_permission_request template name
	Language string // template language code, e.g. "en"
}

type textBody struct {
	Text string `json:"text"`
}

type actionName struct {
	Name string `json:"name"`
}

type interactive struct {
	Type   string     `json:"type"`
	Action actionName `json:"action"`
	Body   *textBody  `json:"body,omitempty"`
}

type language struct {
	Code string `json:"code"`
}

type template struct {
	Name     string   `json:"name"`
	Language language `json:"language"`
}

type message struct {
	MessagingProduct string       `json:"messaging_product"`
	RecipientType    string       `json:"recipient_type"`
	To               string       `json:"to"`
	Type             string       `json:"type"`
	Interactive      *interactive `json:"interactive,omitempty"`
	Template         *template    `json:"template,omitempty"`
}

// Body is the JSON of POST /<PHONE_NUMBER_ID>/messages for r.
func (r PermissionRequest) Body() ([]byte, error) {
	if r.To == "" {
		return nil, errors.New("graph: a call permission request needs a recipient")
	}
	m := message{MessagingProduct: "whatsapp", RecipientType: "individual", To: r.To}
	switch {
	case r.Template != "":
		if r.Text != "" {
			return nil, errors.New("graph: a call permission request is either a text or a template, not both")
		}
		if r.Language == "" {
			return nil, errors.New("graph: a template needs its language code (e.g. en)")
		}
		m.Type = "template"
		m.Template = &template{Name: r.Template, Language: language{Code: r.Language}}
	default:
		m.Type = "interactive"
		m.Interactive = &interactive{Type: "call_permission_request", Action: actionName{Name: "call_permission_request"}}
		if r.Text != "" {
			m.Interactive.Body = &textBody{Text: r.Text}
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("graph: %w", err)
	}
	return b, nil
}

// RequestCallPermission sends a call permission request message and
// returns Meta's message ID (wamid.…). The user's answer arrives later as
// a messages webhook (interactive call_permission_reply).
func (c *Client) RequestCallPermission(ctx context.Context, r PermissionRequest) (string, error) {
	body, err := r.Body()
	if err != nil {
		return "", err
	}
	var res struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
	}
	if err := c.do(ctx, http.MethodPost, c.edgeURL("messages", nil), body, &res); err != nil {
		return "", err
	}
	if len(res.Messages) == 0 || res.Messages[0].ID == "" {
		return "", errors.New("graph POST messages: Meta accepted the request but returned no message id")
	}
	return res.Messages[0].ID, nil
}

// SIPEnabled says whether Meta refused the request because the number uses
// SIP for calling: the guide's "When SIP is enabled, you cannot use
// calling-related Graph API endpoints". Meta's error code for it is not in
// the guide; 131055 ("method not allowed") is what third-party references
// list, so the message is checked as well.
func (e *Error) SIPEnabled() bool {
	m := strings.ToLower(e.Message)
	return e.Code == 131055 || (strings.Contains(m, "sip") && (strings.Contains(m, "enabled") || strings.Contains(m, "not allowed") || strings.Contains(m, "cannot")))
}
