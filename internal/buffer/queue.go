package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
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
	retry    backoff    // of failed commits
	// The same for a failed operation, which does not hold back commits.
	opRetry backoff
	dropLog dropLog
	high    bool // above highWater of max_bytes
	commits uint64

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
	q := newQueue(cfg, log)
	unclean, err := q.open(reg)
	if err != nil {
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

// newQueue returns a queue with no files open yet and its metrics built.
func newQueue(cfg Config, log *slog.Logger) *Queue {
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
	return q
}

// open creates the directory, takes its clean-shutdown marker, opens its
// files (load) and registers the metrics. It reports whether the last run
// ended without a clean Close. On failure it closes the files it opened.
func (q *Queue) open(reg prometheus.Registerer) (unclean bool, err error) {
	if err := os.MkdirAll(q.cfg.Dir, 0o700); err != nil {
		return false, err
	}
	if unclean, err = takeClean(q.cfg.Dir); err != nil {
		return false, err
	}
	if err = q.load(); err == nil {
		err = q.m.register(reg)
	}
	if err != nil {
		q.closeFiles()
		return false, err
	}
	return unclean, nil
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
