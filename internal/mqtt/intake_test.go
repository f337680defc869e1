package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/dev/devstack"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// startMochi runs an embedded broker on a loopback ephemeral port and
// returns its URL. Where order or redelivery matter the tests use
// mosquitto instead.
func startMochi(t testing.TB, tlsCfg *tls.Config, hooks ...mochi.Hook) (string, *mochi.Server) {
	t.Helper()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(devstack.AllowAll), nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		if err := srv.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0", TLSConfig: tlsCfg})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close() })
	scheme := "tcp"
	if tlsCfg != nil {
		scheme = "ssl"
	}
	return scheme + "://" + l.Address(), srv
}

// publishedHook reports each topic once mochi has fanned it out.
type publishedHook struct {
	mochi.HookBase
	topics chan string
}

func (h *publishedHook) ID() string { return "published" }

func (h *publishedHook) Provides(b byte) bool { return b == mochi.OnPublished }

func (h *publishedHook) OnPublished(_ *mochi.Client, pk packets.Packet) {
	select {
	case h.topics <- pk.TopicName:
	default:
	}
}

// ackSpy records, per client, the packet ids of the PUBLISHes the broker
// sent and of the PUBACKs it got back, in order.
type ackSpy struct {
	mochi.HookBase
	client string

	mu      sync.Mutex
	sent    []uint16
	pubacks []uint16
}

func (h *ackSpy) ID() string { return "ack-spy" }

func (h *ackSpy) Provides(b byte) bool {
	return b == mochi.OnPacketRead || b == mochi.OnPacketSent
}

func (h *ackSpy) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.ID == h.client && pk.FixedHeader.Type == packets.Puback {
		h.mu.Lock()
		h.pubacks = append(h.pubacks, pk.PacketID)
		h.mu.Unlock()
	}
	return pk, nil
}

func (h *ackSpy) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if cl.ID == h.client && pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 0 {
		h.mu.Lock()
		h.sent = append(h.sent, pk.PacketID)
		h.mu.Unlock()
	}
}

func (h *ackSpy) snapshot() (sent, pubacks []uint16) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]uint16(nil), h.sent...), append([]uint16(nil), h.pubacks...)
}

// Envelope contract: every message becomes one record whose value is an
// edgebridge.v1.Envelope with node_id, device_id, mqtt_topic, the payload
// untouched, qos, retained and received_at, and no sequence (the buffer
// assigns it); the record goes to the route's Kafka topic keyed by device.
func TestEnvelopeAndRouting(t *testing.T) {
	published := &publishedHook{topics: make(chan string, 16)}
	broker, _ := startMochi(t, nil, published)
	pub := newPublisher(t, broker, "pub")
	// A retained message reaches a new subscription with retain set.
	publish(t, pub, "site/berlin/pump-7/events", 1, true, []byte("on"))
	// mochi PUBACKs a QoS 1 publish before it fans it out: wait for the
	// fan-out, or a subscription made meanwhile gets the message twice,
	// from the retained store and live (seen on slow arm64 under qemu).
	if got := <-published.topics; got != "site/berlin/pump-7/events" {
		t.Fatalf("first published topic %q", got)
	}
	sink := &fakeSink{}
	before := time.Now()
	sub := startReady(t, testConfig(broker), sink)

	binary := []byte{0, 1, 2, 0xff, 0xfe}
	publish(t, pub, "devices/dev-1/telemetry", 1, false, binary)
	publish(t, pub, "devices/dev-2/telemetry", 0, false, []byte("q0"))
	byTopic := recordsByMQTTTopic(t, sink, 3)
	tests := []struct {
		topic, kafka, device string
		payload              []byte
		qos                  uint32
		retained             bool
	}{
		{"devices/dev-1/telemetry", "telemetry", "dev-1", binary, 1, false},
		{"site/berlin/pump-7/events", "events", "pump-7", []byte("on"), 1, true},
		{"devices/dev-2/telemetry", "telemetry", "dev-2", []byte("q0"), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			r, ok := byTopic[tt.topic]
			if !ok {
				t.Fatalf("no record for %s", tt.topic)
			}
			e := decode(t, r)
			if r.Topic != tt.kafka || string(r.Key) != tt.device || r.Reason != "" {
				t.Errorf("record topic=%q key=%q reason=%q, want %q %q \"\"", r.Topic, r.Key, r.Reason, tt.kafka, tt.device)
			}
			if e.GetNodeId() != "node-1" || e.GetDeviceId() != tt.device || !bytes.Equal(e.GetPayload(), tt.payload) ||
				e.GetQos() != tt.qos || e.GetRetained() != tt.retained || e.GetSequence() != 0 {
				t.Errorf("envelope = %v", e)
			}
			at := e.GetReceivedAt().AsTime()
			if at.Before(before.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
				t.Errorf("received_at %v is not the time of receipt", at)
			}
		})
	}
	testkit.WaitFor(t, "2 QoS 1 acks counted", func() bool { return testkit.Value(t, sub.m.acked) == 2 })
	if got := testkit.Value(t, sub.m.received); got != 3 {
		t.Errorf("edgebridge_mqtt_received_total = %v, want 3", got)
	}
	if got := testkit.Value(t, sub.m.up); got != 1 {
		t.Errorf("edgebridge_mqtt_up = %v, want 1", got)
	}
	if sink.overlap.Load() {
		t.Error("Append was called concurrently")
	}
}

