package audio

import (
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/waphone/waphone/internal/testutil"

	"golang.org/x/sys/unix"
)

// syncBuffer collects output written and read at once.
type syncBuffer = testutil.Buffer

// TestALSAMessagesGoThroughTheLogger: on a machine without a sound card
// (like CI), opening the default device makes alsa-lib complain; none of
// it may reach stderr raw, and the headset's one warning names what
// alsa-lib said.
func TestALSAMessagesGoThroughTheLogger(t *testing.T) {
	if cards := soundCards(); cards != "" && !strings.Contains(cards, "no soundcards") {
		t.Skip("this machine has a sound card: alsa-lib has nothing to complain about")
	}
	stderr, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	saved, err := unix.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup2(int(stderr.Fd()), 2); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	h, openErr := OpenHeadset(HeadsetConfig{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if openErr == nil {
		time.Sleep(1500 * time.Millisecond) // a reopen attempt or two
		_ = h.Close()
	}
	_ = unix.Dup2(saved, 2)
	_ = unix.Close(saved)
	raw, _ := os.ReadFile(stderr.Name())
	if openErr != nil {
		t.Skipf("no ALSA backend at all here: %v", openErr)
	}
	if strings.Contains(string(raw), "ALSA lib") {
		t.Fatalf("alsa-lib wrote to stderr itself:\n%s", raw)
	}
	if !strings.Contains(logs.String(), "headset not available") || !strings.Contains(logs.String(), "alsa=") {
		t.Fatalf("no warning naming alsa-lib's complaint:\n%s", logs.String())
	}
	t.Logf("%d log lines, e.g.\n%s", strings.Count(logs.String(), "\n"), logs.String())
}
