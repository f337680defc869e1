package forward

import (
	"context"
	"math"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// Blackholed produce: the broker swallows produce requests. The request
// timeouts fire (Kafka down, read errors counted), the window stays full but
// bounded - no growing memory and, pitfall "buffer overflow that panics",
// no panic or ErrMaxBuffered - and everything arrives once the hole closes.
func TestBlackholedProduce(t *testing.T) {
	const n = 5000
	b := startBlackholed(t, n, func(cfg *Config) { cfg.MaxBufferedRecords = 500 })
	r, cfg, src := b.r, b.cfg, b.src

	testkit.WaitWithin(t, 10*time.Second, "the window to fill", func() bool { return r.p.inFlight() == cfg.MaxBufferedRecords })
	testkit.WaitWithin(t, 20*time.Second, "a produce timeout", func() bool {
		return gathered(t, r.reg, "edgebridge_kafka_client_read_errors_total") > 0
	})
	testkit.WaitWithin(t, 10*time.Second, "Kafka to be reported down", func() bool { return !r.p.Up() })
	if got := testkit.Value(t, r.p.m.up); got != 0 {
		t.Errorf("edgebridge_kafka_up = %v while produce is blackholed", got)
	}
	if in, buf := r.p.inFlight(), r.p.cl.BufferedProduceRecords(); in > cfg.MaxBufferedRecords || buf > int64(cfg.MaxBufferedRecords) {
		t.Errorf("in flight %d, franz-go buffered %d: over the window of %d", in, buf, cfg.MaxBufferedRecords)
	}
	if got := src.remaining(); got != n {
		t.Errorf("%d records left the buffer while Kafka acknowledged none", n-got)
	}

	b.hole.Store(false)
	delivered(t, b.c, src, n, 60*time.Second)
	testkit.WaitWithin(t, 10*time.Second, "Kafka to be reported up", r.p.Up)
}

// While Kafka cannot be reached the forwarder holds one read's worth of
// records in memory, not the whole window: an edge node spends hours like
// that. Once produce answers again, the whole window opens.
func TestOutageHoldsOneRead(t *testing.T) {
	const n = 20000
	b := startBlackholed(t, n, func(cfg *Config) {
		cfg.MaxBufferedRecords = 2000
		cfg.ReadBatch = 100
	})
	r, cfg, src := b.r, b.cfg, b.src

	testkit.WaitWithin(t, 20*time.Second, "a produce timeout", func() bool {
		return gathered(t, r.reg, "edgebridge_kafka_client_read_errors_total") > 0
	})
	if in := r.p.inFlight(); in == 0 || in > cfg.ReadBatch {
		t.Errorf("%d records in flight while Kafka is unreachable, want 1 to %d (one read)", in, cfg.ReadBatch)
	}

	// Acks held: what is in flight once Kafka answers shows the window.
	gate := make(chan struct{})
	src.mu.Lock()
	src.ackGate = gate
	src.mu.Unlock()
	b.hole.Store(false)
	testkit.WaitWithin(t, 20*time.Second, "the whole window to open", func() bool { return r.p.inFlight() == cfg.MaxBufferedRecords })
	close(gate)
	delivered(t, b.c, src, n, 60*time.Second)
}

// The one read held while Kafka cannot be reached is also bounded in bytes
// (kafka.batch_max_bytes), from the first read on: with large payloads,
// kafka.read_batch records alone could be tens of megabytes.
func TestOutageHoldsOneReadOfBytes(t *testing.T) {
	b := startBlackholed(t, 5000, func(cfg *Config) {
		cfg.ReadBatch = 1000
		cfg.BatchMaxBytes = 16 << 10
	})
	testkit.WaitWithin(t, 20*time.Second, "a produce timeout", func() bool {
		return gathered(t, b.r.reg, "edgebridge_kafka_client_read_errors_total") > 0
	})
	// Records are over 100 bytes each (key and value).
	if in, most := b.r.p.inFlight(), b.cfg.BatchMaxBytes/100; in == 0 || in > most {
		t.Errorf("%d records in flight while Kafka is unreachable, want 1 to %d (kafka.batch_max_bytes %d)", in, most, b.cfg.BatchMaxBytes)
	}
	b.hole.Store(false)
	delivered(t, b.c, b.src, 5000, 60*time.Second)
}

// blackholed is a producer running against a cluster that leaves produce
// requests unanswered while hole is true.
type blackholed struct {
	c    *kfake.Cluster
	hole *atomic.Bool
	src  *memSource
	cfg  Config
	r    *running
}

// startBlackholed starts a producer, with testConfig changed by tune, on n
// records (50 keys, 100-byte values) against a cluster whose produce
// requests go unanswered until b.hole is set to false.
func startBlackholed(t *testing.T, n int, tune func(*Config)) *blackholed {
	c := newCluster(t)
	b := &blackholed{c: c, hole: new(atomic.Bool), src: newMemSource(), cfg: testConfig(c.ListenAddrs())}
	b.hole.Store(true)
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if b.hole.Load() {
			c.KeepControl()
			return nil, nil, true // no answer
		}
		return nil, nil, false
	})
	b.src.fill(n, 50, 100)
	tune(&b.cfg)
	b.r = start(t, b.cfg, b.src)
	return b
}

