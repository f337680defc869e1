package forward

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgebridge/edgebridge/internal/retry"
)

// scheduler is the lane state machine of doc.go ("Scheduler"): it decides,
// for each record the reader read, whether it is produced now, skipped (left
// in the buffer for a rewind) or waits for room, and it books what each
// settled result changes. It holds the window (records read and not
// settled), the lanes and the parked topics.
//
// It does no I/O and reads no clock: every method that depends on time takes
// now, so the table of doc.go is tested without Kafka (scheduler_test.go).
// It logs its state changes and keeps the gauges of the window, the lanes
// and the topics.
//
// Callers: the reader (admit, topicParked, parkTopicMetadata, unpark, room,
// startRead, endRead), the ack loop (settled), any goroutine (inFlight,
// leftover, poke), and franz-go from under its partition locks
// (partitionFailing, which takes no lock).
//
// Lock order: mu is a leaf. Nothing that takes another lock of ours is
// called while it is held (kafkaState.mu, partitioner.mu are never held
// with it), and nothing of franz-go's: the reader produces, and the ack loop
// tells kafkaState, after the lock is released.
type scheduler struct {
	// Set by newScheduler; read-only once the reader runs.
	maxRecs, maxBytes         int // the window
	laneMaxRecs, laneMaxBytes int // what one lane may hold: half the window
	stallAfter                time.Duration
	bo                        retry.Policy // a failed lane's wait; a topic's metadata error
	topicBo                   retry.Policy // a parked topic's wait
	log                       *slog.Logger
	m                         *metrics

	wake    chan struct{} // settled -> reader: look again (poke)
	waiting atomic.Int64  // nRecs + parked, for kafkaState, which cannot take mu
	laneIdx sync.Map      // laneKey -> *lane, for partitionFailing, which cannot take mu
	left    atomic.Int64  // records failed by the shutdown, left in the buffer

	mu sync.Mutex // guards the fields below, and the plain fields of each lane and topicState

	inflight     map[uint64]*flight
	nRecs        int
	nBytes       int
	lanes        map[laneKey]*lane
	suspects     map[uint64]*lane // records whose batch Kafka rejected; sent again alone
	parked       int              // lanes not open
	topics       map[string]*topicState
	parkedTopics int                // topics parked or probing
	readCancel   context.CancelFunc // interrupts the reader's Read; nil when not reading
	// While the reader reads again below its high water mark, settled
	// notes here what it acked or dead-lettered since that Read began: the
	// Read may have returned it while it was still in flight.
	rereading bool
	gone      map[uint64]struct{}
}

func newScheduler(cfg Config, bo, topicBo retry.Policy, log *slog.Logger, m *metrics) *scheduler {
	return &scheduler{
		maxRecs:      cfg.MaxBufferedRecords,
		maxBytes:     cfg.MaxBufferedBytes,
		laneMaxRecs:  max(1, cfg.MaxBufferedRecords/2),
		laneMaxBytes: max(1, cfg.MaxBufferedBytes/2),
		stallAfter:   cfg.MetadataMinAge,
		bo:           bo,
		topicBo:      topicBo,
		log:          log,
		m:            m,
		wake:         make(chan struct{}, 1),
		inflight:     make(map[uint64]*flight, cfg.MaxBufferedRecords),
		lanes:        make(map[laneKey]*lane),
		topics:       make(map[string]*topicState),
		suspects:     make(map[uint64]*lane),
		gone:         make(map[uint64]struct{}),
	}
}

type action int

const (
	actProduce action = iota
	actSkip
	actWait
)

// admit tells what the reader does with f now, k being f's lane, and makes
// f take its place in the window when the answer is actProduce: f then
// carries its lane, its topic and its lane's round as its context. With
// actWait, until is when to look again without a wake (zero: only on a
// wake). Each decision is a method of its own, in this order.
func (s *scheduler) admit(f *flight, k laneKey, now time.Time) (act action, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen(f.seq) {
		return actSkip, time.Time{}
	}
	t := s.topic(f.rec.Topic)
	if s.holdTopic(t, f.seq) {
		return actSkip, time.Time{}
	}
	l := s.lane(k)
	if !s.laneOpen(l, now) {
		l.skip(f.seq)
		return actSkip, time.Time{}
	}
	_, suspect := s.suspects[f.seq]
	if suspect {
		if !s.laneEmptyForSuspect(l, f.seq, now) {
			return actSkip, time.Time{}
		}
	} else if act, until, ok := s.laneRoom(l, f, now); !ok {
		return act, until
	}
	if !s.fits(f.size) {
		return actWait, s.reclaimIdle(now)
	}
	if suspect {
		s.setState(l, laneIsolating)
		f.isolated = true
	}
	s.take(f, l, t, now)
	return actProduce, time.Time{}
}

