package buffer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

func appendN(t testing.TB, q *Queue, key string, from, n int) []Record {
	t.Helper()
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = rec(key, from+i)
	}
	if err := q.Append(context.Background(), recs); err != nil {
		t.Fatalf("append: %v", err)
	}
	return recs
}

// Sequences are never reused: not after a restart, not after the queue was
// drained and its segments deleted.
func TestSequencesSurviveRestartAndDrain(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20}
	q, _ := openTest(t, cfg)
	var last uint64
	for round := range 3 {
		recs := appendN(t, q, "dev", 0, 2000)
		if recs[0].Seq <= last {
			t.Fatalf("round %d: sequence %d reused (last was %d)", round, recs[0].Seq, last)
		}
		last = recs[len(recs)-1].Seq
		if err := q.Ack(context.Background(), seqsOf(recs)); err != nil {
			t.Fatal(err)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		var err error
		if q, err = Open(cfg, testkit.Logger(t), nil); err != nil {
			t.Fatal(err)
		}
		if st := q.Stats(); st.Records != 0 || st.NextSeq != last+1 {
			t.Fatalf("round %d after reopen: %+v, want empty with next_seq %d", round, st, last+1)
		}
	}
	q.Close()
}

// Records appended before a restart are read after it, in order (contract 2).
func TestRecordsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20}
	q, err := Open(cfg, testkit.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := appendN(t, q, "dev", 0, 3000)
	if err := q.Ack(context.Background(), seqsOf(recs[:1000])); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q2, _ := openTest(t, cfg)
	got := readAll(t, q2, 0)
	if len(got) != 2000 || got[0].Seq != recs[1000].Seq || got[1999].Seq != recs[2999].Seq {
		t.Fatalf("after restart read %d records [%d..], want 2000 from %d", len(got), got[0].Seq, recs[1000].Seq)
	}
}

// A reader waits for new records without polling and resumes after what it
// was handed, even when those are not acked yet.
func TestReadWaitsAndResumes(t *testing.T) {
	q, _ := openTest(t, Config{})
	ctx := context.Background()
	got := make(chan []Record)
	go func() {
		recs, err := q.Read(ctx, 0, 10, 1<<20)
		if err != nil {
			t.Error(err)
		}
		got <- recs
	}()
	recs := appendN(t, q, "dev", 0, 3)
	r := <-got
	if len(r) != 3 || r[0].Seq != recs[0].Seq {
		t.Fatalf("woken reader got %v, want the 3 appended", seqsOf(r))
	}
	more := appendN(t, q, "dev", 3, 3)
	r, err := q.Read(ctx, recs[2].Seq, 10, 1<<20)
	if err != nil || len(r) != 3 || r[0].Seq != more[0].Seq {
		t.Fatalf("resumed read got %v, %v; want %v", seqsOf(r), err, seqsOf(more))
	}
	// Bounded by count and by bytes (but never empty).
	if r, _ := q.Read(ctx, 0, 2, 1<<20); len(r) != 2 {
		t.Fatalf("read with max 2 records returned %d", len(r))
	}
	if r, _ := q.Read(ctx, 0, 100, 1); len(r) != 1 {
		t.Fatalf("read with 1 byte returned %d records, want 1", len(r))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := q.Read(cctx, more[2].Seq, 10, 1<<20); !errors.Is(err, context.Canceled) {
		t.Fatalf("read with cancelled ctx and nothing new: %v", err)
	}
}

// Contract 4, block: appends wait for room and the caller can give up with
// ErrFull; acks make room and waiting appends then commit.
func TestBlockWhenFull(t *testing.T) {
	q, reg := openTest(t, Config{MaxBytes: 100 << 10, SegmentBytes: minSegmentBytes})
	stored, full := appendUntilStuck(t, q, func(i int) []Record { return recs("dev", i*10, 10) },
		func() bool { return q.Stats().Blocked })
	// Full: this append waits. Giving up returns ErrFull, stores nothing.
	if err := q.Writable(); !errors.Is(err, ErrFull) {
		t.Fatalf("Writable while full: %v", err)
	}
	full.cancel()
	if err := <-full.errc; !errors.Is(err, ErrFull) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled blocked append: %v, want ErrFull and context.Canceled", err)
	}
	if st := q.Stats(); st.Records != len(stored) {
		t.Fatalf("%d records stored, want %d: the refused append must store nothing", st.Records, len(stored))
	}
	// A waiting append commits once acks make room.
	errc := make(chan error, 1)
	late := make([]Record, 10)
	for i := range late {
		late[i] = rec("dev", 99990+i)
	}
	go func() { errc <- q.Append(context.Background(), late) }()
	testkit.WaitFor(t, "append to block", func() bool { return q.Stats().Blocked })
	if err := q.Ack(context.Background(), seqsOf(stored[:20])); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("append after ack made room: %v", err)
	}
	if q.Stats().Blocked {
		t.Fatal("still blocked after room was made")
	}
	if got := testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropOverflow); got != 0 {
		t.Fatalf("block policy dropped %v records", got)
	}
	// A batch larger than the whole buffer can never fit.
	huge := Record{Topic: "t", Value: make([]byte, 200<<10)}
	if err := q.Append(context.Background(), []Record{huge}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("append larger than max_bytes: %v, want ErrTooLarge", err)
	}
}