// genSource is a Source that makes its records when they are read, so that
// a backlog of any size costs no memory in the test itself but one bit per
// record.
type genSource struct {
	n     uint64
	value []byte
	mu    sync.Mutex
	gone  []uint64 // bitset of acked and dead-lettered sequences
}

func newGenSource(n, size int) *genSource {
	return &genSource{n: uint64(n), value: make([]byte, size), gone: make([]uint64, n/64+1)}
}

func (s *genSource) Read(ctx context.Context, after uint64, maxRecords, maxBytes int) ([]buffer.Record, error) {
	s.mu.Lock()
	var out []buffer.Record
	size := 0
	for seq := after + 1; seq <= s.n && len(out) < maxRecords; seq++ {
		if s.gone[seq/64]&(1<<(seq%64)) != 0 {
			continue
		}
		if len(out) > 0 && size+len(s.value) > maxBytes {
			break
		}
		size += len(s.value)
		out = append(out, buffer.Record{Seq: seq, Time: time.Now(), Topic: testTopic,
			Key: []byte("dev-" + strconv.FormatUint(seq%100, 10)), Value: append([]byte(nil), s.value...)})
	}
	s.mu.Unlock()
	if len(out) > 0 {
		return out, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *genSource) Ack(_ context.Context, seqs []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seq := range seqs {
		s.gone[seq/64] |= 1 << (seq % 64)
	}
	return nil
}

func (s *genSource) DeadLetter(_ context.Context, seq uint64, _ string) error {
	return s.Ack(context.Background(), []uint64{seq})
}

// Backpressure: with Kafka taking nothing (produce blackholed), the heap
// with a backlog of a million records is the heap with a thousand: the
// forwarder holds one window, the backlog stays in the buffer.
func TestMemoryFlatWithBacklog(t *testing.T) {
	heap := func(backlog int) uint64 {
		c := newCluster(t)
		var swallowed atomic.Int64
		c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			swallowed.Add(1)
			return nil, nil, true
		})
		cfg := testConfig(c.ListenAddrs())
		cfg.MaxBufferedRecords = 1000
		cfg.ShutdownTimeout = 100 * time.Millisecond
		src := newGenSource(backlog, 250)
		r := start(t, cfg, src)
		testkit.WaitWithin(t, 20*time.Second, "the window to fill", func() bool { return r.p.inFlight() == cfg.MaxBufferedRecords })
		// Sample only once a produce request was built: its compression
		// encoder is part of the steady state (sampling earlier read a
		// few MiB less in some runs, under qemu).
		testkit.WaitWithin(t, 20*time.Second, "a produce request", func() bool { return swallowed.Load() > 0 })
		// The live floor: the least of a few samples after a GC (pooled
		// encoders and the previous cluster's garbage vary by a few MiB).
		low := uint64(math.MaxUint64)
		for range 3 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			low = min(low, ms.HeapAlloc)
		}
		r.stop(t)
		c.Close()
		return low
	}
	small := heap(1_000)
	large := heap(1_000_000)
	t.Logf("heap with the window full: backlog 1k %.1f MiB, backlog 1M %.1f MiB", mib(small), mib(large))
	// The 1M backlog is 250 MiB of values and the source's own bitset is
	// 122 KiB: anything that grew with the backlog would be tens to
	// hundreds of MiB. 16 MiB is above the noise of this measurement.
	if diff := int64(large) - int64(small); diff > 16<<20 {
		t.Errorf("heap grew by %.1f MiB with the backlog", mib(uint64(diff)))
	}
}
