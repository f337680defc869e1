package forward

import (
	"testing"
	"time"
)

// kafka.backoff paces franz-go's request retries, the resends of failed
// partitions, the buffer's retries and the partition look-ups: one jittered,
// capped, exponential policy, the same for all of them.
func TestBackoff(t *testing.T) {
	cfg := validConfig()
	cfg.Backoff.Initial, cfg.Backoff.Max = 100*time.Millisecond, 2*time.Second
	p, _ := newUnstarted(t, cfg)
	if p.sched.bo != p.bo {
		t.Fatalf("the scheduler backs off with %+v, the producer with %+v", p.sched.bo, p.bo)
	}
	b := p.bo
	tests := []struct {
		try    int
		lo, hi time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{6, time.Second, 2 * time.Second}, // capped
		{1000, time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		seen := make(map[time.Duration]bool)
		for range 200 {
			d := b.Delay(tt.try)
			if d < tt.lo || d > tt.hi {
				t.Fatalf("delay(%d) = %v, want within [%v, %v]", tt.try, d, tt.lo, tt.hi)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("delay(%d) took only %d values in 200 draws: not jittered", tt.try, len(seen))
		}
	}
}

// The waits of a parked topic in production: long, because only an
// operator ends them, and capped, so that the topic resumes within minutes
// of the fix.
func TestParkedTopicBackoffDefaults(t *testing.T) {
	p, _ := newUnstarted(t, validConfig())
	if p.sched.topicBo.Initial != 5*time.Second || p.sched.topicBo.Max != 5*time.Minute {
		t.Errorf("parked topic backoff %v to %v, want 5s to 5m", p.sched.topicBo.Initial, p.sched.topicBo.Max)
	}
	for n := 1; n < 20; n++ {
		if d := p.sched.topicBo.Delay(n); d > 5*time.Minute {
			t.Fatalf("try %d waits %v, over the 5m cap", n, d)
		}
	}
}
