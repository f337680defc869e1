package buffer

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// writeFault, when a test sets it, is asked before every write transaction
// and fails it with the error it returns: a seam for the storage faults
// (EIO, ENOSPC) a test cannot make the disk produce on demand.
var writeFault atomic.Pointer[func(path string) error]

// errFault marks a memory fault or a bbolt panic while reading a file's
// pages: evidence that the file is damaged.
var errFault = errors.New("memory fault or bbolt panic on a damaged page")

// write runs fn in a write transaction on s and commits it. Every write the
// buffer makes (appends, acks, dead letters, requeues, rolls, salvage,
// drops, expiry) takes this path, so each has the same fault handling and
// the same accounting: bytes written, commit latency, fsyncs.
//
// A fault inside the transaction (a damaged mapped page, a bbolt panic on a
// page that fails its checks) must not reach bbolt's rollback: with
// NoFreelistSync a rollback rebuilds the freelist by walking every page of
// the file on a goroutine of bbolt's own, where the same fault kills the
// process. So the transaction is left open, holding the file's writer lock:
// the segment is marked damaged, never written or closed again, and the
// queue goes into the damaged state (see Queue.damage). Errors that are not
// faults (a failed write or fsync: ENOSPC, EIO) roll back as usual, leaving
// everything committed intact.
func (q *Queue) write(s *segment, fn func(tx *bolt.Tx) error) error {
	if err := s.damagedErr(q); err != nil {
		return err
	}
	if s.readOnly {
		if err := q.upgrade(s); err != nil {
			return fmt.Errorf("commit %s: %w", s.path, err)
		}
	}
	if f := writeFault.Load(); f != nil {
		if err := (*f)(s.path); err != nil {
			return fmt.Errorf("commit %s: %w", s.path, err)
		}
	}
	start := time.Now()
	var tx *bolt.Tx
	err := withFaults(func() error {
		var err error
		if tx, err = s.db.Begin(true); err != nil {
			tx = nil
			return err
		}
		q.countWritten(tx)
		if err := fn(tx); err != nil {
			rerr := tx.Rollback()
			tx = nil
			return errors.Join(err, rerr)
		}
		err = tx.Commit() // on failure Commit rolls back itself
		tx = nil
		return err
	})
	if tx != nil || errors.Is(err, errFault) {
		// tx is still set only when fn or Commit faulted.
		q.damage(s, err)
		return fmt.Errorf("commit %s: %w", s.path, err)
	}
	if err != nil {
		return fmt.Errorf("commit %s: %w", s.path, err)
	}
	q.observeCommit(start)
	return nil
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

// upgrade reopens a segment opened read-only (openLazy) for writing. The
// file is checked completely first, on this goroutine: opening it for
// writing makes bbolt rebuild the freelist by walking every page on a
// goroutine of its own, where a fault on a damaged page would be fatal.
// Writer goroutine only.
func (q *Queue) upgrade(s *segment) error {
	if _, err := scan(s.db, false); err != nil {
		if isDamage(err) {
			q.damage(s, err)
		}
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return err
	}
	db, err := openBolt(s.path, boltOptions(q.cfg, false))
	if err != nil {
		// Keep serving reads from the file as it was.
		if ro, rerr := openBolt(s.path, readOnlyOptions(q.cfg)); rerr == nil {
			s.db = ro
		}
		return fmt.Errorf("reopen %s for writing: %w", s.path, err)
	}
	s.db, s.readOnly = db, false
	return nil
}

// view runs fn in a read transaction on s. A fault puts the queue in the
// damaged state; callers that hold q.mu must use viewLocked instead and
// report the damage once they released it.
func (q *Queue) view(s *segment, fn func(tx *bolt.Tx) error) error {
	err := viewLocked(s, fn)
	if errors.Is(err, errFault) {
		q.damage(s, err)
	}
	return err
}

func viewLocked(s *segment, fn func(tx *bolt.Tx) error) error {
	return withFaults(func() error { return s.db.View(fn) })
}

// damage puts the queue in the damaged state after a fault in s: s is never
// written again, appends wait (the intake stops acknowledging, the broker
// keeps the messages), Writable reports the damage so /readyz fails, and
// Damaged is closed so the daemon can exit for a restart. The file is
// listed in the directory's damaged file: the next Open quarantines it and
// salvages what can still be read, whatever its own checks find, so the
// restart succeeds instead of failing the same way again. What is committed
// elsewhere stays readable and is still sent and acked until then.
//
// It must not be called with q.mu held.
func (q *Queue) damage(s *segment, err error) {
	q.mu.Lock()
	if s.damaged != nil {
		q.mu.Unlock()
		return
	}
	s.damaged = err
	first := q.damaged == nil
	if first {
		q.damaged = fmt.Errorf("%s damaged: %w", s.path, err)
	}
	q.mu.Unlock()
	merr := markDamaged(q.cfg.Dir, filepath.Base(s.path))
	q.m.damagedFiles.Inc()
	q.log.Error("buffer file damaged while running: appends stop, the bridge must restart to quarantine it",
		"file", s.path, "err", err, "marked", merr == nil, "mark_err", merr)
	if first {
		close(q.damagedCh)
	}
}

// damagedErr returns why s may not be used, or nil.
func (s *segment) damagedErr(q *Queue) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if s.damaged != nil {
		return fmt.Errorf("%s is damaged: %w", s.path, s.damaged)
	}
	return nil
}

// Damaged is closed once a file was found damaged while running. The queue
// then accepts no more appends; the process should shut down and start
// again, and the next Open quarantines the file.
func (q *Queue) Damaged() <-chan struct{} { return q.damagedCh }
