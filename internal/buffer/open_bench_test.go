package buffer

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// BenchmarkOpenCold measures a start with a large backlog and a cold page
// cache (a restart after a long outage on an SD card, or a memory limit
// too small to cache the buffer): the time until Open returns and the first
// Read is answered, and the bytes read from storage for it. The target is
// that neither grows with the backlog. The backlog defaults to 256 MiB;
// EDGEBRIDGE_BENCH_OPEN_MIB sets it (4096 for the 4 GiB of the target).
// Eviction uses posix_fadvise, so no root is needed; as root, dropping all
// caches (echo 3 > /proc/sys/vm/drop_caches) before each run gives the same
// figures.
//
//	EDGEBRIDGE_BENCH_OPEN_MIB=4096 go test -run '^$' -bench OpenCold -benchtime 3x ./internal/buffer/
func BenchmarkOpenCold(b *testing.B) {
	mib := 256
	if v := os.Getenv("EDGEBRIDGE_BENCH_OPEN_MIB"); v != "" {
		var err error
		if mib, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	cfg := Config{Dir: dir, MinFreeDisk: -1, MaxBytes: 2 * int64(mib) << 20}
	q, err := Open(cfg, testkit.Logger(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]Record, 1000)
	for written := 0; written < mib<<20; written += len(batch) * 250 {
		for i := range batch {
			batch[i] = benchRecord(i)
		}
		if err := q.Append(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	st := q.Stats()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	var read int64
	for b.Loop() {
		b.StopTimer()
		evictCache(b, dir)
		before := diskReads(b)
		b.StartTimer()
		q, err := Open(cfg, testkit.Logger(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		recs, err := q.Read(ctx, 0, 500, 1<<20)
		cancel()
		if err != nil || len(recs) == 0 {
			b.Fatalf("first read: %d records, %v", len(recs), err)
		}
		b.StopTimer()
		read += diskReads(b) - before
		if got := q.Stats().Records; got != st.Records {
			b.Fatalf("%d records after open, want %d", got, st.Records)
		}
		q.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(read)/float64(b.N)/(1<<20), "MiB-read/op")
	b.ReportMetric(float64(st.DiskBytes)/(1<<20), "MiB-buffered")
}

// evictCache drops the buffer's files from the page cache.
func evictCache(b *testing.B, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.db"))
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// diskReads returns the bytes this process caused to be read from storage.
func diskReads(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "read_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkDrainAfterRestart: the drain of a backlog after a restart, read
// and acked 500 records at a time, as the forwarder does. The segments
// behind the head open read-only and are upgraded (checked, reopened for
// writing) at their first ack: this measures what that costs.
func BenchmarkDrainAfterRestart(b *testing.B) {
	const n = 200000
	cfg := Config{Dir: b.TempDir(), MinFreeDisk: -1, MaxBytes: 1 << 30}
	for b.Loop() {
		b.StopTimer()
		q, err := Open(cfg, testkit.Logger(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		batch := make([]Record, 1000)
		for i := 0; i < n; i += len(batch) {
			for j := range batch {
				batch[j] = benchRecord(j)
			}
			if err := q.Append(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
		}
		q.Close()
		b.StartTimer()
		q, err = Open(cfg, testkit.Logger(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		var after uint64
		for left := n; left > 0; {
			recs, err := q.Read(context.Background(), after, 500, 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			seqs := make([]uint64, len(recs))
			for i, r := range recs {
				seqs[i] = r.Seq
			}
			if err := q.Ack(context.Background(), seqs); err != nil {
				b.Fatal(err)
			}
			after, left = seqs[len(seqs)-1], left-len(recs)
		}
		b.StopTimer()
		q.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
