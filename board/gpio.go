package board

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warthog618/go-gpiocdev"
)

// lineRef resolves "GPIO17" (a line name, robust across Pi models whose
// chip numbering differs) or "17" (an offset on cfg.Chip).
func lineRef(chip, ref string) (string, int, error) {
	if n, err := strconv.Atoi(strings.TrimSpace(ref)); err == nil {
		return chip, n, nil
	}
	c, off, err := gpiocdev.FindLine(ref)
	if err != nil {
		return "", 0, fmt.Errorf("GPIO line %q: %w", ref, err)
	}
	return c, off, nil
}

func (b *Board) openGPIO(cfg Config) error {
	var errs []string
	if cfg.ButtonLine != "" {
		chip, off, err := lineRef(cfg.Chip, cfg.ButtonLine)
		if err == nil {
			var mu sync.Mutex
			btn := &Button{}
			var l *gpiocdev.Line
			// Active low with the pull-up: the button shorts the line to ground.
			l, err = gpiocdev.RequestLine(chip, off, gpiocdev.AsInput, gpiocdev.AsActiveLow,
				gpiocdev.WithPullUp, gpiocdev.WithBothEdges, gpiocdev.WithDebounce(10*time.Millisecond),
				gpiocdev.WithConsumer("waphone-button"),
				gpiocdev.WithEventHandler(func(ev gpiocdev.LineEvent) {
					mu.Lock()
					kind, ok := btn.Edge(ev.Type == gpiocdev.LineEventRisingEdge, ev.Timestamp)
					mu.Unlock()
					if ok {
						b.emit(Event{Kind: kind, Source: "gpio", At: time.Now()})
					}
				}))
			if err == nil {
				b.closers = append(b.closers, l.Close)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("button %s: %v", cfg.ButtonLine, err))
		}
	}
	if cfg.LedLine != "" {
		chip, off, err := lineRef(cfg.Chip, cfg.LedLine)
		if err == nil {
			var l *gpiocdev.Line
			l, err = gpiocdev.RequestLine(chip, off, gpiocdev.AsOutput(0), gpiocdev.WithConsumer("waphone-led"))
			if err == nil {
				b.led = l
				b.closers = append(b.closers, l.Close)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("LED %s: %v", cfg.LedLine, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