// Contract 1, observed at the broker: no PUBACK leaves the bridge while
// the sink has not returned, and the PUBACKs, once it did, carry the
// packet ids in the order the broker sent the messages.
func TestNoPubackBeforeCommitInOrder(t *testing.T) {
	cfg, spy := spiedBroker(t, "bridge-spy")

	const n = 300
	release := make(chan struct{})
	var held sync.Once
	holding := make(chan struct{})
	sink := &fakeSink{hook: func(ctx context.Context, recs []buffer.Record) error {
		held.Do(func() { close(holding) })
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	sub := startReady(t, cfg, sink)
	pub := newPublisher(t, cfg.URL, "pub")
	for i := range n {
		publish(t, pub, fmt.Sprintf("devices/d%d/telemetry", i%7), 1, false, payloadOf("d", i))
	}
	<-holding
	testkit.WaitFor(t, "all messages sent to the bridge", func() bool {
		sent, _ := spy.snapshot()
		return len(sent) == n
	})
	// Everything reached the bridge; the first Append is still held.
	// Wait until every message is in the pipeline, so a PUBACK sent too
	// early would have had every chance to be written.
	testkit.WaitFor(t, "messages received", func() bool { return testkit.Value(t, sub.m.received) == n })
	if _, acks := spy.snapshot(); len(acks) != 0 {
		t.Fatalf("broker got %d PUBACKs before the sink committed anything", len(acks))
	}
	close(release)
	testkit.WaitFor(t, "all PUBACKs", func() bool {
		_, acks := spy.snapshot()
		return len(acks) == n
	})
	sent, acks := spy.snapshot()
	for i := range sent {
		if sent[i] != acks[i] {
			t.Fatalf("PUBACK %d is for packet %d, the broker sent packet %d there: not receipt order", i, acks[i], sent[i])
		}
	}
	if sink.len() != n {
		t.Errorf("sink holds %d records, want %d", sink.len(), n)
	}
}

// Bad input: a topic with no device id, an oversized payload, and a topic
// matching no route (a stale subscription of the persistent session after
// a route was removed) are each stored as a dead letter with its reason,
// acknowledged, counted by reason, and the Subscriber keeps going.
func TestRejectedMessagesAreDeadLettered(t *testing.T) {
	broker, _ := startMochi(t, nil)
	cfg := testConfig(broker)
	cfg.ClientID = "bridge-rejects"
	cfg.MaxPayloadBytes = 64
	cfg.Routes = append(cfg.Routes, Route{Filter: "old/+/data", KafkaTopic: "old"})

	// First run subscribes to old/+/data too; the broker keeps that
	// subscription in the session after the route is removed.
	first := startSubscriber(t, cfg, &fakeSink{})
	testkit.WaitFor(t, "first subscriber ready", first.Ready)
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}

	cfg.Routes = cfg.Routes[:2]
	sink := &fakeSink{}
	sub := startReady(t, cfg, sink)
	pub := newPublisher(t, broker, "pub")
	big := bytes.Repeat([]byte("x"), 100)
	publish(t, pub, "devices//telemetry", 1, false, []byte("no device"))
	publish(t, pub, "devices/dev-9/telemetry", 1, false, big)
	publish(t, pub, "old/dev-3/data", 1, false, []byte("stale route"))
	publish(t, pub, "devices/dev-1/telemetry", 1, false, []byte("fine"))
	got := recordsByMQTTTopic(t, sink, 4)
	tests := []struct {
		topic, reason, kafka, key string
	}{
		{"devices//telemetry", ReasonNoDeviceID, "telemetry", ""},
		{"devices/dev-9/telemetry", ReasonPayloadTooLarge, "telemetry", "dev-9"},
		{"old/dev-3/data", ReasonNoRoute, "", ""},
		{"devices/dev-1/telemetry", "", "telemetry", "dev-1"},
	}
	for _, tt := range tests {
		r := got[tt.topic]
		if r.Reason != tt.reason || r.Topic != tt.kafka || string(r.Key) != tt.key {
			t.Errorf("%s: reason=%q topic=%q key=%q, want %q %q %q", tt.topic, r.Reason, r.Topic, r.Key, tt.reason, tt.kafka, tt.key)
		}
	}
	e := decode(t, got["devices/dev-9/telemetry"])
	// Kept whole, so that it can be requeued once the limits are raised.
	if !bytes.Equal(e.GetPayload(), big) || e.GetAttributes()["payload_bytes"] != "100" {
		t.Errorf("oversized dead letter: payload %d bytes, attributes %v; want all 100 bytes and payload_bytes=100", len(e.GetPayload()), e.GetAttributes())
	}
	for _, reason := range []string{ReasonNoDeviceID, ReasonPayloadTooLarge, ReasonNoRoute} {
		if v := testkit.Value(t, sub.m.rejected.WithLabelValues(reason)); v != 1 {
			t.Errorf("edgebridge_mqtt_rejected_total{reason=%q} = %v, want 1", reason, v)
		}
	}
	// Dead letters are acknowledged like the rest: the broker forgets them.
	testkit.WaitFor(t, "4 acks", func() bool { return testkit.Value(t, sub.m.acked) == 4 })
}

// A failing sink (an I/O error) is retried with the same batch, in order,
// and nothing is acknowledged until it succeeds.
func TestSinkErrorsAreRetried(t *testing.T) {
	cfg, spy := spiedBroker(t, "bridge-retry")
	fails := 3
	var mu sync.Mutex
	sink := &fakeSink{}
	sink.hook = func(ctx context.Context, recs []buffer.Record) error {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			if _, acks := spy.snapshot(); len(acks) != 0 {
				t.Errorf("PUBACK sent while the sink was failing")
			}
			return errors.New("disk I/O error")
		}
		return nil
	}
	sub := startReady(t, cfg, sink)
	pub := newPublisher(t, cfg.URL, "pub")
	publish(t, pub, "devices/a/telemetry", 1, false, []byte("1"))
	testkit.WaitFor(t, "record stored", func() bool { return sink.len() == 1 })
	testkit.WaitFor(t, "PUBACK", func() bool { _, a := spy.snapshot(); return len(a) == 1 })
	if v := testkit.Value(t, sub.m.commitErrors); v != 3 {
		t.Errorf("edgebridge_mqtt_commit_errors_total = %v, want 3", v)
	}
}

