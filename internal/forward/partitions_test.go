package forward

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// partitionOf is the partition Kafka's key hash gives key among n.
func partitionOf(key string, n int) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic(testTopic).Partition(&kgo.Record{Key: []byte(key)}, n))
}

// Retriable broker errors are waited out by franz-go with idempotence:
// nothing is dead-lettered and nothing arrives twice, even when the broker
// wrote the batch and then answered REQUEST_TIMED_OUT.
func TestRetriableFaultsNoDuplicates(t *testing.T) {
	for _, e := range []*kerr.Error{kerr.NotEnoughReplicas, kerr.RequestTimedOut, kerr.NotEnoughReplicasAfterAppend} {
		t.Run(e.Message, func(t *testing.T) {
			const n = 5000
			c := newCluster(t)
			h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Err: e, Count: 30})
			src := newMemSource()
			src.fill(n, 50, 100)
			start(t, testConfig(c.ListenAddrs()), src)

			delivered(t, c, src, n, 30*time.Second)
			if h.Hits() == 0 {
				t.Error("the fault never fired")
			}
			if dl := src.deadLetters(); len(dl) != 0 {
				t.Errorf("dead letters %v for a retriable error", dl)
			}
		})
	}
}

// rejectedBy is a setup of TestPermanentErrorsDeadLetterOnlyTheCulprit: the
// broker answers err to every produce request of key's partition that
// carries marker, the value of the record it adds.
func rejectedBy(marker []byte, key string, err *kerr.Error) func(*kfake.Cluster, *memSource) uint64 {
	return func(c *kfake.Cluster, src *memSource) uint64 {
		p := partitionOf(key, 4)
		c.Fault(kfake.Fault{
			Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Partitions: []int32{p},
			Err: err, Count: -1,
			When: func(req kmsg.Request) bool { return produceCarries(req, p, marker) },
		})
		return src.add(testTopic, []byte(key), marker)
	}
}

// Permanent errors: the rejected record goes to dead letters with its reason
// and the rest flow, in order, although franz-go failed the whole partition
// with it.
func TestPermanentErrorsDeadLetterOnlyTheCulprit(t *testing.T) {
	marker := []byte("POISON-RECORD")
	tests := []struct {
		name   string
		setup  func(c *kfake.Cluster, src *memSource) (poison uint64)
		reason string
	}{{
		name:   "broker answers MESSAGE_TOO_LARGE",
		reason: "message_too_large",
		setup:  rejectedBy(marker, "dev-poison", kerr.MessageTooLarge),
	}, {
		name:   "record larger than kafka.batch_max_bytes",
		reason: "message_too_large",
		setup: func(_ *kfake.Cluster, src *memSource) uint64 {
			return src.add(testTopic, []byte("dev-poison"), bytes.Repeat(marker, (2<<20)/len(marker)))
		},
	}, {
		name:   "broker answers INVALID_RECORD",
		reason: "invalid_record",
		setup:  rejectedBy(marker, "dev-3", kerr.InvalidRecord),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const before, after = 1500, 1500
			c := newCluster(t)
			src := newMemSource()
			src.fill(before, 40, 100)
			poison := tt.setup(c, src)
			src.fill(after, 40, 100)
			r := start(t, testConfig(c.ListenAddrs()), src)

			recs := delivered(t, c, src, before+after, 30*time.Second)
			if dl := src.deadLetters(); len(dl) != 1 || dl[poison] != tt.reason {
				t.Errorf("dead letters = %v, want only seq %d with %q", dl, poison, tt.reason)
			}
			for _, g := range recs {
				if g.seq == poison {
					t.Errorf("the rejected record reached Kafka")
				}
			}
			if got := testkit.Value(t, r.p.m.failed.WithLabelValues(tt.reason)); got != 1 {
				t.Errorf("edgebridge_forward_failed_total{reason=%q} = %v, want 1", tt.reason, got)
			}
		})
	}
}

// produceCarries reports whether a produce request carries marker in
// partition p of the test topic.
func produceCarries(req kmsg.Request, p int32, marker []byte) bool {
	pr, ok := req.(*kmsg.ProduceRequest)
	if !ok {
		return false
	}
	for _, t := range pr.Topics {
		for _, part := range t.Partitions {
			if part.Partition == p && bytes.Contains(part.Records, marker) {
				return true
			}
		}
	}
	return false
}