// seen: a record read again after a rewind that is still in flight, or was
// settled since the Read began, is not produced again.
func (s *scheduler) seen(seq uint64) bool {
	if _, ok := s.inflight[seq]; ok {
		return true
	}
	_, ok := s.gone[seq]
	return ok
}

// laneOpen tells whether l may produce. An open lane whose failing flag is
// set becomes failed here (settled sets its retry time when the failure
// arrives).
func (s *scheduler) laneOpen(l *lane, now time.Time) bool {
	if l.state == laneOpen && l.failing.Load() {
		s.setState(l, laneFailed)
		l.retryAt = now
	}
	return l.state == laneOpen
}

// laneEmptyForSuspect: a record whose batch Kafka rejected is sent again
// alone. While its lane has records in flight the lane waits (failed, retry
// now) for them to settle, and the record is skipped.
func (s *scheduler) laneEmptyForSuspect(l *lane, seq uint64, now time.Time) bool {
	if l.inflight == 0 {
		return true
	}
	s.setState(l, laneFailed)
	l.retryAt = now
	l.skip(seq)
	return false
}

// laneRoom checks f against its lane's own limit. It comes before the
// window's: a record of a stalled lane is skipped even when the window is
// full, or the reader would wait for room that only the stalled lanes hold.
// A lane at its limit waits for progress until stallAfter has passed
// without any, then stalls: its records are skipped, the others flow.
func (s *scheduler) laneRoom(l *lane, f *flight, now time.Time) (act action, until time.Time, ok bool) {
	maxRecs, maxBytes := s.laneLimit(l)
	if l.inflight < maxRecs && (l.inflight == 0 || l.bytes+f.size <= maxBytes) {
		return actProduce, time.Time{}, true
	}
	stallAt := l.lastProgress.Add(s.stallAfter)
	if now.Before(stallAt) {
		return actWait, stallAt, false
	}
	s.setState(l, laneStalled)
	l.skip(f.seq)
	s.log.Warn("partition stalled, forwarding the others around it",
		"topic", l.key.topic, "partition", l.key.partition, "in_flight", l.inflight,
		"no_progress_for", now.Sub(l.lastProgress).Round(time.Millisecond))
	return actSkip, time.Time{}, false
}

// fits tells whether a record of size bytes fits in the window. A record
// larger than the whole window fits alone.
func (s *scheduler) fits(size int) bool {
	return s.nRecs < s.maxRecs && (s.nRecs == 0 || s.nBytes+size <= s.maxBytes)
}

// take puts f in the window, on lane l and topic t.
func (s *scheduler) take(f *flight, l *lane, t *topicState, now time.Time) {
	if l.inflight == 0 {
		l.lastProgress = now
	}
	l.inflight++
	l.bytes += f.size
	f.lane = l
	t.inflight++
	f.topic = t
	f.round = l.round.Load()
	f.rec.Context = f.round.ctx
	s.inflight[f.seq] = f
	s.nRecs++
	s.nBytes += f.size
	s.windowChanged()
}

// windowChanged keeps the gauges of the window and what kafkaState reads.
func (s *scheduler) windowChanged() {
	s.m.inFlight.Set(float64(s.nRecs))
	s.waiting.Store(int64(s.nRecs + s.parked))
	s.m.inFlightB.Set(float64(s.nBytes))
}

// topicParked skips the record seq of topic if the topic is parked, as
// admit would, before the reader asks Kafka about the topic for it.
func (s *scheduler) topicParked(topic string, seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen(seq) {
		return false
	}
	t := s.topic(topic)
	if t.phase != topicParked {
		return false
	}
	t.skip(seq)
	return true
}

