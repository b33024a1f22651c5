package mqtt_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/waphone/waphone/internal/testutil"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/waphone/waphone/internal/metasim"
	"github.com/waphone/waphone/internal/phonerig"
	"github.com/waphone/waphone/mqtt"
	"github.com/waphone/waphone/phone"
)

// startBroker runs Debian's mosquitto on a free loopback port.
func startBroker(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, err = os.Stat("/usr/sbin/mosquitto"); err != nil {
			testutil.Missing(t, "mosquitto not installed (apt-get install mosquitto): no broker to test against")
		}
		bin = "/usr/sbin/mosquitto"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n", port)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("mosquitto did not start")
		}
	}
}

// proxy sits between the phone and the broker so that a test can break
// the connection the way a network does (the broker then sends the will).
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newProxy(t *testing.T, broker string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", broker)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(b, c); b.Close() }()
			go func() { _, _ = io.Copy(c, b); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// observer records every message of every topic.
type observer struct {
	cli paho.Client
	mu  sync.Mutex
	got map[string][]string
}

func newObserver(t *testing.T, broker string) *observer {
	o := &observer{got: map[string][]string{}}
	opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("observer")
	o.cli = paho.NewClient(opts)
	if tok := o.cli.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("observer connect: %v", tok.Error())
	}
	tok := o.cli.Subscribe("#", 1, func(_ paho.Client, m paho.Message) {
		o.mu.Lock()
		o.got[m.Topic()] = append(o.got[m.Topic()], string(m.Payload()))
		o.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("observer subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { o.cli.Disconnect(100) })
	return o
}

// mark is how many messages a topic has had so far.
func (o *observer) mark(topic string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.got[topic])
}

// wait returns the last message of topic if it passes ok.
func (o *observer) wait(t *testing.T, topic string, ok func(string) bool) string {
	t.Helper()
	return o.waitSince(t, topic, -1, ok)
}

// waitSince waits for a message after the first `from` ones that passes
// ok (from < 0: the last message must pass).
func (o *observer) waitSince(t *testing.T, topic string, from int, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		o.mu.Lock()
		msgs := o.got[topic]
		var v string
		seen := len(msgs) > 0
		if seen {
			v = msgs[len(msgs)-1]
		}
		o.mu.Unlock()
		if from < 0 && seen && ok(v) {
			return v
		}
		if from >= 0 {
			for i := from; i < len(msgs); i++ {
				if ok(msgs[i]) {
					return msgs[i]
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic %s: last %q (seen %v)", topic, v, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stateIs(want string) func(string) bool {
	return func(p string) bool {
		var st mqtt.State
		return json.Unmarshal([]byte(p), &st) == nil && st.State == want
	}
}

func TestMQTTStateCommandsDiscoveryAndWill(t *testing.T) {
	broker := startBroker(t)
	obs := newObserver(t, broker)
	px := newProxy(t, broker)
	r := phonerig.New(t, phonerig.Options{Answer: "button", PortMin: 26000})
	c, err := mqtt.New(mqtt.Config{Broker: "tcp://" + px.ln.Addr().String(), Hostname: "desk-1", Version: "test",
		Phone: r.Phone, Logger: phonerig.Logger().With("side", "mqtt")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Sent():
	case <-time.After(10 * time.Second):
		t.Fatal("never connected")
	}
	const prefix = "waphone/desk-1/"
	obs.wait(t, prefix+"availability", func(p string) bool { return p == "online" })
	obs.wait(t, prefix+"state", stateIs("idle"))

	// Home Assistant discovery: a device with sensors and buttons.
	topics := c.DiscoveryTopics()
	if len(topics) < 5 {
		t.Fatalf("discovery topics %v", topics)
	}
	for _, tp := range topics {
		p := obs.wait(t, tp, func(string) bool { return true })
		var d map[string]any
		if err := json.Unmarshal([]byte(p), &d); err != nil {
			t.Fatalf("%s: %v", tp, err)
		}
		dev, _ := d["device"].(map[string]any)
		if d["unique_id"] == "" || d["availability_topic"] != prefix+"availability" || dev == nil || dev["name"] != "waphone desk-1" {
			t.Errorf("%s: %s", tp, p)
		}
	}
	state := obs.wait(t, "homeassistant/sensor/waphone_desk-1/state/config", func(string) bool { return true })
	if !strings.Contains(state, `"state_topic":"waphone/desk-1/state"`) {
		t.Errorf("state sensor config %s", state)
	}
	answer := obs.wait(t, "homeassistant/button/waphone_desk-1/answer/config", func(string) bool { return true })
	if !strings.Contains(answer, `"command_topic":"waphone/desk-1/cmd"`) || !strings.Contains(answer, `"payload_press":"answer"`) {
		t.Errorf("answer button config %s", answer)
	}

	// A call rings; the state says so with the caller; a command answers it.
	call := r.Ring(t, metasim.CallOptions{Username: "shopper42"})
	st := obs.wait(t, prefix+"state", stateIs("ringing"))
	if !strings.Contains(st, phonerig.User) || !strings.Contains(st, "shopper42") || !strings.Contains(st, call.WACID()) {
		t.Errorf("ringing state %s", st)
	}
	if tok := obs.cli.Publish(prefix+"cmd", 1, false, "answer"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer acancel()
	if err := call.WaitAnswer(actx); err != nil {
		t.Fatalf("the answer command did not answer: %v", err)
	}
	obs.wait(t, prefix+"state", stateIs("talking"))
	obs.wait(t, prefix+"event", func(p string) bool { return strings.Contains(p, `"kind":"answered"`) })
	obs.cli.Publish(prefix+"cmd", 1, false, "mute")
	obs.wait(t, prefix+"state", func(p string) bool { return strings.Contains(p, `"muted":true`) })
	if err := call.Hangup(context.Background()); err != nil {
		t.Fatal(err)
	}
	obs.wait(t, prefix+"state", stateIs("idle"))
	last := obs.wait(t, prefix+"last_call", func(p string) bool { return strings.Contains(p, call.WACID()) })
	if !strings.Contains(last, `"answered":true`) || !strings.Contains(last, `"ended_by":"remote-bye"`) {
		t.Errorf("last call %s", last)
	}

	// The network breaks: the broker publishes the will; the phone comes back.
	n := obs.mark(prefix + "availability")
	px.cut()
	obs.waitSince(t, prefix+"availability", n, func(p string) bool { return p == "offline" })
	obs.wait(t, prefix+"availability", func(p string) bool { return p == "online" })
	// A clean stop says offline too.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	obs.wait(t, prefix+"availability", func(p string) bool { return p == "offline" })
	if r.Phone.Status().State != phone.Idle {
		t.Fatal("phone not idle")
	}
}

func TestMQTTConfigErrors(t *testing.T) {
	r := phonerig.New(t, phonerig.Options{PortMin: 26500})
	for _, b := range []string{"", "http://x", "localhost:1883"} {
		if _, err := mqtt.New(mqtt.Config{Broker: b, Phone: r.Phone}); err == nil {
			t.Errorf("broker %q accepted", b)
		}
	}
	if _, err := mqtt.New(mqtt.Config{Broker: "tcp://127.0.0.1:1", Topic: "a/#", Phone: r.Phone}); err == nil {
		t.Error("wildcard topic accepted")
	}
}
