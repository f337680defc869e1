package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// errCancelled answers an append whose caller stopped waiting for room.
var errCancelled = errors.New("append cancelled while waiting for room")

// dropLog rate-limits the log lines about drops; the counters see each one.
type dropLog struct {
	interval time.Duration
	last     time.Time
	pending  map[string]int
}

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
		// Everyone who arrived while the last commit ran joins this one.
		for batched := q.pendingBytes(); batched < maxBatchBytes; {
			select {
			case r := <-q.reqs:
				q.enqueue(r)
				batched += r.bytes
				continue
			default:
			}
			break
		}
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
	if !q.retryAt.IsZero() {
		return max(time.Until(q.retryAt), time.Millisecond), true
	}
	if !q.opRetryAt.IsZero() {
		return max(time.Until(q.opRetryAt), time.Millisecond), true
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
	q.appends = slices.DeleteFunc(q.appends, func(r *request) bool {
		if r.cancelled.Load() {
			r.done <- errCancelled
			return true
		}
		return false
	})
	now := time.Now()
	if now.Before(q.retryAt) {
		return false
	}
	// Calls whose records are committed come first: their dead letters.
	if err := q.commitDead(); err != nil {
		q.failed(err, now)
		return false
	}
	q.runOps(now)

	admitted, drop := q.admit(now)
	if drop > 0 {
		if err := q.dropOldest(drop, DropOverflow); err != nil {
			q.failed(err, now)
			return false
		}
	}
	if len(admitted) == 0 && len(q.acks) == 0 {
		q.setBlocked(len(q.appends) > 0)
		return false
	}
	if err := q.commit(admitted); err != nil {
		q.failed(err, now)
		return false
	}
	q.recovered()
	// Roll and reclaim before answering, so that callers see the state
	// their operation led to. The commit stands even if this fails.
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
		q.failed(err, now)
		return false
	}
	if merr != nil {
		q.failed(merr, now)
		return false
	}
	// Acks may have made room for appends that had to wait.
	return acked && len(q.appends) > 0
}

// runOps carries out the waiting dead-letter moves, requeues and corrupt
// drops, one at a time. One that fails on storage is retried after a
// backoff of its own, and never holds back appends and acks: an operation
// that cannot succeed must not stop every later commit.
func (q *Queue) runOps(now time.Time) {
	if now.Before(q.opRetryAt) {
		return
	}
	for len(q.ops) > 0 {
		r := q.ops[0]
		err := q.runOp(r, now)
		if isStorageErr(err) {
			q.m.commitErrs.Inc()
			q.opRetries++
			q.opRetryAt = now.Add(writeRetry.Delay(q.opRetries))
			if q.opRetries == 1 {
				q.log.Error("buffer operation failed: retrying it, appends and acks go on", "err", err)
			}
			return
		}
		r.done <- err
		q.ops = q.ops[1:]
		q.opRetryAt, q.opRetries = time.Time{}, 0
	}
}

// admit returns the waiting appends, in order, that may commit now, and
// how many bytes of old records drop_oldest must delete first.
func (q *Queue) admit(now time.Time) (admitted []*request, drop int64) {
	if len(q.appends) == 0 {
		return nil, 0
	}
	q.mu.RLock()
	damaged := q.damaged
	q.mu.RUnlock()
	if damaged != nil {
		// Stop acknowledging: the broker keeps the messages until the
		// restart that quarantines the damaged file.
		for _, r := range q.appends {
			r.waitedRoom = true
		}
		q.setBlocked(true)
		return nil, 0
	}
	if q.cfg.MinFreeDisk > 0 {
		free, err := freeDisk(q.cfg.Dir)
		if err == nil && free < q.cfg.MinFreeDisk {
			q.waitRoom("disk below buffer.min_free_disk", "free_bytes", free, "min_free_disk", q.cfg.MinFreeDisk)
			for _, r := range q.appends {
				r.waitedRoom = true
			}
			return nil, 0
		}
	}
	used, droppable := q.usage()
	room := q.cfg.MaxBytes - used
	n := 0
	for _, r := range q.appends {
		if r.bytes > room {
			if q.cfg.WhenFull != WhenFullDropOldest || r.bytes-room > droppable-drop {
				break
			}
			drop += r.bytes - room
			room = r.bytes
		}
		room -= r.bytes
		n++
	}
	if n < len(q.appends) {
		q.waitRoom("buffer full", "bytes", used, "max_bytes", q.cfg.MaxBytes)
		for _, r := range q.appends[n:] {
			r.waitedRoom = true
		}
	}
	return q.appends[:n], drop
}

