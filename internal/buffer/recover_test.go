package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// damageMeta destroys both meta pages of a file: bbolt refuses it as an
// invalid database and nothing of it can be salvaged.
func damageMeta(t *testing.T, path string, _ []Record) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 2*os.Getpagesize()), 0); err != nil {
		t.Fatal(err)
	}
}

// rotRecord flips a byte of the middle record's value: its checksum fails,
// the others are salvaged.
func rotRecord(t *testing.T, path string, recs []Record) {
	t.Helper()
	flipByte(t, path, recs[len(recs)/2].Value)
}

// flipByte flips a byte of value where it is stored in the file at path,
// through a descriptor of its own: a file in use stays mapped, as when a
// flash cell rots under a running bridge.
func flipByte(t *testing.T, path string, value []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, value)
	if i < 0 {
		t.Fatal("value not found in the file")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{data[i+5] ^ 0xff}, int64(i+5)); err != nil {
		t.Fatal(err)
	}
}

// appendSegments appends n records (n a multiple of 100) in calls of 100,
// enough with minSegmentBytes for several segments.
func appendSegments(t *testing.T, q *Queue, n int) []Record {
	t.Helper()
	var all []Record
	for i := 0; i < n; i += 100 {
		all = append(all, appendN(t, q, "dev", i, 100)...)
	}
	return all
}

// closedWithSegments fills a queue in a new directory with 2000 records
// across three or more segments, closes it, and returns its config and
// the records.
func closedWithSegments(t *testing.T) (Config, []Record) {
	t.Helper()
	cfg := Config{Dir: t.TempDir(), SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20}
	q, _ := openTest(t, cfg)
	all := appendSegments(t, q, 2000)
	if q.Stats().Segments < 3 {
		t.Fatalf("%d segments, want 3 or more", q.Stats().Segments)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg, all
}

// Finding 1 of the fault model (contract 5): a quarantined head followed by
// idle restarts, or a crash at any step of the recovery, never makes a
// sequence repeat; the damaged file is quarantined once and what could be
// read is salvaged once.
func TestSequencesNeverReusedAfterQuarantine(t *testing.T) {
	damages := []struct {
		name     string
		damage   func(*testing.T, string, []Record)
		salvaged int // of the 300 records, 100 of them acked
	}{
		{"meta pages destroyed", damageMeta, 0},
		{"one record rotted", rotRecord, 199},
	}
	crashes := []string{"", "marked", "salvaged", "quarantined", "replaced", "rolled", "reserved"}
	for _, d := range damages {
		for _, crash := range crashes {
			name := d.name + "/no crash"
			if crash != "" {
				name = d.name + "/crash after " + crash
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				cfg := Config{Dir: dir, MinFreeDisk: -1}
				q := mustOpen(t, cfg)
				recs := appendN(t, q, "dev", 0, 300)
				if err := q.Ack(context.Background(), seqsOf(recs[:100])); err != nil {
					t.Fatal(err)
				}
				lastUsed := recs[len(recs)-1].Seq
				if err := q.Close(); err != nil {
					t.Fatal(err)
				}
				d.damage(t, filepath.Join(dir, segmentName(1)), recs[100:])

				if crash != "" {
					crashAt = func(s string) error {
						if s == crash {
							return errors.New("crash")
						}
						return nil
					}
					_, err := Open(cfg, testkit.Logger(t), nil)
					crashAt = nil
					if err == nil {
						t.Fatalf("Open did not stop at %s", crash)
					}
				}
				// The recovery, then two idle restarts.
				for range 3 {
					q := mustOpen(t, cfg)
					if err := q.Close(); err != nil {
						t.Fatal(err)
					}
				}
				q = openTestDir(t, cfg)
				if got := len(readAll(t, q, 0)); got != d.salvaged {
					t.Errorf("%d records salvaged, want %d", got, d.salvaged)
				}
				next := appendN(t, q, "dev", 1000, 1)
				if next[0].Seq <= lastUsed {
					t.Errorf("new record got sequence %d; %d was already used", next[0].Seq, lastUsed)
				}
				if got := quarantined(t, dir); len(got) != 1 {
					t.Errorf("quarantine holds %v, want the damaged file once", got)
				}
				for _, name := range []string{recoveringName, damagedName, segmentName(1) + salvageSuffix} {
					if ok, _ := exists(filepath.Join(dir, name)); ok {
						t.Errorf("%s left behind", name)
					}
				}
			})
		}
	}
}

