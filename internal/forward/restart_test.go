package forward

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

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
