package forward

import (
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
	"github.com/edgebridge/edgebridge/internal/retry"
)

func validConfig() Config {
	c := DefaultConfig()
	c.NodeID = "node-1"
	c.Brokers = []string{"127.0.0.1:9092"}
	return c
}

// Each bad config is refused with an error that names the YAML key. Several
// rows are the producer pitfalls of the seeds, named in the row.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero values take defaults", func(c *Config) { *c = Config{NodeID: "n", Brokers: []string{"b:9092"}} }, ""},
		{"pitfall acks 0", func(c *Config) { c.Acks = "0" }, "kafka.acks must be \"all\""},
		{"pitfall acks 1", func(c *Config) { c.Acks = "1" }, "kafka.acks must be \"all\""},
		{"acks all spelled -1", func(c *Config) { c.Acks = "-1" }, ""},
		{"pitfall missing brokers falls back to localhost", func(c *Config) { c.Brokers = nil }, "kafka.brokers must list"},
		{"empty broker", func(c *Config) { c.Brokers = []string{"a:1", " "} }, "kafka.brokers[1] is empty"},
		{"no node id", func(c *Config) { c.NodeID = "" }, "node_id must be set"},
		{"pitfall missing timeouts: negative dial timeout", func(c *Config) { c.DialTimeout = -time.Second }, "kafka.dial_timeout must be between"},
		{"pitfall missing timeouts: tiny produce timeout", func(c *Config) { c.ProduceRequestTimeout = time.Millisecond }, "kafka.produce_request_timeout must be between"},
		{"pitfall missing timeouts: request overhead", func(c *Config) { c.RequestTimeoutOverhead = -1 }, "kafka.request_timeout_overhead must be between"},
		{"pitfall stale metadata", func(c *Config) { c.MetadataMaxAge = 10 * time.Minute }, "kafka.metadata_max_age must be between"},
		{"metadata min above max", func(c *Config) { c.MetadataMinAge = 30 * time.Second; c.MetadataMaxAge = 20 * time.Second }, "kafka.metadata_max_age must be >= kafka.metadata_min_age"},
		{"backoff max below initial", func(c *Config) { c.Backoff = retry.Policy{Initial: time.Second, Max: 100 * time.Millisecond} }, "kafka.backoff.max must be >= kafka.backoff.initial"},
		{"compression", func(c *Config) { c.Compression = "gzip" }, "kafka.compression must be one of"},
		{"compression case", func(c *Config) { c.Compression = "LZ4" }, ""},
		{"batch too small", func(c *Config) { c.BatchMaxBytes = 100 }, "kafka.batch_max_bytes must be >= 512, not 100"},
		{"batch too large", func(c *Config) { c.BatchMaxBytes = 1 << 30; c.MaxBufferedBytes = 1 << 30 }, "kafka.batch_max_bytes: 1073741824 is above the maximum 268435456 (256MiB)"},
		{"window too many records", func(c *Config) { c.MaxBufferedRecords = 100_000_000 }, "kafka.max_buffered_records: 100000000 is above the maximum 1000000"},
		{"window at its bound", func(c *Config) {
			c.MaxBufferedRecords = 1_000_000
			c.MaxBufferedBytes = 512 << 20
			c.ReadBatch = 100_000
		}, ""},
		{"window too many bytes", func(c *Config) { c.MaxBufferedBytes = 4 << 30 }, "kafka.max_buffered_bytes: 4294967296 is above the maximum 536870912 (512MiB)"},
		{"read batch too large", func(c *Config) { c.ReadBatch = 1_000_000 }, "kafka.read_batch: 1000000 is above the maximum 100000"},
		{"negative read batch", func(c *Config) { c.ReadBatch = -1 }, "kafka.read_batch must be >= 1, not -1"},
		{"too many seed brokers", func(c *Config) { c.Brokers = make([]string, 101) }, "kafka.brokers: 101 brokers is above the maximum 100"},
		{"window bytes below batch", func(c *Config) { c.MaxBufferedBytes = 1000; c.BatchMaxBytes = 2000 }, "kafka.max_buffered_bytes must be >= kafka.batch_max_bytes"},
		{"negative window", func(c *Config) { c.MaxBufferedRecords = -1 }, "kafka.max_buffered_records must be >= 1"},
		{"pitfall tls cert without key", func(c *Config) { c.TLS.CertFile = "/c.pem" }, "kafka.tls.cert_file and kafka.tls.key_file must be set together"},
		{"sasl mechanism", func(c *Config) { c.SASL = SASL{Mechanism: "gssapi", Username: "u", Password: "p"} }, "kafka.sasl.mechanism must be one of"},
		{"sasl without password", func(c *Config) { c.SASL = SASL{Mechanism: "plain", Username: "u"} }, "kafka.sasl.password must be set"},
		{"sasl user without mechanism", func(c *Config) { c.SASL = SASL{Username: "u", Password: "p"} }, "kafka.sasl.mechanism must be set"},
		{"scram upper case", func(c *Config) { c.SASL = SASL{Mechanism: "SCRAM-SHA-512", Username: "u", Password: "p"} }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate() = nil, want an error with %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Validate() = %v, want it to contain %q", err, tt.want)
			case err != nil && !errors.Is(err, ErrInvalidConfig):
				t.Fatalf("Validate() = %v, does not match ErrInvalidConfig", err)
			}
		})
	}
}

