package buffer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/edgebridge/edgebridge/internal/retry"
)

// opKind is what a request asks the writer to do.
type opKind int

const (
	opAppend opKind = iota
	opAck
	opDeadLetter
	opRequeue
	opDropCorrupt
)

// request is one call handed to the writer goroutine. Its answer on done is
// nil once committed, the operation's refusal (ErrNotFound, a failed
// rewrite), errCancelled or ErrClosed; failed writes are retried, never
// answered.
type request struct {
	kind opKind
	done chan error // buffered; written once, by the writer

	// append
	recs       []Record
	values     [][]byte // encoded bodies, sealed by the writer
	bytes      int64
	cancelled  atomic.Bool // the caller gave up waiting for room
	waitedRoom bool        // it waited for room: a cancellation is ErrFull
	dead       []put       // its dead letters, once sequences are assigned

	// requeue: the records committed to the head, set once they are
	requeued []put
	rewrite  func(*Record) error

	// ack, dead letter, requeue, corrupt drop
	seqs   []uint64
	reason string
}

// submit hands r to the writer and waits for its answer. An append whose
// ctx ends while it waits for room is withdrawn (errCancelled) unless the
// writer committed it already; any other request completes anyway.
func (q *Queue) submit(ctx context.Context, r *request) error {
	select {
	case q.reqs <- r:
	case <-q.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
	}
	if r.kind != opAppend {
		// Acks and moves are short; an abandoned one still completes.
		return ctx.Err()
	}
	// Only the writer answers: it either committed the append already or
	// answers the cancellation. Waiting here is bounded by one commit.
	r.cancelled.Store(true)
	select {
	case q.kick <- struct{}{}:
	default:
	}
	if err := <-r.done; err != errCancelled {
		return err
	}
	if r.waitedRoom {
		return fmt.Errorf("%w: %w", ErrFull, ctx.Err())
	}
	return ctx.Err()
}

// errCancelled answers an append whose caller stopped waiting for room.
var errCancelled = errors.New("append cancelled while waiting for room")

// maxBatchBytes bounds one group commit, and so the writer's memory.
const maxBatchBytes = 16 << 20

// writeRetry spaces the attempts after a failed commit or operation.
var writeRetry = retry.Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second}

// run is the writer goroutine: it owns every write transaction.
func (q *Queue) run() {
	defer close(q.done)
	var ageTick <-chan time.Time
	if q.cfg.MaxAge > 0 {
		t := time.NewTicker(min(q.cfg.MaxAge/4, time.Second))
		defer t.Stop()
		ageTick = t.C
	}
	release := time.NewTicker(releaseInterval)
	defer release.Stop()
	var released, commits uint64 // q.reads and q.commits at the last release
	for {
		var timer <-chan time.Time
		if wait, ok := q.nextWake(); ok {
			timer = time.After(wait)
		}
		expire := false
		select {
		case r := <-q.reqs:
			q.enqueue(r)
		case <-q.kick:
		case <-timer:
		case <-ageTick:
			expire = true
		case <-release.C:
			// Reads touch the pages they return; commits touch the path
			// to the pages they change.
			if r := q.reads.Load(); r != released || q.commits != commits {
				released, commits = r, q.commits
				q.releaseResident()
			}
			continue
		case <-q.closing:
			q.failAll()
			return
		}
		q.batch()
		if expire {
			q.expire(time.Now())
		}
		for q.cycle() {
		}
		q.flushDropLog(time.Now(), false)
	}
}

// releaseInterval is how often the writer gives back the mapped pages that
// reads and commits touched.
const releaseInterval = 250 * time.Millisecond

// releaseResident releases the mapped pages of every file (see
// segment.releaseResident). Writer goroutine only.
func (q *Queue) releaseResident() {
	for _, s := range q.segs {
		s.releaseResident()
	}
	q.dead.releaseResident()
}

// nextWake returns how long the writer may sleep when it has work it could
// not do: after a failed commit, or while appends wait for disk space.
func (q *Queue) nextWake() (time.Duration, bool) {
	if !q.retry.at.IsZero() {
		return max(time.Until(q.retry.at), time.Millisecond), true
	}
	if !q.opRetry.at.IsZero() {
		return max(time.Until(q.opRetry.at), time.Millisecond), true
	}
	if len(q.appends) > 0 {
		// Free disk can come back without anything telling us.
		return time.Second, true
	}
	if len(q.dropLog.pending) > 0 {
		return q.dropLog.interval, true
	}
	return 0, false
}

// batch takes the requests that arrived while the last commit ran, up to
// maxBatchBytes of appends: they join the next commit.
func (q *Queue) batch() {
	for batched := q.pendingBytes(); batched < maxBatchBytes; {
		select {
		case r := <-q.reqs:
			q.enqueue(r)
			batched += r.bytes
		default:
			return
		}
	}
}

func (q *Queue) enqueue(r *request) {
	switch r.kind {
	case opAppend:
		q.appends = append(q.appends, r)
	case opAck:
		q.acks = append(q.acks, r)
	default:
		q.ops = append(q.ops, r)
	}
}

func (q *Queue) pendingBytes() int64 {
	var n int64
	for _, r := range q.appends {
		n += r.bytes
	}
	return n
}

func (q *Queue) failAll() {
	for _, list := range [][]*request{q.appends, q.halfDone, q.acks, q.ops} {
		for _, r := range list {
			r.done <- ErrClosed
		}
	}
	q.appends, q.halfDone, q.acks, q.ops = nil, nil, nil, nil
	// Callers that handed a request over are answered; no new one can be
	// handed over because nobody receives from q.reqs any more.
}

