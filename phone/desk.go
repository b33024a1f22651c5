package phone

import (
	"context"
	"log/slog"

	"github.com/waphone/waphone/board"
)

// Front is the desk as the phone drives it: key events in, the LED and the
// HID headset's Off-Hook/Ring/Mute out (*board.Board has all of it).
type Front interface {
	Events() <-chan board.Event
	SetLED(board.Pattern)
	SetHeadsetState(offHook, ringing, muted bool)
	ResendHeadsetState()
}

// Speaker is the earpiece's gain, which the headset's volume keys set.
type Speaker interface{ SetVolume(float64) }

// Desk joins the board to the phone: keys become inputs through the policy
// table, and the phone's state (from its events, which carry it) is what
// the LED and the headset show. The volume level lives here and only here.
type Desk struct {
	Phone   *Phone
	Front   Front
	Speaker Speaker // nil: volume keys do nothing
	// Fault makes the idle LED blink fast: the board is misconfigured, and
	// the desk says so where the shop owner looks.
	Fault  bool
	Logger *slog.Logger

	volume float64
}

// Volume steps for the headset's keys: 1/8 of nominal, up to twice as loud.
const (
	volumeStep = 0.125
	volumeMax  = 2
)

// Run shows the phone's state and feeds keys to it until ctx ends or the
// front closes its events.
func (d *Desk) Run(ctx context.Context) {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	d.volume = 1
	events, stop := d.Phone.Subscribe(32)
	defer stop()
	d.show(Event{State: d.Phone.Status().State})
	keys := d.Front.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			d.show(ev)
		case k, ok := <-keys:
			if !ok {
				return
			}
			d.key(k)
		}
	}
}

// show mirrors a state on the LED and the headset.
func (d *Desk) show(ev Event) {
	switch ev.State {
	case Ringing:
		d.Front.SetLED(board.Blink)
	case Answering, Dialing, Ringback, Talking:
		d.Front.SetLED(board.On)
	default:
		if d.Fault {
			d.Front.SetLED(board.FastBlink)
		} else {
			d.Front.SetLED(board.Off)
		}
	}
	offHook := ev.State != Idle && ev.State != Ringing
	d.Front.SetHeadsetState(offHook, ev.State == Ringing, ev.Muted)
}

// keyInputs maps the board's keys to the phone's inputs; a headset's hook
// key acts like the desk button.
var keyInputs = map[board.Kind]Input{
	board.ShortPress: InShortPress,
	board.Hook:       InShortPress,
	board.LongPress:  InLongPress,
	board.Mute:       InMuteKey,
}

func (d *Desk) key(k board.Event) {
	switch k.Kind {
	case board.VolumeUp, board.VolumeDown:
		if k.Kind == board.VolumeUp {
			d.volume = min(volumeMax, d.volume+volumeStep)
		} else {
			d.volume = max(0, d.volume-volumeStep)
		}
		if d.Speaker != nil {
			d.Speaker.SetVolume(d.volume)
		}
		return
	}
	in, ok := keyInputs[k.Kind]
	if !ok {
		return
	}
	action, err := d.Phone.Press(in)
	if err != nil || action == DoNothing {
		d.Logger.Info("key ignored", "key", k.Kind, "source", k.Source, "err", err)
		if k.Kind == board.Hook {
			// The headset toggled its own hook state: tell it ours again,
			// or it stays off-hook while the phone is idle.
			d.Front.ResendHeadsetState()
		}
	}
}
