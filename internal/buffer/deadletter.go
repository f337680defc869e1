package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DeadLetter moves the waiting record seq to the dead letters with reason.
func (q *Queue) DeadLetter(ctx context.Context, seq uint64, reason string) error {
	return q.submit(ctx, &request{kind: opDeadLetter, seqs: []uint64{seq}, reason: reason, done: make(chan error, 1)})
}

// Requeue moves dead letters back into the queue as new records, with new
// sequences, after everything already waiting: they reach Kafka after newer
// records of the same device, the one exception to per-device order. Their
// values (the envelope, with the time the message was received) are kept.
// rewrite, when set, may change each record's Topic and Key first (route
// it again); an error from it fails the whole call and changes nothing.
// At most maxRequeue sequences per call.
func (q *Queue) Requeue(ctx context.Context, seqs []uint64, rewrite func(*Record) error) error {
	if len(seqs) == 0 {
		return nil
	}
	if len(seqs) > maxRequeue {
		return fmt.Errorf("requeue %d dead letters at once: at most %d", len(seqs), maxRequeue)
	}
	return q.submit(ctx, &request{kind: opRequeue, seqs: slices.Clone(seqs), rewrite: rewrite, done: make(chan error, 1)})
}

// maxRequeue bounds one Requeue: its records are held in memory and
// committed in one transaction.
const maxRequeue = 10000

// DeadLetters returns up to max dead letters with sequences above after,
// each with the reason it was stored and, as Time, when.
func (q *Queue) DeadLetters(after uint64, max int) ([]Record, error) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return nil, ErrClosed
	}
	var recs []Record
	err := viewLocked(q.dead, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(recs) < max; k, v = c.Next() {
			rec, err := decodeRecord(binary.BigEndian.Uint64(k), v, "")
			if err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		return nil
	})
	return recs, err
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
		recs, err := q.readDeadLetters(r.seqs)
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
		if r.requeued, err = q.appendRequeued(recs, now); err != nil {
			return err
		}
	}
	// A crash here leaves both copies: the record is sent, and the dead
	// letter stays listed. Nothing is lost.
	return q.deleteDead(r.seqs)
}

// readDeadLetters returns the dead letters under seqs, in that order. One
// that is missing or fails its checksum fails the whole call.
func (q *Queue) readDeadLetters(seqs []uint64) ([]Record, error) {
	var recs []Record
	err := q.view(q.dead, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		for _, seq := range seqs {
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
	return recs, err
}

// appendRequeued commits recs to the head as waiting records with new
// sequences, after everything already waiting, and returns what it
// committed.
func (q *Queue) appendRequeued(recs []Record, now time.Time) ([]put, error) {
	next := q.nextSeq
	puts := make([]put, len(recs))
	for i := range recs {
		recs[i].Reason = ""
		v := encodeBody(&recs[i], now)
		seal(v, next)
		puts[i] = put{next, v}
		next++
	}
	if err := q.reserve(next); err != nil {
		return nil, err
	}
	if _, err := q.update(q.head(), puts, nil, next); err != nil {
		return nil, err
	}
	q.publish(next, true)
	q.m.requeued.Add(float64(len(recs)))
	q.m.appended.Add(float64(len(recs)))
	return puts, nil
}

// deleteDead deletes the dead letters under seqs that dead.db still holds.
func (q *Queue) deleteDead(seqs []uint64) error {
	var n int
	var freed int64
	err := q.write(q.dead, func(tx *bolt.Tx) error {
		var err error
		if n, freed, err = deleteSeqs(tx.Bucket(bucketRecords), slices.Clone(seqs)); err != nil {
			return err
		}
		return putCounts(tx, q.dead.count-n, q.dead.bytes-freed)
	})
	if err != nil {
		return err
	}
	q.mu.Lock()
	q.dead.count -= n
	q.dead.bytes -= freed
	q.mu.Unlock()
	return nil
}

// finishMoves completes the dead-letter moves a crash interrupted. A move
// commits the dead letter to dead.db first and then deletes the record from
// its segment, so a sequence held by both was moved: the segment's copy is
// deleted, and a dead letter and a waiting record never share a sequence.
func (q *Queue) finishMoves() error {
	if len(q.segs) == 0 {
		return nil
	}
	var seqs []uint64
	if err := q.view(q.dead, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, _ := c.Seek(seqKey(q.segs[0].first)); k != nil; k, _ = c.Next() {
			if len(k) == 8 {
				seqs = append(seqs, binary.BigEndian.Uint64(k))
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("read %s: %w", q.dead.path, err)
	}
	for s, seqs := range q.bySegment(seqs) {
		n, err := q.update(s, nil, seqs, 0)
		if err != nil {
			return err
		}
		if n > 0 {
			q.log.Info("buffer finished dead-letter moves a crash interrupted", "records", n, "file", s.path)
		}
	}
	return nil
}

// CompactDeadLetters rewrites dead.db without the pages its deleted dead
// letters left free (bbolt never shrinks a file), so the disk a requeue
// freed comes back. The queue must be closed: it takes the file's lock.
// The copy is committed and synced before it replaces the file, so a crash
// leaves either the old file or the new one. It returns the file's size
// before and after.
func CompactDeadLetters(cfg Config) (before, after int64, err error) {
	if err := cfg.Validate(); err != nil {
		return 0, 0, err
	}
	cfg = cfg.WithDefaults()
	path := filepath.Join(cfg.Dir, deadFileName)
	tmp := path + ".compact"
	before = fileSize(path)
	src, err := openBolt(path, readOnlyOptions(cfg))
	if err != nil {
		return before, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	defer src.Close()
	if err := removeIfExists(tmp); err != nil {
		return before, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	dst, err := openBolt(tmp, boltOptions(cfg, false))
	if err != nil {
		return before, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	err = withFaults(func() error { return bolt.Compact(dst, src, 4<<20) })
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(cfg.Dir)
	}
	if err != nil {
		os.Remove(tmp)
		return before, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	return before, fileSize(path), nil
}
