package forward

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// A registry that already holds one of the forwarder's metrics (another
// forwarder's) makes New fail with an error, not a panic, and New leaves
// none of its metrics registered.
func TestNewDuplicateMetricsRegistersNothing(t *testing.T) {
	log, _ := testkit.CaptureLogs(t)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgebridge_forward_parked_partitions", Help: "taken"}))
	if _, err := New(validConfig(), log, reg, newMemSource()); err == nil || !strings.Contains(err.Error(), "register forward metrics") {
		t.Fatalf("New beside a duplicate metric: %v, want a registration error", err)
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 1 {
		t.Errorf("after the failed New the registry holds %d metric families (%v), want only the one taken before", len(mfs), err)
	}
}
