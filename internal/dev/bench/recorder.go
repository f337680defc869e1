package bench

import (
	"sync"
	"time"
)

// PhaseStats is what a receiver saw of one phase's messages.
type PhaseStats struct {
	Count uint64     `json:"count"`
	First time.Time  `json:"first"` // arrival of the first message
	Last  time.Time  `json:"last"`  // arrival of the last message so far
	Hist  *Histogram `json:"-"`
	// HistSparse carries Hist across the sink's stats line.
	HistSparse [][2]uint64 `json:"hist"`
	Bad        uint64      `json:"bad"` // messages that were not bench payloads
}

// Recorder keeps per-phase arrival counts and publish->arrival latency.
// Safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex
	phases [256]*PhaseStats
	bad    uint64
}

// Observe records one arrived payload at time now.
func (r *Recorder) Observe(payload []byte, now time.Time) {
	p, err := ParsePayload(payload)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.bad++
		return
	}
	s := r.phases[p.Phase]
	if s == nil {
		s = &PhaseStats{Hist: new(Histogram), First: now}
		r.phases[p.Phase] = s
	}
	s.Count++
	s.Last = now
	s.Hist.Record(now.Sub(time.Unix(0, p.Publish)))
}

// Stats returns a copy of phase's stats (zero Count when none arrived).
func (r *Recorder) Stats(phase uint8) PhaseStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := PhaseStats{Hist: new(Histogram), Bad: r.bad}
	if s := r.phases[phase]; s != nil {
		out.Count, out.First, out.Last = s.Count, s.First, s.Last
		*out.Hist = *s.Hist
	}
	return out
}
