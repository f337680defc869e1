package mqtt

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// BenchmarkIntake compares the intake (real durable buffer, fsync per
// group commit, PUBACK after commit) with a plain paho subscriber that
// acknowledges at once and discards, on the same mosquitto (in-flight
// window 1000) with the same load: QoS 1, 200-byte payloads, 8 devices.
//
//	go test -bench Intake -run '^$' ./internal/mqtt/
//
// EDGEBRIDGE_BENCH_MESSAGES sets the messages per round (default 100000),
// EDGEBRIDGE_BENCH_INFLIGHT mosquitto's max_inflight_messages (default
// 1000). The intake's rate is bounded by about inflight / (2 x commit
// latency): one batch commits while the next fills the rest of the window.
// Reported: raw_msg/s, intake_msg/s and intake/raw.
func BenchmarkIntake(b *testing.B) {
	mosquittoBinary(b)
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("EDGEBRIDGE_BENCH_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	inflight := 1000
	if v, err := strconv.Atoi(os.Getenv("EDGEBRIDGE_BENCH_INFLIGHT")); err == nil && v > 0 {
		inflight = v
	}
	for _, mode := range []string{"live", "backlog"} {
		b.Run(mode, func(b *testing.B) {
			var raw, intake time.Duration
			for range b.N {
				raw += benchRound(b, mode, n, inflight, runRaw)
				intake += benchRound(b, mode, n, inflight, runIntake)
			}
			rawRate := float64(n*b.N) / raw.Seconds()
			intakeRate := float64(n*b.N) / intake.Seconds()
			b.ReportMetric(rawRate, "raw_msg/s")
			b.ReportMetric(intakeRate, "intake_msg/s")
			b.ReportMetric(intakeRate/rawRate, "intake/raw")
			b.ReportMetric(0, "ns/op") // a round's wall time says nothing on its own
		})
	}
}

// consumer runs one kind of subscriber: connect starts it (the session
// exists after the first call), done reports when n messages were taken,
// stop ends it.
type consumer struct {
	connect func()
	done    func() bool
	stop    func()
}

type consumerFunc func(b *testing.B, broker, clientID string, n int) consumer

// benchRound runs one consumer against a fresh mosquitto and returns how
// long it took to take n messages: from the first publish (live) or from
// connecting to a session holding the backlog (backlog).
func benchRound(b *testing.B, mode string, n, inflight int, newConsumer consumerFunc) time.Duration {
	b.StopTimer()
	mq := startMosquittoInflight(b, inflight)
	defer mq.kill()
	c := newConsumer(b, mq.url(), "bench-sub", n)
	c.connect()
	var start time.Time
	if mode == "backlog" {
		c.stop()
		benchPublish(b, mq.url(), n)
		c = newConsumer(b, mq.url(), "bench-sub", n)
		b.StartTimer()
		start = time.Now()
		c.connect()
	} else {
		b.StartTimer()
		start = time.Now()
		go benchPublish(b, mq.url(), n)
	}
	for !c.done() {
		time.Sleep(200 * time.Microsecond)
	}
	d := time.Since(start)
	b.StopTimer()
	c.stop()
	return d
}

// benchPublish publishes n QoS 1 messages of 200 bytes from 4 clients.
func benchPublish(b *testing.B, broker string, n int) {
	const pubs = 4
	var wg sync.WaitGroup
	payload := make([]byte, 200)
	for p := range pubs {
		o := paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("bench-pub-%d", p)).SetAutoReconnect(false)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			b.Errorf("publisher connect: %v", tok.Error())
			return
		}
		wg.Go(func() {
			defer c.Disconnect(50)
			var toks []paho.Token
			for i := p; i < n; i += pubs {
				toks = append(toks, c.Publish(fmt.Sprintf("devices/dev-%d/telemetry", i%8), 1, false, payload))
				if len(toks) == 1000 {
					for _, t := range toks {
						t.Wait()
					}
					toks = toks[:0]
				}
			}
			for _, t := range toks {
				t.Wait()
			}
		})
	}
	wg.Wait()
}

// runRaw is the yardstick: paho's automatic acknowledgement right after a
// handler that only counts.
func runRaw(b *testing.B, broker, clientID string, n int) consumer {
	var got atomic.Int64
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).SetCleanSession(false).
		SetOrderMatters(true).SetStore(paho.NewMemoryStore()).
		SetDefaultPublishHandler(func(paho.Client, paho.Message) { got.Add(1) })
	c := paho.NewClient(o)
	return consumer{
		connect: func() {
			if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				b.Fatalf("raw connect: %v", tok.Error())
			}
			if tok := c.Subscribe("devices/+/telemetry", 1, nil); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				b.Fatalf("raw subscribe: %v", tok.Error())
			}
		},
		done: func() bool { return got.Load() >= int64(n) },
		stop: func() { c.Disconnect(100) },
	}
}

// runIntake is the Subscriber appending to the real buffer.
func runIntake(b *testing.B, broker, clientID string, n int) consumer {
	q := openBuffer(b, b.TempDir())
	cfg := testConfig(broker)
	cfg.ClientID = clientID
	var r *running
	return consumer{
		connect: func() {
			r = startSubscriber(b, cfg, q)
			testkit.WaitFor(b, "intake ready", r.Ready)
		},
		done: func() bool { return testkit.Value(b, r.m.acked) >= float64(n) },
		stop: func() {
			if err := r.stop(b); err != nil {
				b.Fatal(err)
			}
			var bs, cs dto.Metric
			_ = r.m.batchSize.Write(&bs)
			_ = r.m.commitSeconds.Write(&cs)
			if h := bs.GetHistogram(); h.GetSampleCount() > 0 {
				b.Logf("intake: %d commits, %.0f messages per commit, %.2f ms per commit",
					h.GetSampleCount(), h.GetSampleSum()/float64(h.GetSampleCount()),
					1000*cs.GetHistogram().GetSampleSum()/float64(cs.GetHistogram().GetSampleCount()))
			}
		},
	}
}
