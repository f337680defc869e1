package forward

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// BenchmarkDrain drains a pre-filled real buffer (bbolt in a temp dir) of
// 250-byte records to kfake with the default producer settings, and reports
// records per second and the peak heap seen while draining. Target: at
// least 200k rec/s for the 1M backlog; the peak heap must not grow with the
// backlog (compare backlog=1k with backlog=1M).
//
//	go test -run '^$' -bench BenchmarkDrain -benchtime 1x ./internal/forward/
func BenchmarkDrain(b *testing.B) {
	for _, bc := range []struct {
		backlog     int
		compression string
	}{
		{1_000, "zstd"},
		{1_000_000, "zstd"},
		{1_000_000, "none"},
	} {
		b.Run(fmt.Sprintf("backlog=%d/compression=%s", bc.backlog, bc.compression), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				q := openQueue(b, b.TempDir())
				fillRandom(b, q, bc.backlog, 1000, 250)
				// kfake keeps what it stores on the heap; a blackholed
				// cluster acks without storing, so the heap is ours.
				c := newCluster(b, kfake.BlackholeProduce())
				cfg := DefaultConfig()
				cfg.NodeID = "bench"
				cfg.Brokers = c.ListenAddrs()
				cfg.Compression = bc.compression
				runtime.GC()

				var peak atomic.Uint64
				stopSampling := sampleHeap(&peak)
				b.StartTimer()
				began := time.Now()
				r := start(b, cfg, q)
				for q.Stats().Records > 0 {
					time.Sleep(time.Millisecond)
				}
				took := time.Since(began)
				b.StopTimer()
				stopSampling()
				r.stop(b)
				if err := q.Close(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(bc.backlog)/took.Seconds(), "rec/s")
				b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
			}
		})
	}
}

// fillRandom appends n records of size incompressible bytes over keys
// devices.
func fillRandom(b testing.TB, q *buffer.Queue, n, keys, size int) {
	pool := make([]byte, 1<<20)
	for i := range pool {
		pool[i] = byte(rand.Uint32())
	}
	batch := make([]buffer.Record, 0, 1000)
	for i := range n {
		off := rand.IntN(len(pool) - size)
		batch = append(batch, buffer.Record{Topic: testTopic, Key: fmt.Appendf(nil, "dev-%d", i%keys), Value: pool[off : off+size]})
		if len(batch) == cap(batch) || i == n-1 {
			if err := q.Append(context.Background(), batch); err != nil {
				b.Fatalf("append: %v", err)
			}
			batch = batch[:0]
		}
	}
}

// sampleHeap records the largest HeapAlloc seen every 20ms until the
// returned function is called.
func sampleHeap(peak *atomic.Uint64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

// BenchmarkBacklogHeap measures the heap (after a GC) once the window is
// full while Kafka takes nothing, with a real buffer holding 1k or 1M
// records of 250 bytes: the backlog stays on disk, so the two must match.
//
//	go test -run '^$' -bench BenchmarkBacklogHeap -benchtime 1x ./internal/forward/
func BenchmarkBacklogHeap(b *testing.B) {
	for _, backlog := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("backlog=%d", backlog), func(b *testing.B) {
			for range b.N {
				q := openQueue(b, b.TempDir())
				fillRandom(b, q, backlog, 1000, 250)
				c := newCluster(b)
				c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
					c.KeepControl()
					return nil, nil, true
				})
				cfg := DefaultConfig()
				cfg.NodeID = "bench"
				cfg.Brokers = c.ListenAddrs()
				cfg.MaxBufferedRecords = 1000
				cfg.ShutdownTimeout = 100 * time.Millisecond
				r := start(b, cfg, q)
				testkit.WaitWithin(b, 30*time.Second, "the window to fill", func() bool { return r.p.inFlight() == cfg.MaxBufferedRecords })
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				b.ReportMetric(mib(ms.HeapAlloc), "heap-MiB")
				r.stop(b)
				c.Close()
				if err := q.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
