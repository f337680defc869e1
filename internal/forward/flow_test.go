package forward

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

// Contract 2 and 3: 100k records all reach Kafka, in buffer order per
// device, and leave the buffer only once acknowledged; every record carries
// the envelope with its sequence and the content-type, node and seq headers.
func TestNormalFlow(t *testing.T) {
	const n, keys = 100_000, 97
	c := newCluster(t)
	src := newMemSource()
	env, err := proto.Marshal(&edgebridgev1.Envelope{NodeId: "node-1", DeviceId: "dev", Payload: []byte("payload")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		src.add(testTopic, []byte("dev-"+itoa(i%keys)), env)
	}
	cfg := testConfig(c.ListenAddrs())
	cfg.Compression = "zstd"
	r := start(t, cfg, src)

	recs := delivered(t, c, src, n, 60*time.Second)
	if got := testkit.Value(t, r.p.m.records); got != n {
		t.Errorf("edgebridge_forward_records_total = %v, want %d", got, n)
	}
	if !r.p.Up() {
		t.Error("Up() = false after a successful drain")
	}
	for _, g := range recs[:10] {
		if g.headers[HeaderContentType] != edgebridgev1.ContentType || g.headers[HeaderNode] != "node-1" {
			t.Fatalf("headers = %v", g.headers)
		}
		var e edgebridgev1.Envelope
		if err := proto.Unmarshal(g.value, &e); err != nil {
			t.Fatalf("value does not decode as an Envelope: %v", err)
		}
		if e.GetSequence() != g.seq || e.GetNodeId() != "node-1" {
			t.Fatalf("envelope sequence %d node %q, header seq %d", e.GetSequence(), e.GetNodeId(), g.seq)
		}
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for i > 0 {
		n--
		b[n] = digits[i%10]
		i /= 10
	}
	return string(b[n:])
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