// A sink that is closed for good (buffer.ErrClosed) stops the intake: Run
// returns an error naming it, and nothing is acknowledged.
func TestClosedSinkStopsRun(t *testing.T) {
	cfg, spy := spiedBroker(t, "bridge-closed")
	sink := &fakeSink{hook: func(context.Context, []buffer.Record) error { return buffer.ErrClosed }}
	sub := startReady(t, cfg, sink)
	pub := newPublisher(t, cfg.URL, "pub")
	publish(t, pub, "devices/a/telemetry", 1, false, []byte("1"))
	select {
	case err := <-sub.done:
		close(sub.done)
		if !errors.Is(err, ErrSink) || !errors.Is(err, buffer.ErrClosed) {
			t.Fatalf("Run = %v, want ErrSink wrapping buffer.ErrClosed", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after the sink closed")
	}
	if _, acks := spy.snapshot(); len(acks) != 0 {
		t.Errorf("%d PUBACKs sent for records never committed", len(acks))
	}
	// A sink closed for good is no failed commit: nothing was retried.
	if got := testkit.Value(t, sub.m.commitErrors); got != 0 {
		t.Errorf("edgebridge_mqtt_commit_errors_total = %v for a closed sink, want 0", got)
	}
	if sub.Ready() {
		t.Error("Ready() after Run returned")
	}
	assertNoSubscriberGoroutines(t)
}

// Shutdown: with the sink blocked (a full buffer), Run returns within the
// drain timeout, sends no PUBACK, and leaves no goroutine behind.
func TestStopWithBlockedSink(t *testing.T) {
	cfg := testConfig("")
	cfg.ClientID = "bridge-blocked"
	cfg.DrainTimeout = 100 * time.Millisecond
	spy := &ackSpy{client: cfg.ClientID}
	broker, _ := startMochi(t, nil, spy)
	cfg.URL = broker
	blocked := make(chan struct{})
	var once sync.Once
	sink := &fakeSink{hook: func(ctx context.Context, recs []buffer.Record) error {
		once.Do(func() { close(blocked) })
		<-ctx.Done()
		return fmt.Errorf("%w: %w", buffer.ErrFull, ctx.Err())
	}}
	sub := startReady(t, cfg, sink)
	pub := newPublisher(t, broker, "pub")
	for i := range 50 {
		publish(t, pub, "devices/a/telemetry", 1, false, payloadOf("a", i))
	}
	<-blocked
	if err := sub.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil on a requested stop", err)
	}
	if _, acks := spy.snapshot(); len(acks) != 0 {
		t.Errorf("%d PUBACKs sent although nothing was committed", len(acks))
	}
	assertNoSubscriberGoroutines(t)
}

// Shutdown: what was received before the stop is committed and
// acknowledged when the sink allows it (fewer duplicates on restart).
func TestStopCommitsWhatWasReceived(t *testing.T) {
	cfg, spy := spiedBroker(t, "bridge-drain")
	release := make(chan struct{})
	sink := &fakeSink{hook: func(ctx context.Context, recs []buffer.Record) error {
		<-release
		return nil
	}}
	sub := startReady(t, cfg, sink)
	pub := newPublisher(t, cfg.URL, "pub")
	const n = 20
	for i := range n {
		publish(t, pub, "devices/a/telemetry", 1, false, payloadOf("a", i))
	}
	testkit.WaitFor(t, "messages received", func() bool { return testkit.Value(t, sub.m.received) == n })
	sub.cancel()
	close(release)
	if err := sub.stop(t); err != nil {
		t.Fatal(err)
	}
	if sink.len() != n {
		t.Errorf("sink holds %d records, want %d", sink.len(), n)
	}
	testkit.WaitFor(t, "PUBACKs", func() bool { _, a := spy.snapshot(); return len(a) == n })
}

func TestNewRejectsBadArguments(t *testing.T) {
	cfg := testConfig("tcp://127.0.0.1:1")
	// A nil logger discards the log; a nil registerer keeps the metrics
	// unregistered: neither is an error. A nil sink is.
	if _, err := New(cfg, nil, nil, &fakeSink{}); err != nil {
		t.Errorf("New with nil logger and registerer: %v", err)
	}
	if _, err := New(cfg, testkit.Logger(t), nil, nil); err == nil {
		t.Error("New with nil sink succeeded")
	}
	bad := cfg
	bad.Routes = nil
	if _, err := New(bad, testkit.Logger(t), nil, &fakeSink{}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "routes") {
		t.Errorf("New without routes = %v", err)
	}
}
