package phone

import (
	"fmt"
	"strings"
	"testing"
)

// The whole policy, written out: one line per (state, input): state,
// input, action, next state. The phone's loops run Decide and nothing
// else, so a change of behaviour must change this table too.
const policyTable = `
idle      short-press   nothing     idle
idle      long-press    speed-dial  dialing
idle      mute-key      nothing     idle
idle      answer        nothing     idle
idle      hangup        nothing     idle
idle      mute          nothing     idle
idle      dtmf          nothing     idle
idle      dial          dial        dialing
idle      incoming      ring        ringing
idle      cancel        nothing     idle
idle      remote-bye    nothing     idle
idle      ringback      nothing     idle
idle      answered      nothing     idle
idle      failed        nothing     idle
idle      media-failed  nothing     idle
idle      ring-timeout  nothing     idle
idle      auto-answer   nothing     idle
ringing   short-press   answer      answering
ringing   long-press    decline     idle
ringing   mute-key      nothing     ringing
ringing   answer        answer      answering
ringing   hangup        decline     idle
ringing   mute          nothing     ringing
ringing   dtmf          nothing     ringing
ringing   dial          nothing     ringing
ringing   incoming      reject-486  ringing
ringing   cancel        end         idle
ringing   remote-bye    end         idle
ringing   ringback      nothing     ringing
ringing   answered      nothing     ringing
ringing   failed        end         idle
ringing   media-failed  nothing     ringing
ringing   ring-timeout  reject-480  idle
ringing   auto-answer   answer      answering
answering short-press   nothing     answering
answering long-press    nothing     answering
answering mute-key      nothing     answering
answering answer        nothing     answering
answering hangup        nothing     answering
answering mute          nothing     answering
answering dtmf          nothing     answering
answering dial          nothing     answering
answering incoming      reject-486  answering
answering cancel        end         idle
answering remote-bye    end         idle
answering ringback      nothing     answering
answering answered      talk        talking
answering failed        end         idle
answering media-failed  nothing     answering
answering ring-timeout  nothing     answering
answering auto-answer   nothing     answering
dialing   short-press   cancel      idle
dialing   long-press    cancel      idle
dialing   mute-key      nothing     dialing
dialing   answer        nothing     dialing
dialing   hangup        cancel      idle
dialing   mute          nothing     dialing
dialing   dtmf          nothing     dialing
dialing   dial          nothing     dialing
dialing   incoming      reject-486  dialing
dialing   cancel        nothing     dialing
dialing   remote-bye    nothing     dialing
dialing   ringback      ringback    ringback
dialing   answered      talk        talking
dialing   failed        end         idle
dialing   media-failed  nothing     dialing
dialing   ring-timeout  nothing     dialing
dialing   auto-answer   nothing     dialing
ringback  short-press   cancel      idle
ringback  long-press    cancel      idle
ringback  mute-key      nothing     ringback
ringback  answer        nothing     ringback
ringback  hangup        cancel      idle
ringback  mute          nothing     ringback
ringback  dtmf          nothing     ringback
ringback  dial          nothing     ringback
ringback  incoming      reject-486  ringback
ringback  cancel        nothing     ringback
ringback  remote-bye    nothing     ringback
ringback  ringback      nothing     ringback
ringback  answered      talk        talking
ringback  failed        end         idle
ringback  media-failed  nothing     ringback
ringback  ring-timeout  nothing     ringback
ringback  auto-answer   nothing     ringback
talking   short-press   bye         idle
talking   long-press    bye         idle
talking   mute-key      toggle-mute talking
talking   answer        nothing     talking
talking   hangup        bye         idle
talking   mute          toggle-mute talking
talking   dtmf          send-dtmf   talking
talking   dial          nothing     talking
talking   incoming      reject-486  talking
talking   cancel        nothing     talking
talking   remote-bye    end         idle
talking   ringback      nothing     talking
talking   answered      nothing     talking
talking   failed        end         idle
talking   media-failed  bye         idle
talking   ring-timeout  nothing     talking
talking   auto-answer   nothing     talking
`

func TestPolicyTableIsComplete(t *testing.T) {
	want := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(policyTable), "\n") {
		f := strings.Fields(l)
		want[f[0]+" "+f[1]] = f[2] + " " + f[3]
	}
	if n := len(AllStates) * len(AllInputs); len(want) != n {
		t.Fatalf("table has %d rows, want one per (state, input) pair: %d", len(want), n)
	}
	for _, s := range AllStates {
		for _, in := range AllInputs {
			key := fmt.Sprintf("%s %s", s, in)
			a, next := Decide(s, in)
			if got := fmt.Sprintf("%s %s", a, next); got != want[key] {
				t.Errorf("%s: got %q, table says %q", key, got, want[key])
			}
		}
	}
}
