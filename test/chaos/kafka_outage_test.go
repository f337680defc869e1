//go:build chaos

package chaos

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/retry"
)

// Contract 2, 4: Kafka is unreachable for a long time while traffic goes
// on; the backlog lives on disk (memory stays flat) and drains after the
// heal while live traffic continues.
func TestS2LongPartition(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startBridge()
	outage := pick(60*time.Second, 10*time.Minute)
	after := pick(30*time.Second, 2*time.Minute)
	r := pick(4000.0, 2000.0)
	const n = 20
	per := int((outage + after + 10*time.Second).Seconds() * r / n)
	d := newDevices(e.mq.URL(), n, per, r)
	ddone := e.runDevices(e.ctx, d)
	e.waitFor("traffic", time.Minute, func() bool { return d.Published.Load() >= int64(5*r) })

	e.kafka.Broker(0).Stop(30 * time.Second)
	cut := time.Now()
	retry.Sleep(e.ctx, outage/4)
	rssEarly, _ := procMem(e.br.PID())
	retry.Sleep(e.ctx, outage-time.Since(cut))
	rssLate, _ := procMem(e.br.PID())
	buffered := e.gauge(mBuffered)
	if up := e.gauge(mKafkaUp); up != 0 {
		t.Errorf("edgebridge_kafka_up = %v after %s without Kafka", up, outage)
	}
	if err := e.kafka.Restart(e.ctx, e.kafka.Broker(0)); err != nil {
		t.Fatal(err)
	}
	heal := time.Now()
	fwd0 := e.gauge(mForward)
	// Drained: the backlog is down to about a second of live traffic.
	e.waitFor("the backlog to drain", 15*time.Minute, func() bool { return e.gauge(mBuffered) < r })
	drainDur := time.Since(heal)
	forwarded := e.gauge(mForward) - fwd0
	if err := <-ddone; err != nil {
		t.Fatalf("devices: %v", err)
	}
	peak, samples := e.mem.memory()
	t.Logf("outage %s: %.0f records buffered, drained in %s with live traffic (%.0f forwarded, net backlog drain %s); RSS at 1/4 of the outage %s, at its end %s, peak %s, %d samples",
		outage, buffered, drainDur.Round(time.Millisecond), forwarded, rate(buffered, drainDur), mib(rssEarly), mib(rssLate), mib(peak), len(samples))
	// Flat: the backlog is on disk. Allow for GC slack, not for growth
	// with the backlog (which would be hundreds of MiB here).
	if rssLate > rssEarly+64<<20 {
		t.Errorf("RSS grew with the backlog: %s at 1/4 of the outage, %s at its end", mib(rssEarly), mib(rssLate))
	}
	e.verify("2 long partition", d, 10*time.Minute, row{
		Drain: rate(forwarded, drainDur),
		Notes: fmt.Sprintf("Kafka stopped %s under %.0f msg/s: %.0f buffered; drained in %s while live traffic went on (backlog net %s); RSS %s at 1/4 of the outage, %s at its end",
			outage, r, buffered, drainDur.Round(time.Second), rate(buffered, drainDur), mib(rssEarly), mib(rssLate)),
	}, 0)
}

// Contract 2: a broker that stops answering without refusing — SIGSTOPped,
// or behind a link that drops every packet. Timeouts must fire (the bridge
// reports Kafka down, /healthz stays up), the data waits, nothing is lost.
func TestS3Blackhole(t *testing.T) {
	hold := pick(30*time.Second, 5*time.Minute)
	run := func(t *testing.T, name string, netns bool, cut, heal func(e *env)) {
		e := newEnv(t, envOpts{netns: netns})
		e.startBridge()
		d := e.startTraffic(20, 2000)
		e.waitFor("traffic", time.Minute, func() bool { return e.gauge(mForward) >= 10000 })
		cut(e)
		t0 := time.Now()
		e.waitFor("edgebridge_kafka_up to drop to 0 (timeouts firing)", 60*time.Second, func() bool { return e.gauge(mKafkaUp) == 0 })
		detected := time.Since(t0)
		retry.Sleep(e.ctx, hold-time.Since(t0))
		if code, _, _ := e.br.Get("/healthz"); code != http.StatusOK {
			t.Errorf("/healthz = %d during the blackhole: a Kafka outage must not fail liveness", code)
		}
		buffered := e.gauge(mBuffered)
		heal(e)
		healed := time.Now()
		e.waitFor("the backlog to drain", 10*time.Minute, func() bool { return e.gauge(mBuffered) < 2000 })
		drain := time.Since(healed)
		e.waitPublished("traffic after the heal", d.Devices, 5000, time.Minute)
		d.stop()
		e.verify(name, d.Devices, 5*time.Minute, row{
			Drain: rate(buffered, drain),
			Notes: fmt.Sprintf("%s for %s under 2k msg/s; Kafka reported down after %s; %.0f buffered, drained in %s",
				map[bool]string{true: "every packet on the Kafka link dropped (iptables DROP in the namespace)", false: "Kafka broker SIGSTOPped"}[netns],
				hold, detected.Round(100*time.Millisecond), buffered, drain.Round(100*time.Millisecond)),
		}, 0)
	}
	t.Run("sigstop", func(t *testing.T) {
		run(t, "3a blackhole: broker SIGSTOP", false,
			func(e *env) {
				if err := e.kafka.Broker(0).Pause(); err != nil {
					t.Fatal(err)
				}
			},
			func(e *env) {
				if err := e.kafka.Broker(0).Resume(); err != nil {
					t.Fatal(err)
				}
			})
	})
	t.Run("dropped_packets", func(t *testing.T) {
		run(t, "3b blackhole: packets dropped", true,
			func(e *env) { e.net.blackhole(true) },
			func(e *env) { e.net.blackhole(false) })
	})
}

