package history

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAppendReadAndTornLine(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	if err := s.Append(Record{Direction: "inbound", Remote: "+12195550714", WACID: "wacid.A", Start: t0, End: t0.Add(time.Minute), EndedBy: "remote-bye"}); err != nil {
		t.Fatal(err)
	}
	// A power cut in the middle of the next write leaves a torn line.
	f, _ := os.OpenFile(s.Path(), os.O_APPEND|os.O_WRONLY, 0o600)
	_, _ = f.WriteString(`{"direction":"outbound","remote":"+1`)
	f.Close()
	if err := s.Append(Record{Direction: "outbound", Remote: "US.1349", Start: t0.Add(time.Hour), EndedBy: "local-bye"}); err != nil {
		t.Fatal(err)
	}
	all, bad, err := s.Read(time.Time{})
	if err != nil || len(all) != 2 || bad != 1 {
		t.Fatalf("records %d, torn %d, err %v", len(all), bad, err)
	}
	if all[0].WACID != "wacid.A" || all[1].Remote != "US.1349" {
		t.Fatalf("%+v", all)
	}
	recent, _, _ := s.Read(t0.Add(30 * time.Minute))
	if len(recent) != 1 || recent[0].Direction != "outbound" {
		t.Fatalf("since: %+v", recent)
	}
	if fi, _ := os.Stat(s.Path()); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", fi.Mode().Perm())
	}
	empty, _ := Open(t.TempDir())
	if r, _, err := empty.Read(time.Time{}); err != nil || r != nil {
		t.Fatal("no file must read as no calls")
	}
}