func openTestDir(t *testing.T, cfg Config) *Queue {
	t.Helper()
	q := mustOpen(t, cfg)
	t.Cleanup(func() { q.Close() })
	return q
}

// The children of TestOpenFailureIsNotDamage and TestRuntimeDamage run in
// a process of their own: one under a low open-file limit, one leaves a
// damaged file's write lock held, as the bridge does until it exits.
const childEnv = "EDGEBRIDGE_BUFFER_TEST_CHILD"

func TestBufferChild(t *testing.T) {
	kind, dir, ok := strings.Cut(os.Getenv(childEnv), ":")
	if !ok {
		t.Skip("runs only as the child of another test")
	}
	cfg := Config{Dir: dir, MinFreeDisk: -1, SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20}
	switch kind {
	case "emfile":
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 14, Max: 14}); err != nil {
			t.Fatal(err)
		}
		q, err := Open(cfg, testkit.Logger(t), nil)
		if err != nil {
			os.Stdout.WriteString("open: " + err.Error() + "\n")
			os.Exit(1)
		}
		q.Close()
	case "ack", "read", "deadletter", "requeue", "append":
		q := mustOpen(t, cfg)
		inFlight, err := q.Read(context.Background(), 0, 50, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		dl := []Record{{Value: []byte("rejected"), Reason: "no_route"}}
		if err := q.Append(context.Background(), dl); err != nil {
			t.Fatal(err)
		}
		// The oldest segment's pages (dead.db's for requeue) go bad
		// under the mapping: SIGBUS on the next touch.
		bad := segmentName(1)
		switch kind {
		case "requeue":
			bad = deadFileName
		case "append":
			bad = filepath.Base(q.head().path)
		}
		if err := os.Truncate(filepath.Join(dir, bad), 8192); err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("truncated " + bad + "\n")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		switch kind {
		case "ack":
			_ = q.Ack(ctx, seqsOf(inFlight))
		case "read":
			_, _ = q.Read(ctx, inFlight[len(inFlight)-1].Seq, 100, 1<<20)
		case "deadletter":
			_ = q.DeadLetter(ctx, inFlight[0].Seq, "message_too_large")
		case "requeue":
			_ = q.Requeue(ctx, []uint64{dl[0].Seq}, nil)
		case "append":
			_ = q.Append(ctx, []Record{rec("dev", 5000)})
		}
		awaitDamage(t, q, 10*time.Second)
		ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel2()
		if err := q.Append(ctx2, []Record{rec("dev", 99999)}); !errors.Is(err, ErrFull) {
			t.Fatalf("append while damaged: %v, want ErrFull", err)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("damaged and closed\n")
	case "drop", "expire":
		// The reads of drop_oldest and max_age expiry find the damage.
		if kind == "drop" {
			cfg.WhenFull, cfg.MaxBytes = WhenFullDropOldest, 600<<10
		} else {
			cfg.MaxAge = 3 * time.Second
		}
		q := mustOpen(t, cfg)
		if kind == "drop" {
			// Read first, so that drop_oldest reads the oldest segment
			// instead of deleting it whole.
			if _, err := q.Read(context.Background(), 0, 10, 1<<20); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Truncate(filepath.Join(dir, segmentName(1)), 8192); err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("truncated " + segmentName(1) + "\n")
		if kind == "drop" {
			go q.Append(context.Background(), recs("dev", 5000, 1000))
		}
		awaitDamage(t, q, 20*time.Second)
		q.Close()
		os.Stdout.WriteString("damaged and closed\n")
	}
}

// awaitDamage waits up to timeout for q to report damage, and fails the
// test if it is still writable then.
func awaitDamage(t testing.TB, q *Queue, timeout time.Duration) {
	t.Helper()
	select {
	case <-q.Damaged():
	case <-time.After(timeout):
		t.Fatal("damage not reported")
	}
	if q.Writable() == nil {
		t.Fatal("writable while damaged")
	}
}

func runChild(t *testing.T, kind, dir string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBufferChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+kind+":"+dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func fillSegments(t *testing.T, dir string, n int) Stats {
	t.Helper()
	cfg := Config{Dir: dir, MinFreeDisk: -1, SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20}
	q := mustOpen(t, cfg)
	appendSegments(t, q, n)
	st := q.Stats()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return st
}

// Finding 2: a failure to open that is not damage (here no file
// descriptors left) fails the start with a clear error and touches
// nothing: no file is quarantined, the next start has every record.
func TestOpenFailureIsNotDamage(t *testing.T) {
	dir := t.TempDir()
	before := fillSegments(t, dir, 4000)
	out, err := runChild(t, "emfile", dir)
	if err == nil || !strings.Contains(out, "too many open files") || !strings.Contains(out, "not known to be damaged") {
		t.Fatalf("open under a low descriptor limit: %v\n%s", err, out)
	}
	if got := quarantined(t, dir); len(got) != 0 {
		t.Fatalf("healthy files quarantined: %v", got)
	}
	q := openTestDir(t, Config{Dir: dir, MinFreeDisk: -1, SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20})
	if got := q.Stats(); got.Records != before.Records {
		t.Fatalf("%d records after the failed start, want %d", got.Records, before.Records)
	}
}

// Finding 3: a page that goes bad while running, touched by a commit (an
// ack) or by a read, never kills the process (bbolt's rollback would walk
// the file on a goroutine where the fault is fatal) and never stalls
// quietly: appends stop, Writable says why, Damaged is closed. The next
// start quarantines the file, salvages what it can and goes on, above every
// old sequence.
func TestRuntimeDamage(t *testing.T) {
	for _, kind := range []string{"ack", "read", "deadletter", "requeue", "append", "drop", "expire"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			before := fillSegments(t, dir, 2000)
			if before.Segments < 3 {
				t.Fatalf("%d segments, want 3 or more", before.Segments)
			}
			out, err := runChild(t, kind, dir)
			if err != nil || !strings.Contains(out, "damaged and closed") {
				t.Fatalf("child: %v\n%s", err, out)
			}
			names, err := readDamaged(dir)
			_, rest, _ := strings.Cut(out, "truncated ")
			want, _, _ := strings.Cut(rest, "\n")
			if err != nil || !names[want] {
				t.Fatalf("damaged list %v (%v), want %q", names, err, want)
			}

			q, reg := openTest(t, Config{Dir: dir, SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20})
			if got := quarantined(t, dir); len(got) != 1 {
				t.Fatalf("quarantine holds %v, want the damaged segment", got)
			}
			if got := testkit.MetricValue(t, reg, "edgebridge_buffer_quarantined_files_total"); got != 1 {
				t.Fatalf("quarantined files metric %v, want 1", got)
			}
			if err := q.Writable(); err != nil {
				t.Fatalf("not writable after the restart: %v", err)
			}
			got := readAll(t, q, 0)
			switch kind {
			case "requeue":
				// dead.db was damaged: every waiting record is kept.
				if len(got) != before.Records {
					t.Fatalf("%d records after the restart, want %d", len(got), before.Records)
				}
			case "append":
				// The head was damaged: the older segments' records are
				// kept (here the head had just been rolled and held none).
				if len(got) == 0 || len(got) > before.Records {
					t.Fatalf("%d records after the restart, want the older segments' of %d", len(got), before.Records)
				}
			default:
				// A segment was damaged: the others' records are kept.
				if len(got) == 0 || len(got) >= before.Records {
					t.Fatalf("%d records after the restart, want the other segments' of %d", len(got), before.Records)
				}
			}
			// The child's dead letter took before.NextSeq.
			next := appendN(t, q, "dev", 0, 1)
			if next[0].Seq <= before.NextSeq {
				t.Fatalf("sequence %d reused (the child's dead letter had %d)", next[0].Seq, before.NextSeq)
			}
		})
	}
}

