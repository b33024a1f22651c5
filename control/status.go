package control

import "time"

// Status is the daemon's answer to `status`: what `waphone status --json`
// prints. Field names are a contract with scripts (docs/control.md);
// durations are in seconds; times are RFC 3339.
type Status struct {
	Version     string     `json:"version"`
	UptimeS     float64    `json:"uptime_s"`
	Number      string     `json:"number"`   // the business number
	Hostname    string     `json:"hostname"` // sip.hostname
	Listen      string     `json:"listen,omitempty"`
	CertExpires *time.Time `json:"cert_expires,omitempty"` // the SIP certificate's NotAfter
	Goroutines  int        `json:"goroutines"`

	State    string   `json:"state"` // idle, ringing, answering, dialing, ringback, talking
	Muted    bool     `json:"muted"`
	Call     *Call    `json:"call,omitempty"`
	Quality  *Quality `json:"quality,omitempty"` // while talking
	LastCall *Call    `json:"last_call,omitempty"`
	Audio    *Audio   `json:"audio,omitempty"`
	Defence  Defence  `json:"defence"`
	Fleet    any      `json:"fleet,omitempty"` // the edge registration of a fleet desk (sip.Registration)
	Dropped  uint64   `json:"events_dropped,omitempty"`
}

// Call is the call in progress, or the last one.
type Call struct {
	Direction       string    `json:"direction"` // inbound, outbound
	Remote          string    `json:"remote"`    // +number or BSUID
	DisplayName     string    `json:"display_name,omitempty"`
	Username        string    `json:"username,omitempty"` // the WhatsApp username
	UserID          string    `json:"user_id,omitempty"`  // BSUID
	ParentUserID    string    `json:"parent_user_id,omitempty"`
	WACID           string    `json:"wacid,omitempty"`
	CTAPayload      string    `json:"cta_payload,omitempty"`
	DeeplinkPayload string    `json:"deeplink_payload,omitempty"`
	Start           time.Time `json:"start"`
	Answered        time.Time `json:"answered,omitzero"`
	End             time.Time `json:"end,omitzero"`
	DurationS       float64   `json:"duration_s"`                // since the answer (so far, for the current call)
	MetaDurationS   int       `json:"meta_duration_s,omitempty"` // Meta's count, from its BYE
	EndedBy         string    `json:"ended_by,omitempty"`
	Reason          string    `json:"reason,omitempty"`
	Quality         *Quality  `json:"quality,omitempty"` // the last call's, at its end
}

// Quality is a call's media figures.
type Quality struct {
	Codec           string  `json:"codec"`
	PacketsSent     uint64  `json:"packets_sent"`
	PacketsReceived uint64  `json:"packets_received"`
	PacketsLost     uint64  `json:"packets_lost"`
	JitterMs        float64 `json:"jitter_ms"`
	RTTMs           float64 `json:"rtt_ms"`
	LossPercent     float64 `json:"loss_percent"` // as the peer reports our stream
	ConcealedMs     uint64  `json:"concealed_ms"`
	MOS             float64 `json:"mos"`
}

// Audio is the headset.
type Audio struct {
	Device    string `json:"device"`
	Plugged   bool   `json:"plugged"`
	Underruns uint64 `json:"underruns"`
	Overruns  uint64 `json:"overruns"`
	Unplugs   uint64 `json:"unplugs"`
}

// Defence counts what the SIP listener refused.
type Defence struct {
	RefusedNotAllowed uint64 `json:"refused_not_allowed"` // connections from outside sip.allow
	RefusedOverLimit  uint64 `json:"refused_over_limit"`  // connections over the connection budget
	ThrottledInvites  int64  `json:"throttled_invites"`   // INVITEs refused after failed digest answers
	FirstTimeouts     uint64 `json:"first_message_timeouts"`
	TLSFailures       uint64 `json:"tls_failures"`
	TooLarge          uint64 `json:"too_large"`
	NoACK             uint64 `json:"no_ack"`
	OpenConnections   int    `json:"open_connections"`
}
