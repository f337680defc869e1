package forward

import (
	"fmt"
	"strings"
	"time"

	"github.com/edgebridge/edgebridge/internal/field"
	"github.com/edgebridge/edgebridge/internal/retry"
)

// Config configures the Producer. The YAML key of each field is in its
// comment; everything under kafka. except node_id, a top-level key the
// daemon copies in, and ShutdownTimeout, which the daemon derives. A zero
// value means the default (DefaultConfig holds them all), except for
// booleans.
type Config struct {
	// NodeID names this edge node: it goes into every record as the
	// edgebridge-node header and into the default client id. yaml: node_id.
	NodeID string
	// Brokers are the seed brokers, host:port. yaml: kafka.brokers.
	Brokers []string
	// ClientID is sent with every request so that broker logs, quotas and
	// metrics can tell this node apart. yaml: kafka.client_id.
	// Default edgebridge-<node_id>.
	ClientID string
	// Acks is the acknowledgement the broker must give before a record
	// leaves the buffer. Only "all" is accepted: anything less deletes
	// records a leader failover can still lose. yaml: kafka.acks.
	// Default all.
	Acks string
	// Compression of record batches: zstd, lz4, snappy or none.
	// yaml: kafka.compression. Default zstd.
	Compression string
	// Linger is how long a partition waits for more records before its
	// batch is sent. yaml: kafka.linger. Default 5ms.
	Linger time.Duration
	// ClientMetrics lets franz-go push its client telemetry (KIP-714) to
	// brokers that subscribe to it. Off by default: the bridge's metrics
	// are scraped from /metrics, the pushes cross the node's uplink, and
	// franz-go builds every codec the broker accepts for them (its lz4
	// writer alone takes 8 MB). yaml: kafka.client_metrics.
	ClientMetrics bool
	// BatchMaxBytes caps one record batch before compression. Keep it at or
	// below the topic's max.message.bytes: a record larger than this is
	// rejected without being sent and goes to dead letters.
	// yaml: kafka.batch_max_bytes. Default 1000012 (Kafka's default).
	BatchMaxBytes int
	// MaxBufferedRecords is the read window: records read from the buffer
	// and not yet acknowledged by Kafka, at most. When it is full the
	// forwarder stops reading; the backlog stays on disk.
	// yaml: kafka.max_buffered_records. Default 10000.
	MaxBufferedRecords int
	// MaxBufferedBytes is the read window in bytes (key, value and headers
	// of the records in flight). yaml: kafka.max_buffered_bytes.
	// Default 16MiB; at least kafka.batch_max_bytes.
	MaxBufferedBytes int
	// ReadBatch is the most records taken from the buffer in one read.
	// yaml: kafka.read_batch. Default 1000.
	ReadBatch int
	// DialTimeout bounds opening a connection (TCP, TLS and SASL).
	// yaml: kafka.dial_timeout. Default 10s.
	DialTimeout time.Duration
	// RequestTimeoutOverhead is added to a request's own timeout to give up
	// on a broker that does not answer. yaml: kafka.request_timeout_overhead.
	// Default 10s.
	RequestTimeoutOverhead time.Duration
	// ProduceRequestTimeout is how long a broker may take to answer a
	// produce request (acks=all waits for the in-sync replicas).
	// yaml: kafka.produce_request_timeout. Default 10s.
	ProduceRequestTimeout time.Duration
	// MetadataMinAge is the least time between metadata refreshes. It is
	// also how long one stalled partition may hold up the others before the
	// forwarder sets it aside. yaml: kafka.metadata_min_age. Default 1s.
	MetadataMinAge time.Duration
	// MetadataMaxAge is the most time between metadata refreshes, so that
	// moved leaders and new partitions are found. yaml:
	// kafka.metadata_max_age. Default 60s; at most 60s.
	MetadataMaxAge time.Duration
	// Backoff paces retries: of client requests, of records Kafka failed,
	// and of buffer operations that failed. Its Initial is yaml:
	// kafka.backoff.initial, default 100ms; its Max is yaml:
	// kafka.backoff.max, default 10s.
	Backoff retry.Policy
	// ShutdownTimeout bounds the flush of records in flight when Run's
	// context ends, and then again the acks of what was flushed; what is
	// not acknowledged by then stays in the buffer. It is no key of the
	// file: the config package derives it as (shutdown_timeout -
	// mqtt.drain_timeout) / 2, so that the intake's drain and the two waits
	// here stay within shutdown_timeout. DefaultConfig's, for a forwarder
	// built without the config package, is what the file's defaults give
	// (a config test holds the two equal).
	ShutdownTimeout time.Duration
	// TLS to the brokers.
	TLS TLS
	// SASL authentication to the brokers.
	SASL SASL
}

