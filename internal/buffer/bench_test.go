package buffer

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// Benchmarks use 250-byte records, the size of a small telemetry envelope.
// Each reports records/s; the queue benchmark also reports bytes written
// to disk per record (write amplification) from /proc/self/io. Run:
//
//	go test -run '^$' -bench . -benchmem ./internal/buffer/

func benchRecord(i int) Record {
	return Record{Topic: "iot.telemetry", Key: []byte("device-0042"), Value: bytes.Repeat([]byte{byte(i)}, 250)}
}

func benchQueue(b *testing.B, cfg Config) *Queue {
	b.Helper()
	cfg.Dir = b.TempDir()
	cfg.MinFreeDisk = -1
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 8 << 30
	}
	q, err := Open(cfg, testkit.Logger(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { q.Close() })
	return q
}

// diskWrites returns the bytes this process caused to be written to
// storage so far.
func diskWrites(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// BenchmarkAppend: concurrent appenders of one record per call, coalesced
// by group commit; and one appender of 500-record batches (what the MQTT
// intake does).
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct{ goroutines, perCall int }{{1, 1}, {8, 1}, {64, 1}, {1, 500}} {
		b.Run(fmt.Sprintf("goroutines=%d/records_per_call=%d", tc.goroutines, tc.perCall), func(b *testing.B) {
			q := benchQueue(b, Config{})
			ctx := context.Background()
			var next sync.Mutex
			left := b.N
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range tc.goroutines {
				wg.Go(func() {
					recs := make([]Record, tc.perCall)
					for {
						next.Lock()
						n := min(left, tc.perCall)
						left -= n
						next.Unlock()
						if n == 0 {
							return
						}
						for i := range n {
							recs[i] = benchRecord(i)
						}
						if err := q.Append(ctx, recs[:n]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
		})
	}
}

// BenchmarkQueue is the buffer used as a queue: the intake appends batches
// while the forwarder reads and acks, as in the running bridge. Target on
// the reference machine: >= 200k records/s, <= 3x write amplification.
func BenchmarkQueue(b *testing.B) {
	q := benchQueue(b, Config{})
	ctx := context.Background()
	const batch = 500
	w0 := diskWrites(b)
	b.ResetTimer()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		var after uint64
		for acked := 0; acked < b.N; {
			recs, err := q.Read(ctx, after, 2000, 4<<20)
			if err != nil {
				done <- err
				return
			}
			after = recs[len(recs)-1].Seq
			if err := q.Ack(ctx, seqsOf(recs)); err != nil {
				done <- err
				return
			}
			acked += len(recs)
		}
		done <- nil
	}()
	recs := make([]Record, batch)
	for n := 0; n < b.N; n += batch {
		k := min(batch, b.N-n)
		for i := range k {
			recs[i] = benchRecord(i)
		}
		if err := q.Append(ctx, recs[:k]); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	if w0 >= 0 {
		// bytes to disk per byte of record value
		b.ReportMetric(float64(diskWrites(b)-w0)/float64(b.N)/250, "write_amp")
	}
	if st := q.Stats(); st.Records != 0 {
		b.Fatalf("%d records left after the drain", st.Records)
	}
}

// BenchmarkRead reads a pre-filled buffer from start to end in 2000-record
// chunks, as the forwarder does when draining a backlog.
func BenchmarkRead(b *testing.B) {
	q := benchQueue(b, Config{})
	ctx := context.Background()
	const fill = 200000
	recs := make([]Record, 1000)
	for n := 0; n < fill; n += len(recs) {
		for i := range recs {
			recs[i] = benchRecord(i)
		}
		if err := q.Append(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	var after uint64
	for read := 0; read < b.N; {
		got, err := q.Read(ctx, after, 2000, 4<<20)
		if err != nil {
			b.Fatal(err)
		}
		read += len(got)
		after = got[len(got)-1].Seq
		if after >= uint64(fill) {
			after = 0
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
