package forward

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// A broker that takes no produce request franz-go can build (ApiVersions
// lists only Produce versions out of its range: a Kafka 4 broker and a
// client pinned below v3, or here, the reverse) has franz-go fail the
// records of every partition it has a request for with its
// errBrokerTooOld, before any request is written. The records stay in the
// buffer, retried after a backoff, none dead-lettered,
// each failure logged; once the broker is upgraded (restarted: franz-go
// asks ApiVersions again on a new connection), everything arrives in
// order.
func TestBrokerTooOld(t *testing.T) {
	const n = 5000
	c := newCluster(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	kresp, err := cl.Request(context.Background(), kmsg.NewPtrApiVersionsRequest())
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	oldVersions := kresp.(*kmsg.ApiVersionsResponse)
	oldVersions.ApiKeys = slices.Clone(oldVersions.ApiKeys)
	for i := range oldVersions.ApiKeys {
		if k := &oldVersions.ApiKeys[i]; k.ApiKey == int16(kmsg.Produce) {
			k.MinVersion, k.MaxVersion = 100, 100 // none franz-go can build
		}
	}
	var old atomic.Bool
	var asked atomic.Int32 // ApiVersions answered since the upgrade
	old.Store(true)
	c.ControlKey(int16(kmsg.ApiVersions), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !old.Load() {
			asked.Add(1)
			return nil, nil, false
		}
		resp := *oldVersions
		resp.SetVersion(req.GetVersion())
		return &resp, nil, true
	})
	src := newMemSource()
	src.fill(n, 40, 50)
	log, sink := testkit.CaptureLogs(t)
	r := startWith(t, testConfig(c.ListenAddrs()), src, log)

	testkit.WaitWithin(t, 20*time.Second, "records failed more than once", func() bool { return testkit.Value(t, r.p.m.retries) > 1 })
	if got := src.remaining(); got != n {
		t.Errorf("%d records left the buffer while the broker takes no produce request", n-got)
	}
	if dl := src.deadLetters(); len(dl) != 0 {
		t.Errorf("dead letters %v for a broker too old", dl)
	}
	testkit.WaitWithin(t, 10*time.Second, "a log line that says why records wait", func() bool {
		s := sink.String()
		return strings.Contains(s, "kafka failed records, resending them from the buffer") && strings.Contains(s, "broker is too old")
	})

	// The upgrade: the broker lists Produce again, and its restart closes
	// the connections; here, those of metadata requests, until franz-go
	// asked ApiVersions again on two (it keeps versions per broker, and
	// the seed and broker 0 are two).
	old.Store(false)
	restartEnds := time.Now().Add(5 * time.Second)
	c.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		if asked.Load() >= 2 || time.Now().After(restartEnds) {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		return nil, errors.New("broker restarts"), true
	})
	// If franz-go's produce connection outlives the restart above (slow
	// machines: arm64 under qemu), it keeps the old versions until
	// franz-go closes it as idle: up to twice its 20s idle timeout.
	delivered(t, c, src, n, 90*time.Second)
	if got := testkit.Value(t, r.p.m.reordered); got != 0 {
		t.Errorf("edgebridge_forward_reordered_total = %v", got)
	}
	if dl := src.deadLetters(); len(dl) != 0 {
		t.Errorf("dead letters %v", dl)
	}
}