// TLS configures TLS and mutual TLS to the brokers. The files are read by
// New, so a missing or bad file fails at start, not at the first dial.
type TLS struct {
	// Enabled turns TLS on. Setting any file below turns it on as well.
	// yaml: kafka.tls.enabled.
	Enabled bool
	// CAFile is a PEM bundle of the CAs to trust instead of the system
	// roots. yaml: kafka.tls.ca_file.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and key for mutual
	// TLS; both or neither. yaml: kafka.tls.cert_file, kafka.tls.key_file.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked in the broker certificates;
	// by default the host of the broker being dialed.
	// yaml: kafka.tls.server_name.
	ServerName string
	// InsecureSkipVerify turns off the check of broker certificates. For
	// tests only. yaml: kafka.tls.insecure_skip_verify.
	InsecureSkipVerify bool
}

// SASL configures SASL authentication. The password arrives resolved (from
// the config file, a file or the environment) and is never logged.
type SASL struct {
	// Mechanism: "" (none), plain, scram-sha-256 or scram-sha-512.
	// yaml: kafka.sasl.mechanism.
	Mechanism string
	// Username. yaml: kafka.sasl.username.
	Username string
	// Password. yaml: kafka.sasl.password or kafka.sasl.password_file.
	Password string
}

// maxMetadataMaxAge keeps metadata from going stale: a client that keeps a
// dead leader for minutes sends into the void.
const maxMetadataMaxAge = 60 * time.Second

// Upper bounds of the sizes and counts, so that a zero or a unit too many
// is refused at validate instead of allocated at start. Each is what a
// 4 GB edge node can hold with the rest of the bridge running.
const (
	// maxBrokers: the seeds only locate the cluster; the client learns
	// every broker from metadata.
	maxBrokers = 100
	// maxBatchMaxBytes: a batch is built, then compressed into a second
	// buffer, in memory, for each partition in flight.
	maxBatchMaxBytes = 256 << 20
	// maxMaxBufferedRecords: a record in the window costs about 400 bytes
	// of heap beyond its payload (its flight with the kgo.Record and
	// headers, its slot in the in-flight map and in the results channel,
	// both allocated for the whole window at start): 400 MB at this bound.
	maxMaxBufferedRecords = 1_000_000
	// maxMaxBufferedBytes: the payloads in flight live in the heap, which
	// the GC lets grow to twice what is live: up to 1 GiB at this bound.
	maxMaxBufferedBytes = 512 << 20
	// maxReadBatch: one read is one bbolt read transaction, kept short: it
	// pins the pages it reads and holds off the remap of a growing head.
	maxReadBatch = 100_000
)

// DefaultConfig returns the defaults, the one place they are written.
// NodeID and Brokers have none; ClientID's is derived from NodeID.
func DefaultConfig() Config {
	return Config{
		Acks:                   "all",
		Compression:            "zstd",
		Linger:                 5 * time.Millisecond,
		BatchMaxBytes:          1000012, // Kafka's default
		MaxBufferedRecords:     10000,
		MaxBufferedBytes:       16 << 20,
		ReadBatch:              1000,
		DialTimeout:            10 * time.Second,
		RequestTimeoutOverhead: 10 * time.Second,
		ProduceRequestTimeout:  10 * time.Second,
		MetadataMinAge:         time.Second,
		MetadataMaxAge:         60 * time.Second,
		Backoff:                retry.Policy{Initial: 100 * time.Millisecond, Max: 10 * time.Second},
		ShutdownTimeout:        10 * time.Second, // see ShutdownTimeout: what the file's defaults give
	}
}

// WithDefaults returns c with every unset field set from DefaultConfig, and
// the names of codecs and mechanisms in lower case.
func (c Config) WithDefaults() Config {
	c = field.Fill(c, DefaultConfig())
	if c.ClientID == "" && c.NodeID != "" {
		c.ClientID = "edgebridge-" + c.NodeID
	}
	c.Compression = strings.ToLower(c.Compression)
	c.Acks = strings.ToLower(c.Acks)
	c.SASL.Mechanism = strings.ToLower(c.SASL.Mechanism)
	return c
}

