package phone

import (
	"fmt"
	"strings"
	"testing"
)

// The whole policy, written out: one line per (state, input). A change
// to Decide must change this table too.
const policyTable = `
idle     short-press  nothing     idle
idle     long-press   speed-dial  dialing
idle     mute-key     nothing     idle
idle     incoming     ring        ringing
idle     cancel       nothing     idle
idle     remote-bye   nothing     idle
idle     ring-timeout nothing     idle
idle     auto-answer  nothing     idle
idle     ringback     nothing     idle
idle     answered     nothing     idle
idle     failed       nothing     idle
ringing  short-press  answer      talking
ringing  long-press   decline     idle
ringing  mute-key     nothing     ringing
ringing  incoming     reject-486  ringing
ringing  cancel       end         idle
ringing  remote-bye   end         idle
ringing  ring-timeout reject-480  idle
ringing  auto-answer  answer      talking
ringing  ringback     nothing     ringing
ringing  answered     nothing     ringing
ringing  failed       end         idle
dialing  short-press  hangup      idle
dialing  long-press   hangup      idle
dialing  mute-key     nothing     dialing
dialing  incoming     reject-486  dialing
dialing  cancel       end         idle
dialing  remote-bye   end         idle
dialing  ring-timeout nothing     dialing
dialing  auto-answer  nothing     dialing
dialing  ringback     nothing     ringback
dialing  answered     talk        talking
dialing  failed       end         idle
ringback short-press  hangup      idle
ringback long-press   hangup      idle
ringback mute-key     nothing     ringback
ringback incoming     reject-486  ringback
ringback cancel       end         idle
ringback remote-bye   end         idle
ringback ring-timeout nothing     ringback
ringback auto-answer  nothing     ringback
ringback ringback     nothing     ringback
ringback answered     talk        talking
ringback failed       end         idle
talking  short-press  hangup      idle
talking  long-press   hangup      idle
talking  mute-key     toggle-mute talking
talking  incoming     reject-486  talking
talking  cancel       nothing     talking
talking  remote-bye   end         idle
talking  ring-timeout nothing     talking
talking  auto-answer  nothing     talking
talking  ringback     nothing     talking
talking  answered     nothing     talking
talking  failed       end         idle
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
