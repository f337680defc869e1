package buffer

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

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

// A max_age expiry that succeeds on an older segment says nothing of the
// head: while appends to a failing head wait, it must not report the
// buffer's writes recovered (/readyz green, the failure logged anew at
// the next try).
func TestExpiryDoesNotClearAFailingHead(t *testing.T) {
	cfg := Config{Dir: t.TempDir(), MinFreeDisk: -1, MaxAge: time.Second, SegmentBytes: minSegmentBytes}
	log, logs := testkit.CaptureLogs(t)
	reg := prometheus.NewRegistry()
	q, err := Open(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	start := time.Now()
	old := appendN(t, q, "dev", 0, 50)
	// Newer records in the same segment, so that its expiry deletes
	// records one by one instead of removing the file; then a roll.
	testkit.WaitFor(t, "half of max_age to pass", func() bool { return time.Since(start) > cfg.MaxAge/2 })
	for i := 100; q.Stats().Segments < 2; i += 100 {
		appendN(t, q, "dev", i, 100)
	}
	h := q.head().path
	restore := failWritesIf(t, func(p string) bool { return p == h })
	done := make(chan error, 1)
	go func() { done <- q.Append(context.Background(), recs("dev", 1_000_000, 10)) }()
	testkit.WaitFor(t, "failed commits", func() bool { return testkit.MetricValue(t, reg, "edgebridge_buffer_commit_errors_total") >= 2 })
	testkit.WaitFor(t, "the oldest records to expire", func() bool {
		return testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropMaxAge) >= float64(len(old))
	})
	if strings.Contains(logs.String(), "buffer writes recovered") {
		t.Error("an expiry in an older segment reported writes recovered while the head fails")
	}
	if q.Writable() == nil {
		t.Error("Writable() = nil while appends to the head fail")
	}
	restore()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
