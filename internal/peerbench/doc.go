// Package peerbench measures waphone against baresip side by side (make
// bench-peers): the same baresip caller calls a baresip answerer and a
// waphone answerer (the real daemon, `waphone run`) over TLS with
// SDES-SRTP and Opus, and the bench prints each answerer's CPU per
// call-second (/proc/PID/stat utime+stime), idle and peak RSS (VmRSS,
// VmHWM) and setup time (the INVITE carrying credentials, or the only
// INVITE, to its 200 OK, timed on the wire by a TLS relay between caller
// and answerer), and the ratios. It fails only when it cannot measure,
// never on a threshold. The build tag keeps it out of `go test ./...`.
package peerbench
