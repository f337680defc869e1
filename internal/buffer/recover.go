package buffer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Recovery from damage, at Open.
//
// A damaged file may have held sequences nobody can read any more, so after
// a quarantine the counter continues above dead.db's reservation. That jump
// must survive every crash and restart until a head segment records it:
//
//  1. recovering is created (and synced with the directory) before any file
//     is touched. While it exists, every Open treats the buffer as
//     recovering and jumps to the reservation.
//  2. The readable records of a damaged file F are copied into F.salvage,
//     committed and synced.
//  3. F is renamed into quarantine/; then F.salvage is renamed to F. An Open
//     that finds F.salvage without F finishes the rename; one that finds
//     both discards F.salvage and salvages again from F.
//  4. Once every file is open, a new head segment is rolled at the new
//     counter (its next_seq is written in the transaction that creates it),
//     the reservation is raised above it, and only then are recovering and
//     damaged removed.
//
// A crash at any step leaves recovering in place, so the next Open jumps
// again: sequences may be skipped, never reused.
const (
	recoveringName = "recovering"
	// damagedName lists, a name a line, the files found damaged while the
	// bridge ran (see Queue.damage). The next Open quarantines them
	// whatever its own checks find.
	damagedName   = "damaged"
	salvageSuffix = ".salvage"
)

// crashAt, when set by a test, is called after each step of a recovery
// and fails Open when it returns an error: the files are then left as a
// crash at that point would leave them (every step is synced before the
// next begins).
var crashAt func(step string) error

func step(name string) error {
	if crashAt == nil {
		return nil
	}
	return crashAt(name)
}

// isDamage reports whether err is evidence that a file is damaged, as
// opposed to a failure to read it at all (no descriptors left, no memory
// for the map, a transient I/O error): only damage is quarantined.
func isDamage(err error) bool {
	return errors.Is(err, ErrCorrupt) ||
		errors.Is(err, bolterrors.ErrInvalid) ||
		errors.Is(err, bolterrors.ErrChecksum) ||
		errors.Is(err, bolterrors.ErrVersionMismatch)
}

