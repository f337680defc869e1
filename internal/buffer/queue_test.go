package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// openTest opens a queue in dir and, when the test ends, closes it and runs
// bbolt's consistency check on every file it left.
func openTest(t testing.TB, cfg Config) (*Queue, *prometheus.Registry) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.MinFreeDisk == 0 {
		cfg.MinFreeDisk = -1
	}
	reg := prometheus.NewRegistry()
	q, err := Open(cfg, testkit.Logger(t), reg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		checkFiles(t, cfg.Dir)
	})
	return q, reg
}

// mustOpen opens a queue that the test closes itself (to reopen it, or to
// leave it to a crash).
func mustOpen(t testing.TB, cfg Config) *Queue {
	t.Helper()
	q, err := Open(cfg, testkit.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// checkFiles runs tx.Check on every bbolt file of a closed buffer.
func checkFiles(t testing.TB, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.db"))
	for _, f := range files {
		db, err := bolt.Open(f, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			t.Errorf("consistency check: open %s: %v", f, err)
			continue
		}
		_ = db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				t.Errorf("consistency check %s: %v", f, err)
			}
			return nil
		})
		db.Close()
	}
}

func rec(key string, i int) Record {
	return Record{Topic: "iot.telemetry", Key: []byte(key), Value: fmt.Appendf(nil, "%s-%06d-%s", key, i, strings.Repeat("x", 200))}
}

