package buffer

import (
	"golang.org/x/sys/unix"
)

// admit returns the waiting appends, in order, that may commit now, and
// how many bytes of old records drop_oldest must delete first.
func (q *Queue) admit() (admitted []*request, drop int64) {
	if len(q.appends) == 0 || q.holdBack() {
		return nil, 0
	}
	return q.fit()
}

// holdBack reports whether no append may commit now, whatever its size,
// and marks them all as waiting for room: after damage was found (stop
// acknowledging: the broker keeps the messages until the restart that
// quarantines the damaged file), or while the disk is below min_free_disk.
func (q *Queue) holdBack() bool {
	q.mu.RLock()
	damaged := q.damaged
	q.mu.RUnlock()
	switch {
	case damaged != nil:
		q.setBlocked(true)
	case !q.belowMinFree():
		return false
	}
	for _, r := range q.appends {
		r.waitedRoom = true
	}
	return true
}

// belowMinFree reports whether the buffer's filesystem has less free space
// than min_free_disk, and logs it once per episode.
func (q *Queue) belowMinFree() bool {
	if q.cfg.MinFreeDisk <= 0 {
		return false
	}
	free, err := freeDisk(q.cfg.Dir)
	if err != nil || free >= q.cfg.MinFreeDisk {
		return false
	}
	q.waitRoom("disk below buffer.min_free_disk", "free_bytes", free, "min_free_disk", q.cfg.MinFreeDisk)
	return true
}

// fit returns the longest run of waiting appends, oldest first, that fits
// under max_bytes, counting what drop_oldest may delete to make room, and
// how many bytes it must delete. The appends after the run wait for room.
func (q *Queue) fit() (admitted []*request, drop int64) {
	used, droppable := q.usage()
	room := q.cfg.MaxBytes - used
	n := 0
	for _, r := range q.appends {
		if r.bytes > room {
			if q.cfg.WhenFull != WhenFullDropOldest || r.bytes-room > droppable-drop {
				break
			}
			drop += r.bytes - room
			room = r.bytes
		}
		room -= r.bytes
		n++
	}
	if n < len(q.appends) {
		q.waitRoom("buffer full", "bytes", used, "max_bytes", q.cfg.MaxBytes)
		for _, r := range q.appends[n:] {
			r.waitedRoom = true
		}
	}
	return q.appends[:n], drop
}

// usage returns the logical bytes held and how many of them drop_oldest may
// delete (dead letters are kept: an operator decides about them).
func (q *Queue) usage() (used, droppable int64) {
	for _, s := range q.segs {
		droppable += s.bytes
	}
	return droppable + q.dead.bytes, droppable
}

// freeDisk returns the bytes available to us on the buffer's filesystem.
func freeDisk(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// waitRoom logs, once per episode, that appends are held back.
func (q *Queue) waitRoom(msg string, args ...any) {
	q.mu.RLock()
	was := q.blocked
	q.mu.RUnlock()
	if !was {
		q.log.Warn(msg+": appends wait, the MQTT broker keeps the messages", args...)
	}
	q.setBlocked(true)
}

func (q *Queue) setBlocked(b bool) {
	q.mu.Lock()
	was := q.blocked
	q.blocked = b
	q.mu.Unlock()
	if was && !b {
		q.log.Info("buffer has room again: appends resume")
	}
}

// highWater is the share of max_bytes above which the buffer logs that it
// is filling up: one line when crossed, one when back below.
const highWater = 0.8

func (q *Queue) checkHighWater() {
	used, _ := q.usage()
	high := float64(used) >= highWater*float64(q.cfg.MaxBytes)
	if high == q.high {
		return
	}
	q.high = high
	if high {
		q.log.Warn("buffer above 80% of max_bytes", "bytes", used, "max_bytes", q.cfg.MaxBytes, "policy", q.cfg.WhenFull)
	} else {
		q.log.Info("buffer below 80% of max_bytes again", "bytes", used, "max_bytes", q.cfg.MaxBytes)
	}
}