// recs returns n records of key numbered from i.
func recs(key string, i, n int) []Record {
	out := make([]Record, n)
	for j := range out {
		out[j] = rec(key, i+j)
	}
	return out
}

// stuckAppend is an append the buffer has not admitted: it still waits.
type stuckAppend struct {
	recs   []Record
	cancel context.CancelFunc
	errc   chan error
}

// appendUntilStuck appends batch(0), batch(1), ... until an append does
// not return while stuck() holds. It returns the records stored before it
// and that append, still waiting.
func appendUntilStuck(t *testing.T, q *Queue, batch func(i int) []Record, stuck func() bool) ([]Record, stuckAppend) {
	t.Helper()
	var stored []Record
	for i := 0; ; i++ {
		b := batch(i)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- q.Append(ctx, b) }()
		select {
		case err := <-errc:
			cancel()
			if err != nil {
				t.Fatalf("append %d before the buffer stopped admitting: %v", i, err)
			}
			stored = append(stored, b...)
		case <-waitChan(stuck):
			return stored, stuckAppend{b, cancel, errc}
		}
	}
}

func waitChan(cond func() bool) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		for !cond() {
			time.Sleep(time.Millisecond)
		}
		close(c)
	}()
	return c
}

// Contract 4, drop_oldest: the oldest records make room, each drop counted;
// everything newer is still there.
func TestDropOldest(t *testing.T) {
	q, reg := openTest(t, Config{MaxBytes: 200 << 10, SegmentBytes: minSegmentBytes, WhenFull: WhenFullDropOldest})
	var all []Record
	for i := 0; i < 3000; i += 50 {
		all = append(all, appendN(t, q, "dev", i, 50)...)
	}
	st := q.Stats()
	if st.Bytes > 200<<10 {
		t.Fatalf("buffer holds %d bytes, over max_bytes", st.Bytes)
	}
	dropped := int(testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropOverflow))
	if dropped == 0 || dropped+st.Records != len(all) {
		t.Fatalf("dropped %d + held %d != appended %d: something vanished uncounted", dropped, st.Records, len(all))
	}
	got := readAll(t, q, 0)
	want := all[dropped:]
	if len(got) != len(want) || got[0].Seq != want[0].Seq || got[len(got)-1].Seq != want[len(want)-1].Seq {
		t.Fatalf("held %d records from %d, want the newest %d from %d", len(got), got[0].Seq, len(want), want[0].Seq)
	}
}

// max_age expires old records, counted with reason max_age.
func TestMaxAge(t *testing.T) {
	q, reg := openTest(t, Config{MaxAge: 200 * time.Millisecond, SegmentBytes: minSegmentBytes})
	old := appendN(t, q, "dev", 0, 500)
	testkit.WaitFor(t, "records to expire", func() bool { return q.Stats().Records == 0 })
	if got := testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropMaxAge); got != float64(len(old)) {
		t.Fatalf("max_age drops counted %v, want %d", got, len(old))
	}
}

// Disk is returned after a drain: emptied segments are deleted.
func TestReclaimDiskAfterDrain(t *testing.T) {
	q, _ := openTest(t, Config{SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20})
	var all []Record
	for i := 0; i < 5000; i += 100 {
		all = append(all, appendN(t, q, "dev", i, 100)...)
	}
	full := q.Stats()
	if full.Segments < 5 {
		t.Fatalf("only %d segments for %d bytes with 64 KiB segments", full.Segments, full.Bytes)
	}
	for i := 0; i < len(all); i += 500 {
		if err := q.Ack(context.Background(), seqsOf(all[i:i+500])); err != nil {
			t.Fatal(err)
		}
	}
	st := q.Stats()
	files, _ := filepath.Glob(filepath.Join(q.cfg.Dir, "seg-*.db"))
	if st.Segments != 1 || len(files) != 1 {

		t.Fatalf("after drain: %d segments, %d files; want 1", st.Segments, len(files))
	}
	if st.DiskBytes >= full.DiskBytes/4 {
		t.Fatalf("disk after drain %d bytes, before %d: not reclaimed", st.DiskBytes, full.DiskBytes)
	}
	next := appendN(t, q, "dev", 0, 1)
	if next[0].Seq != all[len(all)-1].Seq+1 {
		t.Fatalf("after reclaim next sequence %d, want %d", next[0].Seq, all[len(all)-1].Seq+1)
	}
}

