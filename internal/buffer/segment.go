package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

var (
	bucketRecords = []byte("records")
	bucketMeta    = []byte("meta")
	keyNextSeq    = []byte("next_seq")
	keyReserved   = []byte("reserved_seq")
	// keyCount and keyBytes hold the file's live records and their
	// logical size, written in every transaction that changes them, so
	// that Open need not read the records to know them; keyCountsTx is the
	// transaction that wrote them. A later transaction that did not (an
	// older edgebridge wrote the file) makes them stale.
	keyCount    = []byte("count")
	keyBytes    = []byte("bytes")
	keyCountsTx = []byte("counts_txid")
)

// createBuckets creates a file's buckets where they are missing.
func createBuckets(tx *bolt.Tx) (records, meta *bolt.Bucket, err error) {
	if records, err = tx.CreateBucketIfNotExists(bucketRecords); err != nil {
		return nil, nil, err
	}
	if meta, err = tx.CreateBucketIfNotExists(bucketMeta); err != nil {
		return nil, nil, err
	}
	return records, meta, nil
}

// putCounts records a file's live records and their size in its meta.
func putCounts(tx *bolt.Tx, count int, bytes int64) error {
	m := tx.Bucket(bucketMeta)
	if err := m.Put(keyCount, seqKey(uint64(count))); err != nil {
		return err
	}
	if err := m.Put(keyCountsTx, seqKey(uint64(tx.ID()))); err != nil {
		return err
	}
	return m.Put(keyBytes, seqKey(uint64(bytes)))
}

// readCounts returns what putCounts recorded, in a read transaction; ok is
// false for a file written before the counts were kept, or written since
// by a version that does not keep them.
func readCounts(tx *bolt.Tx) (count int, bytes int64, ok bool) {
	m := tx.Bucket(bucketMeta)
	c, b, id := m.Get(keyCount), m.Get(keyBytes), m.Get(keyCountsTx)
	if len(c) != 8 || len(b) != 8 || len(id) != 8 || binary.BigEndian.Uint64(id) != uint64(tx.ID()) {
		return 0, 0, false
	}
	return int(binary.BigEndian.Uint64(c)), int64(binary.BigEndian.Uint64(b)), true
}

const (
	segmentPrefix  = "seg-"
	segmentSuffix  = ".db"
	deadFileName   = "dead.db"
	quarantineDir  = "quarantine"
	segmentNameLen = len(segmentPrefix) + 20 + len(segmentSuffix)
)

// segment is one bbolt file of the chain. Its records have sequences from
// first up to the next segment's first.
//
// The writer goroutine owns count, bytes and size; readers see them under
// Queue.mu.
type segment struct {
	path  string
	first uint64
	db    *bolt.DB
	// readOnly: opened without its freelist, as every segment but the
	// head is at Open (see Queue.openLazy); the first write upgrades it.
	readOnly bool
	count    int   // live records
	bytes    int64 // their logical size
	// damaged is the fault found in this file while running (see
	// Queue.damage); guarded by Queue.mu. A damaged file is never written
	// or closed again.
	damaged error
	// size is bbolt's high-water mark of used pages (tx.Size), which
	// decides when to roll. The file itself may be larger: bbolt grows it
	// ahead in steps of up to 16 MiB.
	size int64
}

// releaseResident drops the pages of the file's memory map from this
// process's resident set. bbolt maps the file shared and read-only and
// writes with pwrite, so no page of the map is dirty: the pages stay in the
// page cache and the next read faults them back in. Without this, every
// page a reader touched (a drained backlog, bbolt's freelist walk at open)
// stays counted in RSS, and in a container's memory, until the segment is
// closed.
//
// Only the writer goroutine, or Open before it starts, may call it: only
// a write transaction makes bbolt remap, which would leave the address
// pointing at memory that is no longer the map.
func (s *segment) releaseResident() {
	if s.db == nil || s.size <= 0 {
		return
	}
	// The range is within the map: bbolt maps at least its used size.
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, s.db.Info().Data, uintptr(s.size), unix.MADV_DONTNEED)
}

// usedSize returns bbolt's high-water mark of used pages.
func usedSize(db *bolt.DB) int64 {
	var n int64
	_ = db.View(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func segmentName(first uint64) string {
	return fmt.Sprintf("%s%020d%s", segmentPrefix, first, segmentSuffix)
}

// parseSegmentName returns the first sequence of a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	if len(name) != segmentNameLen || !strings.HasPrefix(name, segmentPrefix) || !strings.HasSuffix(name, segmentSuffix) {
		return 0, false
	}
	first, err := strconv.ParseUint(name[len(segmentPrefix):len(segmentPrefix)+20], 10, 64)
	return first, err == nil
}

