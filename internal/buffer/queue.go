package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgebridge/edgebridge/internal/retry"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Queue is the durable buffer. All methods are safe for concurrent use.
//
// One writer goroutine owns every write transaction: it takes all the
// requests that arrived while it was committing and commits them together,
// so concurrent appends and acks share one fsync (group commit). Readers
// use short read transactions of their own.
type Queue struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	reqs    chan *request // unbuffered: a request handed over is always answered
	kick    chan struct{} // wakes the writer when a waiting append is cancelled
	closing chan struct{}
	done    chan struct{}
	once    sync.Once

	// mu guards the fields below. The writer takes it briefly to publish
	// a commit; readers hold it shared around their read transactions, so
	// a segment is never closed under a reader. It is never held while
	// waiting for the writer.
	mu       sync.RWMutex
	segs     []*segment // ordered by first; the last one is the head
	dead     *segment   // dead letters; count and bytes are theirs
	nextSeq  uint64
	reserved uint64        // sequences below this may have been handed out
	notify   chan struct{} // closed and replaced when records are appended
	closed   bool
	blocked  bool  // appends are waiting for room
	writeErr error // the last failed commit, nil once one succeeds
	damaged  error // the first file found damaged while running (see damage)

	damagedCh chan struct{} // closed by damage
	checkDone chan struct{} // closed when the background check ended (check.go)

	// Set by Open only.
	recovering bool // a damaged file is being recovered (see recover.go)

	// Writer state, touched only by the writer goroutine.
	appends  []*request // waiting appends, FIFO
	halfDone []*request // appends whose records are committed, not yet their dead letters
	acks     []*request
	ops      []*request // dead letter, requeue, corrupt drops: one at a time
	retryAt  time.Time  // after a failed commit, when to try again
	retries  int        // commits failed in a row
	// The same for a failed operation, which does not hold back commits.
	opRetryAt time.Time
	opRetries int
	dropLog   dropLog
	high      bool // above highWater of max_bytes
	commits   uint64

	// readMax is the highest sequence Read has returned: records up to it
	// may be in flight to Kafka, and drop_oldest spares them if it can.
	readMax atomic.Uint64
	// reads counts Read calls, so the writer knows when mapped pages were
	// touched and can be released (see segment.releaseResident).
	reads atomic.Uint64
}

// Stats is a snapshot of the buffer's state.
type Stats struct {
	Records         int       // records waiting to be sent
	Bytes           int64     // their logical size
	DeadLetters     int       // dead letters held
	DeadLetterBytes int64     // their logical size
	Oldest          time.Time // append time of the oldest waiting record; zero if none
	NextSeq         uint64    // the sequence the next record gets
	Segments        int       // segment files
	DiskBytes       int64     // size of all files on disk
	Blocked         bool      // appends are waiting for room
	Damaged         bool      // a file was found damaged while running (see Damaged)
}

type opKind int

const (
	opAppend opKind = iota
	opAck
	opDeadLetter
	opRequeue
	opDropCorrupt
)

type request struct {
	kind opKind
	done chan error // buffered; written once, by the writer

	// append
	recs       []Record
	values     [][]byte // encoded bodies, sealed by the writer
	bytes      int64
	deadDone   bool        // its dead letters are committed (a retry skips them)
	cancelled  atomic.Bool // the caller gave up waiting for room
	waitedRoom bool
	dead       []put // its dead letters, once sequences are assigned

	// requeue: the records committed to the head, set once they are
	requeued []put
	rewrite  func(*Record) error

	// ack, dead letter, requeue, corrupt drop
	seqs   []uint64
	reason string
}

// writeRetry spaces the attempts after a failed commit or operation.
var writeRetry = retry.Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second}

const (
	// maxBatchBytes bounds one group commit, and so the writer's memory.
	maxBatchBytes = 16 << 20
	// reserveStep is how many sequences are reserved at a time in
	// dead.db, so a damaged head segment cannot make sequences repeat.
	reserveStep = 1 << 20
	// expireChunk bounds the records one max_age pass deletes.
	expireChunk = 50000
)

