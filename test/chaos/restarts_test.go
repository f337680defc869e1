//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
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

// Contract 1, 2, 5: the bridge is SIGKILLed at random moments under load
// (at least 20 times) and started again at once; nothing a device got a
// PUBACK for is lost, order per device holds, duplicates are counted.
func TestS5KillLoop(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startBridge()
	kills := pick(20, 50)
	d := newDevices(e.mq.URL(), 20, 1_000_000, 3000)
	dctx, dcancel := context.WithCancel(e.ctx)
	defer dcancel()
	ddone := e.runDevices(dctx, d)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	for i := range kills {
		// A random moment: 0.2-2.5s after the previous start, ready or not.
		pause := time.Duration(200+rng.IntN(2300)) * time.Millisecond
		select {
		case <-time.After(pause):
		case err := <-ddone:
			t.Fatalf("devices stopped during kill %d: %v", i, err)
		}
		e.br.Kill()
		e.launchBridge()
	}
	if err := e.bridgeReady(); err != nil {
		t.Fatal(err)
	}
	// Traffic goes on a little after the last restart, then stops.
	target := d.Published.Load() + 15000
	e.waitFor("traffic after the last restart", 2*time.Minute, func() bool { return d.Published.Load() >= target })
	dcancel()
	<-ddone
	e.verify("5 bridge SIGKILL loop", d, 5*time.Minute, row{
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
	d := newDevices(e.mq.URL(), 20, 1_000_000, 3000)
	dctx, dcancel := context.WithCancel(e.ctx)
	defer dcancel()
	ddone := e.runDevices(dctx, d)
	for i := range restarts {
		target := d.Published.Load() + 10000
		e.waitFor(fmt.Sprintf("traffic before restart %d", i+1), 2*time.Minute, func() bool { return d.Published.Load() >= target })
		if err := e.mq.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	target := d.Published.Load() + 10000
	e.waitFor("traffic after the last restart", 2*time.Minute, func() bool { return d.Published.Load() >= target })
	dcancel()
	<-ddone
	res := e.verify("6 mosquitto restart", d, 5*time.Minute, row{
		Notes: fmt.Sprintf("%d SIGTERM restarts of mosquitto (persistence on) under 3k msg/s; %d device reconnects",
			restarts, d.Reconnects.Load()),
	}, 0)
	_ = res
}
