package audio

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// alsaLog takes alsa-lib's own error messages to the phone's logger,
// rate-limited: a board without a sound card makes alsa-lib complain on
// every device probe, and the journal should say once what is missing,
// not hundreds of times. alsa-lib's handler is one per process, so this is
// too (set by the first headset opened, kept by the later ones).
type alsaLog struct {
	once   sync.Once
	logger atomic.Pointer[slog.Logger]

	mu         sync.Mutex
	windowFrom time.Time
	inWindow   int
	suppressed int
	last       string // the newest message
}

// lastMessage is alsa-lib's newest complaint ("" if none), for the one
// line that says why the headset is not there.
func (a *alsaLog) lastMessage() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// alsaMessages is alsa-lib's, process-wide like its error handler.
var alsaMessages alsaLog

// alsaBurst is how many alsa-lib lines reach the log per alsaWindow.
const (
	alsaBurst  = 3
	alsaWindow = time.Minute
)

// use routes alsa-lib's messages to log (once per process).
func (a *alsaLog) use(log *slog.Logger) {
	a.logger.CompareAndSwap(nil, log)
	a.once.Do(func() {
		if !routeALSA() {
			log.Debug("alsa-lib not found: its messages are not routed")
		}
	})
}

// note logs one alsa-lib message unless the window's burst is spent; the
// first line after a quiet window says how many were held back.
func (a *alsaLog) note(function, msg string, errno int) {
	log := a.logger.Load()
	if log == nil {
		return
	}
	now := time.Now()
	a.mu.Lock()
	if now.Sub(a.windowFrom) > alsaWindow {
		if a.suppressed > 0 {
			log.Info("alsa-lib messages held back", "count", a.suppressed, "last", a.last)
		}
		a.windowFrom, a.inWindow, a.suppressed = now, 0, 0
	}
	a.inWindow++
	a.last = msg
	pass := a.inWindow <= alsaBurst
	if !pass {
		a.suppressed++
	}
	a.mu.Unlock()
	if pass {
		log.Debug("alsa-lib", "function", function, "msg", msg, "errno", errno)
	}
}