// readDamaged returns the file names listed in dir's damaged file.
func readDamaged(dir string) (map[string]bool, error) {
	f, err := os.Open(filepath.Join(dir, damagedName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the list of damaged files: %w", err)
	}
	defer f.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Only names of our own files, never a path: the list is read
		// back into filepath.Join.
		if name := strings.TrimSpace(sc.Text()); name == deadFileName || isSegmentName(name) {
			names[name] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the list of damaged files: %w", err)
	}
	return names, nil
}

// markDamaged adds a file's name to dir's damaged file and syncs it.
func markDamaged(dir, name string) error {
	f, err := os.OpenFile(filepath.Join(dir, damagedName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(name + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(dir)
}

func isSegmentName(name string) bool {
	_, ok := parseSegmentName(name)
	return ok
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// beginRecovery creates the recovering marker, once per Open.
func (q *Queue) beginRecovery() error {
	if q.recovering {
		return nil
	}
	path := filepath.Join(q.cfg.Dir, recoveringName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err == nil {
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = syncDir(q.cfg.Dir)
	}
	if err != nil {
		return fmt.Errorf("create %s before quarantining: %w", path, err)
	}
	q.recovering = true
	return step("marked")
}

// finishSalvages completes the renames step 3 of a recovery left undone and
// discards salvage files whose damaged original is still in place. It
// reports whether it found any.
func finishSalvages(dir string) (bool, error) {
	tmps, err := filepath.Glob(filepath.Join(dir, "*"+salvageSuffix))
	if err != nil {
		return false, err
	}
	for _, tmp := range tmps {
		orig := strings.TrimSuffix(tmp, salvageSuffix)
		ok, err := exists(orig)
		if err != nil {
			return true, fmt.Errorf("finish the salvage of %s: %w", orig, err)
		}
		if ok {
			err = os.Remove(tmp)
		} else {
			err = os.Rename(tmp, orig)
		}
		if err != nil {
			return true, fmt.Errorf("finish the salvage of %s: %w", orig, err)
		}
	}
	if len(tmps) > 0 {
		return true, syncDir(dir)
	}
	return false, nil
}

// recoverFile replaces the damaged file at path by a fresh one holding what
// could be read from it, keeping the damaged file in quarantine/. It returns
// the highest sequence the damaged file may have used, plus one.
func (q *Queue) recoverFile(path string, head bool, cause error) (*segment, uint64, error) {
	if err := q.beginRecovery(); err != nil {
		return nil, 0, err
	}
	first, _ := parseSegmentName(filepath.Base(path))
	dead := filepath.Base(path) == deadFileName
	recs, hint, lost, err := salvage(path, q.cfg)
	if err != nil {
		return nil, 0, fmt.Errorf("%s is damaged (%v) and cannot be read to salvage it: %w", path, cause, err)
	}

	tmp := path + salvageSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("salvage %s: %w", path, err)
	}
	seg := &segment{path: tmp, first: first}
	if seg.db, err = openBolt(tmp, boltOptions(q.cfg, false)); err != nil {
		return nil, 0, fmt.Errorf("salvage %s: %w", path, err)
	}
	err = q.write(seg, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketRecords)
		if err != nil {
			return err
		}
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := b.Put(seqKey(r.seq), r.value); err != nil {
				return err
			}
			seg.count++
			seg.bytes += storedSize(r.value)
			hint = max(hint, r.seq+1)
		}
		key := keyNextSeq
		if dead {
			key = keyReserved
		}
		if err := m.Put(key, seqKey(max(hint, first))); err != nil {
			return err
		}
		return putCounts(tx, seg.count, seg.bytes)
	})
	if cerr := seg.db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = step("salvaged")
	}
	if err != nil {
		return nil, 0, fmt.Errorf("salvage %s: %w", path, err)
	}

	moved, err := quarantine(q.cfg.Dir, path, time.Now())
	if err != nil {
		return nil, 0, fmt.Errorf("%s is damaged (%v); quarantine: %w", path, cause, err)
	}
	if err := step("quarantined"); err != nil {
		return nil, 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, 0, fmt.Errorf("put the salvaged copy of %s in place: %w", path, err)
	}
	if err := syncDir(q.cfg.Dir); err != nil {
		return nil, 0, fmt.Errorf("put the salvaged copy of %s in place: %w", path, err)
	}
	if err := step("replaced"); err != nil {
		return nil, 0, err
	}
	q.m.quarantined.Inc()
	q.m.dropped.WithLabelValues(DropCorrupt).Add(float64(lost))
	q.log.Error("buffer file damaged: moved to quarantine, readable records salvaged",
		"file", path, "quarantined_as", moved, "salvaged_records", len(recs), "unreadable_records", lost, "err", cause)

	seg.path = path
	if seg.db, err = openBolt(path, boltOptions(q.cfg, head)); err != nil {
		return nil, 0, fmt.Errorf("open the salvaged copy of %s: %w", path, err)
	}
	seg.size = usedSize(seg.db)
	return seg, max(hint, first), nil
}

// finishRecovery makes the jump over every sequence a damaged file may have
// used durable (step 4 above), then removes the markers.
func (q *Queue) finishRecovery() error {
	q.nextSeq = max(q.nextSeq, q.reserved)
	if len(q.segs) == 0 || q.head().first != q.nextSeq {
		if err := q.roll(); err != nil {
			return err
		}
	}
	if err := step("rolled"); err != nil {
		return err
	}
	if q.reserved < q.nextSeq+1 {
		if _, err := q.putDead(nil, q.nextSeq+reserveStep); err != nil {
			return err
		}
	}
	if err := step("reserved"); err != nil {
		return err
	}
	for _, name := range []string{damagedName, recoveringName} {
		if err := os.Remove(filepath.Join(q.cfg.Dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("finish recovery: %w", err)
		}
	}
	return syncDir(q.cfg.Dir)
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
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
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
