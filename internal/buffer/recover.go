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

// removeIfExists removes path; that it did not exist is no error.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// beginRecovery creates the recovering marker, once per Open.
func (q *Queue) beginRecovery() error {
	if q.recovering {
		return nil
	}
	if err := createMarker(q.cfg.Dir, recoveringName); err != nil {
		return fmt.Errorf("create %s before quarantining: %w", filepath.Join(q.cfg.Dir, recoveringName), err)
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
	recs, hint, lost, err := salvage(path, q.cfg)
	if err != nil {
		return nil, 0, fmt.Errorf("%s is damaged (%v) and cannot be read to salvage it: %w", path, cause, err)
	}
	seg, hint, err := q.writeSalvage(path, recs, hint)
	if err != nil {
		return nil, 0, fmt.Errorf("salvage %s: %w", path, err)
	}
	moved, err := q.replaceBySalvage(path, cause)
	if err != nil {
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
	return seg, max(hint, seg.first), nil
}

// writeSalvage writes recs into the salvage file of path (step 2), with a
// sequence mark (next_seq, or reserved_seq in dead.db) above hint and every
// sequence of recs, and closes it. It returns the segment, closed, with its
// counts, and hint raised past recs.
func (q *Queue) writeSalvage(path string, recs []salvaged, hint uint64) (*segment, uint64, error) {
	first, _ := parseSegmentName(filepath.Base(path))
	dead := filepath.Base(path) == deadFileName
	tmp := path + salvageSuffix
	if err := removeIfExists(tmp); err != nil {
		return nil, 0, err
	}
	db, err := openBolt(tmp, boltOptions(q.cfg, false))
	if err != nil {
		return nil, 0, err
	}
	seg := &segment{path: tmp, first: first, db: db}
	err = q.write(seg, func(tx *bolt.Tx) error {
		b, m, err := createBuckets(tx)
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
		return nil, 0, err
	}
	return seg, hint, nil
}

// replaceBySalvage moves the damaged file at path into quarantine/ and its
// salvage file into its place (step 3). It returns the quarantined path.
func (q *Queue) replaceBySalvage(path string, cause error) (moved string, err error) {
	moved, err = quarantine(q.cfg.Dir, path, time.Now())
	if err != nil {
		return "", fmt.Errorf("%s is damaged (%v); quarantine: %w", path, cause, err)
	}
	if err := step("quarantined"); err != nil {
		return "", err
	}
	if err := os.Rename(path+salvageSuffix, path); err != nil {
		return "", fmt.Errorf("put the salvaged copy of %s in place: %w", path, err)
	}
	if err := syncDir(q.cfg.Dir); err != nil {
		return "", fmt.Errorf("put the salvaged copy of %s in place: %w", path, err)
	}
	if err := step("replaced"); err != nil {
		return "", err
	}
	return moved, nil
}

// quarantine moves a damaged file aside, never deleting it, and returns
// its new path.
func quarantine(dir, path string, now time.Time) (string, error) {
	qdir := filepath.Join(dir, quarantineDir)
	if err := os.MkdirAll(qdir, 0o700); err != nil {
		return "", fmt.Errorf("create quarantine directory: %w", err)
	}
	dst := filepath.Join(qdir, fmt.Sprintf("%s.%s", filepath.Base(path), now.UTC().Format("20060102T150405.000000000Z")))
	if err := os.Rename(path, dst); err != nil {
		return "", &moveError{err}
	}
	if err := syncDir(dir); err != nil {
		return dst, fmt.Errorf("moved to %q, but syncing the directory failed: %w", dst, err)
	}
	return dst, nil
}

// moveError is a quarantine whose rename failed: the file could not be
// moved aside.
type moveError struct{ err error }

func (e *moveError) Error() string { return "cannot be moved aside: " + e.err.Error() }

func (e *moveError) Unwrap() error { return e.err }

// salvage reads whatever records of a damaged file still pass their
// checksum, with the highest sequence its meta says was used. It stops at
// the first damage it cannot step over; lost counts the records it saw
// fail their checksum (records behind unreadable pages are not seen). It
// fails only when the file cannot be read for a reason that is not damage.
func salvage(path string, cfg Config) (recs []salvaged, nextSeq uint64, lost int, err error) {
	db, err := openBolt(path, readOnlyOptions(cfg))
	if err != nil {
		if isDamage(err) {
			return nil, 0, 0, nil
		}
		return nil, 0, 0, err
	}
	defer db.Close()
	_ = withFaults(func() error {
		return db.View(func(tx *bolt.Tx) error {
			if m := tx.Bucket(bucketMeta); m != nil {
				if v := m.Get(keyNextSeq); len(v) == 8 {
					nextSeq = binary.BigEndian.Uint64(v)
				}
				if v := m.Get(keyReserved); len(v) == 8 {
					nextSeq = max(nextSeq, binary.BigEndian.Uint64(v))
				}
			}
			b := tx.Bucket(bucketRecords)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) != 8 {
					lost++
					continue
				}
				seq := binary.BigEndian.Uint64(k)
				nextSeq = max(nextSeq, seq+1)
				if verify(seq, v) != nil {
					lost++
					continue
				}
				recs = append(recs, salvaged{seq: seq, value: append([]byte(nil), v...)})
			}
			return nil
		})
	})
	return recs, nextSeq, lost, nil
}

type salvaged struct {
	seq   uint64
	value []byte
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
		if err := removeIfExists(filepath.Join(q.cfg.Dir, name)); err != nil {
			return fmt.Errorf("finish recovery: %w", err)
		}
	}
	return syncDir(q.cfg.Dir)
}
