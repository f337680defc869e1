package buffer

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	bolt "go.etcd.io/bbolt"
)

func (q *Queue) head() *segment { return q.segs[len(q.segs)-1] }

// segmentIndex returns the index of the segment that holds seq, or of the
// first segment after it. Callers hold mu.
func (q *Queue) segmentIndex(seq uint64) int {
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].first > seq })
	return max(i-1, 0)
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

// roll starts a new head segment at nextSeq. The new file records nextSeq
// and is synced, with its directory, before anything relies on it.
func (q *Queue) roll() error {
	path := filepath.Join(q.cfg.Dir, segmentName(q.nextSeq))
	db, err := openBolt(path, boltOptions(q.cfg, true))
	if err != nil {
		return fmt.Errorf("create segment %s: %w", path, err)
	}
	seg := &segment{path: path, first: q.nextSeq, db: db}
	err = q.write(seg, func(tx *bolt.Tx) error {
		_, m, err := createBuckets(tx)
		if err != nil {
			return err
		}
		if err := m.Put(keyNextSeq, seqKey(q.nextSeq)); err != nil {
			return err
		}
		return putCounts(tx, 0, 0)
	})
	if err == nil {
		err = syncDir(q.cfg.Dir)
	}
	if err != nil {
		db.Close()
		os.Remove(path)
		return fmt.Errorf("create segment %s: %w", path, err)
	}
	seg.size = usedSize(db)
	q.mu.Lock()
	q.segs = append(q.segs, seg)
	q.mu.Unlock()
	return nil
}

// removeSegment closes and deletes an empty segment file.
func (q *Queue) removeSegment(seg *segment) error {
	q.mu.Lock()
	q.segs = slices.DeleteFunc(q.segs, func(s *segment) bool { return s == seg })
	q.mu.Unlock()
	if err := seg.db.Close(); err != nil {
		return fmt.Errorf("close segment %s: %w", seg.path, err)
	}
	if err := os.Remove(seg.path); err != nil {
		return fmt.Errorf("remove segment %s: %w", seg.path, err)
	}
	return nil
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
