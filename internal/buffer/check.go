package buffer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// cleanName is written by Close once every file is closed: the next Open
// knows the files were not being written when the process ended. Open
// removes it before anything is written.
const cleanName = "clean"

// takeClean removes dir's clean marker and reports whether the last run
// did not end with a clean Close (a crash, a SIGKILL, a power loss).
func takeClean(dir string) (unclean bool, err error) {
	err = os.Remove(filepath.Join(dir, cleanName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, nil
	case err != nil:
		return true, fmt.Errorf("remove the clean-shutdown marker: %w", err)
	}
	return false, syncDir(dir)
}

func markClean(dir string) error {
	if err := createMarker(dir, cleanName); err != nil {
		return fmt.Errorf("mark a clean shutdown: %w", err)
	}
	return nil
}

// checkPause is the rest between two segments of the background check, so
// that it takes a share of the disk and of the readers' lock, not all.
const checkPause = 50 * time.Millisecond

// startCheck walks, after a start that followed an unclean end, every page
// of every segment Open did not read whole (all but the head) and that no
// write has checked since (see Queue.upgrade), in the background: Open must not read the backlog before the
// bridge is ready. A file found damaged goes the way of damage found while
// running (Queue.damage). It ends early when the queue closes.
func (q *Queue) startCheck(unclean bool) {
	if !unclean {
		close(q.checkDone)
		return
	}
	q.mu.RLock()
	segs := slices.Clone(q.segs[:len(q.segs)-1])
	q.mu.RUnlock()
	go func() {
		defer close(q.checkDone)
		start := time.Now()
		checked := 0
		for _, s := range segs {
			select {
			case <-q.closing:
				return
			case <-time.After(checkPause):
			}
			q.mu.RLock()
			// Only a segment still read-only: one upgraded for writing was
			// walked then.
			live := slices.Contains(q.segs, s) && s.readOnly && s.damaged == nil && !q.closed
			var err error
			if live {
				// Every page of the tree, on this goroutine, where a
				// fault or a bbolt panic on a damaged page is an error.
				// Not tx.Check: on a read-only file it loads the freelist
				// racing bbolt's other read transactions. Records'
				// checksums are checked when they are read.
				_, err = scan(s.db, false)
			}
			q.mu.RUnlock()
			if err != nil && isDamage(err) {
				q.damage(s, err)
				return
			}
			if live {
				checked++
			}
		}
		q.log.Info("buffer check after an unclean shutdown finished", "segments", checked, "took", time.Since(start).Round(time.Millisecond))
	}()
}
