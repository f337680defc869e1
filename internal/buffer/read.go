package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Read returns up to maxRecords waiting records with sequences above after,
// in sequence order, stopping once maxBytes of values are gathered (but
// always returning at least one). It waits until there is one or ctx ends.
// Reading deletes nothing. The caller owns the returned records.
func (q *Queue) Read(ctx context.Context, after uint64, maxRecords, maxBytes int) ([]Record, error) {
	if maxRecords <= 0 {
		maxRecords = 1
	}
	q.reads.Add(1)
	for {
		q.mu.RLock()
		if q.closed {
			q.mu.RUnlock()
			return nil, ErrClosed
		}
		recs, corrupt, err := q.readLocked(after, maxRecords, maxBytes)
		notify := q.notify
		q.mu.RUnlock()
		if re, ok := errors.AsType[*readError](err); ok && errors.Is(err, errFault) {
			q.damage(re.seg, re.err)
		}
		if len(corrupt) > 0 {
			// Dropping them counts and logs them; the reader moves on.
			derr := q.submit(ctx, &request{kind: opDropCorrupt, seqs: corrupt, done: make(chan error, 1)})
			if derr != nil && len(recs) == 0 {
				return nil, derr
			}
			after = max(after, slices.Max(corrupt))
		}
		if err != nil {
			return nil, err
		}
		if len(recs) > 0 {
			last := recs[len(recs)-1].Seq
			for cur := q.readMax.Load(); last > cur && !q.readMax.CompareAndSwap(cur, last); cur = q.readMax.Load() {
			}
			return recs, nil
		}
		if len(corrupt) > 0 {
			continue
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-q.closing:
			return nil, ErrClosed
		}
	}
}

func (q *Queue) readLocked(after uint64, maxRecords, maxBytes int) (recs []Record, corrupt []uint64, err error) {
	i := q.segmentIndex(after + 1)
	size := 0
	var topic string
	// Sized once: at most what was appended after the cursor.
	if q.nextSeq > after+1 {
		recs = make([]Record, 0, min(uint64(maxRecords), q.nextSeq-after-1))
	}
	for ; i < len(q.segs) && len(recs) < maxRecords && (size < maxBytes || len(recs) == 0); i++ {
		err = viewLocked(q.segs[i], func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketRecords).Cursor()
			for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
				if len(recs) >= maxRecords || (size >= maxBytes && len(recs) > 0) {
					return nil
				}
				seq := binary.BigEndian.Uint64(k)
				rec, err := decodeRecord(seq, v, topic)
				if err != nil {
					corrupt = append(corrupt, seq)
					continue
				}
				topic = rec.Topic
				size += len(rec.Value)
				recs = append(recs, rec)
			}
			return nil
		})
		if err != nil {
			return recs, corrupt, &readError{seg: q.segs[i], err: err}
		}
	}
	return recs, corrupt, nil
}

// readError is a failed read of one segment.
type readError struct {
	seg *segment
	err error
}

func (e *readError) Error() string { return fmt.Sprintf("read segment %s: %v", e.seg.path, e.err) }

func (e *readError) Unwrap() error { return e.err }
