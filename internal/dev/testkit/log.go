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

// Buffer is a bytes.Buffer that is safe for concurrent use: what a
// component's goroutines or a child process write while the test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes is a copy of everything written so far.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// CaptureLogs returns a logger at info level that keeps every line, as
// JSON, for a test that asserts on what a user would read in the log.
func CaptureLogs(t testing.TB) (*slog.Logger, *Buffer) {
	logs := &Buffer{}
	return slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})), logs
}
