package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDelayBounds(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		n    int
		want time.Duration // the cap d: Delay is in [d/2, d]
	}{
		{-1, 100 * time.Millisecond},
		{0, 100 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{1000, time.Second},
	} {
		if got := p.Cap(tc.n); got != tc.want {
			t.Errorf("Cap(%d) = %v, want %v", tc.n, got, tc.want)
		}
		for range 200 {
			if d := p.Delay(tc.n); d < tc.want/2 || d > tc.want {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", tc.n, d, tc.want/2, tc.want)
			}
		}
	}
}

func TestDelaySpreadsAFleet(t *testing.T) {
	p := Policy{Initial: time.Second, Max: time.Minute}
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[p.Delay(3)] = true
	}
	if len(seen) < 50 {
		t.Fatalf("100 draws gave %d distinct waits: nodes would retry in lockstep", len(seen))
	}
}

func TestDelayDegenerate(t *testing.T) {
	for _, p := range []Policy{{}, {Initial: time.Second}, {Max: time.Second}, {Initial: time.Nanosecond, Max: time.Nanosecond}} {
		for n := range 70 {
			if d := p.Delay(n); d < 0 || d > max(p.Initial, p.Max) {
				t.Fatalf("%+v.Delay(%d) = %v", p, n, d)
			}
		}
	}
	// Doubling never overflows into a negative wait.
	p := Policy{Initial: time.Hour, Max: 1<<63 - 1}
	if d := p.Cap(200); d <= 0 {
		t.Fatalf("Cap(200) = %v", d)
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep of an open context returned false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep of a cancelled context returned true")
	}
}

func TestDoLogsFirstFailureAndRecoveryOnce(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	failures := 0
	op := Op{
		Policy: Policy{Initial: time.Microsecond, Max: time.Microsecond},
		Log:    log,
		What:   "connect",
		Attrs:  []any{"broker", "b1"},
		Failed: func(error) { failures++ },
	}
	calls := 0
	err := op.Do(context.Background(), func(context.Context) error {
		calls++
		if calls < 5 {
			return errors.New("refused")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if calls != 5 || failures != 4 {
		t.Fatalf("calls %d failures %d, want 5 and 4", calls, failures)
	}
	out := buf.String()
	if n := strings.Count(out, "connect failed, retrying"); n != 1 {
		t.Errorf("%d failure lines, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "connect recovered"); n != 1 || !strings.Contains(out, "attempts=5") {
		t.Errorf("want one recovery line with attempts=5:\n%s", out)
	}
	if strings.Count(out, "broker=b1") != 2 {
		t.Errorf("attrs missing:\n%s", out)
	}
}

func TestDoSucceedsSilently(t *testing.T) {
	var buf bytes.Buffer
	err := Op{Log: slog.New(slog.NewTextHandler(&buf, nil)), What: "x"}.Do(context.Background(), func(context.Context) error { return nil })
	if err != nil || buf.Len() != 0 {
		t.Fatalf("err %v, log %q", err, buf.String())
	}
}

func TestDoPermanent(t *testing.T) {
	bad := errors.New("bad")
	calls := 0
	err := Op{
		Policy:    Policy{Initial: time.Hour, Max: time.Hour},
		Permanent: func(err error) bool { return errors.Is(err, bad) },
	}.Do(context.Background(), func(context.Context) error { calls++; return bad })
	if !errors.Is(err, bad) || calls != 1 {
		t.Fatalf("err %v after %d calls, want bad after 1", err, calls)
	}
}

func TestDoStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	refused := errors.New("refused")
	calls := 0
	err := Op{Policy: Policy{Initial: time.Hour, Max: time.Hour}}.Do(ctx, func(context.Context) error {
		calls++
		cancel()
		return refused
	})
	if !errors.Is(err, refused) || calls != 1 {
		t.Fatalf("err %v after %d calls, want the last error after 1", err, calls)
	}
	// On a context done already, the first attempt is made; no retry.
	calls = 0
	err = Op{}.Do(ctx, func(context.Context) error { calls++; return refused })
	if !errors.Is(err, refused) || calls != 1 {
		t.Fatalf("err %v after %d calls on a done context, want refused after 1", err, calls)
	}
}

func TestDoFirstFailureLevel(t *testing.T) {
	for _, tc := range []struct {
		level slog.Leveler
		want  string
	}{
		{nil, "level=WARN"},
		{slog.LevelError, "level=ERROR"},
	} {
		var buf bytes.Buffer
		calls := 0
		err := Op{
			Policy: Policy{Initial: time.Microsecond, Max: time.Microsecond},
			Log:    slog.New(slog.NewTextHandler(&buf, nil)),
			Level:  tc.level,
			What:   "ack",
		}.Do(context.Background(), func(context.Context) error {
			if calls++; calls == 1 {
				return errors.New("refused")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
		line, _, _ := strings.Cut(buf.String(), "\n")
		if !strings.Contains(line, "ack failed, retrying") || !strings.Contains(line, tc.want) {
			t.Errorf("Level %v: first line %q, want the failure at %s", tc.level, line, tc.want)
		}
	}
}

// f that stops because ctx ended has not failed: Do returns at once, with
// no failure line (a normal shutdown logs nothing at Error) and no Failed.
func TestDoEndsQuietlyOnTheContextsOwnError(t *testing.T) {
	var buf bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	failed := 0
	calls := 0
	err := Op{
		Policy: Policy{Initial: time.Hour, Max: time.Hour},
		Log:    slog.New(slog.NewTextHandler(&buf, nil)),
		What:   "ack",
		Failed: func(error) { failed++ },
	}.Do(ctx, func(ctx context.Context) error {
		calls++
		cancel()
		return fmt.Errorf("ack: %w", ctx.Err())
	})
	if !errors.Is(err, context.Canceled) || calls != 1 || failed != 0 || buf.Len() != 0 {
		t.Fatalf("err %v, %d calls, %d failed, log %q; want context.Canceled, 1, 0 and no log", err, calls, failed, buf.String())
	}
}
