package testkit

import (
	"bufio"
	"io"
	"testing"
	"time"
)

// Patience is how long WaitFor waits for a condition before it fails the
// test. It is generous because a loaded machine under -race is slow, and a
// test waits for a condition, never for a fixed time: a condition that
// holds returns at once, so a long patience costs only a failing test.
const Patience = 60 * time.Second

// pollEvery is how often a condition is checked.
const pollEvery = 2 * time.Millisecond

// WaitFor polls cond until it holds and fails the test, naming what it
// waited for, after Patience.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitWithin(t, Patience, what, cond)
}

// WaitWithin is WaitFor with a timeout of the test's own: for a test whose
// contract is that something happens within a bound (a timeout firing, a
// metadata refresh).
func WaitWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitEvery(t, timeout, pollEvery, what, cond)
}

// WaitEvery is WaitWithin checking cond every poll rather than every
// 2ms: for a condition that costs a request (a scrape of a child
// process's /metrics) or would load the system a test measures.
func WaitEvery(t testing.TB, timeout, poll time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(poll)
	}
}

// Lines returns the lines r yields, from a goroutine of its own, on a
// channel closed at the end of r: a child process's output, read while the
// test waits for a line with a timeout.
func Lines(r io.Reader) <-chan string {
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines
}
