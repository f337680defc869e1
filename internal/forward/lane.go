package forward

import (
	"context"
	"sync/atomic"
	"time"
)

// laneKey names a lane: a topic's partition, as the reader computes it from
// the record's key before producing it.
type laneKey struct {
	topic     string
	partition int32 // -1: partition not known yet, or no key
}

// laneState is where a lane is in the state machine of doc.go.
type laneState int

const (
	laneOpen      laneState = iota
	laneStalled             // half the window, no progress: skip its records
	laneFailed              // a record failed: settle, back off, rewind
	laneIsolating           // one suspect record alone in flight
)

// lane is what the scheduler knows of one partition. Its plain fields are
// guarded by scheduler.mu; failing and round are read and written without
// it (by promises and by partitionFailing).
type lane struct {
	key          laneKey
	state        laneState
	inflight     int
	bytes        int
	lastProgress time.Time
	skippedFrom  uint64 // lowest sequence skipped while parked; 0 for none
	retryAt      time.Time
	tries        int  // failed rounds in a row, for the backoff
	roundFailed  bool // settled saw a failure since the lane last resumed
	probation    bool // taken back by reclaimIdle, no ack since

	// failing is set by the promise of a failed record, before the result
	// reaches the ack loop, or earlier by partitionFailing. franz-go has
	// just failed every record buffered for the partition, on whichever
	// path (a batch Kafka rejected, a fatal producer-ID error, repeated
	// load errors, a broker too old, a cancelled head-of-line record, a
	// load error failing records inside Produce); a record produced for it
	// from now on could be written ahead of the ones that will be sent
	// again. The promise is the earliest place franz-go tells us, whatever
	// the path, so the reader checks this flag before each produce (and,
	// after a record Produce did not queue, waits for the promises first:
	// queueWatch).
	failing atomic.Bool

	// round is the context of the records produced since the lane last
	// resumed from a failure. partitionFailing, or else the promise of the
	// first failed record, cancels it. A record of ours that franz-go
	// buffered between failing the partition and that promise carries the
	// cancelled context, so franz-go fails it before sending it (its batch0
	// check, sink.go) instead of writing it ahead of the records we will
	// send again. On a path franz-go gives no hint for, it can lose that
	// race if franz-go sent it before the promise ran; settled counts such
	// a record in edgebridge_forward_reordered_total. Only records never
	// sent, or whose last answer was an error, fail this way: franz-go does
	// not cancel what may be on the broker, so this costs no duplicate.
	round atomic.Pointer[round]
}

type round struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newRound() *round {
	ctx, cancel := context.WithCancel(context.Background())
	return &round{ctx: ctx, cancel: cancel}
}

func (l *lane) skip(seq uint64) { lowest(&l.skippedFrom, seq) }

// lowest lowers *from to seq, 0 meaning none yet: the first record a rewind
// must read again.
func lowest(from *uint64, seq uint64) {
	if *from == 0 || seq < *from {
		*from = seq
	}
}

// probationShare: a lane whose records were taken back by reclaimIdle may
// hold 1/probationShare of its usual limit until Kafka acknowledges one of
// its records, so that partitions which stay dead hold little of the window
// each.
const probationShare = 8
