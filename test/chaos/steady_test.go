//go:build chaos

package chaos

import (
	"fmt"
	"testing"
	"time"
)

// Contract 1, 2, 3: steady state. 100,000 messages from 50 devices as fast
// as mosquitto takes them; every one arrives, in order per device.
func TestS1SteadyState(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startBridge()
	d := newDevices(e.mq.URL(), 50, 2000, 0)
	start := time.Now()
	if err := <-e.runDevices(e.ctx, d); err != nil {
		t.Fatalf("devices: %v", err)
	}
	published := time.Since(start)
	e.waitFor("every message in Kafka", 5*time.Minute, func() bool { return e.v.Counts().Unique >= d.Total() })
	took := time.Since(start)
	e.verify("1 steady state", d, time.Minute, row{
		Drain: rate(float64(d.Total()), took),
		Notes: fmt.Sprintf("50 devices, QoS 1, unthrottled: published in %s, all in Kafka after %s (end-to-end rate in the drain column)",
			published.Round(100*time.Millisecond), took.Round(100*time.Millisecond)),
	}, 0)
}
