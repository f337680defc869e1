package forward

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/retry"
)

// maxSettle bounds one Ack call; more waiting results go into the next one.
const maxSettle = 4096

// ackLoop settles the produce results: it acks the delivered records in
// batches, dead-letters the rejected ones and frees their window. It returns
// once closed is closed (the client is closed, so every promise has run or
// will run) and nothing is in flight.
func (p *Producer) ackLoop(ctx context.Context, closed <-chan struct{}) {
	batch := make([]*flight, 0, maxSettle)
	seqs := make([]uint64, 0, maxSettle)
	stopping := false
	for {
		if stopping && p.inFlight() == 0 {
			return
		}
		select {
		case f := <-p.results:
			batch = append(batch, f)
		case <-closed:
			closed, stopping = nil, true
			continue
		}
	drain:
		for len(batch) < maxSettle {
			select {
			case f := <-p.results:
				batch = append(batch, f)
			default:
				break drain
			}
		}
		p.settle(ctx, batch, seqs[:0], stopping)
		clear(batch)
		batch = batch[:0]
	}
}

type deadLetter struct {
	f      *flight
	reason string
	done   bool
}

// settle makes the outcome of a batch of results durable in the Source, then
// updates the window and the lanes. Records leave the in-flight set only
// after the Source acked or dead-lettered them, so a rewind never reads one
// that is already settled but not yet deleted.
func (p *Producer) settle(ctx context.Context, batch []*flight, seqs []uint64, stopping bool) {
	var dls []deadLetter
	for _, f := range batch {
		if f.err == nil {
			seqs = append(seqs, f.seq)
			continue
		}
		switch cls, reason := classify(f.err); {
		case cls == permanentTopic, cls == permanentRecord && f.isolated:
			dls = append(dls, deadLetter{f: f, reason: reason})
		}
	}
	acked := len(seqs) == 0 || p.retry(ctx, "ack", func() error { return p.src.Ack(ctx, seqs) })
	for i := range dls {
		d := &dls[i]
		d.done = p.retry(ctx, "dead_letter", func() error {
			err := p.src.DeadLetter(ctx, d.f.seq, d.reason)
			if errors.Is(err, buffer.ErrNotFound) {
				return nil // dropped by the buffer meanwhile (drop_oldest, max_age)
			}
			return err
		})
	}

	now := time.Now()
	// Kafka refusing this client as a whole (no IDEMPOTENT_WRITE or
	// WRITE ACL, so no producer ID) fails every record before any produce
	// request: no produce answer would ever say Kafka is down. Told after
	// p.mu is released (kafkaState.mu is never held with it).
	var refused error
	defer func() {
		if refused != nil {
			p.kst.set(false, -1, refused)
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	resume := false
	failed := false // a lane or topic now waits for a time the reader must know
	di := 0
	for _, f := range batch {
		delete(p.inflight, f.seq)
		if p.rereading && (f.err == nil && acked || di < len(dls) && dls[di].f == f && dls[di].done) {
			p.gone[f.seq] = struct{}{}
		}
		p.nRecs--
		p.nBytes -= f.size
		l := f.lane
		l.inflight--
		l.bytes -= f.size
		l.lastProgress = now
		t := f.topic
		t.inflight--
		switch {
		case f.err == nil && acked:
			if t.phase == topicProbing {
				t.probeOK = true
				resume = true
			}
			p.m.records.Inc()
			p.m.latency.Observe(now.Sub(f.appended).Seconds())
			l.tries = 0
			l.probation = false
			delete(p.suspects, f.seq)
			if l.state == laneFailed && l.skippedFrom > 0 && f.seq > l.skippedFrom {
				// Produced before we learnt that an earlier record of
				// this partition failed: it overtook the resend.
				p.m.reordered.Inc()
			}
		case f.err == nil:
			p.leftover++ // delivered, but the ack did not make it before shutdown
		case di < len(dls) && dls[di].f == f:
			d := dls[di]
			di++
			if !d.done {
				p.leftover++
				break
			}
			p.m.failed.WithLabelValues(d.reason).Inc()
			delete(p.suspects, f.seq)
			if f.isolated {
				// The culprit is found; the others were failed with it.
				for seq, sl := range p.suspects {
					if sl == l {
						delete(p.suspects, seq)
					}
				}
			}
			p.logDeadLetter(f, d.reason, now)
		case stopping:
			p.leftover++
		default:
			if errors.Is(f.err, kerr.ClusterAuthorizationFailed) || errors.Is(f.err, kerr.TransactionalIDAuthorizationFailed) {
				refused = f.err
				p.refusedPID.Store(true)
			}
			if cls, reason := classify(f.err); cls == parkTopic {
				t.skip(f.seq)
				p.parkTopic(t, reason, f.err, now)
			}
			p.fail(f, now)
			failed = true
		}
		resume = resume || (l.state != laneOpen && p.resumable(l, now))
	}
	p.m.inFlight.Set(float64(p.nRecs))
	p.waiting.Store(int64(p.nRecs + p.parked))
	p.m.inFlightB.Set(float64(p.nBytes))
	p.poke()
	// A Read that began before a lane failed waits without its retry
	// time: interrupt it so that the reader looks again.
	if (resume || failed) && p.readCancel != nil {
		p.readCancel()
	}
}

// fail parks the lane of a record Kafka failed so that it is sent again, in
// order, from the buffer; p.mu is held.
func (p *Producer) fail(f *flight, now time.Time) {
	cls, reason := classify(f.err)
	// Cancelled with its round (an earlier record failed, or reclaimIdle):
	// not written, it only waits for the records failed before it.
	collateral := errors.Is(f.err, context.Canceled)
	p.m.retries.Inc()
	lanes := []*lane{f.lane}
	if f.lane.key.partition < 0 && f.rec.Partition >= 0 {
		// Produced before the partition count was known: the partition's
		// own lane must stop as well.
		lanes = append(lanes, p.lane(laneKey{topic: f.lane.key.topic, partition: f.rec.Partition}))
	}
	for _, l := range lanes {
		if !l.roundFailed {
			l.roundFailed = true
			retryAt := now
			if cls == retriable && !collateral {
				l.tries++
				retryAt = now.Add(p.bo.Delay(l.tries))
				p.log.Warn("kafka failed records, resending them from the buffer",
					"topic", l.key.topic, "partition", l.key.partition, "reason", reason,
					"retry_in", retryAt.Sub(now).Round(time.Millisecond), "err", f.err)
			}
			p.setState(l, laneFailed)
			l.retryAt = retryAt
		}
		l.skip(f.seq)
	}
	if cls == permanentRecord {
		p.suspects[f.seq] = f.lane
	}
}

// logDeadLetter logs dead letters at most once a minute per topic and
// reason; the counter has every one. p.mu is held.
func (p *Producer) logDeadLetter(f *flight, reason string, now time.Time) {
	k := f.rec.Topic + "\x00" + reason
	if last, ok := p.dlLogged[k]; ok && now.Sub(last) < time.Minute {
		return
	}
	p.dlLogged[k] = now
	p.log.Warn("kafka rejected a record for good, moved it to dead letters",
		"topic", f.rec.Topic, "seq", f.seq, "reason", reason, "err", f.err)
}

// retry runs op until it succeeds or ctx ends, with backoff; it logs the
// first failure and the recovery, not every try.
func (p *Producer) retry(ctx context.Context, what string, op func() error) bool {
	for n := 1; ; n++ {
		err := op()
		if err == nil {
			if n > 1 {
				p.log.Info("buffer operation recovered", "op", what, "tries", n)
			}
			return true
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return false
		}
		if n == 1 {
			p.log.Error("buffer operation failed, retrying", "op", what, "err", err)
		}
		if !retry.Sleep(ctx, p.bo.Delay(n)) {
			return false
		}
	}
}