// usage returns the logical bytes held and how many of them drop_oldest may
// delete (dead letters are kept: an operator decides about them).
func (q *Queue) usage() (used, droppable int64) {
	for _, s := range q.segs {
		droppable += s.bytes
	}
	return droppable + q.dead.bytes, droppable
}

// waitRoom logs, once per episode, that appends are held back.
func (q *Queue) waitRoom(msg string, args ...any) {
	q.mu.RLock()
	was := q.blocked
	q.mu.RUnlock()
	if !was {
		q.log.Warn(msg+": appends wait, the MQTT broker keeps the messages", args...)
	}
	q.setBlocked(true)
}

// highWater is the share of max_bytes above which the buffer logs that it
// is filling up: one line when crossed, one when back below.
const highWater = 0.8

func (q *Queue) checkHighWater() {
	used, _ := q.usage()
	high := float64(used) >= highWater*float64(q.cfg.MaxBytes)
	if high == q.high {
		return
	}
	q.high = high
	if high {
		q.log.Warn("buffer above 80% of max_bytes", "bytes", used, "max_bytes", q.cfg.MaxBytes, "policy", q.cfg.WhenFull)
	} else {
		q.log.Info("buffer below 80% of max_bytes again", "bytes", used, "max_bytes", q.cfg.MaxBytes)
	}
}

func (q *Queue) setBlocked(b bool) {
	q.mu.Lock()
	was := q.blocked
	q.blocked = b
	q.mu.Unlock()
	if was && !b {
		q.log.Info("buffer has room again: appends resume")
	}
}

// failed records a failed write: the transaction was rolled back, nothing
// of it is visible, and everything waiting is retried after a backoff.
func (q *Queue) failed(err error, now time.Time) {
	q.m.commitErrs.Inc()
	q.retries++
	q.retryAt = now.Add(writeRetry.Delay(q.retries))
	q.mu.Lock()
	first := q.writeErr == nil
	q.writeErr = err
	q.mu.Unlock()
	if first {
		q.log.Error("buffer write failed: appends wait and are retried, committed records are intact", "err", err)
	}
}