// Topic-wide errors: a topic Kafka refuses until an operator acts
// (authorization, unknown topic) is parked with its records kept; one that
// can never be written (a name Kafka rejects, no topic at all) goes to dead
// letters. The other topic keeps flowing either way.
func TestTopicErrors(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "secret", "bad"))
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "secret", Err: kerr.TopicAuthorizationFailed, Count: -1})
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "bad", Err: kerr.InvalidTopicException, Count: -1})
	src := newMemSource()
	want := map[uint64]string{}
	kept := 0
	for i := range 600 {
		switch i % 4 {
		case 0:
			src.add(testTopic, []byte("dev-"+strconv.Itoa(i%7)), []byte("ok"))
		case 1:
			src.add("secret", []byte("dev-1"), []byte("x"))
			kept++
		case 2:
			want[src.add("bad", []byte("dev-1"), []byte("x"))] = "invalid_topic"
		case 3:
			src.add("no-such-topic", []byte("dev-1"), []byte("x"))
			kept++
		}
	}
	want[src.add("", []byte("dev-1"), []byte("x"))] = "no_topic"
	r := start(t, testConfig(c.ListenAddrs()), src)

	recs := newConsumer(t, c.ListenAddrs(), testTopic).until(t, 150, 30*time.Second)
	checkOrder(t, recs)
	testkit.WaitWithin(t, 20*time.Second, "the dead letters", func() bool { return len(src.deadLetters()) == len(want) })
	testkit.WaitWithin(t, 20*time.Second, "only the parked topics' records in the buffer", func() bool { return src.remaining() == kept })
	dl := src.deadLetters()
	for seq, reason := range want {
		if dl[seq] != reason {
			t.Errorf("seq %d: dead letter reason %q, want %q", seq, dl[seq], reason)
		}
	}
	for _, reason := range []string{"topic_authorization_failed", "unknown_topic"} {
		testkit.WaitWithin(t, 20*time.Second, "a topic parked for "+reason, func() bool {
			return parkedTopics(t, r, reason) == 1
		})
	}
	if got := parkedTopics(t, r, ""); got != 2 {
		t.Errorf("edgebridge_forward_parked_topics = %v, want 2", got)
	}
	if got := src.remaining(); got != kept {
		t.Errorf("%d records in the buffer, want the %d of the parked topics", got, kept)
	}
}

// Head-of-line: while one partition's leader answers NOT_LEADER forever,
// the other partitions deliver everything; the stalled one is parked and
// catches up, in order, when it recovers.
func TestOnePartitionFaultedOthersFlow(t *testing.T) {
	deadPartitions(t, newCluster(t), 4, []int32{0}, func(r *running, _ *testkit.Buffer) {
		if got := testkit.Value(t, r.p.m.parked); got < 1 {
			t.Errorf("edgebridge_forward_parked_partitions = %v while partition 0 is stalled", got)
		}
		if !r.p.Up() {
			t.Error("Up() = false while three of four partitions deliver")
		}
	})
}

// Two or more partitions whose leaders answer NOT_LEADER forever cannot
// hold the whole window between them: what lanes without progress hold is
// capped at half of it, so the healthy partitions deliver everything; the
// dead ones catch up, in order, when they recover.
func TestStalledPartitionsHoldHalfTheWindow(t *testing.T) {
	for _, dead := range [][]int32{{0, 1}, {0, 1, 2}, {0, 1, 2, 3, 4, 5}} {
		t.Run(strconv.Itoa(len(dead))+" of 8 partitions dead", func(t *testing.T) {
			deadPartitions(t, newCluster(t, kfake.SeedTopics(8, testTopic)), 8, dead, func(r *running, sink *testkit.Buffer) {
				if !strings.Contains(sink.String(), "partitions without progress hold half the window") {
					t.Error("no log line says that stalled partitions held the window")
				}
				if got := testkit.Value(t, r.p.m.reordered); got != 0 {
					t.Errorf("edgebridge_forward_reordered_total = %v after records taken back", got)
				}
			})
		})
	}
}