func readAll(t testing.TB, q *Queue, after uint64) []Record {
	t.Helper()
	var out []Record
	for {
		if q.Stats().Records == 0 && len(out) == 0 {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		recs, err := q.Read(ctx, after, 1000, 1<<20)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		out = append(out, recs...)
		after = recs[len(recs)-1].Seq
	}
}

func seqsOf(recs []Record) []uint64 {
	s := make([]uint64, len(recs))
	for i, r := range recs {
		s[i] = r.Seq
	}
	return s
}

// Contract 1 and 5: an append returns with its sequence, sequences are
// unique and increasing, and everything appended is read back in order.
func TestAppendReadAck(t *testing.T) {
	q, reg := openTest(t, Config{})
	ctx := context.Background()
	const writers, perWriter = 8, 250
	var mu sync.Mutex
	got := map[uint64]Record{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; i < perWriter; i += 5 {
				batch := []Record{rec(fmt.Sprint("dev", w), i), rec(fmt.Sprint("dev", w), i+1), rec(fmt.Sprint("dev", w), i+2), rec(fmt.Sprint("dev", w), i+3), rec(fmt.Sprint("dev", w), i+4)}
				if err := q.Append(ctx, batch); err != nil {
					t.Errorf("append: %v", err)
					return
				}
				mu.Lock()
				for j, r := range batch {
					if j > 0 && r.Seq != batch[j-1].Seq+1 {
						t.Errorf("records of one append not consecutive: %d after %d", r.Seq, batch[j-1].Seq)
					}
					if r.Time.IsZero() {
						t.Errorf("record %d has no time", r.Seq)
					}
					got[r.Seq] = r
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(got) != writers*perWriter {
		t.Fatalf("got %d distinct sequences, want %d", len(got), writers*perWriter)
	}
	recs := readAll(t, q, 0)
	if len(recs) != writers*perWriter {
		t.Fatalf("read %d records, want %d", len(recs), writers*perWriter)
	}
	for i, r := range recs {
		if i > 0 && r.Seq <= recs[i-1].Seq {
			t.Fatalf("read out of order: %d after %d", r.Seq, recs[i-1].Seq)
		}
		want := got[r.Seq]
		if r.Topic != want.Topic || !bytes.Equal(r.Key, want.Key) || !bytes.Equal(r.Value, want.Value) || !r.Time.Equal(want.Time) {
			t.Fatalf("record %d read back as %+v, appended %+v", r.Seq, r, want)
		}
	}
	// Contract 2: reading deleted nothing.
	if st := q.Stats(); st.Records != len(recs) {
		t.Fatalf("after read: %d records, want %d", st.Records, len(recs))
	}
	seqs := seqsOf(recs)
	slices.Reverse(seqs) // acks may come in any order
	if err := q.Ack(ctx, seqs); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("after ack: %+v, want empty", st)
	}
	if got := testkit.MetricValue(t, reg, "edgebridge_buffer_acked_records_total"); got != float64(len(recs)) {
		t.Fatalf("acked counter %v, want %d", got, len(recs))
	}
}

// Contract 2: an ack deletes exactly the records it names. Acks for records
// already gone (acked twice, between two live ones, past the end) delete
// nothing, in particular not the neighbour a tree search lands on.
func TestAckOnlyWhatItNames(t *testing.T) {
	q, reg := openTest(t, Config{})
	ctx := context.Background()
	batch := []Record{rec("a", 1), rec("a", 2), rec("a", 3), rec("a", 4), rec("a", 5), rec("a", 6)}
	if err := q.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	s := seqsOf(batch)
	if err := q.Ack(ctx, []uint64{s[1], s[3]}); err != nil {
		t.Fatal(err)
	}
	// s[1] and s[3] again, and one past the last record.
	if err := q.Ack(ctx, []uint64{s[3], s[1], s[5] + 1}); err != nil {
		t.Fatal(err)
	}
	if got, want := seqsOf(readAll(t, q, 0)), []uint64{s[0], s[2], s[4], s[5]}; !slices.Equal(got, want) {
		t.Fatalf("left after acking %d and %d (twice) and %d: %v, want %v", s[1], s[3], s[5]+1, got, want)
	}
	if st := q.Stats(); st.Records != 4 {
		t.Fatalf("Stats().Records = %d, want 4", st.Records)
	}
	if got := testkit.MetricValue(t, reg, "edgebridge_buffer_acked_records_total"); got != 2 {
		t.Fatalf("acked counter %v, want 2", got)
	}
}

// edgebridge_buffer_written_bytes_total is what the buffer costs the flash:
// the records' pages and a meta page per commit, not a multiple of them.
func TestWrittenBytesCounted(t *testing.T) {
	q, reg := openTest(t, Config{})
	ctx := context.Background()
	written := func() float64 { return testkit.MetricValue(t, reg, "edgebridge_buffer_written_bytes_total") }

	// The first append also moves the sequence reservation in dead.db.
	if err := q.Append(ctx, []Record{{Topic: "t", Value: []byte("warm-up")}}); err != nil {
		t.Fatal(err)
	}
	w0 := written()
	if w0 < 2*4096 {
		t.Fatalf("written %v bytes after two commits, want at least a page and a meta page each", w0)
	}

	recs := make([]Record, 2000)
	var payload float64
	for i := range recs {
		recs[i] = Record{Topic: "iot.telemetry", Key: []byte("device-7"), Value: bytes.Repeat([]byte{byte(i)}, 200)}
		payload += 200
	}
	if err := q.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	got := written() - w0
	if got < payload || got > 1.5*payload+16*4096 {
		t.Fatalf("one commit of %v payload bytes counted %v bytes written, want between 1x and 1.5x plus a few pages", payload, got)
	}
}

// The gauges an operator watches come from one Stats snapshot per scrape
// and agree with it.
func TestStatsGauges(t *testing.T) {
	q, reg := openTest(t, Config{MaxBytes: 64 << 20})
	if err := q.Append(context.Background(), []Record{rec("dev-1", 1), rec("dev-1", 2), rec("dev-2", 1)}); err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	for name, want := range map[string]float64{
		"edgebridge_buffer_records":             3,
		"edgebridge_buffer_bytes":               float64(st.Bytes + st.DeadLetterBytes),
		"edgebridge_buffer_max_bytes":           64 << 20,
		"edgebridge_buffer_dead_letter_records": 0,
		"edgebridge_buffer_segments":            float64(st.Segments),
		"edgebridge_buffer_disk_bytes":          float64(st.DiskBytes),
		"edgebridge_buffer_blocked":             0,
	} {
		if got := testkit.MetricValue(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if age := testkit.MetricValue(t, reg, "edgebridge_buffer_oldest_record_age_seconds"); age <= 0 || age > 60 {
		t.Errorf("oldest record age %v s, want the seconds since the append", age)
	}
}

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
