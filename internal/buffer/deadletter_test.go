package buffer

import (
	"context"
	"errors"
	"testing"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

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