// cycle commits what it can of the waiting work and reports whether
// another cycle could make more progress right away.
func (q *Queue) cycle() bool {
	q.dropCancelled()
	now := time.Now()
	if now.Before(q.retry.at) {
		return false
	}
	more, err := q.commitWaiting(now)
	if err != nil {
		q.failed(err, now)
		return false
	}
	return more
}

// dropCancelled answers the waiting appends whose callers gave up.
func (q *Queue) dropCancelled() {
	q.appends = slices.DeleteFunc(q.appends, func(r *request) bool {
		if r.cancelled.Load() {
			r.done <- errCancelled
			return true
		}
		return false
	})
}

// commitWaiting runs one group commit: first the dead letters of calls
// whose records are committed and the waiting operations, then the appends
// admit lets in (after drop_oldest made their room) with the waiting acks.
// An error is a failed write, to retry after a backoff.
func (q *Queue) commitWaiting(now time.Time) (more bool, err error) {
	// Calls whose records are committed come first: their dead letters.
	if err := q.commitDead(); err != nil {
		return false, err
	}
	q.runOps(now)

	admitted, drop := q.admit()
	if drop > 0 {
		if err := q.dropOldest(drop, DropOverflow); err != nil {
			return false, err
		}
	}
	if len(admitted) == 0 && len(q.acks) == 0 {
		q.setBlocked(len(q.appends) > 0)
		return false, nil
	}
	if err := q.commit(admitted); err != nil {
		return false, err
	}
	q.recovered()
	return q.finishCommit(admitted)
}

// finishCommit finishes a commit that succeeded: it rolls and reclaims
// segments before answering, so that callers see the state their operation
// led to, answers the admitted appends and the acks, and commits the
// appends' dead letters. The commit stands even if the maintenance fails.
// It reports whether acks may have made room for appends that had to wait.
func (q *Queue) finishCommit(admitted []*request) (more bool, err error) {
	merr := q.maintain()
	q.appends = q.appends[len(admitted):]
	if merr == nil {
		q.setBlocked(len(q.appends) > 0)
		q.checkHighWater()
	}
	for _, r := range admitted {
		if len(r.dead) == 0 {
			r.done <- nil
		}
	}
	for _, r := range q.acks {
		r.done <- nil
	}
	acked := len(q.acks) > 0
	q.acks = q.acks[:0]
	if err := q.commitDead(); err != nil {
		return false, err
	}
	if merr != nil {
		return false, merr
	}
	return acked && len(q.appends) > 0, nil
}

// backoff is when the writer tries a failed write again.
type backoff struct {
	at time.Time // zero: nothing failed
	n  int       // failures in a row
}

// fail books a failure at now and reports whether it is the first in a row.
func (b *backoff) fail(now time.Time) (first bool) {
	b.n++
	b.at = now.Add(writeRetry.Delay(b.n))
	return b.n == 1
}

// failed records a failed write: the transaction was rolled back, nothing
// of it is visible, and everything waiting is retried after a backoff.
func (q *Queue) failed(err error, now time.Time) {
	q.m.commitErrs.Inc()
	q.retry.fail(now)
	q.mu.Lock()
	first := q.writeErr == nil
	q.writeErr = err
	q.mu.Unlock()
	if first {
		q.log.Error("buffer write failed: appends wait and are retried, committed records are intact", "err", err)
	}
}

func (q *Queue) recovered() {
	q.retry = backoff{}
	q.mu.Lock()
	was := q.writeErr
	q.writeErr = nil
	q.mu.Unlock()
	if was != nil {
		q.log.Info("buffer writes recovered")
	}
}

// runOps carries out the waiting dead-letter moves, requeues and corrupt
// drops, one at a time. One that fails on storage is retried after a
// backoff of its own, and never holds back appends and acks: an operation
// that cannot succeed must not stop every later commit.
func (q *Queue) runOps(now time.Time) {
	if now.Before(q.opRetry.at) {
		return
	}
	for len(q.ops) > 0 {
		r := q.ops[0]
		err := q.runOp(r, now)
		if isStorageErr(err) {
			q.m.commitErrs.Inc()
			if q.opRetry.fail(now) {
				q.log.Error("buffer operation failed: retrying it, appends and acks go on", "err", err)
			}
			return
		}
		r.done <- err
		q.ops = q.ops[1:]
		q.opRetry = backoff{}
	}
}

// runOp carries out a dead-letter move, a requeue or a corrupt drop.
func (q *Queue) runOp(r *request, now time.Time) error {
	switch r.kind {
	case opDeadLetter:
		return q.moveToDead(r.seqs[0], r.reason, now)
	case opRequeue:
		return q.requeue(r, now)
	case opDropCorrupt:
		for s, seqs := range q.bySegment(r.seqs) {
			if err := q.dropCorrupt(s, seqs, nil); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown operation %d", r.kind)
}

// isStorageErr reports whether err came from the disk and the operation
// should be retried, as opposed to an answer for the caller.
func isStorageErr(err error) bool {
	var a *answer
	return err != nil && !errors.Is(err, ErrNotFound) && !errors.As(err, &a)
}

// answer wraps an error that is the operation's answer for its caller,
// not a failed write to retry.
type answer struct{ err error }

func (a *answer) Error() string { return a.err.Error() }

func (a *answer) Unwrap() error { return a.err }
