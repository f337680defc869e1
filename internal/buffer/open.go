package buffer

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// load opens every file of the directory, checks it and recovers the
// sequence counter. Damaged files are recovered as recover.go describes.
func (q *Queue) load() error {
	damaged, err := q.readMarkers()
	if err != nil {
		return err
	}
	firsts, err := segmentFirsts(q.cfg.Dir)
	if err != nil {
		return err
	}
	deadHint, err := q.loadDead(damaged[deadFileName])
	if err != nil {
		return err
	}
	segHint, err := q.loadSegments(firsts, damaged)
	if err != nil {
		return err
	}
	q.nextSeq = max(1, deadHint, segHint)
	if err := q.finishMoves(); err != nil {
		return err
	}
	if q.recovering {
		return q.finishRecovery()
	}
	if len(q.segs) == 0 {
		return q.roll()
	}
	return nil
}

// readMarkers reads what the last run left for this Open to finish: the
// files it found damaged while running, salvages a crash interrupted, the
// recovering marker (recover.go). It returns the damaged files' names.
func (q *Queue) readMarkers() (damaged map[string]bool, err error) {
	dir := q.cfg.Dir
	if damaged, err = readDamaged(dir); err != nil {
		return nil, err
	}
	unfinished, err := finishSalvages(dir)
	if err != nil {
		return nil, err
	}
	marked, err := exists(filepath.Join(dir, recoveringName))
	if err != nil {
		return nil, err
	}
	// A recovery that did not finish, or damage found while running, needs
	// the jump even if every file now opens cleanly.
	q.recovering = marked || unfinished || len(damaged) > 0
	return damaged, nil
}

// segmentFirsts returns the first sequences of the segment files in dir,
// in order.
func segmentFirsts(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var firsts []uint64
	for _, e := range entries {
		if first, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			firsts = append(firsts, first)
		}
	}
	slices.Sort(firsts)
	return firsts, nil
}

// loadDead opens dead.db with the full check and reads the sequence
// reservation. It returns the highest sequence the file may have used, plus
// one.
func (q *Queue) loadDead(forced bool) (hint uint64, err error) {
	dead, hint, err := q.openChecked(filepath.Join(q.cfg.Dir, deadFileName), false, forced)
	if err != nil {
		return 0, err
	}
	q.dead = dead
	if err := q.view(q.dead, func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyReserved); len(v) == 8 {
			q.reserved = binary.BigEndian.Uint64(v)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("read %s: %w", deadFileName, err)
	}
	return hint, nil
}

// loadSegments opens the segments: the last one, the head, with the full
// check, the others lazily; an older segment with no records left is
// deleted. It returns the highest sequence any of them may have used, plus
// one.
func (q *Queue) loadSegments(firsts []uint64, damaged map[string]bool) (hint uint64, err error) {
	for i, first := range firsts {
		name := segmentName(first)
		open := q.openLazy
		if i == len(firsts)-1 {
			open = q.openHead
		}
		seg, h, err := open(filepath.Join(q.cfg.Dir, name), damaged[name])
		if err != nil {
			return 0, err
		}
		hint = max(hint, h, first)
		if seg.count == 0 && i != len(firsts)-1 {
			// Fully acked before the last run ended: reclaim now.
			if err := q.removeSegment(seg); err != nil {
				return 0, err
			}
			continue
		}
		q.segs = append(q.segs, seg)
	}
	return hint, nil
}

func (q *Queue) openHead(path string, forced bool) (*segment, uint64, error) {
	return q.openChecked(path, true, forced)
}

// openLazy opens a segment that is not the head without reading its
// records: read-only, so bbolt does not rebuild its freelist (a walk of
// every page), with the counts its meta holds. Open then reads a few pages
// per segment, however large the backlog. The records are checked as they
// are read (each one's checksum), and the whole file before its first
// write (upgrade). A file without counts (written by an older version) or
// that fails to open as a bbolt file gets the full check of openChecked.
func (q *Queue) openLazy(path string, forced bool) (*segment, uint64, error) {
	if forced {
		return q.openChecked(path, false, true)
	}
	first, _ := parseSegmentName(filepath.Base(path))
	seg := &segment{path: path, first: first, readOnly: true}
	var ok bool
	var next uint64
	db, err := openBolt(path, readOnlyOptions(q.cfg))
	if err == nil {
		seg.db = db
		err = viewLocked(seg, func(tx *bolt.Tx) error {
			m := tx.Bucket(bucketMeta)
			if m == nil || tx.Bucket(bucketRecords) == nil {
				return nil
			}
			seg.count, seg.bytes, ok = readCounts(tx)
			if v := m.Get(keyNextSeq); len(v) == 8 {
				next = binary.BigEndian.Uint64(v)
			}
			return nil
		})
	}
	if err == nil && ok {
		seg.size = usedSize(db)
		return seg, max(next, first), nil
	}
	if db != nil {
		db.Close()
	}
	if err := q.openFailure(path, err); err != nil {
		return nil, 0, err
	}
	return q.openChecked(path, false, false)
}

