// Package mqtt puts the phone on an MQTT broker: its state (retained),
// every call event, the last call's summary, an availability topic with a
// last will ("offline" when the phone vanishes), a command topic that
// answers, hangs up and mutes, and Home Assistant discovery so that the
// phone appears there as a device with sensors and buttons.
//
// It is a surface: it reaches the phone only through the Phone interface
// below. It uses eclipse/paho.mqtt.golang (MQTT 3.1.1): every broker and
// Home Assistant speak 3.1.1, and the client reconnects, resubscribes and
// keeps the will by itself; paho.golang (MQTT 5 only) needs its autopaho
// layer for the same and buys nothing a desk phone uses.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/waphone/waphone/phone"
)

// Phone is what MQTT needs from the phone.
type Phone interface {
	Answer() error
	Hangup() error
	ToggleMute() (bool, error)
	Status() phone.Status
	Subscribe(n int) (<-chan phone.Event, func())
}

// Config is the [mqtt] table, resolved by the daemon.
type Config struct {
	Broker   string // tcp://host:1883 or ssl://host:8883 (mqtt://, mqtts:// too)
	Username string
	Password string
	// Topic is the prefix of every topic; default "waphone/<Hostname>".
	Topic    string
	RootCAs  *x509.CertPool // for ssl://; nil = system roots
	Hostname string         // names the device (Home Assistant) and the default topic
	// Discovery is Home Assistant's discovery prefix; "" = "homeassistant",
	// "-" = no discovery.
	Discovery string
	Version   string
	Phone     Phone
	Logger    *slog.Logger
}

// Topics under the prefix.
const (
	TopicAvailability = "availability" // "online" / "offline", retained; the will
	TopicState        = "state"        // JSON, retained
	TopicEvent        = "event"        // JSON per phone event, not retained
	TopicLastCall     = "last_call"    // JSON summary of the last call, retained
	TopicCommand      = "cmd"          // "answer", "hangup", "mute"
)

// Client is the phone on the broker.
type Client struct {
	cfg    Config
	log    *slog.Logger
	prefix string
	node   string // Home Assistant's node id
	cli    paho.Client
	pubMu  sync.Mutex // orders state publications
	// sent is closed once the state and discovery of a connection are out
	// (tests; a fresh channel per connection would race, so only the first).
	sent     chan struct{}
	sentOnce sync.Once
}

var nodeRE = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// New checks cfg; Run connects.
func New(cfg Config) (*Client, error) {
	if cfg.Phone == nil {
		return nil, errors.New("mqtt: no phone")
	}
	u, err := url.Parse(cfg.Broker)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("mqtt.broker %q: want tcp://host:1883 or ssl://host:8883", cfg.Broker)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts":
	default:
		return nil, fmt.Errorf("mqtt.broker %q: want tcp:// or ssl://", cfg.Broker)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "waphone"
	}
	if cfg.Topic == "" {
		cfg.Topic = "waphone/" + cfg.Hostname
	}
	cfg.Topic = strings.TrimSuffix(cfg.Topic, "/")
	if strings.ContainsAny(cfg.Topic, "+#") {
		return nil, fmt.Errorf("mqtt.topic %q: no wildcards", cfg.Topic)
	}
	if cfg.Discovery == "" {
		cfg.Discovery = "homeassistant"
	}
	c := &Client{cfg: cfg, log: cfg.Logger, prefix: cfg.Topic, sent: make(chan struct{}),
		node: "waphone_" + strings.Trim(nodeRE.ReplaceAllString(cfg.Hostname, "_"), "_")}
	opts := paho.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(c.node).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetCleanSession(true).
		SetOrderMatters(false). // command handlers call the phone: they must not block the client
		SetKeepAlive(30*time.Second).
		SetConnectTimeout(10*time.Second).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(5*time.Second).
		SetMaxReconnectInterval(2*time.Minute).
		SetWill(c.topic(TopicAvailability), "offline", 1, true).
		SetOnConnectHandler(c.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.log.Warn("mqtt: connection lost", "err", err) })
	if u.Scheme == "ssl" || u.Scheme == "tls" || u.Scheme == "mqtts" {
		opts.SetTLSConfig(&tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12})
	}
	c.cli = paho.NewClient(opts)
	return c, nil
}

func (c *Client) topic(name string) string { return c.prefix + "/" + name }

// Sent is closed once the first connection has published the state and
// the discovery.
func (c *Client) Sent() <-chan struct{} { return c.sent }

