package sip

import (
	"bytes"
	"strconv"
	"strings"

	ssip "github.com/emiago/sipgo/sip"
)

// framer follows message boundaries in a SIP stream (RFC 3261 §7.5: the
// header section ends at the first empty line, Content-Length bytes of
// body follow) so the listener can do what sipgo 1.7.2 cannot: sipgo's
// stream parser closes the connection on any message over its 64 KB limit
// (ParseMaxMessageLength), even one whose Content-Length says exactly where
// it ends. The framer passes every message within the limit through
// unchanged, answers an over-long request 513 from its header section and
// skips its body, and gives up (the connection closes) only when the
// header section itself passes the limit: then no boundary can be found.
type framer struct {
	state  int // frHead, frBody, frSkip, frRaw
	head   []byte
	remain int64
}

const (
	frHead = iota // collecting a header section
	frBody        // passing a body through
	frSkip        // discarding the body of an over-long message
	frRaw         // no usable Content-Length: pass everything, sipgo decides (it closes)
)

// frameSink is what the framer tells about the messages it framed.
type frameSink interface {
	message()             // a whole message went up (or was skipped)
	tooLarge(head []byte) // an over-long message's header section
}

// feed takes the bytes of one read and returns what sipgo may parse.
func (f *framer) feed(data []byte, limit int, sink frameSink) (out []byte, err error) {
	for len(data) > 0 {
		switch f.state {
		case frHead:
			if len(f.head) == 0 {
				// Keep-alive CRLFs between messages go up as they came:
				// sipgo answers a lone double CRLF with a pong.
				i := 0
				for i < len(data) && (data[i] == '\r' || data[i] == '\n') {
					i++
				}
				out = append(out, data[:i]...)
				if data = data[i:]; len(data) == 0 {
					return out, nil
				}
			}
			from := max(len(f.head)-3, 0)
			f.head = append(f.head, data...)
			end := headerEnd(f.head, from)
			if end < 0 {
				if len(f.head) > limit {
					f.head = nil
					return out, errTooLarge
				}
				return out, nil
			}
			if end > limit {
				f.head = nil
				return out, errTooLarge
			}
			head := f.head[:end]
			data = bytes.Clone(f.head[end:])
			cl, ok := contentLength(head)
			switch {
			case !ok:
				f.state = frRaw
				out = append(out, head...)
			case int64(end)+cl > int64(limit):
				sink.tooLarge(head)
				f.state, f.remain = frSkip, cl
			default:
				out = append(out, head...)
				f.state, f.remain = frBody, cl
			}
			f.head = f.head[:0]
			if len(f.head) == 0 && cap(f.head) > 4<<10 {
				f.head = nil // do not keep a big header buffer around per connection
			}
			if f.state != frRaw && f.remain == 0 {
				f.state = frHead
				sink.message()
			}
		case frBody, frSkip:
			k := int(min(f.remain, int64(len(data))))
			if f.state == frBody {
				out = append(out, data[:k]...)
			}
			data = data[k:]
			if f.remain -= int64(k); f.remain == 0 {
				f.state = frHead
				sink.message()
			}
		case frRaw:
			return append(out, data...), nil
		}
	}
	return out, nil
}

// headerEnd is the offset just past the empty line that ends the header
// section in b (CRLF or bare LF line ends, as sipgo accepts), searching
// from offset from; -1 if it has not arrived yet.
func headerEnd(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// contentLength reads the (last) Content-Length of a header section; not
// ok if there is none or it does not parse, which sipgo refuses on a stream.
func contentLength(head []byte) (int64, bool) {
	var n int64
	found := false
	for _, line := range strings.Split(string(head), "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok || name == "" || name[0] == ' ' || name[0] == '\t' {
			continue
		}
		name = strings.TrimSpace(name)
		if !strings.EqualFold(name, "Content-Length") && !strings.EqualFold(name, "l") {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
		if err != nil || v < 0 {
			return 0, false
		}
		n, found = v, true
	}
	return n, found
}

// response513 builds "513 Message Too Large" for the request whose header
// section is head, nil for a response or an ACK (neither is answered).
func response513(head []byte, src string) []byte {
	lines := strings.Split(strings.TrimRight(string(head), "\r\n"), "\n")
	var b strings.Builder
	skipping := false
	for i, line := range lines {
		line = strings.TrimRight(line, "\r")
		if i > 0 && line != "" && (line[0] == ' ' || line[0] == '\t') {
			if !skipping {
				b.WriteString(line + "\r\n")
			}
			continue
		}
		name, _, _ := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		skipping = i > 0 && (strings.EqualFold(name, "Content-Length") || strings.EqualFold(name, "l"))
		if !skipping {
			b.WriteString(line + "\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	msg, err := ssip.NewParser().ParseSIP([]byte(b.String()))
	if err != nil {
		return nil
	}
	req, ok := msg.(*ssip.Request)
	if !ok || req.IsAck() {
		return nil
	}
	req.SetSource(src)
	res := ssip.NewResponseFromRequest(req, 513, "Message Too Large", nil)
	return []byte(res.String())
}
