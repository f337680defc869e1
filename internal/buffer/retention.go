package buffer

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// dropLog rate-limits the log lines about drops; the counters see each one.
type dropLog struct {
	interval time.Duration
	last     time.Time
	pending  map[string]int
}

// expireChunk bounds the records one max_age pass deletes.
const expireChunk = 50000

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
			freed, err := q.dropFrom(s, protect, need, reason)
			if err != nil {
				return err
			}
			need -= freed
		}
	}
	return nil
}

// dropFrom deletes the oldest records of s above protect until need bytes
// are free or none is left, and returns the bytes it freed. A segment that
// is not the head, holds nothing read yet and no more than need goes whole.
func (q *Queue) dropFrom(s *segment, protect uint64, need int64, reason string) (int64, error) {
	if s != q.head() && s.first > protect && s.bytes <= need {
		n, b := s.count, s.bytes
		if err := q.removeSegment(s); err != nil {
			return 0, err
		}
		q.dropped(reason, n)
		return b, nil
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
		return 0, fmt.Errorf("read %s: %w", s.path, err)
	}
	if len(dels) == 0 {
		return 0, nil
	}
	n, err := q.update(s, nil, dels, 0)
	if err != nil {
		return 0, err
	}
	q.dropped(reason, n)
	return freed, nil
}

// expire drops records older than max_age, at most expireChunk of them one
// by one per pass; a segment whose records are all older goes whole.
func (q *Queue) expire(now time.Time) {
	cutoff := now.Add(-q.cfg.MaxAge)
	budget := expireChunk
	for _, s := range slices.Clone(q.segs) {
		if s.count == 0 {
			continue
		}
		more, err := q.expireSegment(s, cutoff, &budget)
		if err != nil {
			q.failed(err, now)
			return
		}
		if !more {
			return
		}
	}
}

// expireSegment drops the records of s older than cutoff, taking the ones
// it deletes one by one from budget. It reports whether the next segment
// may hold expired records too: only when every record of s was old.
func (q *Queue) expireSegment(s *segment, cutoff time.Time, budget *int) (more bool, err error) {
	dels, wholeOld, err := q.expired(s, cutoff, *budget)
	if err != nil {
		return false, err
	}
	if wholeOld && s != q.head() {
		n := s.count
		if err := q.removeSegment(s); err != nil {
			return false, err
		}
		q.dropped(DropMaxAge, n)
		return true, nil
	}
	if wholeOld {
		if dels, err = q.firstSeqs(s, *budget); err != nil {
			return false, err
		}
	}
	if len(dels) == 0 {
		return false, nil
	}
	n, err := q.update(s, nil, dels, 0)
	if err != nil {
		return false, err
	}
	// A write that succeeded proves the storage works again only when no
	// commit waits: waiting appends and acks may still fail on the head,
	// and their own commit reports the recovery.
	if len(q.appends) == 0 && len(q.acks) == 0 {
		q.recovered()
	}
	q.dropped(DropMaxAge, n)
	*budget -= len(dels)
	return wholeOld && *budget > 0, nil
}

// expired returns up to budget of the oldest sequences of s appended
// before cutoff, or wholeOld (and no sequence) when its newest record is
// older than cutoff too.
func (q *Queue) expired(s *segment, cutoff time.Time, budget int) (dels []uint64, wholeOld bool, err error) {
	err = q.view(s, func(tx *bolt.Tx) error {
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
		return nil, false, fmt.Errorf("read %s: %w", s.path, err)
	}
	return dels, wholeOld, nil
}

// firstSeqs returns the n lowest sequences of s.
func (q *Queue) firstSeqs(s *segment, n int) ([]uint64, error) {
	var seqs []uint64
	if err := q.view(s, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, _ := c.First(); k != nil && len(seqs) < n; k, _ = c.Next() {
			seqs = append(seqs, binary.BigEndian.Uint64(k))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read %s: %w", s.path, err)
	}
	return seqs, nil
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