// parkTopicMetadata parks topic, whose metadata Kafka answered with err
// while the reader wanted the partitions of the record seq, and skips that
// record.
func (s *scheduler) parkTopicMetadata(topic string, seq uint64, reason string, err error, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topic(topic)
	t.skip(seq)
	s.parkTopic(t, reason, err, now)
}

// laneLimit is what l may hold before it waits for progress or stalls.
func (s *scheduler) laneLimit(l *lane) (recs, bytes int) {
	if l.probation {
		return max(1, s.laneMaxRecs/probationShare), max(1, s.laneMaxBytes/probationShare)
	}
	return s.laneMaxRecs, s.laneMaxBytes
}

// reclaimIdle keeps what the lanes without progress hold together to half
// of the window: when they hold more, the largest are failed (their round's
// context is cancelled, so franz-go fails the records it has not sent, or
// whose last answer was a retriable error), backed off and put on
// probation. It returns when to look again: the earliest time a lane will
// have made no progress for stallAfter (zero: on a wake only). s.mu is held.
func (s *scheduler) reclaimIdle(now time.Time) (next time.Time) {
	var idle []*lane
	recs, bytes := 0, 0
	for _, l := range s.lanes {
		if l.inflight == 0 || l.roundFailed || (l.state != laneOpen && l.state != laneStalled) {
			continue
		}
		if at := l.lastProgress.Add(s.stallAfter); now.Before(at) {
			next = earliest(next, at)
			continue
		}
		idle = append(idle, l)
		recs += l.inflight
		bytes += l.bytes
	}
	slices.SortFunc(idle, func(a, b *lane) int { return cmp.Compare(b.inflight, a.inflight) })
	for _, l := range idle {
		if recs <= s.maxRecs/2 && bytes <= s.maxBytes/2 {
			break
		}
		recs -= l.inflight
		bytes -= l.bytes
		if !l.probation {
			s.log.Warn("partitions without progress hold half the window, taking back the records of one",
				"topic", l.key.topic, "partition", l.key.partition, "in_flight", l.inflight,
				"no_progress_for", now.Sub(l.lastProgress).Round(time.Millisecond))
		}
		l.round.Load().cancel()
		l.roundFailed = true // its records come back cancelled; fail keeps this retry time
		l.tries++
		l.retryAt = now.Add(s.bo.Delay(l.tries))
		l.probation = true
		s.setState(l, laneFailed)
	}
	return next
}

// earliest returns the earlier of next and at, zero next meaning none yet.
func earliest(next, at time.Time) time.Time {
	if next.IsZero() || at.Before(next) {
		return at
	}
	return next
}

// lane returns the lane k, made open on first use; s.mu is held.
func (s *scheduler) lane(k laneKey) *lane {
	l := s.lanes[k]
	if l == nil {
		l = &lane{key: k}
		l.round.Store(newRound())
		s.lanes[k] = l
		s.laneIdx.Store(k, l)
	}
	return l
}

// partitionFailing is kgoLogger's hint that franz-go may be failing the
// records it holds for a partition (all partitions when partition is -1
// and topic ""), given from inside franz-go before it fails them: the lane
// is marked failing and its round cancelled, as the first failed promise
// would, but before the reader can produce more for it. A wrong hint costs
// a resend, never a record.
//
// It runs with franz-go's partition lock held and takes no lock: s.mu is
// held across a whole settled batch (up to maxSettle results), and
// franz-go's producing must not wait for that. (Nothing that holds s.mu
// calls into franz-go, so taking it would not deadlock; the reader
// produces, and franz-go calls our partitioner, without it.)
func (s *scheduler) partitionFailing(topic string, partition int32) {
	mark := func(l *lane) {
		l.failing.Store(true)
		l.round.Load().cancel()
	}
	if topic == "" {
		s.laneIdx.Range(func(_, v any) bool { mark(v.(*lane)); return true })
		return
	}
	for _, k := range []laneKey{{topic, partition}, {topic, -1}} {
		if v, ok := s.laneIdx.Load(k); ok {
			mark(v.(*lane))
		}
	}
}

// setState moves l to st and keeps the parked gauge; s.mu is held.
func (s *scheduler) setState(l *lane, st laneState) {
	if (l.state == laneOpen) != (st == laneOpen) {
		if st == laneOpen {
			s.parked--
		} else {
			s.parked++
		}
		s.m.parked.Set(float64(s.parked))
		s.waiting.Store(int64(s.nRecs + s.parked))
	}
	l.state = st
}

