// Package stress holds `make stress`: the real waphone daemon on loopback
// under the signaling attacks of issue 11 (challenge floods from many
// addresses and from one IPv6 /64, slow and half-open TLS connections,
// wrong digests), while metasim places Meta-shaped calls that must all
// succeed. The test is behind the "stress" build tag, so `go test ./...`
// does not run it; it is bounded in calls and time and stops by itself.
package stress
