package config

import (
	"strings"
	"testing"
	"time"
)

const fleetDesk = minimal + `
[fleet]
edge = "edge.example.com:5062"
edge_ca_file = "/etc/waphone/fleet-ca.pem"
cert_file = "/etc/waphone/desk.pem"
key_file = "/etc/waphone/desk.key"
device = "front-desk"
`

func TestFleet(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal))
	if err != nil || c.Fleet.Enabled() || c.Fleet.RegisterExpires.Duration != 120*time.Second {
		t.Fatalf("without [fleet]: %+v %v", c.Fleet, err)
	}
	c, err = Parse("t.toml", []byte(fleetDesk))
	if err != nil || !c.Fleet.Enabled() || c.Fleet.Device != "front-desk" {
		t.Fatalf("fleet desk: %+v %v", c.Fleet, err)
	}
	for _, tc := range []struct{ name, toml, want string }{
		{"bad edge", strings.Replace(fleetDesk, `"edge.example.com:5062"`, `"edge.example.com"`, 1), "t.toml:7: fleet.edge"},
		{"no ca", strings.Replace(fleetDesk, `edge_ca_file = "/etc/waphone/fleet-ca.pem"`, "", 1), "fleet.edge_ca_file is required"},
		{"no cert", strings.Replace(fleetDesk, `cert_file = "/etc/waphone/desk.pem"`, "", 1), "fleet.cert_file and fleet.key_file are required"},
		{"no device", strings.Replace(fleetDesk, `device = "front-desk"`, "", 1), "fleet.device is required"},
		{"bad device", strings.Replace(fleetDesk, `"front-desk"`, `"Front Desk"`, 1), "fleet.device"},
		{"short expiry", fleetDesk + "register_expires = \"2s\"\n", "fleet.register_expires 2s"},
		{"bad q", fleetDesk + "q = \"7\"\n", "fleet.q \"7\""},
		{"acme", fleetDesk + "[tls]\nacme = true\n", "tls.acme is for a phone Meta reaches directly"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tc.toml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