// Open opens (creating if needed) the buffer in cfg.Dir. Damaged files are
// quarantined and their readable records salvaged; Open fails only when the
// directory cannot be used at all (permissions, another process holding
// the files, a file it cannot read for a reason that is not damage) or reg
// refuses the metrics (another queue registered them already).
//
// A nil log discards the queue's log lines. A nil reg keeps the metrics
// without registering them: nothing exports them.
func Open(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Queue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q := &Queue{
		cfg:     cfg,
		log:     log.With("component", "buffer"),
		reqs:    make(chan *request),
		kick:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		notify:  make(chan struct{}),

		damagedCh: make(chan struct{}),
		checkDone: make(chan struct{}),
	}
	q.dropLog.interval = cfg.DropLogInterval
	q.m = newMetrics(q)
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open buffer %q: %w", cfg.Dir, err)
	}
	unclean, err := takeClean(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("open buffer %q: %w", cfg.Dir, err)
	}
	if err := q.load(); err != nil {
		q.closeFiles()
		return nil, fmt.Errorf("open buffer %q: %w", cfg.Dir, err)
	}
	if err := q.m.register(reg); err != nil {
		q.closeFiles()
		return nil, fmt.Errorf("open buffer %q: %w", cfg.Dir, err)
	}
	st := q.Stats()
	// Checking the files and rebuilding bbolt's freelists touched every
	// page: none of it needs to stay resident.
	q.releaseResident()
	q.log.Info("buffer opened", "dir", cfg.Dir, "records", st.Records, "bytes", st.Bytes,
		"dead_letters", st.DeadLetters, "segments", st.Segments, "next_seq", st.NextSeq)
	go q.run()
	q.startCheck(unclean)
	return q, nil
}

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

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (q *Queue) head() *segment { return q.segs[len(q.segs)-1] }

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
		if _, err := tx.CreateBucketIfNotExists(bucketRecords); err != nil {
			return err
		}
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
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

// Append commits recs and sets each one's Seq and Time. It returns only
// after the records are fsynced, in one transaction shared with concurrent
// callers. Records with Reason set are stored as dead letters.
//
// When the buffer has no room and the policy is block (and always on a full
// disk or below min_free_disk), Append waits; if ctx ends first it returns
// an error matching ErrFull and stores nothing. Records bigger than the
// whole buffer fail with ErrTooLarge.
func (q *Queue) Append(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	now := time.Now()
	r := &request{kind: opAppend, recs: recs, values: make([][]byte, len(recs)), done: make(chan error, 1)}
	for i := range recs {
		recs[i].Time = now
		r.values[i] = encodeBody(&recs[i], now)
		r.bytes += storedSize(r.values[i])
	}
	if r.bytes > q.cfg.MaxBytes {
		return fmt.Errorf("append %d records of %d bytes (buffer.max_bytes %d): %w", len(recs), r.bytes, q.cfg.MaxBytes, ErrTooLarge)
	}
	return q.submit(ctx, r)
}

// Ack deletes the records with these sequences: they reached Kafka. Order
// does not matter and sequences the buffer no longer holds are ignored. It
// returns after the deletion is fsynced.
func (q *Queue) Ack(ctx context.Context, seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	return q.submit(ctx, &request{kind: opAck, seqs: slices.Clone(seqs), done: make(chan error, 1)})
}

// DeadLetter moves the waiting record seq to the dead letters with reason.
func (q *Queue) DeadLetter(ctx context.Context, seq uint64, reason string) error {
	return q.submit(ctx, &request{kind: opDeadLetter, seqs: []uint64{seq}, reason: reason, done: make(chan error, 1)})
}

