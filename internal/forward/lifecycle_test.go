package forward

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// Run owns its goroutines: after it returns, none of them (nor franz-go's)
// is left; and a second Run is refused.
func TestRunLeavesNoGoroutines(t *testing.T) {
	c := newCluster(t)
	src := newMemSource()
	src.fill(1000, 10, 50)
	before := runtime.NumGoroutine()

	log, _ := testkit.CaptureLogs(t)
	p, err := New(testConfig(c.ListenAddrs()), log, prometheus.NewRegistry(), src)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	testkit.WaitWithin(t, 20*time.Second, "the buffer to drain", func() bool { return src.remaining() == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := p.Run(context.Background()); !errors.Is(err, ErrRunTwice) {
		t.Errorf("second Run = %v, want ErrRunTwice", err)
	}
	defer func() {
		if t.Failed() {
			buf := make([]byte, 1<<20)
			t.Logf("%d goroutines before, %d after Run returned:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
	}()
	testkit.WaitWithin(t, 10*time.Second, "Run's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// ProducerOnDataLossDetected is wired to a log line and a counter. (kfake
// cannot be made to lose acknowledged records on demand, so the callback is
// driven directly.)
func TestDataLossIsLoggedAndCounted(t *testing.T) {
	p, sink := newUnstarted(t, validConfig())
	if p.cl.OptValue(kgo.ProducerOnDataLossDetected) == nil {
		t.Fatal("ProducerOnDataLossDetected is not set on the client")
	}
	p.onDataLoss(testTopic, 3)
	if got := testkit.Value(t, p.m.dataLoss); got != 1 {
		t.Errorf("edgebridge_forward_data_loss_detected_total = %v, want 1", got)
	}
	if s := sink.String(); !strings.Contains(s, "kafka lost records it had acknowledged") || !strings.Contains(s, `"partition":3`) {
		t.Errorf("data loss not logged with its partition: %s", s)
	}
}

// newUnstarted returns a Producer made by New that never runs (its client
// connects lazily, so no broker is needed), and what it logs.
func newUnstarted(t *testing.T, cfg Config) (*Producer, *testkit.Buffer) {
	t.Helper()
	log, sink := testkit.CaptureLogs(t)
	p, err := New(cfg, log, prometheus.NewRegistry(), newMemSource())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cl.Close)
	return p, sink
}