// Run connects (retrying until the broker answers) and publishes the phone
// until ctx ends; then it marks the phone offline and disconnects.
func (c *Client) Run(ctx context.Context) error {
	events, stop := c.cfg.Phone.Subscribe(32)
	defer stop()
	c.cli.Connect() // retries by itself; onConnect publishes
	defer func() {
		if c.cli.IsConnectionOpen() {
			// A clean stop: say so, since the broker only sends the will
			// for a connection that breaks.
			t := c.cli.Publish(c.topic(TopicAvailability), 1, true, "offline")
			t.WaitTimeout(2 * time.Second)
		}
		c.cli.Disconnect(500)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			c.publishEvent(ev)
		}
	}
}

// onConnect runs at every (re)connection: the broker forgot nothing
// retained, but our state may have changed while we were away.
func (c *Client) onConnect(cli paho.Client) {
	c.log.Info("mqtt: connected", "broker", c.cfg.Broker, "topic", c.prefix)
	cmd := cli.Subscribe(c.topic(TopicCommand), 1, c.onCommand)
	if c.cfg.Discovery != "-" {
		// Home Assistant asks for discovery again when it restarts.
		cli.Subscribe(c.cfg.Discovery+"/status", 0, func(_ paho.Client, m paho.Message) {
			if string(m.Payload()) == "online" {
				c.publishDiscovery()
			}
		})
		c.publishDiscovery()
	}
	c.publish(TopicAvailability, true, "online")
	st := c.cfg.Phone.Status()
	var remote, username, wacid string
	if st.Call != nil {
		remote, username, wacid = st.Call.Remote, st.Call.Username, st.Call.WACID
	}
	c.publishState(stateOf(st.State, st.Muted, remote, username, wacid, st.Since))
	if st.LastCall != nil {
		c.publish(TopicLastCall, true, lastCallOf(*st.LastCall))
	}
	go func() {
		cmd.WaitTimeout(5 * time.Second)
		c.sentOnce.Do(func() { close(c.sent) })
	}()
}

// publish sends a JSON (or string) payload at QoS 1 without waiting: paho
// queues it, and a lost one is superseded by the next retained state.
func (c *Client) publish(name string, retained bool, v any) {
	var payload []byte
	switch p := v.(type) {
	case string:
		payload = []byte(p)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			c.log.Warn("mqtt: encoding", "topic", name, "err", err)
			return
		}
		payload = b
	}
	c.cli.Publish(c.topic(name), 1, retained, payload)
}

// State is the retained state message.
type State struct {
	State    string    `json:"state"`
	Muted    bool      `json:"muted"`
	Remote   string    `json:"remote,omitempty"`
	Username string    `json:"username,omitempty"`
	WACID    string    `json:"wacid,omitempty"`
	Since    time.Time `json:"since,omitzero"`
}

func stateOf(s phone.State, muted bool, remote, username, wacid string, since time.Time) State {
	st := State{State: string(s), Muted: muted}
	if s != phone.Idle {
		st.Remote, st.Username, st.WACID, st.Since = remote, username, wacid, since
	}
	return st
}

func (c *Client) publishState(st State) {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	c.publish(TopicState, true, st)
}

// LastCall is the retained summary of the last call.
type LastCall struct {
	Direction   string    `json:"direction"`
	Remote      string    `json:"remote"`
	Username    string    `json:"username,omitempty"`
	WACID       string    `json:"wacid,omitempty"`
	Start       time.Time `json:"start"`
	Answered    bool      `json:"answered"`
	DurationSec float64   `json:"duration_s"`
	EndedBy     string    `json:"ended_by"`
	MOS         float64   `json:"mos,omitempty"`
}

func lastCallOf(sum phone.CallSummary) LastCall {
	l := LastCall{Direction: sum.Direction, Remote: sum.Info.Remote, Username: sum.Info.Username, WACID: sum.Info.WACID,
		Start: sum.Start, Answered: !sum.Answered.IsZero(), DurationSec: sum.Duration.Seconds(), EndedBy: sum.EndedBy}
	if sum.Media != nil {
		l.MOS = sum.Media.MOS
	}
	return l
}

func (c *Client) publishEvent(ev phone.Event) {
	if !c.cli.IsConnectionOpen() {
		return // the state is republished on reconnect; old events are stale
	}
	var since time.Time
	if ev.State != phone.Idle {
		since = c.cfg.Phone.Status().Since
	}
	c.publishState(stateOf(ev.State, ev.Muted, ev.Call.Remote, ev.Call.Username, ev.Call.WACID, since))
	c.publish(TopicEvent, false, ev)
	if ev.Kind == phone.EvEnded {
		if last := c.cfg.Phone.Status().LastCall; last != nil {
			c.publish(TopicLastCall, true, lastCallOf(*last))
		}
	}
}