// unpark reopens the lanes and topics that may resume. from is the lowest
// sequence one of them skipped (zero: none), where the reader rewinds its
// cursor to; next is the earliest time a failed lane's or a parked topic's
// wait ends (zero if none).
func (s *scheduler) unpark(now time.Time) (from uint64, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parkedTopics > 0 {
		from, next = s.unparkTopics(now)
	}
	if s.parked == 0 {
		return from, next
	}
	for _, l := range s.lanes {
		if !s.resumable(l, now) {
			if l.state == laneFailed && l.inflight == 0 {
				next = earliest(next, l.retryAt)
			}
			continue
		}
		if l.state == laneStalled {
			s.log.Info("partition resumed", "topic", l.key.topic, "partition", l.key.partition)
		}
		if l.skippedFrom > 0 {
			lowest(&from, l.skippedFrom)
		}
		l.skippedFrom = 0
		l.roundFailed = false
		l.failing.Store(false)
		if l.state != laneStalled {
			// Nothing of the old round is in flight. A stalled lane
			// keeps its round: cancelling it would have franz-go fail
			// the partition's records, those produced from now on too.
			l.round.Swap(newRound()).cancel()
		}
		s.setState(l, laneOpen)
	}
	return from, next
}

// resumable reports whether a parked lane may produce again; s.mu is held.
func (s *scheduler) resumable(l *lane, now time.Time) bool {
	switch l.state {
	case laneStalled:
		// Not while a failure is on its way to settle: that makes the
		// lane failed, and its round is cancelled already.
		maxRecs, maxBytes := s.laneLimit(l)
		return l.inflight <= maxRecs/2 && l.bytes <= maxBytes/2 && !l.failing.Load()
	case laneFailed:
		return l.inflight == 0 && !now.Before(l.retryAt)
	case laneIsolating:
		return l.inflight == 0
	}
	return false
}

// room is what the reader's next Read may ask for within window records
// and windowBytes bytes (the window, or one read's worth while Kafka has
// not answered a produce), at most batch records. When nothing fits, it
// takes back what lanes without progress hold (reclaimIdle) and returns
// when to look again.
func (s *scheduler) room(window, windowBytes, batch int, now time.Time) (recs, bytes int, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	recs = min(batch, window-s.nRecs)
	// A read returns at least one record, whatever its size.
	bytes = windowBytes - s.nBytes
	if recs <= 0 || bytes <= 0 {
		return 0, 0, s.reclaimIdle(now)
	}
	return recs, bytes, time.Time{}
}

// startRead tells that the reader begins a Read, which cancel interrupts
// when a lane fails or may resume (a Read that began before waits without
// the lane's retry time). rereading: the Read starts below what the reader
// read before. It returns false, and the Read must not begin, when a wake
// is pending: a lane may be ready to resume, so the reader looks again
// before blocking. Checking the wake and setting cancel under s.mu is what
// makes settled either wake the reader or interrupt its Read.
func (s *scheduler) startRead(rereading bool, cancel context.CancelFunc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.wake:
		return false
	default:
	}
	s.readCancel = cancel
	s.rereading = rereading
	clear(s.gone)
	return true
}

// endRead tells that the reader's Read returned.
func (s *scheduler) endRead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readCancel = nil
}

