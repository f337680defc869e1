package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram counts latencies in log-linear buckets: 16 sub-buckets per
// power of two of microseconds, so any quantile is within ~6% of the true
// value. It is a plain value (no lock); owners synchronise.
type Histogram struct {
	Counts [64 * subBuckets]uint64 `json:"-"`
}

const subBits = 4
const subBuckets = 1 << subBits

func bucketOf(us uint64) int {
	if us < subBuckets {
		return int(us)
	}
	exp := bits.Len64(us) - 1 - subBits // us >> exp is in [16, 32)
	return (exp+1)*subBuckets + int(us>>uint(exp)) - subBuckets
}

// lowerBound is the smallest value in bucket i, in microseconds.
func lowerBound(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	exp := i/subBuckets - 1
	return uint64(i%subBuckets+subBuckets) << uint(exp)
}

// Record adds one latency; negative values count as zero.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.Counts[bucketOf(uint64(us))]++
}

// Total is the number of recorded values.
func (h *Histogram) Total() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Add adds o's counts to h.
func (h *Histogram) Add(o *Histogram) {
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
}

// Quantile returns the value below which a fraction q of the recorded
// values lie (midpoint of its bucket), or -1 with nothing recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	total := h.Total()
	if total == 0 {
		return -1
	}
	rank := uint64(math.Ceil(q * float64(total)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			lo, hi := lowerBound(i), lowerBound(i+1)
			return time.Duration((lo+hi)/2) * time.Microsecond
		}
	}
	return -1
}

// Sparse is h as (bucket, count) pairs, for the sink's stats line.
func (h *Histogram) Sparse() [][2]uint64 {
	var out [][2]uint64
	for i, c := range h.Counts {
		if c != 0 {
			out = append(out, [2]uint64{uint64(i), c})
		}
	}
	return out
}

// FromSparse rebuilds a histogram from Sparse's pairs; pairs out of range
// are ignored.
func FromSparse(pairs [][2]uint64) *Histogram {
	h := new(Histogram)
	for _, p := range pairs {
		if p[0] < uint64(len(h.Counts)) {
			h.Counts[p[0]] += p[1]
		}
	}
	return h
}