// deadPartitions forwards 4000 records over 64 keys to c's test topic of
// partitions partitions while the leaders of dead answer NOT_LEADER forever,
// with a window of 400 (the dead partitions alone could fill it many times
// over). The other partitions must deliver everything through the fault;
// then check runs, the fault ends, and the dead partitions must catch up,
// in order, without duplicates, the buffer empty and nothing parked.
func deadPartitions(t *testing.T, c *kfake.Cluster, partitions int, dead []int32, check func(r *running, sink *testkit.Buffer)) {
	t.Helper()
	const n, keys = 4000, 64
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Partitions: dead, Err: kerr.NotLeaderForPartition, Count: -1})
	src := newMemSource()
	src.fill(n, keys, 100)
	others := 0
	for i := range n {
		if !slices.Contains(dead, partitionOf("dev-"+strconv.Itoa(i%keys), partitions)) {
			others++
		}
	}
	cfg := testConfig(c.ListenAddrs())
	cfg.MaxBufferedRecords = 400
	log, sink := testkit.CaptureLogs(t)
	r := startWith(t, cfg, src, log)

	cons := newConsumer(t, c.ListenAddrs(), testTopic)
	recs := cons.until(t, others, 30*time.Second)
	for _, g := range recs {
		if slices.Contains(dead, g.partition) {
			t.Fatalf("partition %d delivered seq %d through its fault", g.partition, g.seq)
		}
	}
	check(r, sink)
	h.Remove()
	recs = cons.until(t, n, 30*time.Second)
	if dups := checkOrder(t, recs); dups != 0 || len(recs) != n {
		t.Errorf("%d records with %d duplicates, want %d and none", len(recs), dups, n)
	}
	testkit.WaitWithin(t, 10*time.Second, "the buffer to empty", func() bool { return src.remaining() == 0 })
	testkit.WaitWithin(t, 10*time.Second, "no parked partition", func() bool { return testkit.Value(t, r.p.m.parked) == 0 })
}

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

// Pitfall "blocked synchronous send": a slow buffer does not stall
// franz-go's promise goroutine. With Ack held, every promise of the window
// still completes (franz-go buffers nothing) and the records wait on our side.
func TestPromisesNeverBlockOnTheBuffer(t *testing.T) {
	c := newCluster(t)
	src := newMemSource()
	gate := make(chan struct{})
	src.ackGate = gate
	src.fill(3000, 20, 100)
	cfg := testConfig(c.ListenAddrs())
	cfg.MaxBufferedRecords = 300
	r := start(t, cfg, src)

	testkit.WaitWithin(t, 10*time.Second, "every promise of a full window to run", func() bool {
		return r.p.inFlight() == cfg.MaxBufferedRecords && r.p.cl.BufferedProduceRecords() == 0
	})
	if got := src.remaining(); got != 3000 {
		t.Errorf("%d records deleted before their Ack", 3000-got)
	}
	close(gate)
	newConsumer(t, c.ListenAddrs(), testTopic).until(t, 3000, 30*time.Second)
	testkit.WaitWithin(t, 10*time.Second, "the buffer to empty", func() bool { return src.remaining() == 0 })
}

// Shutdown and restart: with Kafka gone, Run still returns within its
// deadline, nothing is deleted, and the next Producer sends it all.
func TestRestartSendsWhatStayedBuffered(t *testing.T) {
	const n = 2000
	dead := newCluster(t)
	deadAddrs := dead.ListenAddrs()
	dead.Close()
	src := newMemSource()
	src.fill(n, 20, 100)

	cfg := testConfig(deadAddrs)
	cfg.ShutdownTimeout = 300 * time.Millisecond
	r := start(t, cfg, src)
	testkit.WaitWithin(t, 10*time.Second, "a read of the buffer", func() bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		return src.reads > 0
	})
	stopped := time.Now()
	r.stop(t)
	if took := time.Since(stopped); took > 5*time.Second {
		t.Errorf("Run took %v to return with Kafka gone", took)
	}
	if got := src.remaining(); got != n {
		t.Fatalf("%d records left the buffer without Kafka", n-got)
	}

	c := newCluster(t)
	start(t, testConfig(c.ListenAddrs()), src)
	recs := newConsumer(t, c.ListenAddrs(), testTopic).until(t, n, 30*time.Second)
	checkOrder(t, recs)
	testkit.WaitWithin(t, 10*time.Second, "the buffer to empty", func() bool { return src.remaining() == 0 })
}