// Validate checks c after defaults are applied and returns every bad
// field, joined, each a *field.Error naming its key and matching
// ErrInvalidConfig. It does not read the TLS files: New does.
func (c Config) Validate() error {
	c = c.WithDefaults()
	errs := field.NewList(ErrInvalidConfig)
	errs.Add(field.NodeID(c.NodeID))
	switch {
	case len(c.Brokers) == 0:
		errs.Addf("kafka.brokers", "%s must list at least one broker (there is no default: a client that falls back to localhost:9092 sends nowhere)")
	case len(c.Brokers) > maxBrokers:
		errs.Addf("kafka.brokers", "%s: %d brokers is above the maximum %d (seed brokers only locate the cluster)", len(c.Brokers), maxBrokers)
	default:
		for i, b := range c.Brokers {
			if strings.TrimSpace(b) == "" {
				errs.Addf(fmt.Sprintf("kafka.brokers[%d]", i), "%s is empty")
			}
		}
	}
	if len(c.ClientID) > 255 {
		errs.Addf("kafka.client_id", "%s is longer than 255 bytes")
	}
	if c.Acks != "all" && c.Acks != "-1" {
		errs.Addf("kafka.acks", "%s must be \"all\", not %q: a record leaves the buffer only once every in-sync replica has it", c.Acks)
	}
	if _, ok := compressionCodecs[c.Compression]; !ok {
		errs.Addf("kafka.compression", "%s must be one of zstd, lz4, snappy, none, not %q", c.Compression)
	}
	for _, d := range []struct {
		key      string
		v        time.Duration
		min, max time.Duration
	}{
		{"kafka.linger", c.Linger, 0, time.Minute},
		{"kafka.dial_timeout", c.DialTimeout, 100 * time.Millisecond, 5 * time.Minute},
		{"kafka.request_timeout_overhead", c.RequestTimeoutOverhead, 100 * time.Millisecond, 15 * time.Minute},
		{"kafka.produce_request_timeout", c.ProduceRequestTimeout, 100 * time.Millisecond, 15 * time.Minute},
		{"kafka.metadata_min_age", c.MetadataMinAge, 10 * time.Millisecond, maxMetadataMaxAge},
		{"kafka.metadata_max_age", c.MetadataMaxAge, 10 * time.Millisecond, maxMetadataMaxAge},
		{"kafka.backoff.initial", c.Backoff.Initial, time.Millisecond, time.Hour},
		{"kafka.backoff.max", c.Backoff.Max, time.Millisecond, time.Hour},
		{"shutdown_timeout", c.ShutdownTimeout, 0, time.Hour},
	} {
		if d.v < d.min || d.v > d.max {
			errs.Addf(d.key, "%s must be between %v and %v, not %v", d.min, d.max, d.v)
		}
	}
	if c.MetadataMaxAge < c.MetadataMinAge {
		errs.Addf("kafka.metadata_max_age", "%s must be >= kafka.metadata_min_age")
	}
	if c.Backoff.Max < c.Backoff.Initial {
		errs.Addf("kafka.backoff.max", "%s must be >= kafka.backoff.initial")
	}
	for _, n := range []struct {
		key      string
		v        int
		min, max int
		maxText  string
	}{
		{"kafka.batch_max_bytes", c.BatchMaxBytes, 512, maxBatchMaxBytes, " (256MiB)"},
		{"kafka.max_buffered_records", c.MaxBufferedRecords, 1, maxMaxBufferedRecords, ""},
		{"kafka.max_buffered_bytes", c.MaxBufferedBytes, 1, maxMaxBufferedBytes, " (512MiB)"},
		{"kafka.read_batch", c.ReadBatch, 1, maxReadBatch, ""},
	} {
		switch {
		case n.v < n.min:
			errs.Addf(n.key, "%s must be >= %d, not %d", n.min, n.v)
		case n.v > n.max:
			errs.Addf(n.key, "%s: %d is above the maximum %d%s", n.v, n.max, n.maxText)
		}
	}
	if c.MaxBufferedBytes < c.BatchMaxBytes {
		errs.Addf("kafka.max_buffered_bytes", "%s must be >= kafka.batch_max_bytes")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs.Addf("kafka.tls.cert_file", "%s and kafka.tls.key_file must be set together")
	}
	switch c.SASL.Mechanism {
	case "":
		if c.SASL.Username != "" || c.SASL.Password != "" {
			errs.Addf("kafka.sasl.mechanism", "%s must be set when kafka.sasl.username or password is")
		}
	case "plain", "scram-sha-256", "scram-sha-512":
		if c.SASL.Username == "" {
			errs.Addf("kafka.sasl.username", "%s must be set for mechanism %s", c.SASL.Mechanism)
		}
		if c.SASL.Password == "" {
			errs.Addf("kafka.sasl.password", "%s must be set for mechanism %s", c.SASL.Mechanism)
		}
	default:
		errs.Addf("kafka.sasl.mechanism", "%s must be one of plain, scram-sha-256, scram-sha-512, not %q", c.SASL.Mechanism)
	}
	return errs.Err()
}

// On reports whether any TLS setting asks for TLS.
func (t TLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" ||
		t.ServerName != "" || t.InsecureSkipVerify
}