func (q *Queue) recovered() {
	q.retryAt, q.retries = time.Time{}, 0
	q.mu.Lock()
	was := q.writeErr
	q.writeErr = nil
	q.mu.Unlock()
	if was != nil {
		q.log.Info("buffer writes recovered")
	}
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

type put struct {
	seq   uint64
	value []byte
}

// commit writes the admitted appends and the waiting acks. One transaction
// on the head segment holds the records, the head's acks and a next_seq
// above every sequence handed out, dead letters' included; acks of older
// segments take one transaction per segment. Dead letters among the appends
// go to dead.db after the head committed (commitDead): a failure in between
// leaves their sequences used and never handed out again, and nothing of a
// call that failed before the head committed is stored anywhere.
func (q *Queue) commit(admitted []*request) error {
	next := q.nextSeq
	var puts []put
	var withDead []*request
	for _, r := range admitted {
		r.dead = r.dead[:0]
		for i := range r.recs {
			r.recs[i].Seq = next
			seal(r.values[i], next)
			if r.recs[i].Reason != "" {
				r.dead = append(r.dead, put{next, r.values[i]})
			} else {
				puts = append(puts, put{next, r.values[i]})
			}
			next++
		}
		if len(r.dead) > 0 {
			withDead = append(withDead, r)
		}
	}
	if next > q.reserved {
		if _, err := q.putDead(nil, next+reserveStep); err != nil {
			return err
		}
	}

	// Acks, grouped by segment; the head's share the append transaction.
	// Acks in a damaged file are left out: it can no longer be written,
	// its records are sent again after the restart that salvages them
	// (duplicates, never a loss), and the other acks go on.
	var acks []uint64
	for _, r := range q.acks {
		acks = append(acks, r.seqs...)
	}
	bySeg := q.bySegment(acks)
	for s := range bySeg {
		if s.damagedErr(q) != nil {
			delete(bySeg, s)
		}
	}
	head := q.head()
	for s, seqs := range bySeg {
		if s == head {
			continue
		}
		n, err := q.update(s, nil, seqs, 0)
		if err != nil {
			return err
		}
		q.m.acked.Add(float64(n))
	}
	if next > q.nextSeq || len(bySeg[head]) > 0 {
		var n int
		var err error
		if next > q.nextSeq {
			n, err = q.update(head, puts, bySeg[head], next)
		} else {
			n, err = q.update(head, nil, bySeg[head], 0)
		}
		if err != nil {
			return err
		}
		q.m.acked.Add(float64(n))
	}
	q.m.appended.Add(float64(len(puts)))
	q.mu.Lock()
	q.nextSeq = next
	if len(puts) > 0 {
		close(q.notify)
		q.notify = make(chan struct{})
	}
	q.mu.Unlock()
	// From here on these calls are half done: their records are stored and
	// they can no longer be cancelled; commitDead finishes them.
	q.halfDone = append(q.halfDone, withDead...)
	return nil
}

// commitDead stores the dead letters of the calls whose records are
// committed, and answers those calls.
func (q *Queue) commitDead() error {
	if len(q.halfDone) == 0 {
		return nil
	}
	var deads []put
	for _, r := range q.halfDone {
		deads = append(deads, r.dead...)
	}
	n, err := q.putDead(deads, q.reserved)
	if err != nil {
		return err
	}
	q.m.deadLetters.Add(float64(n))
	q.m.appended.Add(float64(len(deads)))
	for _, r := range q.halfDone {
		r.done <- nil
	}
	q.halfDone = q.halfDone[:0]
	return nil
}

// update runs one write transaction on a segment: it puts records, deletes
// the given sequences and, when next is set, records the sequence counter.
// It returns how many records it deleted and publishes the new counts.
func (q *Queue) update(s *segment, puts []put, dels []uint64, next uint64) (deleted int, err error) {
	var dCount int
	var dBytes, size int64
	err = q.write(s, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		// Sequences only grow: fill pages completely.
		b.FillPercent = 1.0
		for _, p := range puts {
			if err := b.Put(seqKey(p.seq), p.value); err != nil {
				return err
			}
			dCount++
			dBytes += storedSize(p.value)
		}
		// One cursor for every delete: Get and Delete would each
		// walk the tree from the root with a cursor of their own.
		slices.Sort(dels)
		c := b.Cursor()
		var k [8]byte
		for _, seq := range dels {
			binary.BigEndian.PutUint64(k[:], seq)
			ck, v := c.Seek(k[:])
			if !bytes.Equal(ck, k[:]) {
				continue
			}
			dCount--
			dBytes -= storedSize(v)
			deleted++
			if err := c.Delete(); err != nil {
				return err
			}
		}
		if next > 0 {
			if err := tx.Bucket(bucketMeta).Put(keyNextSeq, seqKey(next)); err != nil {
				return err
			}
		}
		if err := putCounts(tx, s.count+dCount, s.bytes+dBytes); err != nil {
			return err
		}
		size = tx.Size()
		return nil
	})
	if err != nil {
		return 0, err
	}
	q.mu.Lock()
	s.size = size
	s.count += dCount
	s.bytes += dBytes
	q.mu.Unlock()
	return deleted, nil
}