func isSegmentName(name string) bool {
	_, ok := parseSegmentName(name)
	return ok
}

func boltOptions(cfg Config, head bool) *bolt.Options {
	o := &bolt.Options{
		Timeout: cfg.LockTimeout,
		// The freelist is rebuilt by scanning on open instead of being
		// written at every commit: fewer pages written per commit, and a
		// map freelist stays fast after a large drain frees many pages.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Rebuild the freelist at open, right after scan walked
		// the same pages on a goroutine where a fault is an error: the
		// first write transaction would otherwise walk them on bbolt's
		// goroutine, where a fault kills the process.
		PreLoadFreelist: true,
	}
	if head {
		// Map the whole segment up front so the writer never remaps
		// (a remap waits for every open read transaction).
		o.InitialMmapSize = int(2 * cfg.SegmentBytes)
	}
	return o
}

// readOnlyOptions are the options for checking a file without changing it.
func readOnlyOptions(cfg Config) *bolt.Options {
	o := boltOptions(cfg, false)
	o.ReadOnly = true
	// A read-only file needs no freelist: loading one walks every page on
	// bbolt's goroutine.
	o.PreLoadFreelist = false
	return o
}

// openBolt opens a bbolt file, turning the panics bbolt raises on some
// damaged files into errors.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	err = withFaults(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, o)
		return err
	})
	return db, err
}

// recoverCorrupt converts a panic or memory fault (bbolt reading a damaged
// page) into ErrCorrupt. It must be deferred directly.
func recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %w: %v", ErrCorrupt, errFault, r)
	}
}

// withFaults runs f with memory faults turned into panics, so a damaged
// mmap'd page surfaces as an error instead of killing the process.
func withFaults(f func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer recoverCorrupt(&err)
	return f()
}

// isLockTimeout reports whether err means another process holds the file.
func isLockTimeout(err error) bool { return errors.Is(err, bolterrors.ErrTimeout) }

// scanResult is what a full check of a segment found.
type scanResult struct {
	count   int
	bytes   int64
	nextSeq uint64 // from the meta bucket, 0 if absent
	last    uint64 // highest record sequence, 0 if none
}

// scan walks every record and, when full, verifies each checksum and then
// runs bbolt's consistency check. Open's check is full: any error then
// means the file must be quarantined.
//
// The walk over the records comes first and runs on this goroutine: it
// touches every page of the tree, so a damaged page panics here, where
// withFaults turns it into an error. tx.Check (and bbolt's freelist
// rebuild when a file is opened for writing) walk the same pages on
// goroutines of their own, where a panic would kill the process. db should
// be opened read-only, which rebuilds no freelist.
//
// Not full, what remains proves every page of the tree can be read,
// which is what a file about to be opened for writing needs (see
// Queue.upgrade). A record that rotted is dropped when it is read and needs
// no quarantine of its file.
func scan(db *bolt.DB, full bool) (res scanResult, err error) {
	err = withFaults(func() error {
		return db.View(func(tx *bolt.Tx) error {
			if m := tx.Bucket(bucketMeta); m != nil {
				if v := m.Get(keyNextSeq); len(v) == 8 {
					res.nextSeq = binary.BigEndian.Uint64(v)
				}
			}
			if b := tx.Bucket(bucketRecords); b != nil {
				err := b.ForEach(func(k, v []byte) error {
					if len(k) != 8 {
						return fmt.Errorf("%w: key of %d bytes", ErrCorrupt, len(k))
					}
					seq := binary.BigEndian.Uint64(k)
					if full {
						if err := verify(seq, v); err != nil {
							return err
						}
					}
					res.count++
					res.bytes += storedSize(v)
					res.last = seq
					return nil
				})
				if err != nil {
					return err
				}
			}
			if !full {
				return nil
			}
			// Drain the whole channel: Check's goroutine blocks on
			// every error it finds until someone reads it.
			var first error
			for cerr := range tx.Check() {
				if first == nil {
					first = fmt.Errorf("%w: %v", ErrCorrupt, cerr)
				}
			}
			return first
		})
	})
	return res, err
}

// verify checks a stored value's checksum without decoding it.
func verify(seq uint64, v []byte) error {
	if len(v) < recordHeaderLen || v[0] != recordVersion {
		return fmt.Errorf("record %d: %w: bad header", seq, ErrCorrupt)
	}
	if checksum(seq, v[recordHeaderLen:]) != binary.BigEndian.Uint32(v[1:5]) {
		return fmt.Errorf("record %d: %w: checksum mismatch", seq, ErrCorrupt)
	}
	return nil
}

// createMarker creates the empty file name in dir, durably: the file and
// the directory are synced.
func createMarker(dir, name string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
