package forward

import (
	"context"
	"fmt"
	"math"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// Contract 2 and 5: the cluster is closed mid-stream and started again on
// the same port from its data directory. Nothing is lost; duplicates come
// only from batches whose outcome was in doubt, so there are at most a
// window of them.
func TestClusterRestartMidStream(t *testing.T) {
	const n = 20_000
	dir := t.TempDir()
	c1, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, testTopic), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	addrs := c1.ListenAddrs()
	_, port, _ := net.SplitHostPort(addrs[0])
	src := newMemSource()
	src.fill(n, 50, 100)
	cfg := testConfig(addrs)
	r := start(t, cfg, src)

	testkit.WaitWithin(t, 30*time.Second, "a quarter to be delivered", func() bool { return testkit.Value(t, r.p.m.records) >= n/4 })
	c1.Close()
	testkit.WaitWithin(t, 20*time.Second, "Kafka to be reported down", func() bool { return !r.p.Up() })
	delivered := testkit.Value(t, r.p.m.records)

	p, _ := strconv.Atoi(port)
	c2, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(p), kfake.DataDir(dir))
	if err != nil {
		t.Fatalf("restart the cluster on port %d: %v", p, err)
	}
	t.Cleanup(c2.Close)
	cons := newConsumer(t, addrs, testTopic)
	testkit.WaitWithin(t, 60*time.Second, "the buffer to empty", func() bool { return src.remaining() == 0 })
	recs := cons.until(t, n, 30*time.Second)
	// Let whatever else is in Kafka arrive: duplicates sit after their
	// originals, and we count all we get within a short poll.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	cons.cl.PollFetches(ctx)
	cancel()
	dups := checkOrder(t, recs)
	unique := len(recs) - dups
	if unique != n {
		t.Fatalf("%d distinct records in Kafka, want %d: records were lost", unique, n)
	}
	if dups > cfg.MaxBufferedRecords {
		t.Errorf("%d duplicates, more than the %d records that can be in doubt", dups, cfg.MaxBufferedRecords)
	}
	t.Logf("delivered before the restart %v, duplicates %d, resent by the forwarder %v, data loss detected %v",
		delivered, dups, testkit.Value(t, r.p.m.retries), testkit.Value(t, r.p.m.dataLoss))
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

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// openQueue opens the real buffer in dir.
func openQueue(t testing.TB, dir string) *buffer.Queue {
	t.Helper()
	log, _ := testkit.CaptureLogs(t)
	q, err := buffer.Open(buffer.Config{Dir: dir, MinFreeDisk: -1}, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("open buffer: %v", err)
	}
	return q
}

// appendN appends n records of size bytes for keys dev-0.. in batches.
func appendN(t testing.TB, q *buffer.Queue, n, keys, size int) {
	t.Helper()
	value := make([]byte, size)
	batch := make([]buffer.Record, 0, 500)
	for i := range n {
		batch = append(batch, buffer.Record{Topic: testTopic, Key: []byte(fmt.Sprintf("dev-%d", i%keys)), Value: value})
		if len(batch) == cap(batch) || i == n-1 {
			if err := q.Append(context.Background(), batch); err != nil {
				t.Fatalf("append: %v", err)
			}
			batch = batch[:0]
		}
	}
}

// Contract 2 and 3 with the real buffer: 100k records appended to bbolt all
// reach Kafka in per-device order and the buffer is empty after.
func TestRealBufferNormalFlow(t *testing.T) {
	const n = 100_000
	q := openQueue(t, t.TempDir())
	defer q.Close()
	appendN(t, q, n, 97, 100)
	c := newCluster(t)
	r := start(t, testConfig(c.ListenAddrs()), q)
	recs := newConsumer(t, c.ListenAddrs(), testTopic).until(t, n, 60*time.Second)
	if dups := checkOrder(t, recs); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	testkit.WaitWithin(t, 10*time.Second, "the buffer to empty", func() bool { return q.Stats().Records == 0 })
	r.stop(t)
}

// Restart with the real buffer: records buffered while Kafka was away and
// the forwarder stopped are sent after the next start, from the reopened
// files.
func TestRealBufferRestart(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	q := openQueue(t, dir)
	appendN(t, q, n, 20, 100)

	dead := newCluster(t)
	deadAddrs := dead.ListenAddrs()
	dead.Close()
	cfg := testConfig(deadAddrs)
	cfg.ShutdownTimeout = 200 * time.Millisecond
	r := start(t, cfg, q)
	testkit.WaitWithin(t, 10*time.Second, "Kafka to be tried", func() bool { return testkit.Value(t, r.p.m.up) == 0 && !r.p.Up() })
	r.stop(t)
	if got := q.Stats().Records; got != n {
		t.Fatalf("%d records left the buffer without Kafka", n-got)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = openQueue(t, dir)
	defer q.Close()
	c := newCluster(t)
	r = start(t, testConfig(c.ListenAddrs()), q)
	recs := newConsumer(t, c.ListenAddrs(), testTopic).until(t, n, 30*time.Second)
	if dups := checkOrder(t, recs); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	testkit.WaitWithin(t, 10*time.Second, "the buffer to empty", func() bool { return q.Stats().Records == 0 })
	r.stop(t)
}