// Pitfalls acks 0, missing timeouts, stale metadata and the default client
// id, checked on the franz-go client New builds: what the broker sees.
func TestNewClientOptions(t *testing.T) {
	p, _ := newUnstarted(t, validConfig())
	opt := func(o any) any { return p.cl.OptValue(o) }
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"pitfall default client id", opt(kgo.ClientID), "edgebridge-node-1"},
		{"pitfall acks 0", opt(kgo.RequiredAcks), kgo.AllISRAcks()},
		{"idempotence kept", opt(kgo.DisableIdempotentWrite), false},
		{"no idempotent cancellation", opt(kgo.AllowIdempotentProduceCancellation), false},
		{"record retries unlimited", opt(kgo.RecordRetries), int64(math.MaxInt64)},
		{"no delivery timeout", opt(kgo.RecordDeliveryTimeout), time.Duration(0)},
		{"pitfall missing timeouts: dial", opt(kgo.DialTimeout), DefaultConfig().DialTimeout},
		{"pitfall missing timeouts: request", opt(kgo.RequestTimeoutOverhead), DefaultConfig().RequestTimeoutOverhead},
		{"pitfall missing timeouts: produce", opt(kgo.ProduceRequestTimeout), DefaultConfig().ProduceRequestTimeout},
		{"pitfall stale metadata: max age", opt(kgo.MetadataMaxAge), DefaultConfig().MetadataMaxAge},
		{"metadata min age", opt(kgo.MetadataMinAge), DefaultConfig().MetadataMinAge},
		{"window records", opt(kgo.MaxBufferedRecords), int64(DefaultConfig().MaxBufferedRecords)},
		{"window bytes", opt(kgo.MaxBufferedBytes), int64(DefaultConfig().MaxBufferedBytes)},
		{"linger", opt(kgo.ProducerLinger), DefaultConfig().Linger},
		{"no KIP-714 telemetry push", opt(kgo.DisableClientMetrics), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: franz-go has %v (%T), want %v (%T)", c.name, c.got, c.got, c.want, c.want)
		}
	}
	if got := opt(kgo.ProducerBatchCompression).([]kgo.CompressionCodec); len(got) != 1 || got[0] != kgo.ZstdCompression().WithLevel(1) {
		t.Errorf("compression = %v, want zstd (fastest) only", got)
	}
	if _, ok := opt(kgo.WithCompressor).(*zstdCompressor); !ok {
		t.Errorf("compressor = %T, want the bridge's long-lived zstd encoder", opt(kgo.WithCompressor))
	}
}

// Bad arguments are errors, never panics; a second Producer on the same
// registry is refused before franz-go's metrics could panic on it.
func TestNewRejectsBadArguments(t *testing.T) {
	log, _ := testkit.CaptureLogs(t)
	reg := prometheus.NewRegistry()
	// A nil logger discards the log; a nil registerer keeps the metrics
	// unregistered: neither is an error. A nil source is.
	for _, args := range []struct {
		log *slog.Logger
		reg prometheus.Registerer
	}{{nil, prometheus.NewRegistry()}, {log, nil}} {
		p, err := New(validConfig(), args.log, args.reg, newMemSource())
		if err != nil {
			t.Errorf("New(log %v, reg %v) = %v", args.log != nil, args.reg != nil, err)
			continue
		}
		p.cl.Close()
	}
	if _, err := New(validConfig(), log, reg, nil); err == nil {
		t.Error("nil source accepted")
	}
	bad := validConfig()
	bad.Acks = "0"
	if _, err := New(bad, log, reg, newMemSource()); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New with acks=0: %v, want ErrInvalidConfig", err)
	}
	p, err := New(validConfig(), log, reg, newMemSource())
	if err != nil {
		t.Fatal(err)
	}
	defer p.cl.Close()
	if _, err := New(validConfig(), log, reg, newMemSource()); err == nil || !strings.Contains(err.Error(), "register forward metrics") {
		t.Errorf("second New on one registry: %v, want a registration error", err)
	}
}

// kfake subscribes every client to all metrics, as a broker with a client
// metrics subscription does. The bridge must not ask for telemetry
// subscriptions (let alone push) unless kafka.client_metrics is on; the
// second producer shows the request is seen when it is.
func TestNoClientTelemetryUnlessEnabled(t *testing.T) {
	asked := func(c *kfake.Cluster) *atomic.Int64 {
		var n atomic.Int64
		c.ControlKey(int16(kmsg.GetTelemetrySubscriptions), func(kmsg.Request) (kmsg.Response, error, bool) {
			n.Add(1)
			return nil, nil, false
		})
		return &n
	}
	off, on := newCluster(t), newCluster(t)
	offAsked, onAsked := asked(off), asked(on)
	offSrc, onSrc := newMemSource(), newMemSource()
	offSrc.fill(100, 7, 50)
	onSrc.fill(100, 7, 50)
	start(t, testConfig(off.ListenAddrs()), offSrc)
	cfg := testConfig(on.ListenAddrs())
	cfg.ClientMetrics = true
	start(t, cfg, onSrc)

	testkit.WaitWithin(t, 10*time.Second, "both producers to drain and the enabled one to ask for subscriptions", func() bool {
		return offSrc.remaining() == 0 && onSrc.remaining() == 0 && onAsked.Load() > 0
	})
	if n := offAsked.Load(); n != 0 {
		t.Errorf("default producer sent %d GetTelemetrySubscriptions requests, want 0 (kafka.client_metrics is off)", n)
	}
}