// putDead stores dead letters and the sequence reservation in dead.db. A
// dead letter already stored under its sequence is replaced, not counted
// again (a retried move). It returns how many dead letters are new.
func (q *Queue) putDead(deads []put, reserved uint64) (added int, err error) {
	var dBytes int64
	var size int64
	err = q.write(q.dead, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		for _, p := range deads {
			k := seqKey(p.seq)
			if old := b.Get(k); old != nil {
				dBytes -= storedSize(old)
			} else {
				added++
			}
			if err := b.Put(k, p.value); err != nil {
				return err
			}
			dBytes += storedSize(p.value)
		}
		if err := putCounts(tx, q.dead.count+added, q.dead.bytes+dBytes); err != nil {
			return err
		}
		size = tx.Size()
		return tx.Bucket(bucketMeta).Put(keyReserved, seqKey(reserved))
	})
	if err != nil {
		return 0, err
	}
	q.mu.Lock()
	q.dead.count += added
	q.dead.bytes += dBytes
	q.dead.size = size
	q.reserved = reserved
	q.mu.Unlock()
	return added, nil
}

// countWritten makes tx, once committed, add what it wrote to the file to
// edgebridge_buffer_written_bytes_total: its new pages and one meta page.
func (q *Queue) countWritten(tx *bolt.Tx) {
	meta := int64(tx.DB().Info().PageSize) // tx has no DB once committed
	tx.OnCommit(func() {
		st := tx.Stats()
		q.m.written.Add(float64(st.GetPageAlloc() + meta))
	})
}

func (q *Queue) observeCommit(start time.Time) {
	q.m.commits.Observe(time.Since(start).Seconds())
	q.m.fsyncs.Inc()
	q.commits++
}

// maintain rolls the head segment when it is large, and deletes segments
// whose records are all gone, returning their disk space.
func (q *Queue) maintain() error {
	head := q.head()
	// A head nothing was appended to is as small as it gets, and its name
	// is the one a roll would take: never roll it.
	if head.first < q.nextSeq {
		switch {
		case head.size >= q.cfg.SegmentBytes:
			if err := q.roll(); err != nil {
				return err
			}
		case head.count == 0 && head.size > q.cfg.SegmentBytes/4:
			// Drained after a burst: start a small file, drop the big one.
			if err := q.roll(); err != nil {
				return err
			}
		}
	}
	for _, s := range slices.Clone(q.segs[:len(q.segs)-1]) {
		if s.count == 0 {
			if err := q.removeSegment(s); err != nil {
				return err
			}
		}
	}
	return nil
}