// failWrites makes every write transaction on the file at path fail, as
// on a disk that returns EIO, until the returned function is called.
func failWrites(t *testing.T, path string) (restore func()) {
	t.Helper()
	return failWritesIf(t, func(p string) bool { return p == path })
}

func failWritesIf(t *testing.T, match func(path string) bool) (restore func()) {
	t.Helper()
	f := func(p string) error {
		if match(p) {
			return syscall.EIO
		}
		return nil
	}
	writeFault.Store(&f)
	restore = func() { writeFault.Store(nil) }
	t.Cleanup(restore)
	return restore
}

// Findings 5 and 6: dead letters of an append are committed only after its
// records, so a failed head commit leaves nothing behind. The retry gives
// the dead letter and the record different sequences (before, the record
// took the one the dead letter already had, and moving it to dead letters
// later overwrote the first); a call cancelled while the head fails stores
// no dead letter, so the broker's redelivery stores it once.
func TestDeadLettersOfAFailedAppend(t *testing.T) {
	batch := func() []Record {
		return []Record{
			{Value: []byte("rejected: no route"), Reason: "no_route"},
			{Topic: "iot.telemetry", Key: []byte("dev"), Value: []byte("normal record")},
		}
	}
	t.Run("retried", func(t *testing.T) {
		q, reg := openTest(t, Config{})
		appendN(t, q, "dev", 0, 1)
		restore := failWrites(t, q.head().path)
		b := batch()
		done := make(chan error, 1)
		go func() { done <- q.Append(context.Background(), b) }()
		testkit.WaitFor(t, "a failed commit", func() bool { return testkit.MetricValue(t, reg, "edgebridge_buffer_commit_errors_total") >= 2 })
		restore()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if b[0].Seq == b[1].Seq {
			t.Fatalf("dead letter and record share sequence %d", b[0].Seq)
		}
		if err := q.DeadLetter(context.Background(), b[1].Seq, "message_too_large"); err != nil {
			t.Fatal(err)
		}
		dls, err := q.DeadLetters(0, 10)
		if err != nil || len(dls) != 2 || q.Stats().DeadLetters != 2 {
			t.Fatalf("%d dead letters listed (%v), %d counted; want 2", len(dls), err, q.Stats().DeadLetters)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		q, reg := openTest(t, Config{})
		appendN(t, q, "dev", 0, 1)
		restore := failWrites(t, q.head().path)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- q.Append(ctx, batch()) }()
		testkit.WaitFor(t, "a failed commit", func() bool { return testkit.MetricValue(t, reg, "edgebridge_buffer_commit_errors_total") >= 2 })
		cancel()
		if err := <-done; err == nil {
			t.Fatal("cancelled append reported stored")
		}
		restore()
		// The broker redelivers what was not acknowledged.
		if err := q.Append(context.Background(), batch()); err != nil {
			t.Fatal(err)
		}
		if dls, _ := q.DeadLetters(0, 10); len(dls) != 1 || q.Stats().DeadLetters != 1 {
			t.Fatalf("%d dead letters listed, %d counted; want 1", len(dls), q.Stats().DeadLetters)
		}
	})
}

