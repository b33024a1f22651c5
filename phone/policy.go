package phone

// State of the phone (of its one call).
type State string

const (
	Idle      State = "idle"
	Ringing   State = "ringing"   // inbound call waiting for an answer
	Answering State = "answering" // our 200 OK is out; waiting for the caller's ACK
	Dialing   State = "dialing"   // our INVITE is out
	Ringback  State = "ringback"  // the far end rings
	Talking   State = "talking"
)

// Input is something that happens to the phone: a key on the desk or the
// headset, a control command, news from the network or a timer.
type Input string

const (
	// Keys (the desk button, the headset's keys).
	InShortPress Input = "short-press" // the desk button, or the headset's hook key
	InLongPress  Input = "long-press"  // held ≥ 1 s
	InMuteKey    Input = "mute-key"
	// Commands (control socket, console): they say what they mean, unlike
	// a key whose meaning depends on the state.
	InAnswerCmd Input = "answer"
	InHangupCmd Input = "hangup"
	InMuteCmd   Input = "mute"
	InDTMFCmd   Input = "dtmf"
	InDialCmd   Input = "dial"
	// Signaling and media.
	InIncoming    Input = "incoming"     // an authenticated INVITE
	InCancel      Input = "cancel"       // the caller's CANCEL before the call was up
	InRemoteBye   Input = "remote-bye"   // the other side hung up
	InRingback    Input = "ringback"     // 180/183 to our INVITE
	InAnswered    Input = "answered"     // 200 to our INVITE, or the ACK of our 200
	InFailed      Input = "failed"       // our INVITE refused, our 200 lost or not ACKed
	InMediaFailed Input = "media-failed" // the call's media stopped (no RTP, DTLS failed)
	// Timers.
	InRingTimeout Input = "ring-timeout" // nobody answered in time
	InAutoAnswer  Input = "auto-answer"  // phone.answer = "auto" fired
)

// Action is what the phone does about an input in a state.
type Action string

const (
	DoNothing    Action = "nothing"     // the input is ignored in this state
	DoRing       Action = "ring"        // take the offer's media, 180 (183), ring tone, timers
	DoRejectBusy Action = "reject-486"  // a second call while we have one
	DoAnswer     Action = "answer"      // stop ringing, 200 OK, wait for the ACK
	DoDecline    Action = "decline"     // 603 to a ringing call
	DoReject480  Action = "reject-480"  // ring timeout: missed call
	DoDial       Action = "dial"        // our offer, INVITE
	DoSpeedDial  Action = "speed-dial"  // dial phone.speed_dial
	DoRingback   Action = "ringback"    // the far end rings: ringback tone
	DoCancel     Action = "cancel"      // CANCEL our INVITE
	DoTalk       Action = "talk"        // media and audio up: LED on
	DoBye        Action = "bye"         // BYE (with the failure's Reason after a media failure)
	DoEnd        Action = "end"         // the other side or the network ended it: nothing to send
	DoToggleMute Action = "toggle-mute" // capture → silence (media keeps flowing)
	DoSendDTMF   Action = "send-dtmf"   // RFC 4733 digits
)

// States and inputs, for the table test and for status pages.
var (
	AllStates = []State{Idle, Ringing, Answering, Dialing, Ringback, Talking}
	AllInputs = []Input{InShortPress, InLongPress, InMuteKey, InAnswerCmd, InHangupCmd, InMuteCmd,
		InDTMFCmd, InDialCmd, InIncoming, InCancel, InRemoteBye, InRingback, InAnswered, InFailed,
		InMediaFailed, InRingTimeout, InAutoAnswer}
)

// rule is one cell of the policy: what to do and the state that follows.
type rule struct {
	do   Action
	next State
}

// busy is what every state with a call does about a second INVITE: refuse
// it and leave the first call alone.
var busy = rule{DoRejectBusy, ""}

// policy is the phone's whole behaviour. A (state, input) pair that is not
// listed is ignored (a CANCEL while idle is a stale retransmission; a
// hang-up key between our 200 and its ACK must wait, since RFC 3261 §15
// forbids a BYE before the ACK). An empty next state means "stay".
var policy = map[State]map[Input]rule{
	Idle: {
		InLongPress: {DoSpeedDial, Dialing},
		InDialCmd:   {DoDial, Dialing},
		InIncoming:  {DoRing, Ringing},
	},
	Ringing: {
		InShortPress:  {DoAnswer, Answering},
		InAnswerCmd:   {DoAnswer, Answering},
		InAutoAnswer:  {DoAnswer, Answering},
		InLongPress:   {DoDecline, Idle},
		InHangupCmd:   {DoDecline, Idle},
		InRingTimeout: {DoReject480, Idle},
		InCancel:      {DoEnd, Idle},
		InRemoteBye:   {DoEnd, Idle},
		InFailed:      {DoEnd, Idle},
		InIncoming:    busy,
	},
	Answering: {
		InAnswered:  {DoTalk, Talking},
		InCancel:    {DoEnd, Idle},
		InRemoteBye: {DoEnd, Idle},
		InFailed:    {DoEnd, Idle},
		InIncoming:  busy,
	},
	Dialing: {
		InShortPress: {DoCancel, Idle},
		InLongPress:  {DoCancel, Idle},
		InHangupCmd:  {DoCancel, Idle},
		InRingback:   {DoRingback, Ringback},
		InAnswered:   {DoTalk, Talking},
		InFailed:     {DoEnd, Idle},
		InIncoming:   busy,
	},
	Ringback: {
		InShortPress: {DoCancel, Idle},
		InLongPress:  {DoCancel, Idle},
		InHangupCmd:  {DoCancel, Idle},
		InAnswered:   {DoTalk, Talking},
		InFailed:     {DoEnd, Idle},
		InIncoming:   busy,
	},
	Talking: {
		InShortPress:  {DoBye, Idle},
		InLongPress:   {DoBye, Idle},
		InHangupCmd:   {DoBye, Idle},
		InMediaFailed: {DoBye, Idle},
		InMuteKey:     {DoToggleMute, ""},
		InMuteCmd:     {DoToggleMute, ""},
		InDTMFCmd:     {DoSendDTMF, ""},
		InRemoteBye:   {DoEnd, Idle},
		InFailed:      {DoEnd, Idle},
		InIncoming:    busy,
	},
}

// Decide looks the policy up: for every state and input it says what
// happens and which state follows. The phone runs exactly this.
func Decide(s State, in Input) (Action, State) {
	r, ok := policy[s][in]
	if !ok {
		return DoNothing, s
	}
	if r.next == "" {
		return r.do, s
	}
	return r.do, r.next
}
