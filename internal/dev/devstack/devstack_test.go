package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/edgebridge/edgebridge/internal/config"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

func envelope(t *testing.T, dev string, n int) []byte {
	t.Helper()
	b, err := proto.Marshal(&edgebridgev1.Envelope{
		NodeId: "node", Sequence: uint64(n), DeviceId: dev, MqttTopic: DeviceTopic(dev),
		Payload: payload(t, dev, n),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func payload(t *testing.T, dev string, n int) []byte {
	t.Helper()
	b, err := json.Marshal(Payload{Device: dev, N: n})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The verifier must catch each way a pipeline can fail, or the e2e test
// proves nothing.
func TestVerifier(t *testing.T) {
	d0, d1 := DeviceID(0), DeviceID(1)
	tests := []struct {
		name   string
		feed   [][2]any // device, counter
		wantOK bool
		want   string
		dups   int64
	}{
		{"complete and in order", [][2]any{{d0, 1}, {d1, 1}, {d0, 2}, {d1, 2}}, true, "", 0},
		{"redelivered tail after a crash is a duplicate, not disorder", [][2]any{{d0, 1}, {d0, 2}, {d1, 1}, {d0, 1}, {d0, 2}, {d1, 2}}, true, "", 2},
		{"a lost message", [][2]any{{d0, 1}, {d0, 2}, {d1, 1}}, false, "dev-001 has 1/2", 0},
		{"swapped order", [][2]any{{d0, 2}, {d0, 1}, {d1, 1}, {d1, 2}}, false, "out of order", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewVerifier()
			for _, f := range tt.feed {
				v.Add(envelope(t, f[0].(string), f[1].(int)))
			}
			err := v.Check(2, 2)
			if (err == nil) != tt.wantOK || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Check = %v, want ok=%v containing %q", err, tt.wantOK, tt.want)
			}
			if c := v.Counts(); c.Duplicates != tt.dups {
				t.Errorf("duplicates = %d, want %d", c.Duplicates, tt.dups)
			}
		})
	}
	v := NewVerifier()
	v.Add([]byte{0xff, 0xff})
	if err := v.Check(0, 0); err == nil || !strings.Contains(err.Error(), "bad records") {
		t.Errorf("garbage record not reported: %v", err)
	}
}

// Stop and Start behave like an outage: same address, same records.
func TestKafkaSurvivesRestart(t *testing.T) {
	k, err := StartKafka(t.TempDir(), "t", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Stop()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: envelope(t, DeviceID(0), 1)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	k.Stop()
	if k.Up() {
		t.Fatal("up after Stop")
	}
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: envelope(t, DeviceID(0), 2)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	v := NewVerifier()
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- v.Consume(cctx, []string{k.Addr()}, "t") }()
	deadline, _ := ctx.Deadline()
	testkit.WaitWithin(t, time.Until(deadline), "the verifier to read both records", func() bool { return v.Counts().Unique >= 2 })
	ccancel()
	<-done
	if err := v.Check(1, 2); err != nil {
		t.Fatal(err)
	}
}

// Simulated devices publish in counter order and count broker PUBACKs.
func TestDevicesOnMochi(t *testing.T) {
	b, err := StartMochi(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	var got atomic.Int64
	var last [3]atomic.Int64
	var disorder atomic.Bool
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("sub").SetOrderMatters(true))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(0)
	tok := sub.Subscribe("devices/+/telemetry", 1, func(_ paho.Client, m paho.Message) {
		var p Payload
		if err := json.Unmarshal(m.Payload(), &p); err != nil {
			t.Error(err)
			return
		}
		i := int(p.Device[len(p.Device)-1] - '0')
		if int64(p.N) != last[i].Load()+1 {
			disorder.Store(true)
		}
		last[i].Store(int64(p.N))
		got.Add(1)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	d := &Devices{BrokerURL: b.URL(), N: 3, Messages: 200}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if d.Published.Load() != 600 {
		t.Fatalf("published = %d", d.Published.Load())
	}
	deadline, _ := ctx.Deadline()
	testkit.WaitWithin(t, time.Until(deadline), "the subscriber to get every message", func() bool { return got.Load() >= 600 })
	if got.Load() != 600 || disorder.Load() {
		t.Fatalf("subscriber got %d, disorder %v", got.Load(), disorder.Load())
	}
}

// loadBridgeConfig writes c, with the addresses and paths of a test, and
// loads it as edgebridge does, failing the test if edgebridge rejects it.
func loadBridgeConfig(t *testing.T, c BridgeConfig) *config.Config {
	t.Helper()
	dir := t.TempDir()
	c.NodeID, c.MQTTURL, c.Brokers, c.Topic = "n1", "tcp://127.0.0.1:1883", []string{"127.0.0.1:9092"}, "t"
	c.BufferDir, c.HTTPListen = filepath.Join(dir, "buffer"), "127.0.0.1:0"
	path := filepath.Join(dir, "edgebridge.yaml")
	if err := c.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	got, err := config.Load(path)
	if err != nil {
		t.Fatalf("edgebridge rejects the dev stack's config: %v\n%s", err, c.YAML())
	}
	return got
}

// The config file the dev stack writes is one edgebridge accepts, with the
// dev stack's buffer defaults and with a test's own.
func TestBridgeConfigLoads(t *testing.T) {
	tests := []struct {
		name         string
		cfg          BridgeConfig
		maxBytes     int64
		segmentBytes int64
		whenFull     string
	}{
		{"defaults", BridgeConfig{}, 256 << 20, 8 << 20, "block"},
		{"buffer set", BridgeConfig{MaxBytes: "2GiB", SegmentBytes: "16MiB", MinFreeDisk: "2MiB", WhenFull: "drop_oldest", LogFormat: "json"},
			2 << 30, 16 << 20, "drop_oldest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := loadBridgeConfig(t, tt.cfg)
			if b := got.Buffer; b.MaxBytes != tt.maxBytes || b.SegmentBytes != tt.segmentBytes || b.WhenFull != tt.whenFull {
				t.Errorf("buffer max_bytes %d segment_bytes %d when_full %q, want %d %d %q",
					b.MaxBytes, b.SegmentBytes, b.WhenFull, tt.maxBytes, tt.segmentBytes, tt.whenFull)
			}
			if f := got.Forward; f.MetadataMinAge != 500*time.Millisecond || f.MetadataMaxAge != 5*time.Second {
				t.Errorf("kafka metadata_min_age %s metadata_max_age %s, want 500ms 5s", f.MetadataMinAge, f.MetadataMaxAge)
			}
		})
	}
}

// The bench's config (Production) is one edgebridge accepts, with
// edgebridge's own Kafka defaults, not the dev stack's pacing, and pprof on.
func TestProductionBridgeConfigLoads(t *testing.T) {
	got := loadBridgeConfig(t, BridgeConfig{MaxBytes: "4GiB", Pprof: true, Production: true})
	if got.Buffer.MaxBytes != 4<<30 || !got.HTTP.Pprof {
		t.Errorf("buffer max_bytes %d, http.pprof %v; want 4GiB and true", got.Buffer.MaxBytes, got.HTTP.Pprof)
	}
	if f := got.Forward; f.MetadataMinAge == 500*time.Millisecond || f.ProduceRequestTimeout == 3*time.Second {
		t.Errorf("kafka metadata_min_age %s produce_request_timeout %s: the dev stack's pacing, want edgebridge's defaults",
			f.MetadataMinAge, f.ProduceRequestTimeout)
	}
}

// A restart keeps what mosquitto queued for a persistent session, on the
// same ports, and every listener accepts clients.
func TestMosquittoRestartKeepsSession(t *testing.T) {
	m, err := StartMosquittoWith(t.TempDir(), MosquittoOptions{Hosts: []string{"127.0.0.2"}})
	if errors.Is(err, ErrNoMosquitto) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	urls := m.URLs()
	if len(urls) != 2 || urls[0] != m.URL() || !strings.HasPrefix(urls[1], "tcp://127.0.0.2:") {
		t.Fatalf("URLs = %v, want the loopback listener and one on 127.0.0.2", urls)
	}
	got := make(chan string, 1)
	connect := func(url, id string, clean bool) paho.Client {
		t.Helper()
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).
			SetAutoReconnect(false).SetOrderMatters(true).
			SetDefaultPublishHandler(func(_ paho.Client, msg paho.Message) {
				select {
				case got <- string(msg.Payload()):
				default: // a redelivery
				}
			}))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s to %s: %v", id, url, tok.Error())
		}
		return c
	}
	sub := connect(urls[1], "sub", false)
	if tok := sub.Subscribe("q", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	sub.Disconnect(100)
	pub := connect(urls[0], "pub", true)
	if tok := pub.Publish("q", 1, false, "kept"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub.Disconnect(100)

	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	sub = connect(urls[1], "sub", false)
	defer sub.Disconnect(100)
	select {
	case msg := <-got:
		if msg != "kept" {
			t.Fatalf("got %q after the restart, want %q", msg, "kept")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message queued for the persistent session was lost in the restart")
	}
}

// With Reconnect, devices ride through a broker restart and every counter
// ends up acknowledged; without it, Run reports the broken connection.
func TestDevicesAcrossBrokerRestart(t *testing.T) {
	tests := []struct {
		name      string
		reconnect bool
	}{
		{"reconnect", true},
		{"no reconnect", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := StartMosquitto(t.TempDir())
			if errors.Is(err, ErrNoMosquitto) {
				t.Skip(err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			d := &Devices{BrokerURL: m.URL(), N: 3, Messages: 1500, Rate: 3000, Reconnect: tt.reconnect}
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			for d.Published.Load() < 500 && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			if err := m.Restart(); err != nil {
				t.Fatal(err)
			}
			err = <-done
			if !tt.reconnect {
				if err == nil {
					t.Fatal("Run = nil after the broker restarted under it, want the connection's failure")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Reconnects.Load() == 0 {
				t.Error("no device reconnected: the restart went unnoticed")
			}
			if got := d.Published.Load(); got != d.Total() {
				t.Errorf("published = %d, want %d", got, d.Total())
			}
			for dev, n := range d.Acked() {
				if n != d.Messages {
					t.Errorf("%s acked up to %d, want %d", dev, n, d.Messages)
				}
			}
		})
	}
}
