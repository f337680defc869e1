//go:build chaos

package chaos

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// Contract 1, 2, 5: the bridge is SIGKILLed at random moments under load
// (at least 20 times) and started again at once; nothing a device got a
// PUBACK for is lost, order per device holds, duplicates are counted.
func TestS5KillLoop(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startBridge()
	kills := pick(20, 50)
	d := e.startTraffic(20, 3000)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	for i := range kills {
		// A random moment: 0.2-2.5s after the previous start, ready or not.
		pause := time.Duration(200+rng.IntN(2300)) * time.Millisecond
		select {
		case <-time.After(pause):
		case err := <-d.done:
			t.Fatalf("devices stopped during kill %d: %v", i, err)
		}
		e.br.Kill()
		e.launchBridge()
	}
	if err := e.bridgeReady(); err != nil {
		t.Fatal(err)
	}
	// Traffic goes on a little after the last restart, then stops.
	e.waitPublished("traffic after the last restart", d.Devices, 15000, 2*time.Minute)
	d.stop()
	e.verify("5 bridge SIGKILL loop", d.Devices, 5*time.Minute, row{
		Notes: fmt.Sprintf("%d SIGKILLs at random moments, 20 devices at 3k msg/s", kills),
	}, 0)
}

// Contract 1, 2: mosquitto (persistence on) is restarted with SIGTERM
// under load several times. The bridge's persistent session, with what was
// queued for it, survives; devices reconnect and publish again what had
// no PUBACK.
func TestS6MosquittoRestart(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startBridge()
	restarts := pick(3, 10)
	d := e.startTraffic(20, 3000)
	for i := range restarts {
		e.waitPublished(fmt.Sprintf("traffic before restart %d", i+1), d.Devices, 10000, 2*time.Minute)
		if err := e.mq.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	e.waitPublished("traffic after the last restart", d.Devices, 10000, 2*time.Minute)
	d.stop()
	e.verify("6 mosquitto restart", d.Devices, 5*time.Minute, row{
		Notes: fmt.Sprintf("%d SIGTERM restarts of mosquitto (persistence on) under 3k msg/s; %d device reconnects",
			restarts, d.Reconnects.Load()),
	}, 0)
}

// Contract 2: start-up with a large backlog. The bridge is SIGKILLed with
// 1M records buffered; how long until it is ready and produces again.
func TestS9RestartWithBacklog(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startBridge()
	total := pick(1_000_000, 1_000_000)
	e.kafka.Broker(0).Stop(30 * time.Second)
	d := newDevices(e.mq.URL(), 50, total/50, 0)
	fill := time.Now()
	if err := <-e.runDevices(e.ctx, d); err != nil {
		t.Fatalf("devices: %v", err)
	}
	e.waitFor("every record in the buffer", 10*time.Minute, func() bool { return e.gauge(mBuffered) >= float64(total) })
	filled := time.Since(fill)
	e.br.Kill()
	if err := e.kafka.Restart(e.ctx, e.kafka.Broker(0)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	e.launchBridge()
	if err := e.bridgeReady(); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(t0)
	e.waitFor("the first produce", 5*time.Minute, func() bool { return e.metric(mForward) > 0 })
	first := time.Since(t0)
	// 1M records drain at tens of thousands per second on loopback; minutes
	// here means the forwarder or the buffer is crawling.
	e.waitFor("the backlog to drain (at least ~4k rec/s)", 4*time.Minute, func() bool { return e.gauge(mBuffered) == 0 })
	drain := time.Since(t0)
	t.Logf("filled %d in %s; after SIGKILL: ready in %s, first produce in %s, drained in %s", total, filled.Round(time.Millisecond), ready.Round(time.Millisecond), first.Round(time.Millisecond), drain.Round(time.Millisecond))
	e.verify("9 restart with 1M buffered", d, 5*time.Minute, row{
		Drain: rate(float64(total), drain-first),
		Notes: fmt.Sprintf("%d records buffered (Kafka down, filled in %s), bridge SIGKILLed and started: ready (/readyz) in %s, first produce in %s, drained in %s",
			total, filled.Round(time.Second), ready.Round(time.Millisecond), first.Round(time.Millisecond), drain.Round(time.Second)),
	}, 0)
}
