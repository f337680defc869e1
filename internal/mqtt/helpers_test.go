package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

// fakeSink is an in-memory Sink. hook, when set, runs before the records
// are stored and may block or fail the call.
type fakeSink struct {
	hook func(ctx context.Context, recs []buffer.Record) error

	mu       sync.Mutex
	recs     []buffer.Record
	calls    int
	inFlight atomic.Int32
	overlap  atomic.Bool // Append was called concurrently: a Sink rule broken
}

func (f *fakeSink) Append(ctx context.Context, recs []buffer.Record) error {
	if f.inFlight.Add(1) > 1 {
		f.overlap.Store(true)
	}
	defer f.inFlight.Add(-1)
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.hook != nil {
		if err := f.hook(ctx, recs); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range recs {
		r.Key = bytes.Clone(r.Key)
		r.Value = bytes.Clone(r.Value)
		f.recs = append(f.recs, r)
	}
	return nil
}

func (f *fakeSink) records() []buffer.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]buffer.Record(nil), f.recs...)
}

func (f *fakeSink) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.recs)
}

func testConfig(broker string) Config {
	return Config{
		NodeID:               "node-1",
		URL:                  broker,
		ConnectRetryInterval: 50 * time.Millisecond,
		MaxReconnectInterval: time.Second,
		DrainTimeout:         2 * time.Second,
		Routes: []Route{
			{Filter: "devices/+/telemetry", KafkaTopic: "telemetry"},
			{Filter: "site/+/+/events", KafkaTopic: "events", DeviceLevel: 3},
		},
	}
}

// running is a Subscriber whose Run goroutine the test owns.
type running struct {
	*Subscriber
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// startReady is startSubscriber that waits until the Subscriber is ready.
func startReady(t testing.TB, cfg Config, sink Sink) *running {
	t.Helper()
	r := startSubscriber(t, cfg, sink)
	testkit.WaitFor(t, "subscriber ready", r.Ready)
	return r
}

// startSubscriber runs a Subscriber until the test ends (or stop is called).
func startSubscriber(t testing.TB, cfg Config, sink Sink) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(cfg, testkit.Logger(t), reg, sink)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Subscriber: s, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns its result; later calls return nil.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
		return nil
	}
}

// publisher is a plain paho client publishing QoS 1 messages.
func newPublisher(t testing.TB, broker, id string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(true).SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t testing.TB, c paho.Client, topic string, qos byte, retained bool, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func decode(t testing.TB, r buffer.Record) *edgebridgev1.Envelope {
	t.Helper()
	var e edgebridgev1.Envelope
	if err := proto.Unmarshal(r.Value, &e); err != nil {
		t.Fatalf("record value is not an Envelope: %v", err)
	}
	return &e
}

// assertNoSubscriberGoroutines checks that no goroutine runs code of this
// package after Run returned (paho's own goroutines may wind down later).
func assertNoSubscriberGoroutines(t testing.TB) {
	t.Helper()
	var stacks string
	testkit.WaitFor(t, "subscriber goroutines to exit", func() bool {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		return !strings.Contains(stacks, "internal/mqtt.(*Subscriber)")
	})
}

// spiedBroker starts an embedded broker with an ackSpy on clientID, and
// returns a config for a Subscriber with that client id on it.
func spiedBroker(t testing.TB, clientID string) (Config, *ackSpy) {
	t.Helper()
	cfg := testConfig("")
	cfg.ClientID = clientID
	spy := &ackSpy{client: cfg.ClientID}
	cfg.URL, _ = startMochi(t, nil, spy)
	return cfg, spy
}

// recordsByMQTTTopic waits until sink holds n records and returns them by
// the MQTT topic in their envelope.
func recordsByMQTTTopic(t testing.TB, sink *fakeSink, n int) map[string]buffer.Record {
	t.Helper()
	testkit.WaitFor(t, fmt.Sprintf("%d records", n), func() bool { return sink.len() == n })
	out := map[string]buffer.Record{}
	for _, r := range sink.records() {
		out[decode(t, r).GetMqttTopic()] = r
	}
	return out
}

func payloadOf(device string, i int) []byte { return fmt.Appendf(nil, "%s:%08d", device, i) }

func newTLSPublisher(t testing.TB, broker string, cfg *tls.Config) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(broker).SetClientID("tls-pub").SetTLSConfig(cfg).SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}