// openFailure returns the error that fails Open for a file that could not
// be opened or checked, or nil when err is nil or evidence of damage (the
// file is then recovered).
func (q *Queue) openFailure(path string, err error) error {
	switch {
	case isLockTimeout(err):
		return fmt.Errorf("%s is locked by another process (waited %s): %w", path, q.cfg.LockTimeout, err)
	case err != nil && !isDamage(err):
		return fmt.Errorf("open %s (nothing was changed; the file is not known to be damaged): %w", path, err)
	}
	return nil
}

// openChecked opens a bbolt file verified completely: the head, dead.db,
// and an older segment openLazy cannot trust. A damaged file, or one found
// damaged while running (forced), is recovered (recoverFile). Any other
// failure to read it fails Open and changes nothing. It returns the highest
// sequence the file may have used, plus one.
func (q *Queue) openChecked(path string, head, forced bool) (*segment, uint64, error) {
	res, err := q.checkFile(path, forced)
	var seg *segment
	if err == nil {
		seg, err = q.openVerified(path, head, res)
	}
	if err != nil {
		if ferr := q.openFailure(path, err); ferr != nil {
			return nil, 0, ferr
		}
		return q.recoverFile(path, head, err)
	}
	if err := q.keepCounts(seg); err != nil {
		seg.db.Close()
		return nil, 0, err
	}
	seg.size = usedSize(seg.db)
	return seg, max(res.nextSeq, res.last+1), nil
}

// checkFile reads the file at path read-only (see scan): every record's
// checksum and bbolt's consistency check. An error is damage or a failure
// to read; openFailure tells which. A file found damaged while running
// (forced) is not read: it is damaged.
func (q *Queue) checkFile(path string, forced bool) (scanResult, error) {
	if forced {
		return scanResult{}, fmt.Errorf("%w: found damaged while the bridge ran", ErrCorrupt)
	}
	if fileSize(path) == 0 {
		// A crash interrupted its creation; bbolt initializes it.
		return scanResult{}, nil
	}
	db, err := openBolt(path, readOnlyOptions(q.cfg))
	if err != nil {
		return scanResult{}, err
	}
	defer db.Close()
	return scan(db, true)
}

// openVerified opens a file checkFile passed for use, with the counts it found.
func (q *Queue) openVerified(path string, head bool, res scanResult) (*segment, error) {
	db, err := openBolt(path, boltOptions(q.cfg, head))
	if err != nil {
		return nil, err
	}
	first, _ := parseSegmentName(filepath.Base(path))
	seg := &segment{path: path, first: first, db: db, count: res.count, bytes: res.bytes}
	if err := q.ensureBuckets(seg); err != nil {
		db.Close()
		return nil, err
	}
	return seg, nil
}

// keepCounts writes the counts the full check found into a file whose meta
// has none that hold (written by an older edgebridge): once, so that the
// next Open can open it with openLazy instead of reading it again.
func (q *Queue) keepCounts(seg *segment) error {
	var ok bool
	if err := q.view(seg, func(tx *bolt.Tx) error {
		_, _, ok = readCounts(tx)
		return nil
	}); err != nil || ok {
		return err
	}
	return q.write(seg, func(tx *bolt.Tx) error { return putCounts(tx, seg.count, seg.bytes) })
}

// ensureBuckets creates the buckets of a file a crash interrupted at
// creation.
func (q *Queue) ensureBuckets(s *segment) error {
	var ok bool
	if err := q.view(s, func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketRecords) != nil && tx.Bucket(bucketMeta) != nil
		return nil
	}); err != nil || ok {
		return err
	}
	return q.write(s, func(tx *bolt.Tx) error {
		if _, _, err := createBuckets(tx); err != nil {
			return err
		}
		return putCounts(tx, 0, 0)
	})
}