// Requeue moves dead letters back into the queue as new records, with new
// sequences, after everything already waiting: they reach Kafka after newer
// records of the same device, the one exception to per-device order. Their
// values (the envelope, with the time the message was received) are kept.
// rewrite, when set, may change each record's Topic and Key first (route
// it again); an error from it fails the whole call and changes nothing.
// At most maxRequeue sequences per call.
func (q *Queue) Requeue(ctx context.Context, seqs []uint64, rewrite func(*Record) error) error {
	if len(seqs) == 0 {
		return nil
	}
	if len(seqs) > maxRequeue {
		return fmt.Errorf("requeue %d dead letters at once: at most %d", len(seqs), maxRequeue)
	}
	return q.submit(ctx, &request{kind: opRequeue, seqs: slices.Clone(seqs), rewrite: rewrite, done: make(chan error, 1)})
}

// maxRequeue bounds one Requeue: its records are held in memory and
// committed in one transaction.
const maxRequeue = 10000

func (q *Queue) submit(ctx context.Context, r *request) error {
	select {
	case q.reqs <- r:
	case <-q.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
	}
	if r.kind != opAppend {
		// Acks and moves are short; an abandoned one still completes.
		return ctx.Err()
	}
	// Only the writer answers: it either committed the append already or
	// answers the cancellation. Waiting here is bounded by one commit.
	r.cancelled.Store(true)
	select {
	case q.kick <- struct{}{}:
	default:
	}
	if err := <-r.done; err != errCancelled {
		return err
	}
	if r.waitedRoom {
		return fmt.Errorf("%w: %w", ErrFull, ctx.Err())
	}
	return ctx.Err()
}

// Read returns up to maxRecords waiting records with sequences above after,
// in sequence order, stopping once maxBytes of values are gathered (but
// always returning at least one). It waits until there is one or ctx ends.
// Reading deletes nothing. The caller owns the returned records.
func (q *Queue) Read(ctx context.Context, after uint64, maxRecords, maxBytes int) ([]Record, error) {
	if maxRecords <= 0 {
		maxRecords = 1
	}
	q.reads.Add(1)
	for {
		q.mu.RLock()
		if q.closed {
			q.mu.RUnlock()
			return nil, ErrClosed
		}
		recs, corrupt, err := q.readLocked(after, maxRecords, maxBytes)
		notify := q.notify
		q.mu.RUnlock()
		if re, ok := errors.AsType[*readError](err); ok && errors.Is(err, errFault) {
			q.damage(re.seg, re.err)
		}
		if len(corrupt) > 0 {
			// Dropping them counts and logs them; the reader moves on.
			derr := q.submit(ctx, &request{kind: opDropCorrupt, seqs: corrupt, done: make(chan error, 1)})
			if derr != nil && len(recs) == 0 {
				return nil, derr
			}
			after = max(after, slices.Max(corrupt))
		}
		if err != nil {
			return nil, err
		}
		if len(recs) > 0 {
			last := recs[len(recs)-1].Seq
			for cur := q.readMax.Load(); last > cur && !q.readMax.CompareAndSwap(cur, last); cur = q.readMax.Load() {
			}
			return recs, nil
		}
		if len(corrupt) > 0 {
			continue
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-q.closing:
			return nil, ErrClosed
		}
	}
}

func (q *Queue) readLocked(after uint64, maxRecords, maxBytes int) (recs []Record, corrupt []uint64, err error) {
	i := q.segmentIndex(after + 1)
	size := 0
	var topic string
	// Sized once: at most what was appended after the cursor.
	if q.nextSeq > after+1 {
		recs = make([]Record, 0, min(uint64(maxRecords), q.nextSeq-after-1))
	}
	for ; i < len(q.segs) && len(recs) < maxRecords && (size < maxBytes || len(recs) == 0); i++ {
		err = viewLocked(q.segs[i], func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketRecords).Cursor()
			for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
				if len(recs) >= maxRecords || (size >= maxBytes && len(recs) > 0) {
					return nil
				}
				seq := binary.BigEndian.Uint64(k)
				rec, err := decodeRecord(seq, v, topic)
				if err != nil {
					corrupt = append(corrupt, seq)
					continue
				}
				topic = rec.Topic
				size += len(rec.Value)
				recs = append(recs, rec)
			}
			return nil
		})
		if err != nil {
			return recs, corrupt, &readError{seg: q.segs[i], err: err}
		}
	}
	return recs, corrupt, nil
}

