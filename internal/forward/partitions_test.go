package forward

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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
