package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
	"github.com/edgebridge/edgebridge/internal/retry"
)

const testTopic = "telemetry"

// memSource is an in-memory Source: records by sequence, deleted on Ack.
type memSource struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced when records are added
	recs    []buffer.Record
	live    []bool
	nLive   int
	dead    map[uint64]string
	acked   map[uint64]int
	ackGate chan struct{} // when set, Ack waits for it to be closed
	reads   int
}

func newMemSource() *memSource {
	return &memSource{changed: make(chan struct{}), dead: make(map[uint64]string), acked: make(map[uint64]int)}
}

// add appends a record and returns its sequence.
func (s *memSource) add(topic string, key, value []byte) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := uint64(len(s.recs) + 1)
	s.recs = append(s.recs, buffer.Record{Seq: seq, Time: time.Now(), Topic: topic, Key: key, Value: value})
	s.live = append(s.live, true)
	s.nLive++
	close(s.changed)
	s.changed = make(chan struct{})
	return seq
}

// fill appends n records for keys dev-0..dev-(keys-1), round robin.
func (s *memSource) fill(n, keys, valueSize int) {
	for i := range n {
		s.add(testTopic, []byte("dev-"+strconv.Itoa(i%keys)), bytes.Repeat([]byte{'v'}, valueSize))
	}
}

func (s *memSource) Read(ctx context.Context, after uint64, maxRecords, maxBytes int) ([]buffer.Record, error) {
	for {
		s.mu.Lock()
		s.reads++
		var out []buffer.Record
		size := 0
		for i := int(after); i < len(s.recs) && len(out) < maxRecords; i++ {
			if !s.live[i] {
				continue
			}
			r := s.recs[i]
			rs := len(r.Key) + len(r.Value)
			if len(out) > 0 && size+rs > maxBytes {
				break
			}
			size += rs
			r.Key = bytes.Clone(r.Key)
			r.Value = bytes.Clone(r.Value)
			out = append(out, r)
		}
		ch := s.changed
		s.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read: %w", ctx.Err())
		case <-ch:
		}
	}
}

func (s *memSource) Ack(ctx context.Context, seqs []uint64) error {
	s.mu.Lock()
	gate := s.ackGate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seq := range seqs {
		s.acked[seq]++
		if i := seq - 1; i < uint64(len(s.live)) && s.live[i] {
			s.live[i] = false
			s.nLive--
		}
	}
	return nil
}

func (s *memSource) DeadLetter(_ context.Context, seq uint64, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := seq - 1
	if i >= uint64(len(s.live)) || !s.live[i] {
		return errors.New("dead letter: no such record")
	}
	s.live[i] = false
	s.nLive--
	s.dead[seq] = reason
	return nil
}

func (s *memSource) remaining() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nLive
}

func (s *memSource) deadLetters() map[uint64]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uint64]string, len(s.dead))
	for k, v := range s.dead {
		out[k] = v
	}
	return out
}

// testConfig is a config for kfake: short timeouts so that failures show
// quickly.
func testConfig(addrs []string) Config {
	c := DefaultConfig()
	c.NodeID = "node-1"
	c.Brokers = addrs
	c.Compression = "none"
	c.Linger = time.Millisecond
	c.MaxBufferedRecords = 2000
	c.MaxBufferedBytes = 4 << 20
	c.BatchMaxBytes = 1 << 20
	c.DialTimeout = time.Second
	c.RequestTimeoutOverhead = time.Second
	c.ProduceRequestTimeout = time.Second
	c.MetadataMinAge = 100 * time.Millisecond
	c.MetadataMaxAge = time.Second
	c.Backoff = retry.Policy{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}
	c.ShutdownTimeout = 5 * time.Second
	return c
}

func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(4, testTopic)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

var testTopicBackoff = retry.Policy{Initial: 100 * time.Millisecond, Max: 500 * time.Millisecond}

type running struct {
	p      *Producer
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// start creates a Producer on a fresh registry and runs it until stop or
// the end of the test.
func start(t testing.TB, cfg Config, src Source) *running {
	t.Helper()
	log, _ := testkit.CaptureLogs(t)
	return startWith(t, cfg, src, log)
}

func startWith(t testing.TB, cfg Config, src Source, log *slog.Logger) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := New(cfg, log, reg, src)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	// A parked topic is tried again within a test's patience
	// (TestParkedTopicBackoffDefaults checks the real waits).
	p.sched.topicBo = testTopicBackoff
	p.renew = testTopicBackoff
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and waits for it to return.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its context ending")
	}
}

// got is one record read back from Kafka.
type got struct {
	topic     string
	seq       uint64
	key       string
	partition int32
	offset    int64
	headers   map[string]string
	value     []byte
}

// consumer reads a topic from the start.
type consumer struct {
	cl  *kgo.Client
	all []got
}

func newConsumer(t testing.TB, addrs []string, topics ...string) *consumer {
	t.Helper()
	return newConsumerWith(t, addrs, nil, topics...)
}

// newConsumerWith is newConsumer with more client options (SASL, say).
func newConsumerWith(t testing.TB, addrs []string, opts []kgo.Opt, topics ...string) *consumer {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50 * time.Millisecond),
		kgo.MetadataMinAge(50 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &consumer{cl: cl}
}

// delivered consumes the n records produced to testTopic at c, checks that
// each key's arrive in order and none twice, waits for src to empty, and
// returns them.
func delivered(t testing.TB, c *kfake.Cluster, src *memSource, n int, timeout time.Duration) []got {
	t.Helper()
	recs := newConsumer(t, c.ListenAddrs(), testTopic).until(t, n, timeout)
	if dups := checkOrder(t, recs); dups != 0 || len(recs) != n {
		t.Errorf("%d records with %d duplicates, want %d and none", len(recs), dups, n)
	}
	testkit.WaitWithin(t, 10*time.Second, "the buffer to empty", func() bool { return src.remaining() == 0 })
	return recs
}

// until polls until at least n records were consumed in all.
func (c *consumer) until(t testing.TB, n int, timeout time.Duration) []got {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for len(c.all) < n {
		fs := c.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before the timeout", len(c.all), n)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Logf("fetch %s/%d: %v", topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			h := make(map[string]string, len(r.Headers))
			for _, kv := range r.Headers {
				h[kv.Key] = string(kv.Value)
			}
			seq, err := strconv.ParseUint(h[HeaderSeq], 10, 64)
			if err != nil {
				t.Errorf("record without a sequence header: %v", h)
			}
			c.all = append(c.all, got{topic: r.Topic, seq: seq, key: string(r.Key), partition: r.Partition, offset: r.Offset, headers: h, value: r.Value})
		})
	}
	return c.all
}

// checkOrder fails the test if, per topic and key, the first arrival of each sequence
// is not in increasing order (duplicates of earlier records are allowed
// after a crash; a record before an earlier one is not). It returns the
// number of duplicates.
func checkOrder(t testing.TB, recs []got) (dups int) {
	t.Helper()
	seen := make(map[uint64]bool, len(recs))
	last := make(map[string]uint64)
	for _, r := range recs {
		if seen[r.seq] {
			dups++
			continue
		}
		seen[r.seq] = true
		k := r.topic + "/" + r.key
		if r.seq < last[k] {
			t.Errorf("topic %s key %s: seq %d arrived after seq %d", r.topic, r.key, r.seq, last[k])
		}
		last[k] = r.seq
	}
	return dups
}

// gathered sums the samples of the metric family name in reg.
func gathered(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
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