// throughFailedCommits runs op while every write to the file at path fails,
// until three commits failed (what the test waits for), then lets the
// writes succeed and returns what op returned.
func throughFailedCommits(t *testing.T, reg *prometheus.Registry, path, what string, op func() error) error {
	t.Helper()
	restore := failWrites(t, path)
	done := make(chan error, 1)
	go func() { done <- op() }()
	testkit.WaitFor(t, what, func() bool { return testkit.MetricValue(t, reg, "edgebridge_buffer_commit_errors_total") >= 3 })
	restore()
	return <-done
}

// Finding 5: a dead-letter move retried after its delete failed, and a
// requeue retried after its dead.db delete failed, store and count once.
func TestRetriedMovesCountOnce(t *testing.T) {
	t.Run("dead letter", func(t *testing.T) {
		q, reg := openTest(t, Config{})
		recs := appendN(t, q, "dev", 0, 3)
		if err := throughFailedCommits(t, reg, q.head().path, "failed moves", func() error {
			return q.DeadLetter(context.Background(), recs[1].Seq, "message_too_large")
		}); err != nil {
			t.Fatal(err)
		}
		if st := q.Stats(); st.DeadLetters != 1 || st.Records != 2 {
			t.Fatalf("%d dead letters and %d records, want 1 and 2", st.DeadLetters, st.Records)
		}
		if got := testkit.MetricValue(t, reg, "edgebridge_buffer_dead_lettered_records_total"); got != 1 {
			t.Fatalf("dead letters counted %v times, want 1", got)
		}
	})
	t.Run("requeue", func(t *testing.T) {
		q, reg := openTest(t, Config{})
		if err := q.Append(context.Background(), []Record{{Value: []byte("x"), Reason: "no_route"}}); err != nil {
			t.Fatal(err)
		}
		dls, _ := q.DeadLetters(0, 1)
		if err := throughFailedCommits(t, reg, q.dead.path, "failed requeues", func() error {
			return q.Requeue(context.Background(), []uint64{dls[0].Seq}, nil)
		}); err != nil {
			t.Fatal(err)
		}
		if st := q.Stats(); st.DeadLetters != 0 || st.Records != 1 {
			t.Fatalf("%d dead letters and %d records, want 0 and 1", st.DeadLetters, st.Records)
		}
	})
}

