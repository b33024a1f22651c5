package metasim

import "time"

// maxCatchUp is how far behind its clock metasim's sender may fall and
// still send the missed frames at once; further behind, it starts its
// clock afresh.
const maxCatchUp = 200 * time.Millisecond

// framePacer paces a 20 ms frame clock that keeps time: a late frame is
// followed at once by the next one due, as a phone's capture clock would
// have it, where a time.Ticker drops the ticks it missed (and with them
// the frames: a stalled sender then sends less than 50 a second).
type framePacer struct {
	next  time.Time
	timer *time.Timer
}

func newFramePacer() *framePacer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &framePacer{next: time.Now(), timer: t}
}

// wait returns when the next frame is due, false once quit is closed.
func (p *framePacer) wait(quit <-chan struct{}) bool {
	p.next = p.next.Add(20 * time.Millisecond)
	now := time.Now()
	if now.Sub(p.next) > maxCatchUp {
		p.next = now
	}
	if d := p.next.Sub(now); d > 0 {
		p.timer.Reset(d)
		select {
		case <-quit:
			p.timer.Stop()
			return false
		case <-p.timer.C:
			return true
		}
	}
	select {
	case <-quit:
		return false
	default:
		return true
	}
}

func (p *framePacer) stop() { p.timer.Stop() }