// onCommand runs a command message. Anyone who may publish to the topic
// may answer the phone: the broker's ACLs are the lock.
func (c *Client) onCommand(_ paho.Client, m paho.Message) {
	cmd := strings.ToLower(strings.TrimSpace(string(m.Payload())))
	var err error
	switch cmd {
	case "answer":
		err = c.cfg.Phone.Answer()
	case "hangup", "hang_up", "hang-up":
		err = c.cfg.Phone.Hangup()
	case "mute":
		_, err = c.cfg.Phone.ToggleMute()
	default:
		if len(cmd) > 32 {
			cmd = cmd[:32]
		}
		err = fmt.Errorf("unknown command %q (want answer, hangup or mute)", cmd)
	}
	if err != nil {
		c.log.Info("mqtt: command not done", "cmd", cmd, "err", err)
		return
	}
	c.log.Info("mqtt: command", "cmd", cmd)
}

// discovery is one Home Assistant entity config.
type discovery struct {
	Name              string         `json:"name"`
	UniqueID          string         `json:"unique_id"`
	ObjectID          string         `json:"object_id,omitempty"`
	StateTopic        string         `json:"state_topic,omitempty"`
	ValueTemplate     string         `json:"value_template,omitempty"`
	JSONAttrTopic     string         `json:"json_attributes_topic,omitempty"`
	CommandTopic      string         `json:"command_topic,omitempty"`
	PayloadPress      string         `json:"payload_press,omitempty"`
	AvailabilityTopic string         `json:"availability_topic"`
	Icon              string         `json:"icon,omitempty"`
	UnitOfMeasurement string         `json:"unit_of_measurement,omitempty"`
	Device            map[string]any `json:"device"`
}

// DiscoveryTopics lists the config topics published (tests, docs).
func (c *Client) DiscoveryTopics() []string {
	var out []string
	for _, d := range c.discoveries() {
		out = append(out, d.topic)
	}
	return out
}

type discoveryMsg struct {
	topic string
	cfg   discovery
}

func (c *Client) discoveries() []discoveryMsg {
	dev := map[string]any{"identifiers": []string{c.node}, "name": "waphone " + c.cfg.Hostname,
		"manufacturer": "waphone", "model": "WhatsApp desk phone", "sw_version": c.cfg.Version}
	avail := c.topic(TopicAvailability)
	mk := func(component, id, name string, d discovery) discoveryMsg {
		d.Name, d.UniqueID, d.ObjectID, d.AvailabilityTopic, d.Device = name, c.node+"_"+id, c.node+"_"+id, avail, dev
		return discoveryMsg{topic: c.cfg.Discovery + "/" + component + "/" + c.node + "/" + id + "/config", cfg: d}
	}
	state, last := c.topic(TopicState), c.topic(TopicLastCall)
	cmd := c.topic(TopicCommand)
	return []discoveryMsg{
		mk("sensor", "state", "State", discovery{StateTopic: state, ValueTemplate: "{{ value_json.state }}", JSONAttrTopic: state, Icon: "mdi:phone"}),
		mk("sensor", "caller", "Caller", discovery{StateTopic: state, ValueTemplate: "{{ value_json.remote | default('') }}", Icon: "mdi:account"}),
		mk("sensor", "last_call", "Last call", discovery{StateTopic: last, ValueTemplate: "{{ value_json.remote }}", JSONAttrTopic: last, Icon: "mdi:phone-log"}),
		mk("sensor", "last_mos", "Last call quality", discovery{StateTopic: last, ValueTemplate: "{{ value_json.mos | default(0) }}", UnitOfMeasurement: "MOS", Icon: "mdi:signal"}),
		mk("button", "answer", "Answer", discovery{CommandTopic: cmd, PayloadPress: "answer", Icon: "mdi:phone-in-talk"}),
		mk("button", "hangup", "Hang up", discovery{CommandTopic: cmd, PayloadPress: "hangup", Icon: "mdi:phone-hangup"}),
		mk("button", "mute", "Mute", discovery{CommandTopic: cmd, PayloadPress: "mute", Icon: "mdi:microphone-off"}),
	}
}

func (c *Client) publishDiscovery() {
	for _, d := range c.discoveries() {
		b, err := json.Marshal(d.cfg)
		if err != nil {
			continue
		}
		c.cli.Publish(d.topic, 1, true, b)
	}
}