// Pitfall "nil encoder": records with a nil value or key still go out, the
// value decoding as an envelope with just its sequence; a record without a
// topic goes to dead letters instead of panicking or vanishing.
func TestOddRecords(t *testing.T) {
	c := newCluster(t)
	src := newMemSource()
	nilValue := src.add(testTopic, []byte("dev-1"), nil)
	nilKey := src.add(testTopic, nil, []byte{})
	noTopic := src.add("", []byte("dev-1"), []byte("x"))
	start(t, testConfig(c.ListenAddrs()), src)

	recs := newConsumer(t, c.ListenAddrs(), testTopic).until(t, 2, 20*time.Second)
	seen := map[uint64]bool{}
	for _, g := range recs {
		seen[g.seq] = true
		if len(g.value) == 0 {
			t.Errorf("seq %d: empty value, want the sequence field", g.seq)
		}
	}
	if !seen[nilValue] || !seen[nilKey] {
		t.Errorf("got seqs %v, want %d and %d", seen, nilValue, nilKey)
	}
	testkit.WaitWithin(t, 10*time.Second, "the buffer to empty", func() bool { return src.remaining() == 0 })
	if dl := src.deadLetters(); dl[noTopic] != "no_topic" {
		t.Errorf("dead letters %v, want %d: no_topic", dl, noTopic)
	}
}

// Pitfall "unregistered logger hooks so errors vanish": franz-go's own
// errors reach the injected logger.
func TestFranzGoErrorsReachTheLogger(t *testing.T) {
	dead := newCluster(t)
	addrs := dead.ListenAddrs()
	dead.Close()
	src := newMemSource()
	src.fill(10, 1, 10)
	log, sink := testkit.CaptureLogs(t)
	startWith(t, testConfig(addrs), src, log)
	testkit.WaitWithin(t, 10*time.Second, "a franz-go error in the log", func() bool {
		s := sink.String()
		return bytes.Contains([]byte(s), []byte(`"lib":"franz-go"`)) && bytes.Contains([]byte(s), []byte(`"err":`))
	})
	testkit.WaitWithin(t, 10*time.Second, "our own state change", func() bool {
		return bytes.Contains([]byte(sink.String()), []byte("kafka unreachable"))
	})
}