// dropOldest deletes the oldest waiting records until need bytes are free.
//
// It takes the oldest records the reader has not been handed yet first:
// a record already read may be on its way to Kafka, and dropping it would
// count a drop for a record that arrives anyway. Only when those cannot
// make room does it drop records already read (then the counter may
// include records that reached Kafka; it never misses one that did not).
func (q *Queue) dropOldest(need int64, reason string) error {
	for _, protect := range []uint64{q.readMax.Load(), 0} {
		for _, s := range slices.Clone(q.segs) {
			if need <= 0 {
				return nil
			}
			if s.count == 0 {
				continue
			}
			if s != q.head() && s.first > protect && s.bytes <= need {
				n, b := s.count, s.bytes
				if err := q.removeSegment(s); err != nil {
					return err
				}
				need -= b
				q.dropped(reason, n)
				continue
			}
			var dels []uint64
			var freed int64
			err := q.view(s, func(tx *bolt.Tx) error {
				c := tx.Bucket(bucketRecords).Cursor()
				for k, v := c.Seek(seqKey(protect + 1)); k != nil && freed < need; k, v = c.Next() {
					dels = append(dels, binary.BigEndian.Uint64(k))
					freed += storedSize(v)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("read %s: %w", s.path, err)
			}
			if len(dels) == 0 {
				continue
			}
			n, err := q.update(s, nil, dels, 0)
			if err != nil {
				return err
			}
			need -= freed
			q.dropped(reason, n)
		}
	}
	return nil
}

// expire drops records older than max_age.
func (q *Queue) expire(now time.Time) {
	cutoff := now.Add(-q.cfg.MaxAge)
	budget := expireChunk
	for _, s := range slices.Clone(q.segs) {
		if s.count == 0 {
			continue
		}
		var dels []uint64
		wholeOld := false
		err := q.view(s, func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketRecords).Cursor()
			if _, v := c.Last(); v != nil {
				if t, ok := recordTime(v); ok && t.Before(cutoff) {
					wholeOld = true
					return nil
				}
			}
			for k, v := c.First(); k != nil && len(dels) < budget; k, v = c.Next() {
				if t, ok := recordTime(v); !ok || !t.Before(cutoff) {
					break
				}
				dels = append(dels, binary.BigEndian.Uint64(k))
			}
			return nil
		})
		if err != nil {
			q.failed(fmt.Errorf("read %s: %w", s.path, err), now)
			return
		}
		if wholeOld && s != q.head() {
			n := s.count
			if err := q.removeSegment(s); err != nil {
				q.failed(err, now)
				return
			}
			q.dropped(DropMaxAge, n)
			continue
		}
		if wholeOld {
			dels = dels[:0]
			if err := q.view(s, func(tx *bolt.Tx) error {
				c := tx.Bucket(bucketRecords).Cursor()
				for k, _ := c.First(); k != nil && len(dels) < budget; k, _ = c.Next() {
					dels = append(dels, binary.BigEndian.Uint64(k))
				}
				return nil
			}); err != nil {
				q.failed(fmt.Errorf("read %s: %w", s.path, err), now)
				return
			}
		}
		if len(dels) == 0 {
			return
		}
		n, err := q.update(s, nil, dels, 0)
		if err != nil {
			q.failed(err, now)
			return
		}
		q.recovered()
		q.dropped(DropMaxAge, n)
		budget -= len(dels)
		if !wholeOld || budget <= 0 {
			return
		}
	}
}

// dropped counts n records dropped for reason; the log line comes at most
// once per interval.
func (q *Queue) dropped(reason string, n int) {
	if n == 0 {
		return
	}
	q.m.dropped.WithLabelValues(reason).Add(float64(n))
	if q.dropLog.pending == nil {
		q.dropLog.pending = map[string]int{}
	}
	q.dropLog.pending[reason] += n
	q.flushDropLog(time.Now(), false)
}

func (q *Queue) flushDropLog(now time.Time, force bool) {
	if len(q.dropLog.pending) == 0 || (!force && now.Sub(q.dropLog.last) < q.dropLog.interval) {
		return
	}
	for reason, n := range q.dropLog.pending {
		q.log.Warn("buffer dropped records", "reason", reason, "records", n, "policy", q.cfg.WhenFull, "since", q.dropLog.last)
	}
	q.dropLog.pending = nil
	q.dropLog.last = now
}

