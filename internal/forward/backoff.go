package forward

import (
	"math/rand/v2"
	"time"
)

// backoff is a capped exponential backoff with jitter: the wait before try n
// (n >= 1) is uniformly drawn from [d/2, d] with d = min(max, initial*2^(n-1)).
// Half the wait is jitter so that many nodes cut off by the same outage do
// not come back in lockstep.
type backoff struct {
	initial, max time.Duration
}

func (b backoff) delay(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	d := b.initial
	for i := 1; i < n && d < b.max; i++ {
		d *= 2
	}
	if d > b.max || d <= 0 {
		d = b.max
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(d-half+1)
}
