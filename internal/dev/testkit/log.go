package testkit

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"testing"
)

// Logger is the logger a component under test gets: debug and up to
// stderr with -v, nothing otherwise. It writes to stderr rather than
// t.Log because components log from their own goroutines, which may
// outlive the test.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Logs keeps everything a logger from CaptureLogs wrote, as JSON lines.
// It is safe for concurrent use.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// CaptureLogs returns a logger at info level that keeps every line, for a
// test that asserts on what a user would read in the log.
func CaptureLogs(t testing.TB) (*slog.Logger, *Logs) {
	logs := &Logs{}
	return slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})), logs
}