// Finding 5: a crash between a move's dead.db commit and its delete leaves
// the record in both files; the next Open finishes the move.
func TestOpenFinishesInterruptedMove(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, MinFreeDisk: -1}
	q := mustOpen(t, cfg)
	recs := appendN(t, q, "dev", 0, 3)
	q.Close()
	// What the move had committed to dead.db before the crash.
	db, err := bolt.Open(filepath.Join(dir, deadFileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := recs[1]
	r.Reason = "message_too_large"
	v := encodeBody(&r, time.Now())
	seal(v, r.Seq)
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketRecords).Put(seqKey(r.Seq), v) }); err != nil {
		t.Fatal(err)
	}
	db.Close()

	q, _ = openTest(t, cfg)
	got := readAll(t, q, 0)
	if len(got) != 2 || got[0].Seq != recs[0].Seq || got[1].Seq != recs[2].Seq {
		t.Fatalf("waiting %v, want the two records not moved", seqsOf(got))
	}
	if dls, _ := q.DeadLetters(0, 10); len(dls) != 1 || dls[0].Seq != r.Seq {
		t.Fatalf("dead letters %v", dls)
	}
}

// Finding 3: a dead-letter move of a record that rotted after it was read
// can never succeed: it is dropped as corrupt, counted, and answered, and
// every later append and ack commits.
func TestRottedDeadLetterMoveDoesNotBlock(t *testing.T) {
	q, reg := openTest(t, Config{})
	recs := appendN(t, q, "dev", 0, 100)
	victim := recs[50]
	if _, err := q.Read(context.Background(), 0, 100, 1<<20); err != nil {
		t.Fatal(err)
	}
	flipByte(t, q.head().path, victim.Value)

	if err := q.DeadLetter(context.Background(), victim.Seq, "message_too_large"); !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("move of a rotted record: %v, want corrupt and not found", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Append(ctx, []Record{rec("dev", 1000)}); err != nil {
		t.Fatalf("append after the move: %v", err)
	}
	if err := q.Ack(ctx, []uint64{recs[10].Seq}); err != nil {
		t.Fatalf("ack after the move: %v", err)
	}
	if got := testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropCorrupt); got != 1 {
		t.Fatalf("corrupt drops %v, want 1", got)
	}
}

// Finding 17: Open reads no records of the segments behind the head, so
// its time does not grow with the backlog (BenchmarkOpenCold has the
// figures). Damage is still found: a record that rotted in an old segment
// fails its checksum when it is read, and is dropped and counted, without
// a quarantine of the file; the whole file is checked before its first
// write.
func TestOpenReadsNoRecordsOfOldSegments(t *testing.T) {
	cfg, all := closedWithSegments(t)
	dir := cfg.Dir
	rotRecord(t, filepath.Join(dir, segmentName(1)), all[:100])

	q, reg := openTest(t, cfg)
	if got := quarantined(t, dir); len(got) != 0 {
		t.Fatalf("Open quarantined %v: it read the old segment's records", got)
	}
	if got := q.Stats().Records; got != len(all) {
		t.Fatalf("%d records counted at open, want %d", got, len(all))
	}
	got := readAll(t, q, 0)
	if len(got) != len(all)-1 {
		t.Fatalf("read %d records, want %d", len(got), len(all)-1)
	}
	if n := testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropCorrupt); n != 1 {
		t.Fatalf("corrupt drops %v, want 1", n)
	}
	// Acks upgrade the old segments for writing, after their check.
	if err := q.Ack(context.Background(), seqsOf(got)); err != nil {
		t.Fatal(err)
	}
	if err := q.Writable(); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Records != 0 || st.Segments != 1 {
		t.Fatalf("after acking everything: %+v", st)
	}
}

