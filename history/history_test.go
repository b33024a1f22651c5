package history

import (
	"os"
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
