// Package sdnotify speaks systemd's notify protocol (sd_notify(3)) in pure
// Go: READY=1 once the phone can take calls, WATCHDOG=1 from the call
// loop. Everything is a no-op when not run by systemd (NOTIFY_SOCKET unset).
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Notifier sends to one notify socket; the zero value (no socket) does nothing.
type Notifier struct {
	socket string
}

// FromEnv reads NOTIFY_SOCKET.
func FromEnv() Notifier { return Notifier{socket: os.Getenv("NOTIFY_SOCKET")} }

// Enabled says whether systemd listens.
func (n Notifier) Enabled() bool { return n.socket != "" }

// Send writes one notification, e.g. "READY=1".
func (n Notifier) Send(state string) error {
	if n.socket == "" {
		return nil
	}
	addr := &net.UnixAddr{Name: n.socket, Net: "unixgram"}
	if addr.Name[0] == '@' { // abstract socket
		addr.Name = "\x00" + addr.Name[1:]
	}
	c, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready tells systemd the service is up.
func (n Notifier) Ready() error { return n.Send("READY=1") }

// Stopping tells systemd a clean shutdown began.
func (n Notifier) Stopping() error { return n.Send("STOPPING=1") }

// Status sets the one-line status `systemctl status` shows.
func (n Notifier) Status(msg string) error { return n.Send("STATUS=" + msg) }

// Watchdog pings the watchdog.
func (n Notifier) Watchdog() error { return n.Send("WATCHDOG=1") }

// WatchdogInterval is how often to ping: half of WatchdogSec=, or false
// when no watchdog is set for this process.
func WatchdogInterval() (time.Duration, bool) {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0, false
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, false
	}
	return time.Duration(usec) * time.Microsecond / 2, true
}