// settled books the outcome of a batch of results that the ack loop made
// durable: acked tells whether the Source acked the batch's delivered
// records, dls are its dead letters in batch order with whether each is
// stored. Records leave the window only here, after the Source acked or
// dead-lettered them, so a rewind never reads one that is already settled
// but not yet deleted. stopping: the client is closed, so failures are the
// shutdown's, not Kafka's.
func (s *scheduler) settled(batch []*flight, acked bool, dls []deadLetter, stopping bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resume := false
	failed := false // a lane or topic now waits for a time the reader must know
	kafkaAcked := false
	di := 0
	for _, f := range batch {
		kafkaAcked = kafkaAcked || f.err == nil
		delete(s.inflight, f.seq)
		if s.rereading && (f.err == nil && acked || di < len(dls) && dls[di].f == f && dls[di].done) {
			s.gone[f.seq] = struct{}{}
		}
		s.nRecs--
		s.nBytes -= f.size
		l := f.lane
		l.inflight--
		l.bytes -= f.size
		l.lastProgress = now
		t := f.topic
		t.inflight--
		switch {
		case f.err == nil && acked:
			resume = s.delivered(f, now) || resume
		case f.err == nil:
			s.left.Add(1) // delivered, but the ack did not make it before shutdown
		case di < len(dls) && dls[di].f == f:
			s.deadLettered(f, dls[di])
			di++
		case stopping:
			s.left.Add(1)
		default:
			if cls, reason := classify(f.err); cls == parkTopic {
				t.skip(f.seq)
				s.parkTopic(t, reason, f.err, now)
			}
			s.fail(f, now)
			failed = true
		}
		resume = resume || (l.state != laneOpen && s.resumable(l, now))
	}
	if kafkaAcked {
		s.m.lastSuccess.Set(float64(now.UnixMilli()) / 1e3)
	}
	s.windowChanged()
	s.poke()
	// A Read that began before a lane failed waits without its retry
	// time: interrupt it so that the reader looks again.
	if (resume || failed) && s.readCancel != nil {
		s.readCancel()
	}
}

// delivered books f, which Kafka acknowledged and the Source acked. It
// tells whether f was the probe of a parked topic, which may now resume.
func (s *scheduler) delivered(f *flight, now time.Time) (resume bool) {
	l, t := f.lane, f.topic
	if t.phase == topicProbing {
		t.probeOK = true
		resume = true
	}
	s.m.records.Inc()
	s.m.latency.Observe(now.Sub(f.appended).Seconds())
	l.tries = 0
	l.probation = false
	delete(s.suspects, f.seq)
	if l.state == laneFailed && l.skippedFrom > 0 && f.seq > l.skippedFrom {
		// Produced before we learnt that an earlier record of this
		// partition failed: it overtook the resend.
		s.m.reordered.Inc()
	}
	return resume
}

// deadLettered books f, which went to dead letters (or stays in the buffer
// when d is not done).
func (s *scheduler) deadLettered(f *flight, d deadLetter) {
	if !d.done {
		s.left.Add(1)
		return
	}
	s.m.failed.WithLabelValues(d.reason).Inc()
	delete(s.suspects, f.seq)
	if f.isolated {
		// The culprit is found; the others were failed with it.
		for seq, sl := range s.suspects {
			if sl == f.lane {
				delete(s.suspects, seq)
			}
		}
	}
}

// fail parks the lane of a record Kafka failed so that it is sent again, in
// order, from the buffer; s.mu is held.
func (s *scheduler) fail(f *flight, now time.Time) {
	cls, reason := classify(f.err)
	// Cancelled with its round (an earlier record failed, or reclaimIdle):
	// not written, it only waits for the records failed before it.
	collateral := errors.Is(f.err, context.Canceled)
	s.m.retries.Inc()
	lanes := []*lane{f.lane}
	if f.lane.key.partition < 0 && f.rec.Partition >= 0 {
		// Produced before the partition count was known: the partition's
		// own lane must stop as well.
		lanes = append(lanes, s.lane(laneKey{topic: f.lane.key.topic, partition: f.rec.Partition}))
	}
	for _, l := range lanes {
		if !l.roundFailed {
			l.roundFailed = true
			retryAt := now
			if cls == retriable && !collateral {
				l.tries++
				retryAt = now.Add(s.bo.Delay(l.tries))
				s.log.Warn("kafka failed records, resending them from the buffer",
					"topic", l.key.topic, "partition", l.key.partition, "reason", reason,
					"retry_in", retryAt.Sub(now).Round(time.Millisecond), "err", f.err)
			}
			s.setState(l, laneFailed)
			l.retryAt = retryAt
		}
		l.skip(f.seq)
	}
	if cls == permanentRecord {
		s.suspects[f.seq] = f.lane
	}
}

// poke wakes the reader if it waits (Producer.waitWake).
func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// inFlight is the number of records in the window.
func (s *scheduler) inFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nRecs
}

// leftover is the number of records the shutdown left in the buffer.
func (s *scheduler) leftover() int { return int(s.left.Load()) }
