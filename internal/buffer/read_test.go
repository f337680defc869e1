package buffer

import (
	"context"
	"errors"
	"testing"
)

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
