package forward

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
	"github.com/edgebridge/edgebridge/internal/retry"
)

// The scheduler's table (doc.go, "Scheduler") row by row, without Kafka:
// each case starts a scheduler in the row's state, gives it the row's event
// at a time of the test's choosing, and checks the next state and what
// comes with it.

const (
	schedTopic    = "t"
	schedRecSize  = 100
	schedWindow   = 8 // records; a lane's share is 4
	schedStall    = time.Second
	schedBackoff  = 100 * time.Millisecond // the jittered wait is in [50ms, 100ms]
	schedTopicBo  = 4 * time.Second        // in [2s, 4s]
	schedMaxBytes = schedWindow * schedRecSize
)

type schedFixture struct {
	t   *testing.T
	s   *scheduler
	m   *metrics
	log bytes.Buffer
	now time.Time
	seq uint64
}

func newSchedFixture(t *testing.T) *schedFixture {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	x := &schedFixture{t: t, m: m, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := Config{MaxBufferedRecords: schedWindow, MaxBufferedBytes: schedMaxBytes, MetadataMinAge: schedStall}
	x.s = newScheduler(cfg, retry.Policy{Initial: schedBackoff, Max: schedBackoff},
		retry.Policy{Initial: schedTopicBo, Max: schedTopicBo}, slog.New(slog.NewTextHandler(&x.log, nil)), m)
	return x
}

// rec is the next record read, for partition part of topic (its lane).
func (x *schedFixture) rec(topic string, part int32) *flight {
	x.seq++
	return &flight{seq: x.seq, size: schedRecSize, rec: kgo.Record{Topic: topic, Partition: part}}
}

// again is f read again after a rewind: the same sequence, a new flight.
func (x *schedFixture) again(f *flight) *flight {
	return &flight{seq: f.seq, size: f.size, rec: kgo.Record{Topic: f.rec.Topic, Partition: f.rec.Partition}}
}

func (x *schedFixture) admit(f *flight) (action, time.Time) {
	return x.s.admit(f, laneKey{topic: f.rec.Topic, partition: f.rec.Partition}, x.now)
}

// produce admits n new records of the lane and wants each produced.
func (x *schedFixture) produce(topic string, part int32, n int) []*flight {
	x.t.Helper()
	var fs []*flight
	for range n {
		f := x.rec(topic, part)
		x.wantAdmit(f, actProduce)
		fs = append(fs, f)
	}
	return fs
}

func (x *schedFixture) wantAdmit(f *flight, want action) time.Time {
	x.t.Helper()
	act, until := x.admit(f)
	if act != want {
		x.t.Fatalf("admit seq %d = %v, want %v", f.seq, act, want)
	}
	return until
}

// reading starts a Read that cancel interrupts, after the wakes pending.
func (x *schedFixture) reading(cancel func()) {
	x.t.Helper()
	if !x.s.startRead(true, cancel) && !x.s.startRead(true, cancel) {
		x.t.Fatal("startRead with no wake pending returned false")
	}
}

// ack settles fs as acknowledged by Kafka and acked by the Source.
func (x *schedFixture) ack(fs ...*flight) { x.s.settled(fs, true, nil, false, x.now) }

// fail settles fs as failed by Kafka with err.
func (x *schedFixture) fail(err error, fs ...*flight) {
	for _, f := range fs {
		f.err = err
	}
	x.s.settled(fs, true, nil, false, x.now)
}

func (x *schedFixture) lane(part int32) *lane {
	x.t.Helper()
	l := x.s.lanes[laneKey{topic: schedTopic, partition: part}]
	if l == nil {
		x.t.Fatalf("no lane for partition %d", part)
	}
	return l
}

func (x *schedFixture) wantLane(part int32, want laneState) *lane {
	x.t.Helper()
	l := x.lane(part)
	if l.state != want {
		x.t.Fatalf("lane %d is %v, want %v", part, l.state, want)
	}
	if got, want := testkit.Value(x.t, x.m.parked), float64(x.s.parked); got != want {
		x.t.Fatalf("parked partitions gauge %v, scheduler counts %v", got, want)
	}
	return l
}

func (x *schedFixture) wantTopic(want topicPhase) *topicState {
	x.t.Helper()
	tp := x.s.topics[schedTopic]
	if tp == nil || tp.phase != want {
		x.t.Fatalf("topic is %+v, want phase %v", tp, want)
	}
	return tp
}

func (x *schedFixture) wantLog(msg string) {
	x.t.Helper()
	if !strings.Contains(x.log.String(), msg) {
		x.t.Fatalf("no log line %q in:\n%s", msg, x.log.String())
	}
}

// wantUnpark unparks and wants the cursor rewound to below from.
func (x *schedFixture) wantUnpark(from uint64) time.Time {
	x.t.Helper()
	got, next := x.s.unpark(x.now)
	if got != from {
		x.t.Fatalf("unpark rewinds to before seq %d, want %d", got, from)
	}
	return next
}

// parkedOnMetadata checks that a topic whose metadata Kafka answered with
// kerr is parked for reason, skipped from its first record, counted in the
// gauge, and tried again after bo.
func parkedOnMetadata(t *testing.T, reason string, kerrErr *kerr.Error, bo time.Duration) {
	x := newSchedFixture(t)
	f := x.rec(schedTopic, 0)
	x.s.parkTopicMetadata(schedTopic, f.seq, reason, kerrErr, x.now)
	tp := x.wantTopic(topicParked)
	within(t, "retry time", tp.retryAt, x.now.Add(bo/2), x.now.Add(bo))
	if g := testkit.Value(t, x.m.topics.WithLabelValues(reason)); tp.skippedFrom != f.seq || g != 1 {
		t.Fatalf("skipped from %d, %s gauge %v", tp.skippedFrom, reason, g)
	}
}

func within(t *testing.T, what string, got, lo, hi time.Time) {
	t.Helper()
	if got.Before(lo) || got.After(hi) {
		t.Fatalf("%s = %v, want within [%v, %v]", what, got, lo, hi)
	}
}

// stalledLane returns a fixture whose lane 0 holds its share and stalled on
// the record returned.
func stalledLane(t *testing.T) (*schedFixture, []*flight, *flight) {
	x := newSchedFixture(t)
	fs := x.produce(schedTopic, 0, schedWindow/2)
	x.now = x.now.Add(schedStall)
	f := x.rec(schedTopic, 0)
	x.wantAdmit(f, actSkip)
	x.wantLane(0, laneStalled)
	return x, fs, f
}

// isolatingLane returns a fixture whose lane 0 sends the record whose batch
// Kafka rejected alone; the other record rejected with it is the second.
func isolatingLane(t *testing.T) (*schedFixture, *flight, *flight) {
	x := newSchedFixture(t)
	fs := x.produce(schedTopic, 0, 2)
	x.fail(kerr.MessageTooLarge, fs...)
	x.wantUnpark(fs[0].seq)
	f := x.again(fs[0])
	x.wantAdmit(f, actProduce)
	x.wantLane(0, laneIsolating)
	if !f.isolated {
		x.t.Fatal("the suspect is not isolated")
	}
	return x, f, fs[1]
}

// parkedTopic returns a fixture whose topic Kafka refused, skipping the record
// returned.
func parkedTopic(t *testing.T) (*schedFixture, *flight) {
	x := newSchedFixture(t)
	f := x.produce(schedTopic, 0, 1)[0]
	x.fail(kerr.TopicAuthorizationFailed, f)
	x.wantTopic(topicParked)
	return x, f
}

// probingTopic returns a fixture whose parked topic has its probe in flight.
func probingTopic(t *testing.T) (*schedFixture, *flight) {
	x, f := parkedTopic(t)
	x.now = x.now.Add(schedTopicBo)
	x.wantUnpark(f.seq)
	x.now = x.now.Add(schedBackoff) // the lane's own failure is over too
	x.wantUnpark(0)
	probe := x.again(f)
	x.wantAdmit(probe, actProduce)
	return x, probe
}

var schedulerRows = []struct {
	row  string
	test func(t *testing.T)
}{
	{"W1", func(t *testing.T) {
		x := newSchedFixture(t)
		fs := x.produce(schedTopic, 0, 2)
		x.wantAdmit(x.again(fs[0]), actSkip) // still in flight
		x.reading(func() {})
		x.ack(fs[1])
		x.wantAdmit(x.again(fs[1]), actSkip) // settled since the Read began
		if got := x.s.inFlight(); got != 1 {
			t.Fatalf("%d in flight, want 1", got)
		}
	}},
	{"L1", func(t *testing.T) {
		x := newSchedFixture(t)
		f := x.produce(schedTopic, 0, 1)[0]
		l := x.wantLane(0, laneOpen)
		if f.lane != l || f.rec.Context != l.round.Load().ctx || l.lastProgress != x.now {
			t.Fatal("a produced record does not carry its lane and round")
		}
		if got := testkit.Value(t, x.m.inFlight); got != 1 || x.s.waiting.Load() != 1 {
			t.Fatalf("in-flight gauge %v, waiting %d; want 1", got, x.s.waiting.Load())
		}
	}},
	{"L2", func(t *testing.T) {
		x := newSchedFixture(t)
		x.produce(schedTopic, 0, schedWindow/2)
		start := x.now
		x.now = x.now.Add(schedStall / 2)
		if until := x.wantAdmit(x.rec(schedTopic, 0), actWait); !until.Equal(start.Add(schedStall)) {
			t.Fatalf("waits until %v, want %v", until, start.Add(schedStall))
		}
		x.wantLane(0, laneOpen)
	}},
	{"L3", func(t *testing.T) {
		x := newSchedFixture(t)
		x.produce(schedTopic, 0, schedWindow/2)
		x.produce(schedTopic, 1, schedWindow/2) // the window is full too
		x.now = x.now.Add(schedStall)
		f := x.rec(schedTopic, 0)
		x.wantAdmit(f, actSkip)
		if l := x.wantLane(0, laneStalled); l.skippedFrom != f.seq {
			t.Fatalf("skipped from %d, want %d", l.skippedFrom, f.seq)
		}
		x.wantLog("partition stalled")
	}},
	{"L4", func(t *testing.T) {
		x := newSchedFixture(t)
		x.produce(schedTopic, 0, schedWindow/2)
		x.produce(schedTopic, 1, schedWindow/2)
		if until := x.wantAdmit(x.rec(schedTopic, 2), actWait); !until.Equal(x.now.Add(schedStall)) {
			t.Fatalf("waits until %v, want the lanes' stall time %v", until, x.now.Add(schedStall))
		}
		x.wantLane(2, laneOpen)
	}},
	{"L5", func(t *testing.T) {
		x := newSchedFixture(t)
		x.produce(schedTopic, 0, 1)
		x.s.partitionFailing(schedTopic, 0)
		x.wantAdmit(x.rec(schedTopic, 0), actSkip)
		if l := x.wantLane(0, laneFailed); !l.retryAt.Equal(x.now) {
			t.Fatalf("retry at %v, want now", l.retryAt)
		}
	}},
	{"L6", func(t *testing.T) {
		x := newSchedFixture(t)
		f := x.produce(schedTopic, 0, 1)[0]
		x.fail(kerr.MessageTooLarge, f)
		x.wantUnpark(f.seq)
		x.produce(schedTopic, 0, 1) // in flight when the suspect comes
		x.wantAdmit(x.again(f), actSkip)
		if l := x.wantLane(0, laneFailed); !l.retryAt.Equal(x.now) || l.skippedFrom != f.seq {
			t.Fatalf("retry at %v skipped from %d, want now and %d", l.retryAt, l.skippedFrom, f.seq)
		}
	}},
	{"L7", func(t *testing.T) {
		isolatingLane(t)
	}},
	{"L8", func(t *testing.T) {
		x, _, _ := stalledLane(t)
		f := x.rec(schedTopic, 0)
		x.wantAdmit(f, actSkip)
		x.wantLane(0, laneStalled)
	}},
	{"L9", func(t *testing.T) {
		x := newSchedFixture(t)
		f := x.produce(schedTopic, 0, 1)[0]
		g := x.produce(schedTopic, 1, 1)[0]
		x.s.partitionFailing(schedTopic, 0)
		if !x.lane(0).failing.Load() || f.rec.Context.Err() == nil {
			t.Fatal("the hint did not mark lane 0 failing and cancel its round")
		}
		if x.lane(1).failing.Load() || g.rec.Context.Err() != nil {
			t.Fatal("the hint for partition 0 marked lane 1")
		}
		x.wantLane(0, laneOpen) // until the reader or the result comes
		x.s.partitionFailing("", -1)
		if !x.lane(1).failing.Load() || g.rec.Context.Err() == nil {
			t.Fatal("the hint for every partition did not mark lane 1")
		}
	}},
	{"L10", func(t *testing.T) {
		x := newSchedFixture(t)
		f := x.produce(schedTopic, 0, 1)[0]
		x.fail(kerr.NotLeaderForPartition, f)
		l := x.wantLane(0, laneFailed)
		within(t, "retry time", l.retryAt, x.now.Add(schedBackoff/2), x.now.Add(schedBackoff))
		if l.tries != 1 || testkit.Value(t, x.m.retries) != 1 || l.skippedFrom != f.seq {
			t.Fatalf("tries %d, retries %v, skipped from %d", l.tries, testkit.Value(t, x.m.retries), l.skippedFrom)
		}
		x.wantLog("kafka failed records, resending them from the buffer")
	}},
	{"L11", func(t *testing.T) {
		x := newSchedFixture(t)
		f := x.produce(schedTopic, 0, 1)[0]
		x.fail(context.Canceled, f)
		if l := x.wantLane(0, laneFailed); !l.retryAt.Equal(x.now) || l.tries != 0 {
			t.Fatalf("retry at %v after %d tries, want now and none", l.retryAt, l.tries)
		}
	}},
	{"L12", func(t *testing.T) {
		x := newSchedFixture(t)
		f := x.produce(schedTopic, 0, 1)[0]
		x.fail(kerr.MessageTooLarge, f)
		if l := x.wantLane(0, laneFailed); !l.retryAt.Equal(x.now) {
			t.Fatalf("retry at %v, want now", l.retryAt)
		}
		if x.s.suspects[f.seq] != x.lane(0) {
			t.Fatal("the record of a rejected batch is not a suspect")
		}
	}},
	{"L13", func(t *testing.T) {
		x, fs, f := stalledLane(t)
		x.fail(kerr.NotLeaderForPartition, fs[0])
		l := x.wantLane(0, laneFailed)
		within(t, "retry time", l.retryAt, x.now.Add(schedBackoff/2), x.now.Add(schedBackoff))
		if l.tries != 1 || l.skippedFrom != fs[0].seq {
			t.Fatalf("tries %d, skipped from %d; want 1 and %d (before the stall's %d)", l.tries, l.skippedFrom, fs[0].seq, f.seq)
		}
		x.wantLog("kafka failed records, resending them from the buffer")
		// A batch rejected: retry now, the record a suspect.
		x, fs, _ = stalledLane(t)
		x.fail(kerr.MessageTooLarge, fs[0])
		if l := x.wantLane(0, laneFailed); !l.retryAt.Equal(x.now) || x.s.suspects[fs[0].seq] != l {
			t.Fatalf("retry at %v, suspect %v; want now and a suspect", l.retryAt, x.s.suspects[fs[0].seq] != nil)
		}
	}},
	{"L14", func(t *testing.T) {
		x, f, _ := isolatingLane(t)
		x.fail(kerr.NotLeaderForPartition, f)
		l := x.wantLane(0, laneFailed)
		within(t, "retry time", l.retryAt, x.now.Add(schedBackoff/2), x.now.Add(schedBackoff))
		if l.skippedFrom != f.seq || x.s.suspects[f.seq] != l {
			t.Fatalf("skipped from %d, still suspect %v; want %d and true", l.skippedFrom, x.s.suspects[f.seq] == l, f.seq)
		}
		// After the backoff it is sent alone again.
		x.now = x.now.Add(schedBackoff)
		x.wantUnpark(f.seq)
		g := x.again(f)
		x.wantAdmit(g, actProduce)
		if x.wantLane(0, laneIsolating); !g.isolated {
			t.Fatal("the suspect is not isolated again")
		}
	}},
	{"L15", func(t *testing.T) {
		x := newSchedFixture(t)
		fs := x.produce(schedTopic, 0, 2)
		x.fail(kerr.NotLeaderForPartition, fs[1])
		retryAt := x.lane(0).retryAt
		x.now = x.now.Add(schedBackoff / 4)
		x.fail(kerr.NotLeaderForPartition, fs[0])
		if l := x.wantLane(0, laneFailed); !l.retryAt.Equal(retryAt) || l.tries != 1 || l.skippedFrom != fs[0].seq {
			t.Fatalf("retry at %v after %d tries from %d, want %v, 1, %d", l.retryAt, l.tries, l.skippedFrom, retryAt, fs[0].seq)
		}
	}},
	{"L16", func(t *testing.T) {
		x := newSchedFixture(t)
		fs := x.produce(schedTopic, 0, 2)
		x.fail(kerr.NotLeaderForPartition, fs[0])
		x.ack(fs[1])
		x.wantLane(0, laneFailed)
		if got := testkit.Value(t, x.m.reordered); got != 1 {
			t.Fatalf("reordered %v, want 1", got)
		}
	}},
	{"L17", func(t *testing.T) {
		x := newSchedFixture(t)
		f := x.produce(schedTopic, 0, 1)[0]
		x.fail(kerr.NotLeaderForPartition, f)
		x.now = x.now.Add(schedBackoff)
		x.wantUnpark(f.seq)
		x.lane(0).probation = true
		g := x.again(f)
		x.wantAdmit(g, actProduce)
		x.ack(g)
		if l := x.wantLane(0, laneOpen); l.tries != 0 || l.probation {
			t.Fatalf("tries %d, probation %v after an ack", l.tries, l.probation)
		}
		if got := testkit.Value(t, x.m.records); got != 1 {
			t.Fatalf("records %v, want 1", got)
		}
	}},
	{"L18", func(t *testing.T) {
		x, f, other := isolatingLane(t)
		f.err = kerr.MessageTooLarge
		x.s.settled([]*flight{f}, true, []deadLetter{{f: f, reason: "message_too_large", done: true}}, false, x.now)
		x.wantLane(0, laneIsolating)
		if _, ok := x.s.suspects[other.seq]; ok || len(x.s.suspects) != 0 {
			t.Fatal("the lane's other suspects stay after the culprit went to dead letters")
		}
		if got := testkit.Value(t, x.m.failed.WithLabelValues("message_too_large")); got != 1 {
			t.Fatalf("failed{message_too_large} %v, want 1", got)
		}
	}},
	{"L19", func(t *testing.T) {
		x := newSchedFixture(t)
		a := x.produce(schedTopic, 0, schedWindow/2)
		x.produce(schedTopic, 1, schedWindow/2-1)
		x.produce(schedTopic, 2, 1)
		x.now = x.now.Add(schedStall)
		if recs, _, _ := x.s.room(schedWindow, schedMaxBytes, schedWindow, x.now); recs != 0 {
			t.Fatalf("room for %d records, want a full window", recs)
		}
		// Idle lanes hold all 8: the largest, lane 0, is taken back.
		l := x.wantLane(0, laneFailed)
		if !l.probation || a[0].rec.Context.Err() == nil {
			t.Fatal("the lane taken back is not on probation, or its round not cancelled")
		}
		within(t, "retry time", l.retryAt, x.now.Add(schedBackoff/2), x.now.Add(schedBackoff))
		x.wantLane(1, laneOpen)
		x.wantLane(2, laneOpen)
		x.wantLog("partitions without progress hold half the window")
		// Its records come back cancelled: the retry time stays.
		retryAt := l.retryAt
		x.fail(context.Canceled, a...)
		if !x.lane(0).retryAt.Equal(retryAt) {
			t.Fatal("the cancelled records moved the retry time")
		}
		if maxRecs, _ := x.s.laneLimit(l); maxRecs != 1 {
			t.Fatalf("a lane on probation may hold %d records, want 1", maxRecs)
		}
	}},
	{"L20", func(t *testing.T) {
		x, fs, f := stalledLane(t)
		round := x.lane(0).round.Load()
		x.ack(fs[:2]...)
		x.wantUnpark(f.seq)
		if l := x.wantLane(0, laneOpen); l.round.Load() != round || round.ctx.Err() != nil {
			t.Fatal("a stalled lane that resumes lost its round")
		}
		x.wantLog("partition resumed")
	}},
	{"L21", func(t *testing.T) {
		x, fs, _ := stalledLane(t)
		x.ack(fs[0])
		x.wantUnpark(0)
		x.wantLane(0, laneStalled)
	}},
	{"L22", func(t *testing.T) {
		x := newSchedFixture(t)
		f := x.produce(schedTopic, 0, 1)[0]
		x.fail(kerr.NotLeaderForPartition, f)
		old := x.lane(0).round.Load()
		x.now = x.now.Add(schedBackoff)
		x.wantUnpark(f.seq)
		if l := x.wantLane(0, laneOpen); l.round.Load() == old || old.ctx.Err() == nil || l.failing.Load() {
			t.Fatal("a failed lane resumed without a new round")
		}
	}},
	{"L23", func(t *testing.T) {
		x := newSchedFixture(t)
		fs := x.produce(schedTopic, 0, 2)
		x.fail(kerr.NotLeaderForPartition, fs[0])
		x.now = x.now.Add(schedBackoff)
		if next := x.wantUnpark(0); !next.IsZero() {
			t.Fatalf("a lane with records in flight is looked at again at %v", next)
		}
		x.wantLane(0, laneFailed)
		x.now = x.now.Add(-schedBackoff)
		x.fail(context.Canceled, fs[1])
		if next := x.wantUnpark(0); !next.Equal(x.lane(0).retryAt) {
			t.Fatalf("next look at %v, want the retry time %v", next, x.lane(0).retryAt)
		}
		x.wantLane(0, laneFailed)
	}},
	{"L24", func(t *testing.T) {
		x, f, other := isolatingLane(t)
		x.wantAdmit(x.again(other), actSkip) // L8
		x.ack(f)                             // sent alone, Kafka took it: the culprit is another one
		x.wantUnpark(other.seq)
		x.wantLane(0, laneOpen)
		x.wantAdmit(x.again(other), actProduce)
		x.wantLane(0, laneIsolating)
	}},
	{"T1", func(t *testing.T) {
		x, f := parkedTopic(t)
		tp := x.wantTopic(topicParked)
		within(t, "retry time", tp.retryAt, x.now.Add(schedTopicBo/2), x.now.Add(schedTopicBo))
		if tp.reason != "topic_authorization_failed" || tp.skippedFrom != f.seq {
			t.Fatalf("reason %q skipped from %d", tp.reason, tp.skippedFrom)
		}
		if got := testkit.Value(t, x.m.topics.WithLabelValues("topic_authorization_failed")); got != 1 {
			t.Fatalf("parked topics gauge %v, want 1", got)
		}
		x.wantLog("kafka refuses a topic")
	}},
	{"T2", func(t *testing.T) { parkedOnMetadata(t, "metadata", kerr.LeaderNotAvailable, schedBackoff) }},
	{"T3", func(t *testing.T) {
		parkedOnMetadata(t, "topic_authorization_failed", kerr.TopicAuthorizationFailed, schedTopicBo)
	}},
	{"T4", func(t *testing.T) {
		x, f := parkedTopic(t)
		g := x.rec(schedTopic, 1)
		x.wantAdmit(g, actSkip)
		h := x.rec(schedTopic, 2)
		if !x.s.topicParked(schedTopic, h.seq) {
			t.Fatal("topicParked is false for a parked topic")
		}
		if tp := x.wantTopic(topicParked); tp.skippedFrom != f.seq {
			t.Fatalf("skipped from %d, want %d", tp.skippedFrom, f.seq)
		}
	}},
	{"T5", func(t *testing.T) {
		x := newSchedFixture(t)
		f := x.produce(schedTopic, 0, 1)[0]
		g := x.produce(schedTopic, 1, 1)[0] // in flight when the topic is parked
		x.fail(kerr.TopicAuthorizationFailed, f)
		x.fail(kerr.UnknownTopicOrPartition, g)
		if tp := x.wantTopic(topicParked); tp.reason != "unknown_topic" || tp.tries != 1 {
			t.Fatalf("reason %q after %d tries, want unknown_topic after 1", tp.reason, tp.tries)
		}
		for reason, want := range map[string]float64{"unknown_topic": 1, "topic_authorization_failed": 0} {
			if got := testkit.Value(t, x.m.topics.WithLabelValues(reason)); got != want {
				t.Fatalf("parked topics{%s} = %v, want %v", reason, got, want)
			}
		}
		x.wantLog("kafka refuses a topic for another reason now")
	}},
	{"T6", func(t *testing.T) {
		x, f := parkedTopic(t)
		x.now = x.now.Add(schedTopicBo)
		x.wantUnpark(f.seq)
		x.wantTopic(topicProbing)
	}},
	{"T7", func(t *testing.T) {
		probingTopic(t)
	}},
	{"T8", func(t *testing.T) {
		x, _ := probingTopic(t)
		x.wantAdmit(x.rec(schedTopic, 1), actSkip)
		x.wantTopic(topicProbing)
	}},
	{"T9", func(t *testing.T) {
		x, probe := probingTopic(t)
		interrupted := false
		x.reading(func() { interrupted = true })
		x.ack(probe)
		if tp := x.wantTopic(topicProbing); !tp.probeOK || !interrupted {
			t.Fatalf("probe ok %v, read interrupted %v", tp.probeOK, interrupted)
		}
	}},
	{"T10", func(t *testing.T) {
		x, probe := probingTopic(t)
		skipped := x.rec(schedTopic, 1)
		x.wantAdmit(skipped, actSkip)
		x.ack(probe)
		x.wantUnpark(skipped.seq)
		x.wantTopic(topicOpen)
		if got := testkit.Value(t, x.m.topics.WithLabelValues("topic_authorization_failed")); got != 0 || x.s.parkedTopics != 0 {
			t.Fatalf("parked topics gauge %v, count %d after the topic resumed", got, x.s.parkedTopics)
		}
		x.wantLog("kafka takes the topic again")
	}},
	{"T11", func(t *testing.T) {
		x, probe := probingTopic(t)
		x.fail(kerr.TopicAuthorizationFailed, probe)
		if tp := x.wantTopic(topicParked); tp.tries != 2 {
			t.Fatalf("tries %d after a refused probe, want 2", tp.tries)
		}
	}},
}

func TestSchedulerTable(t *testing.T) {
	for _, r := range schedulerRows {
		t.Run(r.row, r.test)
	}
}

// Every row of doc.go's table has its case above, and every case a row.
func TestSchedulerTableMatchesDoc(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var inDoc []string
	for _, m := range regexp.MustCompile(`(?m)^//\t([WLT][0-9]+) `).FindAllSubmatch(doc, -1) {
		inDoc = append(inDoc, string(m[1]))
	}
	var tested []string
	for _, r := range schedulerRows {
		tested = append(tested, r.row)
	}
	if len(inDoc) == 0 || !slices.Equal(inDoc, tested) {
		t.Fatalf("doc.go's rows %v, tested rows %v", inDoc, tested)
	}
}

// BenchmarkScheduler is the scheduler's cost per record on the hot path:
// admitted, then settled as acked in batches of a read.
func BenchmarkScheduler(b *testing.B) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{MaxBufferedRecords: 2000, MaxBufferedBytes: 4 << 20, MetadataMinAge: time.Second}
	s := newScheduler(cfg, retry.Policy{Initial: time.Millisecond, Max: time.Second},
		retry.Policy{Initial: time.Second, Max: time.Minute}, slog.New(slog.DiscardHandler), m)
	now := time.Now()
	batch := make([]*flight, 0, 500)
	b.ReportAllocs()
	for i := range b.N {
		f := &flight{seq: uint64(i + 1), size: schedRecSize, rec: kgo.Record{Topic: schedTopic}}
		if act, _ := s.admit(f, laneKey{topic: schedTopic, partition: int32(i % 8)}, now); act != actProduce {
			b.Fatalf("admit = %v", act)
		}
		if batch = append(batch, f); len(batch) == cap(batch) {
			s.settled(batch, true, nil, false, now)
			batch = batch[:0]
		}
	}
}

// edgebridge_forward_last_success_timestamp_seconds is the time of the
// last batch in which Kafka acknowledged a record; a failed batch leaves it.
func TestLastSuccessTimestamp(t *testing.T) {
	x := newSchedFixture(t)
	fs := x.produce(schedTopic, 0, 2)
	if got := testkit.Value(t, x.m.lastSuccess); got != 0 {
		t.Fatalf("last success %v before any ack, want 0", got)
	}
	x.ack(fs[0])
	want := float64(x.now.UnixMilli()) / 1e3
	if got := testkit.Value(t, x.m.lastSuccess); got != want {
		t.Fatalf("last success %v after an ack at %v", got, want)
	}
	x.now = x.now.Add(time.Minute)
	x.fail(kerr.NotLeaderForPartition, fs[1])
	if got := testkit.Value(t, x.m.lastSuccess); got != want {
		t.Fatalf("last success %v after a failure, want it kept at %v", got, want)
	}
}
