package config

// Example returns a commented config with every key, for docs and
// `make install`. A test keeps it loadable.
func Example() string {
	return `# waphone configuration. Every key is listed; defaults are shown.

[sip]
# The hostname configured for your SIP server at Meta. Your certificate must
# cover it: Meta validates it. Also the realm of our digest challenge and the
# From host of our calls.
hostname = "sip.example.com"
# Where to listen for SIP over TLS. 0.0.0.0 means every IPv4 and IPv6 address.
listen = "0.0.0.0:5061"
# Certificate chain (leaf first, then intermediates) and its key. Replaced
# files are picked up without a restart.
# Leave both empty with [tls] acme = true.
cert_file = "/etc/waphone/fullchain.pem"
key_file = "/etc/waphone/privkey.pem"
# The business phone number, E.164.
number = "+12145551869"
# Meta's generated SIP password (Graph: GET /<PHONE_NUMBER_ID>/settings?include_sip_credentials=true).
# Mode 0600 or stricter. A relative name is the credential the unit hands over
# ($CREDENTIALS_DIRECTORY, LoadCredential=sip-password:/etc/waphone/sip-password);
# run by hand, it is looked up beside this file.
password_file = "sip-password"
# Meta's SIP domain.
gateway = "wa.meta.vc"
# Dial this host:port instead of resolving the gateway (tests, labs). Empty in production.
gateway_addr = ""
# An extra CA to trust for the gateway's certificate (tests). Empty = system roots only.
gateway_ca_file = ""
# Who may connect (checked before TLS): Meta's webhook IP ranges. Empty = everyone.
allow = []

[media]
# SRTP key exchange for calls we place: "dtls" (Meta's default) or "sdes".
# Calls Meta offers use whatever the offer carries.
key_exchange = "dtls"
# The public IP of a 1:1 NAT (port-forwarded kiosk). Empty = the device's own address.
public_address = ""
# A STUN server host:port for server-reflexive candidates. Empty = none.
stun = ""
# UDP ports for RTP.
rtp_ports = "10000-10100"
# Local address to bind RTP to. Empty = all.
bind_address = ""
# Opus encoder complexity, 1 (cheapest) to 10. 0 = by CPU: 3 on 32-bit ARM
# (Pi Zero, Pi 1), 5 elsewhere. The encoder is most of a call's CPU.
opus_complexity = 0

[audio]
# Capture: "default" or "device:NAME" (a sound card, matched by name), "tone:HZ", "wav:FILE" or "null".
capture = "default"
# Playback: "default" or "device:NAME", "wav:FILE" or "null".
playback = "default"
# Where incoming calls ring besides nothing else: a speaker ("device:NAME"). Empty = the playback device.
ringer = ""

[phone]
# "auto" answers by itself (after auto_answer_delay); "button" waits for the button.
answer = "button"
auto_answer_delay = "0s"
# Unanswered calls are declined with 480 after this and logged as missed.
ring_timeout = "60s"
# waphone answer/hangup/status/call talk to the daemon here (mode 0600).
control_socket = "/run/waphone/control.sock"
# A long press of the button while idle calls this number. Empty = off.
speed_dial = ""
# Set media up while ringing (183 Session Progress with our SDP): ICE and
# DTLS finish before the answer, so the first words are not clipped.
early_media = true

[board]
# GPIO chip ("gpiochip0") or "" for none; lines by name ("GPIO17") or offset ("17").
chip = ""
button_line = ""
led_line = ""
# The headset's keys (answer/hang up, mute, volume): "auto" finds a USB headset by name,
# "off", or a substring of the input device's name.
headset_keys = "auto"

[graph]
# Meta's Graph API, used by ` + "`waphone setup`" + ` only (not by the running phone).
base_url = "https://graph.facebook.com"
version = "v23.0"
# The number's ID in WhatsApp Manager (not the phone number).
phone_number_id = ""
# An access token with whatsapp_business_management; mode 0600, never logged.
token_file = "/etc/waphone/graph-token"
# Send SIP call lifecycle webhooks (call_created, terminate) to your webhook endpoint.
webhook_delivery = false
# Extra user parameters Meta appends to the Request-URI of its INVITEs (e.g. trunk groups).
[graph.request_uri_user_params]

[webhook]
# Receive Meta's calls webhooks (needs graph.webhook_delivery = true and the app
# subscribed to the "calls" field): HTTPS with the SIP certificate. Empty = off.
listen = ""
path = "/webhook"
# The verify token you gave Meta for the subscription, and the app secret Meta
# signs every webhook with: one-line files, mode 0600.
verify_token_file = ""
app_secret_file = ""

[web]
# The web console (status, answer/hang up, history, health, headset test,
# settings): HTTPS on this host:port, e.g. ":8443". Empty = off.
listen = ""
# The admin password, or its bcrypt/argon2id hash: a one-line file, mode 0600.
password_file = ""
# The console's certificate; empty = the SIP certificate, or a self-signed one.
cert_file = ""
key_file = ""

[metrics]
# Prometheus metrics: a host:port of their own (plain HTTP, e.g.
# "127.0.0.1:9161"), "web" for /metrics on the console, or empty for none.
listen = ""

[mqtt]
# State and call events for home and kiosk automation (Home Assistant
# discovery included), and answer/hangup/mute commands. Empty = off.
broker = ""
username = ""
password_file = ""
# Topic prefix; empty = waphone/<hostname>.
topic = ""
# Extra CA roots for ssl:// brokers.
ca_file = ""

[tls]
# Get and renew the certificate for sip.hostname from an ACME CA instead of cert_file/key_file.
acme = false
email = ""
# ACME directory URL; empty = Let's Encrypt production.
ca = ""
# tls-alpn-01 (forward TCP 443 to challenge_listen), http-01 (forward TCP 80), or
# dns-01 (no open port needed: dns_hook sets the TXT record at your DNS provider).
challenge = "tls-alpn-01"
# dns-01 only: run as: dns_hook present|cleanup _acme-challenge.HOST. VALUE
dns_hook = ""
# Where to answer the CA's challenge; empty = ":443" (tls-alpn-01) or ":80" (http-01).
challenge_listen = ""
# Extra CA roots to reach the ACME server (a private or test CA). Empty = system roots.
ca_file = ""

[state]
# Call history (calls.jsonl) lives here; systemd's StateDirectory= overrides it.
dir = "/var/lib/waphone"

[log]
# debug, info, warn or error.
level = "info"
# Log every SIP message sent and received (digest answers and SRTP keys masked).
sip_trace = false

[fleet]
# Many desks, one number: set edge and this desk registers at a Kamailio edge
# (waphone edge-config renders it; docs/fleet.md) instead of listening for Meta.
# It then needs no sip.password_file and no public certificate: the edge
# answers Meta. Keep sip.hostname and sip.number the business's.
# The edge's desk port, host:port. Empty = not in a fleet.
edge = ""
# The name on the edge's certificate. Empty = edge's host.
edge_name = ""
# The fleet CA: it signed the edge's desk-port certificate and every desk's.
edge_ca_file = ""
# This desk's client certificate and key, from the fleet CA.
cert_file = ""
key_file = ""
# This desk's name, unique in the fleet: lower-case letters, digits, '-'.
device = ""
# How long a registration lasts; the desk refreshes it at half that.
register_expires = "120s"
# Hunt order when the edge hunts instead of ringing all desks: 0 to 1, higher first. Empty = none.
q = ""

[runtime]
# The Go runtime's soft memory limit in MiB: near it the garbage collector
# works harder instead of letting the heap grow. 0 = none. GOMEMLIMIT wins.
memory_limit_mib = 24
# How far the heap may grow over what is live before the garbage collector
# runs, in percent. Low keeps the phone small (its live heap is ~1 MB and a
# call allocates almost nothing). 0 = Go's default (100). GOGC wins.
gc_percent = 25
`
}