// The fault matrix of docs/reliability.md, write column: EIO on the
// commit of every write site. The failed transaction is rolled back and
// retried with a backoff, the state shows in Writable (and so /readyz) or
// in the caller waiting, nothing committed is lost, nothing is counted
// twice, and the work completes once the disk recovers.
func TestWriteFaultAtEverySite(t *testing.T) {
	small := Config{SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20}
	tests := []struct {
		name string
		cfg  Config
		// setup prepares the queue; fault picks the files to fail; act
		// starts the operation under the fault; check runs after.
		setup func(t *testing.T, q *Queue) []Record
		fault func(q *Queue) func(string) bool
		act   func(q *Queue, recs []Record) error
		check func(t *testing.T, q *Queue, reg *prometheus.Registry, recs []Record)
	}{{
		name:  "append commit",
		cfg:   small,
		setup: func(t *testing.T, q *Queue) []Record { return nil },
		fault: func(q *Queue) func(string) bool { h := q.head().path; return func(p string) bool { return p == h } },
		act:   func(q *Queue, _ []Record) error { return q.Append(context.Background(), []Record{rec("dev", 1)}) },
		check: func(t *testing.T, q *Queue, _ *prometheus.Registry, _ []Record) {
			if got := readAll(t, q, 0); len(got) != 1 {
				t.Fatalf("%d records, want 1", len(got))
			}
		},
	}, {
		name:  "ack commit",
		cfg:   small,
		setup: func(t *testing.T, q *Queue) []Record { return appendN(t, q, "dev", 0, 10) },
		fault: func(q *Queue) func(string) bool { h := q.head().path; return func(p string) bool { return p == h } },
		act:   func(q *Queue, recs []Record) error { return q.Ack(context.Background(), seqsOf(recs[:5])) },
		check: func(t *testing.T, q *Queue, reg *prometheus.Registry, _ []Record) {
			if got := q.Stats().Records; got != 5 {
				t.Fatalf("%d records, want 5", got)
			}
			if got := testkit.MetricValue(t, reg, "edgebridge_buffer_acked_records_total"); got != 5 {
				t.Fatalf("acked counted %v, want 5", got)
			}
		},
	}, {
		name:  "dead-letter move",
		cfg:   small,
		setup: func(t *testing.T, q *Queue) []Record { return appendN(t, q, "dev", 0, 10) },
		fault: func(q *Queue) func(string) bool { d := q.dead.path; return func(p string) bool { return p == d } },
		act: func(q *Queue, recs []Record) error {
			// Appends and acks go on while the move is retried.
			done := make(chan error, 1)
			go func() { done <- q.DeadLetter(context.Background(), recs[3].Seq, "message_too_large") }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := q.Append(ctx, []Record{rec("dev", 99)}); err != nil {
				return fmt.Errorf("append during the failing move: %w", err)
			}
			return <-done
		},
		check: func(t *testing.T, q *Queue, reg *prometheus.Registry, _ []Record) {
			if st := q.Stats(); st.DeadLetters != 1 || st.Records != 10 {
				t.Fatalf("%d dead letters, %d records; want 1 and 10", st.DeadLetters, st.Records)
			}
		},
	}, {
		name: "requeue",
		cfg:  small,
		setup: func(t *testing.T, q *Queue) []Record {
			if err := q.Append(context.Background(), []Record{{Topic: "t", Key: []byte("k"), Value: []byte("v"), Reason: "no_route"}}); err != nil {
				t.Fatal(err)
			}
			dls, _ := q.DeadLetters(0, 1)
			return dls
		},
		fault: func(q *Queue) func(string) bool { h := q.head().path; return func(p string) bool { return p == h } },
		act:   func(q *Queue, dls []Record) error { return q.Requeue(context.Background(), seqsOf(dls), nil) },
		check: func(t *testing.T, q *Queue, _ *prometheus.Registry, _ []Record) {
			if st := q.Stats(); st.DeadLetters != 0 || st.Records != 1 {
				t.Fatalf("%d dead letters, %d records; want 0 and 1", st.DeadLetters, st.Records)
			}
		},
	}, {
		name:  "roll",
		cfg:   small,
		setup: func(t *testing.T, q *Queue) []Record { return nil },
		fault: func(q *Queue) func(string) bool {
			h := q.head().path
			return func(p string) bool { return p != h && strings.HasPrefix(filepath.Base(p), segmentPrefix) }
		},
		act: func(q *Queue, _ []Record) error {
			// Enough to fill the head: the roll to a new segment fails,
			// the appends are committed to the old head meanwhile.
			for i := 0; i < 600; i += 100 {
				if err := q.Append(context.Background(), recs("dev", i, 100)); err != nil {
					return err
				}
			}
			return nil
		},
		check: func(t *testing.T, q *Queue, _ *prometheus.Registry, _ []Record) {
			appendN(t, q, "dev", 1000, 100)
			if st := q.Stats(); st.Segments < 2 || st.Records != 700 {
				t.Fatalf("%d segments, %d records; want a roll and 700", st.Segments, st.Records)
			}
		},
	}, {
		name: "drop_oldest",
		cfg:  Config{MaxBytes: 200 << 10, SegmentBytes: minSegmentBytes, WhenFull: WhenFullDropOldest},
		setup: func(t *testing.T, q *Queue) []Record {
			var all []Record
			for i := 0; len(all) < 700; i += 50 {
				all = append(all, appendN(t, q, "dev", i, 50)...)
			}
			return all
		},
		fault: func(q *Queue) func(string) bool { o := q.segs[0].path; return func(p string) bool { return p == o } },
		act:   func(q *Queue, _ []Record) error { return q.Append(context.Background(), recs("dev", 5000, 200)) },
		check: func(t *testing.T, q *Queue, reg *prometheus.Registry, all []Record) {
			dropped := int(testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropOverflow))
			if st := q.Stats(); dropped == 0 || dropped+st.Records != len(all)+200 {
				t.Fatalf("dropped %d + held %d != appended %d", dropped, st.Records, len(all)+200)
			}
		},
	}, {
		name:  "max_age expiry",
		cfg:   Config{MaxAge: 100 * time.Millisecond, SegmentBytes: minSegmentBytes},
		setup: func(t *testing.T, q *Queue) []Record { return appendN(t, q, "dev", 0, 50) },
		fault: func(q *Queue) func(string) bool { h := q.head().path; return func(p string) bool { return p == h } },
		act:   func(q *Queue, _ []Record) error { return nil },
		check: func(t *testing.T, q *Queue, reg *prometheus.Registry, old []Record) {
			// The writer counts a drop just after its commit, which Stats
			// shows at once: wait for both.
			drops := func() float64 {
				return testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropMaxAge)
			}
			testkit.WaitFor(t, "expiry", func() bool { return q.Stats().Records == 0 && drops() >= float64(len(old)) })
			if got := drops(); got != float64(len(old)) {
				t.Fatalf("max_age drops %v, want %d", got, len(old))
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, reg := openTest(t, tt.cfg)
			recs := tt.setup(t, q)
			restore := failWritesIf(t, tt.fault(q))
			done := make(chan error, 1)
			go func() { done <- tt.act(q, recs) }()
			testkit.WaitFor(t, "failed commits", func() bool { return testkit.MetricValue(t, reg, "edgebridge_buffer_commit_errors_total") >= 2 })
			restore()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			tt.check(t, q, reg, recs)
			testkit.WaitFor(t, "writable again", func() bool { return q.Writable() == nil })
		})
	}
	t.Run("salvage", func(t *testing.T) {
		dir := t.TempDir()
		cfg := Config{Dir: dir, MinFreeDisk: -1}
		all := fillAndClose(t, cfg, 300)
		rotRecord(t, filepath.Join(dir, segmentName(1)), all)
		restore := failWritesIf(t, func(p string) bool { return strings.HasSuffix(p, salvageSuffix) })
		if _, err := Open(cfg, testkit.Logger(t), nil); err == nil || !strings.Contains(err.Error(), "salvage") {
			t.Fatalf("open with the salvage failing: %v", err)
		}
		if got := quarantined(t, dir); len(got) != 0 {
			t.Fatalf("quarantined %v before its salvage was written", got)
		}
		restore()
		q := openTestDir(t, cfg)
		if got := len(readAll(t, q, 0)); got != 299 {
			t.Fatalf("%d records salvaged, want 299", got)
		}
	})
}

