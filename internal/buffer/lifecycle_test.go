package buffer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

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
	q := mustOpen(t, cfg)
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
