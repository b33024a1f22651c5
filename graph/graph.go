// Package graph is the part of Meta's Graph API waphone needs: the
// number's calling/SIP settings and the Meta-generated SIP password
// (Meta's "SIP Configuration Guide"). Plain net/http.
package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultBaseURL is Meta's Graph API.
const DefaultBaseURL = "https://graph.facebook.com"

// Client talks to graph.facebook.com (or a test server) for one number.
type Client struct {
	BaseURL       string // "" = DefaultBaseURL
	Version       string // e.g. "v23.0"
	PhoneNumberID string
	Token         string // never logged, never in errors
	HTTP          *http.Client
	// Retries for 5xx, 429 and network errors (never for other 4xx).
	Retries int
	Backoff time.Duration
}

// DefaultPort is the SIP port Meta uses when a server entry names none
// (the guide: "Default port is 5061"; GET omits it then).
const DefaultPort = 5061

// Port is a server entry's port. The guide types it as a string; Graph has
// been seen to answer a number too, so both decode, and it is sent as the
// guide says.
type Port int

// MarshalJSON sends the port as a JSON string.
func (p Port) MarshalJSON() ([]byte, error) { return json.Marshal(strconv.Itoa(int(p))) }

// UnmarshalJSON takes "5061" or 5061.
func (p *Port) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*p = 0
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("graph: SIP server port %s: not a port number", b)
	}
	*p = Port(n)
	return nil
}

// Server is one SIP server entry of the settings.
type Server struct {
	Hostname             string            `json:"hostname"`
	Port                 Port              `json:"port,omitempty"`
	RequestURIUserParams map[string]string `json:"request_uri_user_params,omitempty"`
	AppID                json.Number       `json:"app_id,omitempty"`
	SIPUserPassword      string            `json:"sip_user_password,omitempty"`
}

// MaxUserParamLen is the guide's limit on request_uri_user_params: "Max
// key/value size is 128 characters".
const MaxUserParamLen = 128

// CheckUserParams checks request_uri_user_params the way Meta will put
// them into the Request-URI's user part (";key=value"): each key and value
// at most 128 characters, keys non-empty, and no character that would end
// the parameter, the user part or the URI.
func CheckUserParams(params map[string]string) error {
	for k, v := range params {
		switch {
		case k == "":
			return errors.New("an empty key")
		case len(k) > MaxUserParamLen || len(v) > MaxUserParamLen:
			return fmt.Errorf("%q: keys and values are at most %d characters (Meta's limit)", k, MaxUserParamLen)
		case strings.ContainsAny(k, ";=@:<> \t\r\n\"") || strings.ContainsAny(v, ";=@:<> \t\r\n\""):
			return fmt.Errorf("%q: keys and values may not contain ; = @ : < > quotes or spaces", k)
		}
	}
	return nil
}

// EffectivePort is the port Meta dials for this entry.
func (s Server) EffectivePort() int {
	if s.Port == 0 {
		return DefaultPort
	}
	return int(s.Port)
}

// SIP is calling.sip.
type SIP struct {
	Status          string   `json:"status,omitempty"`
	WebhookDelivery string   `json:"webhook_delivery,omitempty"`
	Servers         []Server `json:"servers"`
}

// Calling is the calling part of the settings.
type Calling struct {
	Status                  string `json:"status,omitempty"`
	CallIconVisibility      string `json:"call_icon_visibility,omitempty"`
	CallbackPermission      string `json:"callback_permission_status,omitempty"`
	SRTPKeyExchangeProtocol string `json:"srtp_key_exchange_protocol,omitempty"`
	SIP                     *SIP   `json:"sip,omitempty"`
}

// DefaultKeyExchange is Meta's SRTP key exchange when none was ever set
// (the guide: the field is then not returned, and DTLS is the default).
const DefaultKeyExchange = "DTLS"

// KeyExchange is the SRTP key exchange Meta uses for the number.
func (c Calling) KeyExchange() string {
	if c.SRTPKeyExchangeProtocol == "" {
		return DefaultKeyExchange
	}
	return c.SRTPKeyExchangeProtocol
}

// Settings is the body of GET/POST /<PHONE_NUMBER_ID>/settings.
type Settings struct {
	Calling Calling `json:"calling"`
}

// Error is a Graph API error, with what to do about it.
type Error struct {
	HTTPStatus int
	Message    string `json:"message"`
	Type       string `json:"type"`
	Code       int    `json:"code"`
	Subcode    int    `json:"error_subcode"`
	FBTraceID  string `json:"fbtrace_id"`
}

func (e *Error) Error() string {
	s := fmt.Sprintf("Graph API error %d", e.Code)
	if e.Subcode != 0 {
		s += fmt.Sprintf("/%d", e.Subcode)
	}
	s += ": " + e.Message
	if hint := e.Hint(); hint != "" {
		s += " — " + hint
	}
	if e.FBTraceID != "" {
		s += " (fbtrace_id " + e.FBTraceID + ")"
	}
	return s
}

