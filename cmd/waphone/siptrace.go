package main

import (
	"log/slog"
	"regexp"

	ssip "github.com/emiago/sipgo/sip"
)

// sipTracer logs every SIP message sipgo reads or writes ([log] sip_trace,
// `run -sip-trace`), with secrets masked: a digest answer's response and
// an SDES master key would let a reader of the journal impersonate us or
// decrypt a call.
type sipTracer struct{ log *slog.Logger }

var (
	digestResponse = regexp.MustCompile(`(?i)(\bresponse=")[^"]*(")`)
	sdesKey        = regexp.MustCompile(`(?i)(\binline:)[A-Za-z0-9+/=]+`)
)

// maskSIP hides the secrets in a SIP message (or a piece of one).
func maskSIP(msg []byte) string {
	s := digestResponse.ReplaceAllString(string(msg), `${1}***${2}`)
	return sdesKey.ReplaceAllString(s, `${1}***`)
}

func (t sipTracer) SIPTraceRead(transport, laddr, raddr string, msg []byte) {
	t.log.Info("sip in", "transport", transport, "from", raddr, "to", laddr, "msg", maskSIP(msg))
}

func (t sipTracer) SIPTraceWrite(transport, laddr, raddr string, msg []byte) {
	t.log.Info("sip out", "transport", transport, "from", laddr, "to", raddr, "msg", maskSIP(msg))
}

// traceSIP turns sipgo's message trace on, into log. sipgo keeps its
// tracer in package variables, so this is once per process, before any
// transport starts.
func traceSIP(log *slog.Logger) {
	ssip.SIPDebugTracer(sipTracer{log.With("component", "sip-trace")})
	ssip.SIPDebug = true
}