// Every path on which franz-go fails the records it holds for a partition
// keeps each device's records in order: the records produced after the
// failure, before its promises ran, are failed with it (their round's
// context is cancelled from the first failed promise) instead of being
// written ahead of the ones sent again. edgebridge_forward_reordered_total
// would count any that overtook.
func TestPartitionFailuresKeepOrder(t *testing.T) {
	tests := []struct {
		name    string
		atStart bool // inject before the first produce, else mid-stream
		faults  []kfake.Fault
		control func(c *kfake.Cluster) // installed with faults
		known   string                 // a reorder window still open: skip, with why
	}{{
		name:    "rejected produce before the first answer",
		atStart: true,
		faults:  []kfake.Fault{{Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Err: kerr.InvalidRequest, Count: -1}},
	}, {
		// NOT_LEADER makes the partition's batch wait for a metadata
		// update, which brings a load error franz-go does not retry.
		// Until the next update, franz-go fails every record of the
		// topic inside Produce, logging nothing, and its promises come
		// late: the reader waits for them before the next record.
		name: "metadata load error on a waiting partition",
		faults: []kfake.Fault{
			{Keys: []kmsg.Key{kmsg.Metadata}, Topic: testTopic, Err: kerr.InvalidRequest, Count: -1},
			{Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Partitions: []int32{1}, Err: kerr.NotLeaderForPartition, Count: 1},
		},
	}, {
		name:   "rejected batch",
		faults: []kfake.Fault{{Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Partitions: []int32{1}, Err: kerr.InvalidRequest, Count: -1}},
	}, {
		// A fatal producer-ID error: franz-go fails every partition's
		// records with it, and keeps it for the client's life, until
		// renewClient asks again with a new client. Only at start: once
		// a client has an ID, franz-go recovers from produce errors by
		// bumping the epoch locally (KIP-360), without InitProducerID.
		name:    "producer ID refused, then granted",
		atStart: true,
		faults:  []kfake.Fault{{Keys: []kmsg.Key{kmsg.InitProducerID}, Err: kerr.ClusterAuthorizationFailed, Count: -1}},
	}, {
		// The topic's first metadata load fails with an error franz-go
		// does not retry: it fails the records that waited for it, in
		// the background, logging nothing. The first request for the
		// topic is knowPartitions' own, let through.
		name:    "first metadata load of the topic fails",
		atStart: true,
		control: failMetadataLoad(2, kerr.InvalidRequest),
	}, {
		// Head-of-line cancellation: three dead partitions hold more
		// than half the window, so reclaimIdle cancels their rounds and
		// franz-go fails each one's head batch with context.Canceled
		// (maybeFailErr, sink.go). No other path cancels: records have
		// no delivery timeout and unlimited retries, and Produce's own
		// context is never cancelled (TestNoTimeoutFailsRecords).
		name:   "partitions taken back, head of line cancelled",
		faults: []kfake.Fault{{Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Partitions: []int32{0, 1, 2}, Err: kerr.NotLeaderForPartition, Count: -1}},
	}}
	// Partitions set aside and taken back (reclaimIdle) fail through their
	// records' cancelled context: TestStalledPartitionsHoldHalfTheWindow
	// checks that path.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.known != "" {
				t.Skip(tt.known)
			}
			const n = 20000
			c := newCluster(t)
			src := newMemSource()
			src.fill(n, 40, 50)
			cfg := testConfig(c.ListenAddrs())
			cfg.ReadBatch = 50
			var hs []*kfake.FaultHandle
			inject := func() {
				if tt.control != nil {
					tt.control(c)
				}
				for _, f := range tt.faults {
					hs = append(hs, c.Fault(f))
				}
			}
			if tt.atStart {
				inject()
			}
			r := start(t, cfg, src)
			if !tt.atStart {
				testkit.WaitWithin(t, 20*time.Second, "500 records delivered", func() bool { return testkit.Value(t, r.p.m.records) >= 500 })
				inject()
			}
			testkit.WaitWithin(t, 20*time.Second, "franz-go to fail records", func() bool { return testkit.Value(t, r.p.m.retries) > 0 })
			for _, h := range hs {
				h.Remove()
			}

			delivered(t, c, src, n, 60*time.Second)
			if got := testkit.Value(t, r.p.m.reordered); got != 0 {
				t.Errorf("edgebridge_forward_reordered_total = %v", got)
			}
		})
	}
}

// failMetadataLoad has the nth metadata request (from 1) that names the
// test topic answer err for it, once.
func failMetadataLoad(n int, err *kerr.Error) func(*kfake.Cluster) {
	return func(c *kfake.Cluster) {
		seen := 0
		c.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			for _, t := range req.(*kmsg.MetadataRequest).Topics {
				if t.Topic == nil || *t.Topic != testTopic {
					continue
				}
				if seen++; seen == n {
					c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Metadata}, Topic: testTopic, Err: err})
					c.DropControl()
				}
				break
			}
			return nil, nil, false
		})
	}
}

// Head-of-line cancellation fails a partition's records only when we
// cancel their round (reclaimIdle, a failure of the lane): the client has
// no delivery timeout and unlimited retries, so franz-go never fails a
// record for our impatience.
func TestNoTimeoutFailsRecords(t *testing.T) {
	c := newCluster(t)
	r := start(t, testConfig(c.ListenAddrs()), newMemSource())
	if got := r.p.cl.OptValue(kgo.RecordDeliveryTimeout); got != time.Duration(0) {
		t.Errorf("kgo.RecordDeliveryTimeout = %v, want 0", got)
	}
	if got := r.p.cl.OptValue(kgo.RecordRetries); got != int64(math.MaxInt64) {
		t.Errorf("kgo.RecordRetries = %v (%T), want unlimited", got, got)
	}
}
