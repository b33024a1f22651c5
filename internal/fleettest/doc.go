// Package fleettest runs the fleet end to end on loopback: a real Kamailio
// edge rendered by `waphone edge-config`, three real waphone desks (the
// built binary, each with its own config, client certificate, state and
// control socket) and metasim as Meta. It needs Debian's kamailio and
// kamailio-tls-modules and the build tag `fleet`: run it with `make fleet`.
package fleettest