// bySegment groups sequences by the segment that would hold them, leaving
// out those older than every segment (already deleted).
func (q *Queue) bySegment(seqs []uint64) map[*segment][]uint64 {
	bySeg := map[*segment][]uint64{}
	for _, seq := range seqs {
		if len(q.segs) > 0 && seq >= q.segs[0].first {
			s := q.segs[q.segmentIndex(seq)]
			bySeg[s] = append(bySeg[s], seq)
		}
	}
	return bySeg
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

// dropCorrupt deletes records of s that failed their checksum (cause, when
// known, says how), counted and logged: they can no longer be decoded, let
// alone sent.
func (q *Queue) dropCorrupt(s *segment, seqs []uint64, cause error) error {
	n, err := q.update(s, nil, seqs, 0)
	if err != nil {
		return err
	}
	if n > 0 {
		q.log.Error("buffer record failed its checksum: dropped", "records", n, "file", s.path, "err", cause)
	}
	q.dropped(DropCorrupt, n)
	return nil
}

// moveToDead moves one waiting record to the dead letters: dead.db first,
// then the delete from its segment. A crash in between leaves both copies
// under one sequence; the next Open finishes the move (see
// Queue.finishMoves). A retry replaces the dead letter, never counts it
// twice.
func (q *Queue) moveToDead(seq uint64, reason string, now time.Time) error {
	if len(q.segs) == 0 || seq < q.segs[0].first {
		return fmt.Errorf("dead letter %d: %w", seq, ErrNotFound)
	}
	s := q.segs[q.segmentIndex(seq)]
	var rec Record
	var found bool
	var decodeErr error
	err := q.view(s, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get(seqKey(seq))
		if v == nil {
			return nil
		}
		found = true
		rec, decodeErr = decodeRecord(seq, v, "")
		return nil
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", s.path, err)
	}
	if !found {
		return fmt.Errorf("dead letter %d: %w", seq, ErrNotFound)
	}
	if decodeErr != nil {
		// Rotted since it was read: drop it, and answer: retrying
		// cannot succeed.
		if err := q.dropCorrupt(s, []uint64{seq}, decodeErr); err != nil {
			return err
		}
		return fmt.Errorf("dead letter %d: %w; dropped: %w", seq, decodeErr, ErrNotFound)
	}
	rec.Reason = reason
	v := encodeBody(&rec, now)
	seal(v, seq)
	added, err := q.putDead([]put{{seq, v}}, q.reserved)
	if err != nil {
		return err
	}
	q.m.deadLetters.Add(float64(added))
	_, err = q.update(s, nil, []uint64{seq}, 0)
	return err
}

// requeue moves dead letters back into the queue as new records with new
// sequences: first the head commit, then the delete from dead.db. A retry
// after a failed delete only deletes: r remembers what it committed, so a
// dead letter is never queued twice by one call.
func (q *Queue) requeue(r *request, now time.Time) error {
	if r.requeued == nil {
		var recs []Record
		err := q.view(q.dead, func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketRecords)
			for _, seq := range r.seqs {
				v := b.Get(seqKey(seq))
				if v == nil {
					return fmt.Errorf("requeue %d: %w", seq, ErrNotFound)
				}
				rec, err := decodeRecord(seq, v, "")
				if err != nil {
					return &answer{fmt.Errorf("requeue: %w", err)}
				}
				recs = append(recs, rec)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if r.rewrite != nil {
			for i := range recs {
				if err := r.rewrite(&recs[i]); err != nil {
					return &answer{fmt.Errorf("requeue %d: %w", recs[i].Seq, err)}
				}
			}
		}
		next := q.nextSeq
		puts := make([]put, len(recs))
		for i := range recs {
			recs[i].Reason = ""
			v := encodeBody(&recs[i], now)
			seal(v, next)
			puts[i] = put{next, v}
			next++
		}
		if next > q.reserved {
			if _, err := q.putDead(nil, next+reserveStep); err != nil {
				return err
			}
		}
		if _, err := q.update(q.head(), puts, nil, next); err != nil {
			return err
		}
		q.mu.Lock()
		q.nextSeq = next
		close(q.notify)
		q.notify = make(chan struct{})
		q.mu.Unlock()
		r.requeued = puts
		q.m.requeued.Add(float64(len(recs)))
		q.m.appended.Add(float64(len(recs)))
	}
	// A crash here leaves both copies: the record is sent, and the dead
	// letter stays listed. Nothing is lost.
	var dCount int
	var dBytes int64
	err := q.write(q.dead, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		for _, seq := range r.seqs {
			k := seqKey(seq)
			if v := b.Get(k); v != nil {
				dCount++
				dBytes += storedSize(v)
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		return putCounts(tx, q.dead.count-dCount, q.dead.bytes-dBytes)
	})
	if err != nil {
		return err
	}
	q.mu.Lock()
	q.dead.count -= dCount
	q.dead.bytes -= dBytes
	q.mu.Unlock()
	return nil
}
