package mqtt

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// A registry that already holds one of the intake's metrics (another
// intake's) makes New fail with an error, not a panic, and New leaves none
// of its metrics registered.
func TestNewDuplicateMetricsRegistersNothing(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "edgebridge_mqtt_session_lost_total", Help: "taken"}))
	if _, err := New(testConfig("tcp://127.0.0.1:1"), testkit.Logger(t), reg, &fakeSink{}); err == nil {
		t.Fatal("New registered its metrics beside a duplicate")
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 1 {
		t.Errorf("after the failed New the registry holds %d metric families (%v), want only the one taken before", len(mfs), err)
	}
}
