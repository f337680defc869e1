package buffer

import (
	"bytes"
	"encoding/binary"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// reserveStep is how many sequences are reserved at a time in dead.db, so
// a damaged head segment cannot make sequences repeat.
const reserveStep = 1 << 20

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
	puts, next := q.sequence(admitted)
	if err := q.reserve(next); err != nil {
		return err
	}
	acks := q.acksBySegment()
	head := q.head()
	for s, seqs := range acks {
		if s == head {
			continue
		}
		n, err := q.update(s, nil, seqs, 0)
		if err != nil {
			return err
		}
		q.m.acked.Add(float64(n))
	}
	if next > q.nextSeq || len(acks[head]) > 0 {
		var n int
		var err error
		if next > q.nextSeq {
			n, err = q.update(head, puts, acks[head], next)
		} else {
			n, err = q.update(head, nil, acks[head], 0)
		}
		if err != nil {
			return err
		}
		q.m.acked.Add(float64(n))
	}
	q.m.appended.Add(float64(len(puts)))
	q.publish(next, len(puts) > 0)
	// From here on the calls with dead letters are half done: their records
	// are stored and they can no longer be cancelled; commitDead finishes
	// them.
	for _, r := range admitted {
		if len(r.dead) > 0 {
			q.halfDone = append(q.halfDone, r)
		}
	}
	return nil
}

// sequence gives the admitted records their sequences, from nextSeq on,
// and seals their values. It returns the records for the head and the
// sequence after the last; each call keeps its dead letters in r.dead.
func (q *Queue) sequence(admitted []*request) (puts []put, next uint64) {
	next = q.nextSeq
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
	}
	return puts, next
}

// reserve raises the reservation in dead.db before sequences up to next
// are committed anywhere.
func (q *Queue) reserve(next uint64) error {
	if next <= q.reserved {
		return nil
	}
	_, err := q.putDead(nil, next+reserveStep)
	return err
}

// acksBySegment groups the waiting acks by segment; the head's share the
// append transaction. Acks in a damaged file are left out: it can no longer
// be written, its records are sent again after the restart that salvages
// them (duplicates, never a loss), and the other acks go on.
func (q *Queue) acksBySegment() map[*segment][]uint64 {
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
	return bySeg
}

// publish makes next the sequence counter readers see, and wakes the
// readers waiting for records when appended.
func (q *Queue) publish(next uint64, appended bool) {
	q.mu.Lock()
	q.nextSeq = next
	if appended {
		close(q.notify)
		q.notify = make(chan struct{})
	}
	q.mu.Unlock()
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
		n, freed, err := deleteSeqs(b, dels)
		if err != nil {
			return err
		}
		deleted, dCount, dBytes = n, dCount-n, dBytes-freed
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

// deleteSeqs deletes the records of b under seqs (sorting seqs) and returns
// how many there were and their logical size. One cursor serves every
// delete: Get and Delete would each walk the tree from the root with a
// cursor of their own.
func deleteSeqs(b *bolt.Bucket, seqs []uint64) (n int, freed int64, err error) {
	slices.Sort(seqs)
	c := b.Cursor()
	var k [8]byte
	for _, seq := range seqs {
		binary.BigEndian.PutUint64(k[:], seq)
		ck, v := c.Seek(k[:])
		if !bytes.Equal(ck, k[:]) {
			continue
		}
		n++
		freed += storedSize(v)
		if err := c.Delete(); err != nil {
			return n, freed, err
		}
	}
	return n, freed, nil
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
