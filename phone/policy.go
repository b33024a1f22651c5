package phone

// Input is something that happens to the phone: a key on the desk or the
// headset, or news from the network.
type Input string

const (
	InShortPress  Input = "short-press" // the desk button, or the headset's hook key
	InLongPress   Input = "long-press"  // held ≥ 1 s
	InMuteKey     Input = "mute-key"
	InIncoming    Input = "incoming"     // an authenticated INVITE
	InCancel      Input = "cancel"       // Meta's CANCEL before we answered
	InRemoteBye   Input = "remote-bye"   // the other side hung up
	InRingTimeout Input = "ring-timeout" // nobody answered in time
	InAutoAnswer  Input = "auto-answer"  // phone.answer = "auto" fired
	InRingback    Input = "ringback"     // 180/183 to our INVITE
	InAnswered    Input = "answered"     // 200 to our INVITE, or our 200 was ACKed
	InFailed      Input = "failed"       // 4xx-6xx to our INVITE, media or signaling failure
)

// Action is what the phone does about an input in a state.
type Action string

const (
	DoNothing    Action = "nothing"
	DoAnswer     Action = "answer"      // 200 OK, start media
	DoHangup     Action = "hangup"      // BYE (talking) or CANCEL (dialing/ringback)
	DoDecline    Action = "decline"     // 603 to a ringing call
	DoReject480  Action = "reject-480"  // ring timeout: missed call
	DoRejectBusy Action = "reject-486"  // a second call while we have one
	DoRing       Action = "ring"        // 180, ring tone, LED blinking
	DoSpeedDial  Action = "speed-dial"  // call phone.speed_dial
	DoToggleMute Action = "toggle-mute" // capture → silence (media keeps flowing)
	DoTalk       Action = "talk"        // media up: LED on
	DoEnd        Action = "end"         // back to idle: LED off, call logged
)

// States and inputs, for the table test and for status pages.
var (
	AllStates = []State{Idle, Ringing, Dialing, Ringback, Talking}
	AllInputs = []Input{InShortPress, InLongPress, InMuteKey, InIncoming, InCancel, InRemoteBye,
		InRingTimeout, InAutoAnswer, InRingback, InAnswered, InFailed}
)

// Decide is the phone's whole policy as one table: for every state and
// input it says what happens and which state follows. Inputs that cannot
// happen in a state (a CANCEL while idle: a stale retransmission) are
// explicitly ignored. The second call while busy is refused without
// touching the first.
func Decide(s State, in Input) (Action, State) {
	switch in {
	case InIncoming:
		if s == Idle {
			return DoRing, Ringing
		}
		return DoRejectBusy, s
	case InMuteKey:
		if s == Talking {
			return DoToggleMute, Talking
		}
		return DoNothing, s
	}
	switch s {
	case Idle:
		if in == InLongPress {
			return DoSpeedDial, Dialing
		}
	case Ringing:
		switch in {
		case InShortPress, InAutoAnswer:
			return DoAnswer, Talking
		case InLongPress:
			return DoDecline, Idle
		case InCancel, InRemoteBye, InFailed:
			return DoEnd, Idle
		case InRingTimeout:
			return DoReject480, Idle
		}
	case Dialing, Ringback:
		switch in {
		case InShortPress, InLongPress:
			return DoHangup, Idle
		case InRingback:
			return DoNothing, Ringback
		case InAnswered:
			return DoTalk, Talking
		case InFailed, InCancel, InRemoteBye:
			return DoEnd, Idle
		}
	case Talking:
		switch in {
		case InShortPress, InLongPress:
			return DoHangup, Idle
		case InRemoteBye, InFailed:
			return DoEnd, Idle
		}
	}
	return DoNothing, s
}