// TestKilledWriterLosesNothingAcknowledged: a child process appends calls
// and reports each one once Append returned; it is killed (SIGKILL) in the
// middle of its stream. Every acknowledged record must read back intact,
// in order, and the store must take new records afterwards.
func TestKilledWriterLosesNothingAcknowledged(t *testing.T) {
	if dir := os.Getenv("WAPHONE_HISTORY_WRITER"); dir != "" {
		s, err := Open(dir)
		if err != nil {
			os.Exit(3)
		}
		t0 := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
		for i := 0; ; i++ {
			r := Record{Direction: "inbound", Remote: "+1219555" + strconv.Itoa(i), WACID: "wacid." + strconv.Itoa(i),
				Start: t0.Add(time.Duration(i) * time.Minute), EndedBy: "remote-bye", Reason: strings.Repeat("x", 3000)}
			if err := s.Append(r); err != nil {
				os.Exit(4)
			}
			fmt.Println(i)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWriterLosesNothingAcknowledged$")
	cmd.Env = append(os.Environ(), "WAPHONE_HISTORY_WRITER="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	acked := -1
	for sc.Scan() {
		n, err := strconv.Atoi(sc.Text())
		if err != nil {
			continue
		}
		if acked = n; acked == 40 {
			_ = cmd.Process.Kill() // mid-stream: the child is inside its next Append
			break
		}
	}
	_ = cmd.Wait()
	if acked != 40 {
		t.Fatalf("the writer acknowledged only %d records before it ended", acked)
	}
	s, _ := Open(dir)
	all, torn, err := s.Read(time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < acked+1 || torn > 1 {
		t.Fatalf("read %d records (%d torn) after %d were acknowledged", len(all), torn, acked+1)
	}
	for i := 0; i <= acked; i++ {
		if all[i].WACID != "wacid."+strconv.Itoa(i) || len(all[i].Reason) != 3000 {
			t.Fatalf("record %d is %q", i, all[i].WACID)
		}
	}
	if err := s.Append(Record{Direction: "outbound", WACID: "after"}); err != nil {
		t.Fatal(err)
	}
	if again, _, _ := s.Read(time.Time{}); again[len(again)-1].WACID != "after" {
		t.Fatal("the store does not take records after the kill")
	}
}

// TestOngoingCallRecoveredAsInterrupted: a call noted as up and never
// finished (the process died) becomes an "interrupted" record at the next
// start, ending when it was last touched; a finished call leaves nothing.
func TestOngoingCallRecoveredAsInterrupted(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	if err := s.Begin(Record{Direction: "inbound", Remote: "+12195550714", WACID: "wacid.X", Start: t0, Answered: t0.Add(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(t0.Add(95 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(s.ongoingPath()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ongoing file %v %v", fi, err)
	}
	after, _ := Open(dir) // the next start
	rec, err := after.Recover()
	if err != nil || rec == nil {
		t.Fatalf("recover: %v %v", rec, err)
	}
	all, _, _ := after.Read(time.Time{})
	if len(all) != 1 || all[0].EndedBy != EndedInterrupted || all[0].WACID != "wacid.X" ||
		!all[0].End.Equal(t0.Add(95*time.Second)) || all[0].Duration != 90*time.Second {
		t.Fatalf("records %+v", all)
	}
	if again, err := after.Recover(); again != nil || err != nil {
		t.Fatalf("recovered twice: %v %v", again, err)
	}
	// A call that ends normally leaves no call in progress behind.
	_ = after.Begin(Record{Direction: "outbound", WACID: "wacid.Y"})
	if err := after.Finish(Record{Direction: "outbound", WACID: "wacid.Y", EndedBy: "local-bye"}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := after.Recover(); rec != nil {
		t.Fatalf("a finished call recovered: %+v", rec)
	}
	if err := after.Touch(time.Now()); err != nil {
		t.Fatalf("touch with no call: %v", err)
	}
}

func TestWebhooksJoinByWACID(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	// One call logged from its Call-ID ("outgoing:wacid.…"), one with no WACID.
	recs := []Record{
		{Direction: "inbound", Remote: "+16315553601", WACID: "outgoing:wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh", Start: t0, End: t0.Add(2 * time.Minute)},
		{Direction: "outbound", Remote: "+16315553602", Start: t0.Add(time.Hour), End: t0.Add(time.Hour + time.Minute)},
	}
	for _, r := range recs {
		if err := s.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []WebhookEvent{
		{WACID: "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh", Kind: "call", Event: "call_created", Received: t0},
		{WACID: "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh", Kind: "call", Event: "terminate", Status: "COMPLETED", DurationSec: 120, Received: t0.Add(2 * time.Minute)},
		{WACID: "wacid.SomeoneElsesCall", Kind: "call", Event: "terminate", Status: "FAILED", Received: t0.Add(3 * time.Minute)},
	} {
		if err := s.AppendWebhook(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AppendWebhook(WebhookEvent{}); err == nil {
		t.Fatal("an event without WACID was stored")
	}
	// The call log itself is unchanged by webhooks.
	got, _, err := s.Read(time.Time{})
	if err != nil || len(got) != 2 {
		t.Fatalf("calls %d %v", len(got), err)
	}
	evs, torn, err := s.ReadWebhooks(time.Time{})
	if err != nil || torn != 0 || len(evs) != 3 {
		t.Fatalf("webhooks %d torn %d %v", len(evs), torn, err)
	}
	joined, unknown := Join(got, evs)
	if len(joined) != 2 || len(joined[0].Webhooks) != 2 || joined[0].Webhooks[1].Status != "COMPLETED" || joined[0].Webhooks[1].DurationSec != 120 ||
		len(joined[1].Webhooks) != 0 {
		t.Fatalf("joined %+v", joined)
	}
	if len(unknown) != 1 || unknown[0].WACID != "wacid.SomeoneElsesCall" {
		t.Fatalf("unknown %+v", unknown)
	}
	// A torn last line is skipped and does not swallow the next event.
	f, _ := os.OpenFile(filepath.Join(filepath.Dir(s.Path()), "webhooks.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString(`{"wacid":"wacid.torn","ki`)
	f.Close()
	if err := s.AppendWebhook(WebhookEvent{WACID: "wacid.after", Received: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	evs, torn, _ = s.ReadWebhooks(t0.Add(30 * time.Minute))
	if torn != 1 || len(evs) != 1 || evs[0].WACID != "wacid.after" {
		t.Fatalf("after a torn line: %+v torn %d", evs, torn)
	}
}