// Dead letters: stored with their reason, out of the read path, counted
// against max_bytes, listable and re-queueable.
func TestDeadLetters(t *testing.T) {
	q, reg := openTest(t, Config{})
	ctx := context.Background()
	recs := []Record{rec("dev", 0), {Topic: "", Key: nil, Value: []byte("no route"), Reason: "no_route"}, rec("dev", 1)}
	if err := q.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if !(recs[0].Seq < recs[1].Seq && recs[1].Seq < recs[2].Seq) {
		t.Fatalf("sequences not in record order: %v", seqsOf(recs))
	}
	got := readAll(t, q, 0)
	if len(got) != 2 || got[0].Seq != recs[0].Seq || got[1].Seq != recs[2].Seq {
		t.Fatalf("read %v, want the two routable records", seqsOf(got))
	}
	if err := q.DeadLetter(ctx, recs[0].Seq, "message_too_large"); err != nil {
		t.Fatal(err)
	}
	if err := q.DeadLetter(ctx, 9999, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dead letter of unknown seq: %v", err)
	}
	dl, err := q.DeadLetters(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 2 || dl[0].Reason != "message_too_large" || dl[1].Reason != "no_route" || string(dl[1].Value) != "no route" {
		t.Fatalf("dead letters %+v", dl)
	}
	st := q.Stats()
	if st.Records != 1 || st.DeadLetters != 2 || st.DeadLetterBytes == 0 {
		t.Fatalf("stats %+v", st)
	}
	if got := testkit.MetricValue(t, reg, "edgebridge_buffer_bytes"); got != float64(st.Bytes+st.DeadLetterBytes) {
		t.Fatalf("edgebridge_buffer_bytes %v, want records and dead letters %d", got, st.Bytes+st.DeadLetterBytes)
	}
	if err := q.Requeue(ctx, []uint64{recs[0].Seq}, nil); err != nil {
		t.Fatal(err)
	}
	back := readAll(t, q, recs[2].Seq)
	if len(back) != 1 || back[0].Seq <= recs[2].Seq || string(back[0].Value) != string(recs[0].Value) || back[0].Reason != "" {
		t.Fatalf("requeued record read back as %+v", back)
	}
	if st := q.Stats(); st.DeadLetters != 1 {
		t.Fatalf("after requeue %d dead letters, want 1", st.DeadLetters)
	}
}

// Dead letters count toward max_bytes and are never dropped by drop_oldest.
func TestDeadLettersFillBuffer(t *testing.T) {
	q, _ := openTest(t, Config{MaxBytes: 100 << 10, SegmentBytes: minSegmentBytes, WhenFull: WhenFullDropOldest})
	stored, full := appendUntilStuck(t, q, func(i int) []Record {
		r := rec("dev", i)
		r.Reason = "no_route"
		return []Record{r}
	}, func() bool { return q.Stats().Blocked })
	full.cancel()
	if err := <-full.errc; !errors.Is(err, ErrFull) {
		t.Fatalf("append with buffer full of dead letters: %v", err)
	}
	if n := q.Stats().DeadLetters; n != len(stored) {
		t.Fatalf("%d dead letters, want %d", n, len(stored))
	}
}

// Close answers everything waiting, and every call after it, with ErrClosed.
func TestClose(t *testing.T) {
	q, err := Open(Config{Dir: t.TempDir(), MaxBytes: 100 << 10, SegmentBytes: minSegmentBytes, MinFreeDisk: -1}, testkit.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := q.Read(context.Background(), 0, 10, 100)
		readErr <- err
	}()
	for i := 0; q.Stats().Bytes < 90<<10; i++ {
		appendN(t, q, "d", i, 1)
	}
	appendErr := make(chan error, 1)
	go func() {
		appendErr <- q.Append(context.Background(), []Record{{Topic: "t", Value: make([]byte, 20<<10)}})
	}()
	testkit.WaitFor(t, "append to block", func() bool { return q.Stats().Blocked })
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-appendErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked append at close: %v", err)
	}
	if err := q.Append(context.Background(), []Record{rec("d", 1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if _, err := q.Read(context.Background(), 0, 1, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	_ = <-readErr // returned records or ErrClosed; it must not hang
}

// A second process cannot open the same directory: a clear error, no wait
// forever.
func TestLockedByAnotherOpen(t *testing.T) {
	q, _ := openTest(t, Config{LockTimeout: 50 * time.Millisecond})
	_, err := Open(q.cfg, testkit.Logger(t), nil)
	if err == nil || !isLockTimeout(err) {
		t.Fatalf("second open: %v, want a lock timeout", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "buffer.dir is required"},
		{Config{Dir: "d", WhenFull: "drop_newest"}, `buffer.when_full must be "block" or "drop_oldest"`},
		{Config{Dir: "d", MaxBytes: -1}, "buffer.max_bytes must be > 0"},
		{Config{Dir: "d", SegmentBytes: 10}, "buffer.segment_bytes must be >= 65536"},
		{Config{Dir: "d", MaxBytes: 1 << 20, SegmentBytes: 2 << 20}, "buffer.segment_bytes (2097152) must be <= buffer.max_bytes (1048576)"},
		{Config{Dir: "d", MaxAge: -time.Second}, "buffer.max_age must be >= 0"},
		{Config{Dir: "d", MinFreeDisk: -2}, "buffer.min_free_disk must be >= 0"},
		{Config{Dir: "d"}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// min_free_disk: below the floor appends wait like a full buffer.
func TestMinFreeDisk(t *testing.T) {
	dir := t.TempDir()
	free, err := freeDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := openTest(t, Config{Dir: dir, MinFreeDisk: free + 1<<40})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- q.Append(ctx, []Record{rec("d", 0)}) }()
	testkit.WaitFor(t, "append to block below min_free_disk", func() bool { return q.Stats().Blocked })
	cancel()
	if err := <-errc; !errors.Is(err, ErrFull) {
		t.Fatalf("append below min_free_disk: %v, want ErrFull", err)
	}
	if _, err := os.Stat(filepath.Join(dir, deadFileName)); err != nil {
		t.Fatal(err)
	}
}

// Contract 4, drop_oldest with records in flight: what the forwarder has
// read but Kafka not yet acked is spared, so every counted drop is a
// record that will never be delivered, and drops + delivered = appended.
func TestDropOldestSparesRecordsInFlight(t *testing.T) {
	q, reg := openTest(t, Config{MaxBytes: 200 << 10, SegmentBytes: minSegmentBytes, WhenFull: WhenFullDropOldest})
	ctx := context.Background()
	first := appendN(t, q, "dev", 0, 100)
	inFlight, err := q.Read(ctx, 0, 100, 1<<20)
	if err != nil || len(inFlight) != 100 {
		t.Fatalf("read %d, %v", len(inFlight), err)
	}
	var all []Record
	for i := 100; i < 3000; i += 50 {
		all = append(all, appendN(t, q, "dev", i, 50)...)
	}
	dropped := int(testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropOverflow))
	if dropped == 0 {
		t.Fatal("nothing dropped: test too small")
	}
	// Kafka acks what was in flight: all of it is still there to delete.
	before := q.Stats().Records
	if err := q.Ack(ctx, seqsOf(inFlight)); err != nil {
		t.Fatal(err)
	}
	if got := before - q.Stats().Records; got != len(first) {
		t.Fatalf("acked %d of the %d records in flight: drop_oldest dropped records being sent", got, len(first))
	}
	// What is left is exactly the newest records: dropped ones are the
	// oldest unread, and each is counted once.
	held := readAll(t, q, 0)
	if dropped+len(held) != len(all) {
		t.Fatalf("dropped %d + held %d != %d appended after the in-flight ones", dropped, len(held), len(all))
	}
	if held[0].Seq != all[dropped].Seq {
		t.Fatalf("oldest held %d, want %d", held[0].Seq, all[dropped].Seq)
	}
}

// A roll followed by commits that touch only older segments (a drain with
// no new appends) must not roll again: bbolt grows a new file ahead of use,
// and deciding on the file size made the writer roll onto the head's own
// name and fail every cycle on its own file lock.
func TestRollThenDrainOnly(t *testing.T) {
	q, reg := openTest(t, Config{SegmentBytes: 1 << 20, MaxBytes: 64 << 20})
	var all []Record
	for i := 0; q.Stats().Segments < 2; i += 100 {
		all = append(all, appendN(t, q, "dev", i, 100)...)
	}
	for i := 0; i < len(all); i += 100 {
		if err := q.Ack(context.Background(), seqsOf(all[i:i+100])); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Writable(); err != nil {
		t.Fatalf("after a drain following a roll: %v", err)
	}
	if got := testkit.MetricValue(t, reg, "edgebridge_buffer_commit_errors_total"); got != 0 {
		t.Fatalf("%v failed commits during the drain", got)
	}
	if st := q.Stats(); st.Segments != 1 || st.Records != 0 {
		t.Fatalf("after drain: %+v", st)
	}
}