// readError is a failed read of one segment.
type readError struct {
	seg *segment
	err error
}

func (e *readError) Error() string { return fmt.Sprintf("read segment %s: %v", e.seg.path, e.err) }
func (e *readError) Unwrap() error { return e.err }

// segmentIndex returns the index of the segment that holds seq, or of the
// first segment after it. Callers hold mu.
func (q *Queue) segmentIndex(seq uint64) int {
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].first > seq })
	return max(i-1, 0)
}

// DeadLetters returns up to max dead letters with sequences above after,
// each with the reason it was stored and, as Time, when.
func (q *Queue) DeadLetters(after uint64, max int) ([]Record, error) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return nil, ErrClosed
	}
	var recs []Record
	err := viewLocked(q.dead, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(recs) < max; k, v = c.Next() {
			rec, err := decodeRecord(binary.BigEndian.Uint64(k), v, "")
			if err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		return nil
	})
	return recs, err
}

// Stats returns a snapshot of the buffer's state.
func (q *Queue) Stats() Stats {
	s, faulted, err := q.stats()
	if faulted != nil {
		q.damage(faulted, err)
	}
	return s
}

func (q *Queue) stats() (s Stats, faulted *segment, ferr error) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	s = Stats{NextSeq: q.nextSeq, Segments: len(q.segs), Blocked: q.blocked, Damaged: q.damaged != nil}
	if q.dead != nil {
		s.DeadLetters, s.DeadLetterBytes, s.DiskBytes = q.dead.count, q.dead.bytes, fileSize(q.dead.path)
	}
	oldest := -1
	for i, seg := range q.segs {
		s.Records += seg.count
		s.Bytes += seg.bytes
		s.DiskBytes += fileSize(seg.path)
		if oldest < 0 && seg.count > 0 {
			oldest = i
		}
	}
	if oldest >= 0 && !q.closed {
		err := viewLocked(q.segs[oldest], func(tx *bolt.Tx) error {
			if _, v := tx.Bucket(bucketRecords).Cursor().First(); v != nil {
				s.Oldest, _ = recordTime(v)
			}
			return nil
		})
		if errors.Is(err, errFault) {
			return s, q.segs[oldest], err
		}
	}
	return s, nil, nil
}

// Writable reports why appends cannot commit now, or nil if they can.
func (q *Queue) Writable() error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	switch {
	case q.closed:
		return ErrClosed
	case q.damaged != nil:
		return fmt.Errorf("buffer damaged, restart to quarantine: %w", q.damaged)
	case q.writeErr != nil:
		return fmt.Errorf("buffer writes failing: %w", q.writeErr)
	case q.blocked:
		return ErrFull
	}
	return nil
}

// Close stops the writer, answers every waiting call with ErrClosed and
// closes the files. Everything committed stays for the next Open.
func (q *Queue) Close() error {
	var err error
	q.once.Do(func() {
		close(q.closing)
		<-q.done
		<-q.checkDone
		q.mu.Lock()
		q.closed = true
		damaged := q.damaged
		q.mu.Unlock()
		err = q.closeFiles()
		if err == nil && damaged == nil {
			err = markClean(q.cfg.Dir)
		}
		st := q.Stats()
		q.log.Info("buffer closed", "records", st.Records, "bytes", st.Bytes, "dead_letters", st.DeadLetters)
	})
	return err
}

func (q *Queue) closeFiles() error {
	var errs []error
	for _, s := range append(slices.Clone(q.segs), q.dead) {
		// A damaged file's write transaction was left open (see
		// Queue.write): closing would wait for it forever. The process
		// is about to exit, which releases it.
		if s != nil && s.damaged == nil {
			errs = append(errs, s.db.Close())
		}
	}
	return errors.Join(errs...)
}

// freeDisk returns the bytes available to us on the buffer's filesystem.
func freeDisk(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
