// Package e2e runs the real edgebridge binary against a real MQTT broker
// (mosquitto) and an in-process Kafka (kfake), and checks the delivery
// contract from outside: every message a device got a PUBACK for reaches
// Kafka, in order per device, through a Kafka outage and a SIGKILL.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// stack is a mosquitto, a kfake Kafka and the real bridge configured for
// them; everything stops when the test ends.
type stack struct {
	broker *devstack.Mosquitto
	kafka  *devstack.Kafka
	topic  string
	bridge *devstack.Bridge
	out    *testkit.Buffer // the bridge's log, printed if the test fails
}

// startStack starts the broker, Kafka with topic and the bridge, and waits
// until the bridge is ready. It skips the test when mosquitto is missing.
func startStack(ctx context.Context, t *testing.T, nodeID, topic string) *stack {
	t.Helper()
	if _, err := devstack.MosquittoPath(); err != nil {
		t.Skip("needs mosquitto for redelivery order across bridge restarts: apt-get install mosquitto (.ci/run installs it)")
	}
	dir := t.TempDir()
	bin, err := devstack.BuildBridge(dir)
	if err != nil {
		t.Fatal(err)
	}
	mosqDir := filepath.Join(dir, "mosquitto")
	if err := os.MkdirAll(mosqDir, 0o755); err != nil {
		t.Fatal(err)
	}
	broker, err := devstack.StartMosquitto(mosqDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { broker.Close() })
	kafka, err := devstack.StartKafka(filepath.Join(dir, "kafka"), topic, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Stop)
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	bc := devstack.BridgeConfig{
		NodeID: nodeID, MQTTURL: broker.URL(), Brokers: []string{kafka.Addr()}, Topic: topic,
		BufferDir: filepath.Join(dir, "buffer"), HTTPListen: fmt.Sprintf("127.0.0.1:%d", port), LogFormat: "json",
	}
	cfgPath := filepath.Join(dir, "edgebridge.yaml")
	if err := bc.WriteFile(cfgPath); err != nil {
		t.Fatal(err)
	}
	out := &testkit.Buffer{}
	s := &stack{broker: broker, kafka: kafka, topic: topic, out: out,
		bridge: &devstack.Bridge{Bin: bin, Config: cfgPath, Output: out, Metrics: bc.HTTPListen}}
	t.Cleanup(func() {
		s.bridge.Kill()
		if t.Failed() {
			t.Logf("bridge log:\n%s", out.String())
		}
	})
	s.startBridge(ctx, t)
	return s
}

// startBridge starts the bridge and waits until it is ready.
func (s *stack) startBridge(ctx context.Context, t *testing.T) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.bridge.Start(sctx); err != nil {
		t.Fatal(err)
	}
	if err := s.bridge.WaitReady(sctx); err != nil {
		t.Fatal(err)
	}
}

// startVerified starts the stack for a test of at most timeout, and a
// verifier of its topic. The context ends with the test.
func startVerified(t *testing.T, timeout time.Duration, nodeID, topic string) (context.Context, *stack, *devstack.Verifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel) // should startStack fail the test
	st := startStack(ctx, t, nodeID, topic)
	v := st.verifier(ctx, t)
	t.Cleanup(cancel) // the first clean-up: the devices stop before their broker goes
	return ctx, st, v
}

// verifier starts a verifier reading the topic from its start, through
// Kafka's outages, until the test ends.
func (s *stack) verifier(ctx context.Context, t *testing.T) *devstack.Verifier {
	v := devstack.NewVerifier()
	vctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- v.Consume(vctx, []string{s.kafka.Addr()}, s.topic) }()
	t.Cleanup(func() { cancel(); <-done })
	return v
}

// startDevices starts n simulated devices publishing messages each, rate
// messages per second in all; the channel receives their result.
func (s *stack) startDevices(ctx context.Context, n, messages int, rate float64) (*devstack.Devices, chan error) {
	sim := &devstack.Devices{BrokerURL: s.broker.URL(), N: n, Messages: messages, Rate: rate}
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	return sim, done
}

// Contract 1, 2, 3 and 5 end to end: 20 devices x 2,500 QoS 1 messages while
// Kafka is closed for a few seconds and the bridge is SIGKILLed and restarted
// once. Every message the broker acknowledged to a device arrives in Kafka,
// per-device order holds, and duplicates (allowed after the crash) are
// counted.
func TestKafkaOutageAndSIGKILL(t *testing.T) {
	const (
		devices  = 20
		messages = 2500
		total    = devices * messages
		topic    = "iot.telemetry"
		outage   = 3 * time.Second
	)
	ctx, st, v := startVerified(t, 3*time.Minute, "e2e-node", topic)
	kafka, bridge := st.kafka, st.bridge
	sim, simDone := st.startDevices(ctx, devices, messages, 10000)

	// Drive the faults by progress, not by time: cut Kafka at 20%, kill the
	// bridge at 50% (its buffer holds what Kafka did not get), restart it at
	// once, and bring Kafka back once it has been down for the outage.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case err := <-simDone:
				simDone <- err
				if !cond() {
					t.Fatalf("devices finished (%v) before %s", err, what)
				}
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s: %+v", what, v.Counts())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	waitFor("20% published", func() bool { return sim.Published.Load() >= total/5 })
	kafka.Stop()
	cutAt := time.Now()
	t.Logf("kafka stopped at %d published", sim.Published.Load())

	waitFor("50% published", func() bool { return sim.Published.Load() >= total/2 })
	m, err := bridge.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	bridge.Kill()
	t.Logf("bridge SIGKILLed at %d published, %.0f records buffered", sim.Published.Load(), m["edgebridge_buffer_records"])
	st.startBridge(ctx, t)
	t.Logf("bridge restarted")

	if d := outage - time.Since(cutAt); d > 0 {
		select {
		case <-time.After(d): // the outage has a length, by design
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if err := kafka.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("kafka back after %s", time.Since(cutAt).Round(time.Millisecond))

	if err := <-simDone; err != nil {
		t.Fatalf("devices: %v", err)
	}
	if got := sim.Published.Load(); got != total {
		t.Fatalf("broker acknowledged %d of %d publishes", got, total)
	}
	waitFor("every message in Kafka", func() bool { return v.Counts().Unique >= total })

	if err := bridge.Stop(30 * time.Second); err != nil {
		t.Errorf("bridge exit after SIGTERM: %v", err)
	}
	c := v.Counts()
	t.Logf("published %d, kafka records %d, unique %d, duplicates %d, out of order %d",
		total, c.Records, c.Unique, c.Duplicates, c.OutOfOrder)
	if err := v.Check(devices, messages); err != nil {
		t.Error(err)
	}
	// The live consumer followed Kafka through its restart; a fresh one
	// reading the stored log from the start must agree.
	v2 := st.verifier(ctx, t)
	waitFor("fresh read", func() bool { return v2.Counts().Records >= c.Records })
	if err := v2.Check(devices, messages); err != nil {
		t.Errorf("fresh read of the topic: %v", err)
	}
}
