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
	dir := q.cfg.Dir
	damaged, err := readDamaged(dir)
	if err != nil {
		return err
	}
	unfinished, err := finishSalvages(dir)
	if err != nil {
		return err
	}
	marked, err := exists(filepath.Join(dir, recoveringName))
	if err != nil {
		return err
	}
	// A recovery that did not finish, or damage found while running, needs
	// the jump even if every file now opens cleanly.
	q.recovering = marked || unfinished || len(damaged) > 0

	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var firsts []uint64
	for _, e := range entries {
		if first, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			firsts = append(firsts, first)
		}
	}
	slices.Sort(firsts)

	var hint uint64 // the highest sequence any file may have used, plus one
	dead, deadHint, err := q.openChecked(filepath.Join(dir, deadFileName), false, damaged[deadFileName])
	if err != nil {
		return err
	}
	q.dead = dead
	hint = max(hint, deadHint)
	if err := q.view(q.dead, func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyReserved); len(v) == 8 {
			q.reserved = binary.BigEndian.Uint64(v)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("read %s: %w", deadFileName, err)
	}

	for i, first := range firsts {
		name := segmentName(first)
		open := q.openLazy
		if i == len(firsts)-1 {
			open = q.openHead
		}
		seg, h, err := open(filepath.Join(dir, name), damaged[name])
		if err != nil {
			return err
		}
		hint = max(hint, h, first)
		if seg.count == 0 && i != len(firsts)-1 {
			// Fully acked before the last run ended: reclaim now.
			if err := q.removeSegment(seg); err != nil {
				return err
			}
			continue
		}
		q.segs = append(q.segs, seg)
	}

	q.nextSeq = max(1, hint)
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

// openChecked opens a bbolt file and verifies it completely. A damaged file,
// or one found damaged while running (forced), is recovered (recoverFile).
// Any other failure to read it fails Open and changes nothing. It returns
// the highest sequence the file may have used, plus one.
func (q *Queue) openChecked(path string, head, forced bool) (seg *segment, hint uint64, err error) {
	first, _ := parseSegmentName(filepath.Base(path))
	seg = &segment{path: path, first: first}
	var res scanResult
	if forced {
		err = fmt.Errorf("%w: found damaged while the bridge ran", ErrCorrupt)
	} else if fileSize(path) > 0 {
		// Verify read-only first (see scan); an empty file is
		// one a crash interrupted at creation and bbolt initializes it.
		var db *bolt.DB
		if db, err = openBolt(path, readOnlyOptions(q.cfg)); err == nil {
			res, err = scan(db, true, true)
			db.Close()
		}
	}
	if err == nil {
		if seg.db, err = openBolt(path, boltOptions(q.cfg, head)); err == nil {
			err = q.ensureBuckets(seg)
		}
	}
	if err == nil {
		seg.count, seg.bytes = res.count, res.bytes
		if err := q.keepCounts(seg); err != nil {
			seg.db.Close()
			return nil, 0, err
		}
		seg.size = usedSize(seg.db)
		return seg, max(res.nextSeq, res.last+1), nil
	}
	if seg.db != nil {
		seg.db.Close()
	}
	if ferr := q.openFailure(path, err); ferr != nil {
		return nil, 0, ferr
	}
	return q.recoverFile(path, head, err)
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
		if _, err := tx.CreateBucketIfNotExists(bucketRecords); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketMeta); err != nil {
			return err
		}
		return putCounts(tx, 0, 0)
	})
}