// A requeue of a dead letter that rotted on disk is answered with the
// damage and never retried: later appends and acks commit.
func TestRequeueOfARottedDeadLetterIsAnswered(t *testing.T) {
	q, _ := openTest(t, Config{})
	dl := []Record{{Topic: "t", Key: []byte("k"), Value: []byte("a dead letter that will rot"), Reason: "no_route"}}
	if err := q.Append(context.Background(), dl); err != nil {
		t.Fatal(err)
	}
	flipByte(t, q.dead.path, dl[0].Value)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Requeue(ctx, []uint64{dl[0].Seq}, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("requeue of a rotted dead letter: %v, want ErrCorrupt", err)
	}
	if err := q.Append(ctx, []Record{rec("dev", 1)}); err != nil {
		t.Fatalf("append after the requeue: %v", err)
	}
}

// Counts in a segment's meta that an older edgebridge left stale (it
// wrote the file without updating them) are not trusted: the transaction
// that wrote them is no longer the last, so Open checks the file whole and
// counts again; nothing is taken for damage.
func TestStaleCountsAreCorrected(t *testing.T) {
	cfg, all := closedWithSegments(t)
	dir := cfg.Dir
	// An older version deletes ten records of the oldest segment and
	// leaves its counts as they were.
	db, err := bolt.Open(filepath.Join(dir, segmentName(1)), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, r := range all[:10] {
			if err := tx.Bucket(bucketRecords).Delete(seqKey(r.Seq)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	q, _ := openTest(t, cfg)
	if err := q.Ack(context.Background(), []uint64{all[10].Seq}); err != nil {
		t.Fatal(err)
	}
	if err := q.Writable(); err != nil {
		t.Fatal(err)
	}
	if got := quarantined(t, dir); len(got) != 0 {
		t.Fatalf("quarantined %v", got)
	}
	if st := q.Stats(); st.Records != len(all)-11 {
		t.Fatalf("%d records counted, want %d", st.Records, len(all)-11)
	}
}

// Segments written by an older edgebridge have no counts: the first Open
// checks them whole and writes their counts, so the next Open reads none
// of their records (a rotted one is found when read, not at Open).
func TestOldSegmentsGetTheirCountsOnce(t *testing.T) {
	cfg, all := closedWithSegments(t)
	dir := cfg.Dir
	segs, _ := filepath.Glob(filepath.Join(dir, segmentPrefix+"*"))
	for _, p := range segs {
		db, err := bolt.Open(p, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			m := tx.Bucket(bucketMeta)
			for _, k := range [][]byte{keyCount, keyBytes, keyCountsTx} {
				if err := m.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}

	q, _ := openTest(t, cfg) // checks them whole, writes their counts
	if got := q.Stats().Records; got != len(all) {
		t.Fatalf("%d records, want %d", got, len(all))
	}
	q.Close()
	rotRecord(t, filepath.Join(dir, segmentName(1)), all[:100])
	q, _ = openTest(t, cfg)
	if got := quarantined(t, dir); len(got) != 0 {
		t.Fatalf("the second Open read the old segment's records: quarantined %v", got)
	}
	if got := len(readAll(t, q, 0)); got != len(all)-1 {
		t.Fatalf("read %d records, want %d", got, len(all)-1)
	}
}

// Finding 17: after an unclean end (no clean marker: a crash, a SIGKILL)
// the segments Open did not read get bbolt's check in the background; a
// damaged page among them is found without any read or ack touching it.
// After a clean Close there is no such check.
func TestUncleanStartChecksInTheBackground(t *testing.T) {
	for _, clean := range []bool{false, true} {
		t.Run(fmt.Sprintf("clean=%v", clean), func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{Dir: dir, SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20}
			fillSegments(t, dir, 2000)
			if ok, _ := exists(filepath.Join(dir, cleanName)); !ok {
				t.Fatal("Close wrote no clean marker")
			}
			if !clean {
				os.Remove(filepath.Join(dir, cleanName))
			}
			// A leaf page of the oldest segment gets a bad page type:
			// bbolt panics on it when a walk reaches it.
			path := filepath.Join(dir, segmentName(1))
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			i := bytes.Index(data, rec("dev", 100).Value)
			if i < 0 {
				t.Fatal("record not found")
			}
			page := i / os.Getpagesize() * os.Getpagesize()
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{0xff, 0xff}, int64(page+8)); err != nil { // the page's flags
				t.Fatal(err)
			}
			f.Close()

			q := mustOpen(t, cfg)
			if clean {
				// No check runs: checkDone is closed at once.
				<-q.checkDone
				if q.Stats().Damaged {
					t.Fatal("a check ran after a clean shutdown")
				}
				q.Close()
				return
			}
			select {
			case <-q.Damaged():
			case <-time.After(20 * time.Second):
				t.Fatal("the background check did not find the damaged page")
			}
			q.Close()
			names, _ := readDamaged(dir)
			if !names[segmentName(1)] {
				t.Fatalf("damaged list %v", names)
			}
		})
	}
}