// Contract 2, 3: leader failover on three brokers (RF 3, min ISR 2). One
// broker is SIGKILLed under load: the others take over. Then two are
// stopped: acks=all fails with NOT_ENOUGH_REPLICAS and the bridge holds the
// data until they are back.
func TestS4LeaderFailover(t *testing.T) {
	e := newEnv(t, envOpts{brokers: 3, partitions: 6})
	if err := e.kafka.CreateTopic(e.ctx, "probe", 3); err != nil {
		t.Fatal(err)
	}
	e.startBridge()
	const r = 2000.0
	d := e.startTraffic(20, r)
	e.waitFor("traffic", time.Minute, func() bool { return e.gauge(mForward) >= 10000 })

	// 1. SIGKILL one broker: leaders move, production goes on.
	e.kafka.Broker(0).Kill()
	killed := time.Now()
	f0 := e.gauge(mForward)
	e.waitFor("production to go on with a broker dead", 2*time.Minute, func() bool { return e.gauge(mForward) >= f0+10000 })
	failover := time.Since(killed)
	if err := e.kafka.Restart(e.ctx, e.kafka.Broker(0)); err != nil {
		t.Fatal(err)
	}
	if err := e.kafka.WaitISR(e.ctx, e.topic); err != nil {
		t.Fatal(err)
	}

	// 2. Stop two: the ISR shrinks below min.insync.replicas.
	e.kafka.Broker(1).Stop(60 * time.Second)
	e.kafka.Broker(2).Stop(60 * time.Second)
	if err := e.kafka.WaitNotEnoughReplicas(e.ctx, "probe"); err != nil {
		t.Fatal(err)
	}
	b0 := e.gauge(mBuffered)
	hold := pick(30*time.Second, 3*time.Minute)
	retry.Sleep(e.ctx, hold)
	held := e.gauge(mBuffered) - b0
	if held < r*hold.Seconds()/2 {
		t.Errorf("buffer grew by %.0f records in %s of NOT_ENOUGH_REPLICAS at %.0f msg/s: the bridge is not holding the data", held, hold, r)
	}
	buffered := e.gauge(mBuffered)
	// The bridge drains as soon as one more broker is back in the ISR:
	// time the drain from the first restart.
	restored := time.Now()
	for _, i := range []int{1, 2} {
		if err := e.kafka.Restart(e.ctx, e.kafka.Broker(i)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFor("the backlog to drain", 10*time.Minute, func() bool { return e.gauge(mBuffered) < r })
	drain := time.Since(restored)
	e.waitPublished("traffic after the restore", d.Devices, 5000, time.Minute)
	d.stop()
	e.verify("4 leader failover", d.Devices, 5*time.Minute, row{
		Drain: rate(buffered, drain),
		Notes: fmt.Sprintf("3 brokers, RF 3, min ISR 2, 2k msg/s: 1 SIGKILLed (10k more records acked %s later), then 2 stopped: NOT_ENOUGH_REPLICAS for %s, %.0f held in the buffer, drained %s after the first broker restart began (JVM start included)",
			failover.Round(100*time.Millisecond), hold, buffered, drain.Round(100*time.Millisecond)),
	}, 0)
}

// Contract 2: a slow, lossy uplink (300ms each way, 5% loss each way).
// Throughput is reported; nothing is lost.
func TestS8SlowLossyUplink(t *testing.T) {
	e := newEnv(t, envOpts{netns: true, slowLink: true})
	e.startBridge()
	dur := pick(60*time.Second, 5*time.Minute)
	const r = 1000.0
	const n = 20
	d := newDevices(e.mq.URL(), n, int(dur.Seconds()*r/n), r)
	start := time.Now()
	if err := <-e.runDevices(e.ctx, d); err != nil {
		t.Fatalf("devices: %v", err)
	}
	maxBuffered := 0.0
	e.waitFor("every message in Kafka", 15*time.Minute, func() bool {
		maxBuffered = max(maxBuffered, e.gauge(mBuffered))
		return e.v.Counts().Unique >= d.Total()
	})
	took := time.Since(start)
	e.verify("8 slow lossy uplink", d, 5*time.Minute, row{
		Drain: rate(float64(d.Total()), took),
		Notes: fmt.Sprintf("%.0f msg/s offered for %s; %s; all in Kafka %s after the first publish",
			r, dur, e.link, took.Round(100*time.Millisecond)),
	}, 0)
}