// Hint says what the user should fix, for the errors set-up runs into.
func (e *Error) Hint() string {
	switch {
	case e.SIPEnabled():
		return "Meta refuses calling-related Graph endpoints while SIP is enabled on this number (the guide says so); WhatsApp Manager's call logs show what Meta did"
	case e.Code == 190:
		return "the access token is invalid or expired: create a new one (a System User token does not expire) and write it to graph.token_file"
	case e.Code == 10 || e.Code == 200 || (e.Code >= 200 && e.Code < 300):
		return "the app lacks a permission: it needs whatsapp_business_management (Advanced access for client numbers) and messaging permission for this number"
	case e.Code == 100 && strings.Contains(strings.ToLower(e.Message), "phone"):
		return "check graph.phone_number_id: it is the number's ID in WhatsApp Manager, not the phone number"
	case e.Code == 100:
		return "Meta rejected a parameter: check the values in your config"
	case e.Code == 4 || e.Code == 613 || e.Code == 80007 || e.HTTPStatus == 429:
		return "rate limited: wait a few minutes"
	case e.HTTPStatus >= 500:
		return "Meta's side failed: try again later"
	}
	return ""
}

func (c *Client) endpoint(query url.Values) string { return c.edgeURL("settings", query) }

// edgeURL is <base>/<version>/<PHONE_NUMBER_ID>/<edge>?query.
func (c *Client) edgeURL(edge string, query url.Values) string {
	base := strings.TrimRight(c.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	u := base + "/" + url.PathEscape(c.Version) + "/" + url.PathEscape(c.PhoneNumberID) + "/" + edge
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u
}

// redact keeps the token out of anything we print.
func (c *Client) redact(err error) error {
	if err == nil || c.Token == "" || !strings.Contains(err.Error(), c.Token) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), c.Token, "[token]"))
}

func (c *Client) do(ctx context.Context, method, u string, body []byte, out any) error {
	edge := edgeName(u)
	if c.PhoneNumberID == "" || c.Version == "" {
		return errors.New("graph: phone_number_id and version are required")
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	backoff := c.Backoff
	if backoff == 0 {
		backoff = time.Second
	}
	var last error
	for attempt := 0; attempt <= c.Retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff << (attempt - 1)):
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("graph: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := hc.Do(req)
		if err != nil {
			last = c.redact(fmt.Errorf("graph %s %s: %w", method, edge, err))
			continue // network errors may pass
		}
		b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		if err != nil {
			last = fmt.Errorf("graph %s %s: reading reply: %w", method, edge, err)
			continue
		}
		if res.StatusCode >= 300 {
			ge := &Error{HTTPStatus: res.StatusCode, Message: res.Status}
			var env struct {
				Error *Error `json:"error"`
			}
			if json.Unmarshal(b, &env) == nil && env.Error != nil {
				ge = env.Error
				ge.HTTPStatus = res.StatusCode
			}
			last = ge
			if res.StatusCode == 429 || res.StatusCode >= 500 {
				continue
			}
			return ge // a 4xx will not pass by retrying
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				return fmt.Errorf("graph %s %s: unexpected reply: %w", method, edge, err)
			}
		}
		return nil
	}
	return last
}

// edgeName is the last path element of u ("settings", "messages"), for errors.
func edgeName(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	return u[strings.LastIndexByte(u, '/')+1:]
}

// Get reads the settings; with credentials it includes sip_user_password.
func (c *Client) Get(ctx context.Context, credentials bool) (*Settings, error) {
	q := url.Values{}
	if credentials {
		q.Set("include_sip_credentials", "true")
	}
	var s Settings
	if err := c.do(ctx, http.MethodGet, c.endpoint(q), nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Post applies settings.
func (c *Client) Post(ctx context.Context, s Settings) error {
	body, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("graph: %w", err)
	}
	var ok struct {
		Success bool `json:"success"`
	}
	if err := c.do(ctx, http.MethodPost, c.endpoint(nil), body, &ok); err != nil {
		return err
	}
	if !ok.Success {
		return errors.New("graph POST settings: Meta did not report success")
	}
	return nil
}

// Desired is the settings that waphone's config implies.
func Desired(hostname string, port int, keyExchange string, userParams map[string]string, webhooks bool) Settings {
	wh := "DISABLED"
	if webhooks {
		wh = "ENABLED"
	}
	return Settings{Calling: Calling{
		Status:                  "ENABLED",
		SRTPKeyExchangeProtocol: strings.ToUpper(keyExchange),
		SIP: &SIP{Status: "ENABLED", WebhookDelivery: wh, Servers: []Server{{
			Hostname: hostname, Port: Port(port), RequestURIUserParams: userParams,
		}}},
	}}
}

// Password returns the SIP password for hostname from settings read with credentials.
func Password(s *Settings, hostname string) (string, error) {
	if s.Calling.SIP == nil {
		return "", errors.New("SIP is not configured on this number: run `waphone setup` first")
	}
	for _, srv := range s.Calling.SIP.Servers {
		if strings.EqualFold(srv.Hostname, hostname) && srv.SIPUserPassword != "" {
			return srv.SIPUserPassword, nil
		}
	}
	return "", fmt.Errorf("no SIP server %q with a password at Meta for this number (did another app configure it?)", hostname)
}

// ResetPassword makes Meta generate a new password the way the guide says:
// disable SIP and delete the servers, then enable it with the server again.
func (c *Client) ResetPassword(ctx context.Context, desired Settings) error {
	if err := c.Post(ctx, Settings{Calling: Calling{Status: "DISABLED", SIP: &SIP{Status: "DISABLED", Servers: []Server{}}}}); err != nil {
		return fmt.Errorf("disabling SIP: %w", err)
	}
	if err := c.Post(ctx, desired); err != nil {
		return fmt.Errorf("re-adding the SIP server (SIP is now DISABLED: run `waphone setup`): %w", err)
	}
	return nil
}
