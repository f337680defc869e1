package forward

import (
	"context"
	"errors"
	"log/slog"
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

// deadLetter is a record Kafka rejected for good, and whether the Source
// stored it as a dead letter.
type deadLetter struct {
	f      *flight
	reason string
	done   bool
}

// settle settles a batch of results in two steps: it makes their outcome
// durable in the Source (acks, dead letters), holding no lock, then hands
// that outcome to the scheduler's bookkeeping (scheduler.settled), which
// frees the window and moves the lanes and topics.
func (p *Producer) settle(ctx context.Context, batch []*flight, seqs []uint64, stopping bool) {
	acked, dls := p.makeDurable(ctx, batch, seqs)
	now := time.Now()
	// Kafka refusing this client as a whole (no IDEMPOTENT_WRITE or
	// WRITE ACL, so no producer ID) fails every record before any produce
	// request: no produce answer would ever say Kafka is down.
	refused := p.refusal(batch, stopping)
	if refused != nil {
		p.refusedPID.Store(true)
	}
	p.sched.settled(batch, acked, dls, stopping, now)
	if refused != nil {
		p.kst.set(false, -1, refused)
	}
	for _, d := range dls {
		if d.done {
			p.logDeadLetter(d.f, d.reason, now)
		}
	}
}

// makeDurable acks the delivered records of batch (seqs is room for their
// sequences) and dead-letters those Kafka rejected for good, retrying each
// until it succeeds or ctx ends. acked tells whether the ack went through;
// dls lists the dead letters in batch order.
func (p *Producer) makeDurable(ctx context.Context, batch []*flight, seqs []uint64) (acked bool, dls []deadLetter) {
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
	acked = len(seqs) == 0 || p.ackRetry.Do(ctx, func(ctx context.Context) error { return p.src.Ack(ctx, seqs) }) == nil
	for i := range dls {
		d := &dls[i]
		d.done = p.deadLetterRetry.Do(ctx, func(ctx context.Context) error {
			err := p.src.DeadLetter(ctx, d.f.seq, d.reason)
			if errors.Is(err, buffer.ErrNotFound) {
				return nil // dropped by the buffer meanwhile (drop_oldest, max_age)
			}
			return err
		}) == nil
	}
	return acked, dls
}

// refusal returns the error of a record of batch that Kafka refused a
// producer ID, nil if none. During shutdown failures are the closed
// client's.
func (p *Producer) refusal(batch []*flight, stopping bool) (refused error) {
	if stopping {
		return nil
	}
	for _, f := range batch {
		if errors.Is(f.err, kerr.ClusterAuthorizationFailed) || errors.Is(f.err, kerr.TransactionalIDAuthorizationFailed) {
			refused = f.err
		}
	}
	return refused
}

// logDeadLetter logs dead letters at most once a minute per topic and
// reason; the counter has every one. Only the ack loop calls it.
func (p *Producer) logDeadLetter(f *flight, reason string, now time.Time) {
	k := f.rec.Topic + "\x00" + reason
	if last, ok := p.dlLogged[k]; ok && now.Sub(last) < time.Minute {
		return
	}
	p.dlLogged[k] = now
	p.log.Warn("kafka rejected a record for good, moved it to dead letters",
		"topic", f.rec.Topic, "seq", f.seq, "reason", reason, "err", f.err)
}

// bufferRetry retries a Source operation (what: "ack", "dead_letter") until
// it succeeds or ctx ends, with backoff; it logs the first failure, at
// Error, and the recovery, not every try. Built once, in New.
func (p *Producer) bufferRetry(what string) retry.Op {
	return retry.Op{Policy: p.bo, Log: p.log, Level: slog.LevelError, What: "buffer operation", Attrs: []any{"op", what}}
}
