package phone_test

import (
	"io"
	"log/slog"
	"os"
	"testing"

	ssip "github.com/emiago/sipgo/sip"
)

// TestMain quiets sipgo's package-level logger (it prints harmless
// "TCP ref went negative" lines when metasim shuts down, which would
// interleave with benchmark results), as the daemon does.
func TestMain(m *testing.M) {
	ssip.SetDefaultLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}
