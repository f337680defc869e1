// Package retry is the one place edgebridge decides how it waits before
// trying again: after a failed connection, a refused produce, a failed disk
// commit. Every component retries through it, so the fleet-wide behaviour
// after an outage (thousands of nodes cut off by the same fault) is set here:
// capped exponential backoff in which half of every wait is jitter, so nodes
// that failed together do not come back in lockstep.
package retry

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Policy is a capped exponential backoff with jitter.
type Policy struct {
	// Initial is the wait before the second try, Max its cap.
	Initial, Max time.Duration
}

// Delay is the wait before try n+1 after n failures (n >= 1; less counts as
// 1). It is drawn uniformly from [d/2, d] with d = min(Max, Initial*2^(n-1)):
// the lower half keeps a node's pace predictable, the upper half spreads a
// fleet. A zero or negative Max caps at Initial.
func (p Policy) Delay(n int) time.Duration {
	d := p.Cap(n)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(d-half+1)
}

// Cap is the longest Delay(n) can be: min(Max, Initial*2^(n-1)).
func (p Policy) Cap(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	limit := p.Max
	if limit <= 0 {
		limit = p.Initial
	}
	d := p.Initial
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	if d > limit || d <= 0 {
		d = limit
	}
	return max(d, 0)
}

// Sleep waits d or until ctx is done, and reports whether d elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Op is one operation retried until it succeeds.
type Op struct {
	Policy Policy
	// Log receives one line at the first failure (at Level) and one at
	// Info when the operation succeeds after failing, never a line per
	// attempt. Nil: no log.
	Log *slog.Logger
	// Level is the level of the first-failure line; nil means
	// slog.LevelWarn. A slog.Level is a Leveler: Level: slog.LevelError.
	Level slog.Leveler
	// What names the operation in the log ("connect", "sink append").
	What string
	// Attrs are added to both log lines.
	Attrs []any
	// Permanent, when set, says which errors no retry can fix: Do returns
	// them at once.
	Permanent func(error) bool
	// Failed, when set, is called after every failed attempt (a metric).
	Failed func(error)
}

// Do calls f until it returns nil, it returns a permanent error, or ctx is
// done, waiting Policy.Delay between tries. f is always called once, even
// when ctx is done already: only the retries stop with ctx. An error that is
// ctx's own (f stopped because ctx ended) ends Do at once, neither logged
// nor passed to Failed. It returns nil on success, else the last error f
// returned.
func (o Op) Do(ctx context.Context, f func(context.Context) error) error {
	var (
		first time.Time
		last  error
	)
	for n := 1; ; n++ {
		if n > 1 && ctx.Err() != nil {
			return last
		}
		err := f(ctx)
		if err == nil {
			if n > 1 && o.Log != nil {
				o.Log.Info(o.What+" recovered", append([]any{"attempts", n, "after", time.Since(first).Round(time.Millisecond)}, o.Attrs...)...)
			}
			return nil
		}
		last = err
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return err // f gave up with ctx: no failure of its own to log or count
		}
		if o.Failed != nil {
			o.Failed(err)
		}
		if o.Permanent != nil && o.Permanent(err) {
			return err
		}
		d := o.Policy.Delay(n)
		if n == 1 {
			first = time.Now()
			if o.Log != nil {
				level := slog.LevelWarn
				if o.Level != nil {
					level = o.Level.Level()
				}
				o.Log.Log(context.Background(), level, o.What+" failed, retrying", append([]any{"err", err, "retry_in", d.Round(time.Millisecond)}, o.Attrs...)...)
			}
		}
		if !Sleep(ctx, d) {
			return err
		}
	}
}
