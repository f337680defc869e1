package mqtt

import (
	"net/url"
	"strings"
	"time"

	"github.com/edgebridge/edgebridge/internal/field"
)

// Config configures a Subscriber. The zero value of each field means its
// default: DefaultConfig holds them all.
type Config struct {
	// NodeID names this edge node in every envelope and in the default
	// client id. yaml: node_id. Required.
	NodeID string
	// URL is the broker's: tcp://host:port, or ssl://, tls:// or
	// mqtts:// for TLS. yaml: mqtt.url. Default "tcp://127.0.0.1:1883".
	URL string
	// ClientID must stay the same across restarts: the broker keeps the
	// persistent session (and the messages queued while the bridge was
	// down) under it. yaml: mqtt.client_id. Default "edgebridge-<node_id>".
	ClientID string
	// Username for the broker. yaml: mqtt.username. Default none.
	Username string
	// Password for the broker, already resolved from its file or the
	// environment. Never logged. yaml: mqtt.password. Default none.
	Password string
	// TLS material for ssl://, tls:// and mqtts:// brokers. yaml: mqtt.tls.
	TLS TLS
	// KeepAlive is the MQTT keepalive. yaml: mqtt.keepalive. Default 30s.
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt (dial, TLS, CONNACK).
	// yaml: mqtt.connect_timeout. Default 10s.
	ConnectTimeout time.Duration
	// WriteTimeout bounds one write to the broker; a stuck write drops the
	// connection. yaml: mqtt.write_timeout. Default 10s.
	WriteTimeout time.Duration
	// ConnectRetryInterval is the first wait after a failed connection
	// attempt; it doubles (with jitter) up to MaxReconnectInterval.
	// yaml: mqtt.connect_retry_interval. Default 1s.
	ConnectRetryInterval time.Duration
	// MaxReconnectInterval caps the wait between connection attempts, at
	// start and after a lost connection.
	// yaml: mqtt.max_reconnect_interval. Default 30s.
	MaxReconnectInterval time.Duration
	// MaxPayloadBytes is the largest payload forwarded. A larger one is
	// stored as a dead letter with reason payload_too_large, whole, with
	// its size in the envelope attribute "payload_bytes", so that it can be
	// requeued once the limits are raised. yaml: mqtt.max_payload_bytes.
	// Default 256KiB.
	MaxPayloadBytes int
	// MaxBatch is the most messages committed to the buffer at once.
	// yaml: mqtt.max_batch. Default 1000.
	MaxBatch int
	// MaxBatchBytes bounds the encoded size of one batch (a batch holds at
	// least one message). yaml: mqtt.max_batch_bytes. Default 4MiB.
	MaxBatchBytes int
	// QueueSize is the number of messages received and not yet batched.
	// With QoS 1/2 the broker's in-flight window bounds it anyway.
	// yaml: mqtt.queue_size. Default 1024.
	QueueSize int
	// DrainTimeout is how long Run, once asked to stop, keeps trying to
	// commit and acknowledge what it already received. What is left is
	// not acknowledged and the broker redelivers it on the next start.
	// yaml: mqtt.drain_timeout. Default 5s.
	DrainTimeout time.Duration
	// RejectLogInterval bounds how often rejected messages are logged
	// (each reason at most once per interval; all are counted).
	// yaml: mqtt.reject_log_interval. Default 10s.
	RejectLogInterval time.Duration
	// Routes map topic filters to Kafka topics. yaml: routes.
	// At least one is required.
	Routes []Route
}

// TLS names the TLS material, loaded by New.
type TLS struct {
	// CAFile is a PEM bundle of the CAs that sign the broker certificate.
	// yaml: mqtt.tls.ca_file. Default: the system roots.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and key, for
	// brokers that require client certificates. Both or neither.
	// yaml: mqtt.tls.cert_file, mqtt.tls.key_file.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked in the broker certificate.
	// yaml: mqtt.tls.server_name. Default: the host of mqtt.url.
	ServerName string
}

func (t TLS) isSet() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// DefaultConfig returns the defaults, the one place they are written.
// NodeID and Routes have none; ClientID's is derived from NodeID.
func DefaultConfig() Config {
	return Config{
		URL:                  "tcp://127.0.0.1:1883",
		KeepAlive:            30 * time.Second,
		ConnectTimeout:       10 * time.Second,
		WriteTimeout:         10 * time.Second,
		ConnectRetryInterval: time.Second,
		MaxReconnectInterval: 30 * time.Second,
		MaxPayloadBytes:      256 << 10,
		MaxBatch:             1000,
		MaxBatchBytes:        4 << 20,
		QueueSize:            1024,
		DrainTimeout:         5 * time.Second,
		RejectLogInterval:    10 * time.Second,
	}
}

// Upper bounds of the sizes and counts, so that a zero or a unit too many
// is refused at validate instead of allocated at start. Each is what a
// 4 GB edge node can hold with the rest of the bridge running.
const (
	// maxInFlight bounds mqtt.queue_size and mqtt.max_batch. MQTT packet
	// identifiers are 16 bits: a session has at most 65535 QoS 1 and 2
	// messages unacknowledged, and the intake acknowledges only after the
	// commit, so neither the queue nor a batch can ever hold more.
	maxInFlight = 65535
	// maxMaxPayloadBytes: a payload is held several times on its way (paho's
	// packet, the batch arena, the Kafka record), for every message queued.
	maxMaxPayloadBytes = 16 << 20
	// maxMaxBatchBytes: a batch is one bbolt transaction, built in memory
	// (the arena, then bbolt's dirty pages) and fsynced at once.
	maxMaxBatchBytes = 64 << 20
	// maxRoutes: each route is a subscription, and every pair of filters
	// is checked for overlap.
	maxRoutes = 1000
)

// WithDefaults returns c with every unset field set from DefaultConfig.
func (c Config) WithDefaults() Config {
	c = field.Fill(c, DefaultConfig())
	if c.ClientID == "" && c.NodeID != "" {
		c.ClientID = "edgebridge-" + c.NodeID
	}
	return c
}

// Validate checks c after defaults are applied and returns every bad
// field, joined, each a *field.Error naming its key and matching
// ErrInvalidConfig. It does not read the TLS files: New does.
func (c Config) Validate() error {
	c = c.WithDefaults()
	errs := field.NewList(ErrInvalidConfig)
	errs.Add(field.NodeID(c.NodeID))
	if strings.ContainsAny(c.ClientID, "\x00") || len(c.ClientID) > 65535 {
		errs.Addf("mqtt.client_id", "%s %q is not a legal MQTT client id", c.ClientID)
	}
	// The URL is quoted redacted: a password in it would otherwise be
	// printed by every error below, and url.Parse's own error repeats it.
	broker := redactURL(c.URL)
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		errs.Addf("mqtt.url", "%s %q is not a URL", broker)
	case u.User != nil:
		errs.Addf("mqtt.url", "%s %q holds credentials: set mqtt.username and mqtt.password_file (or mqtt.password: ${ENV}) instead, which are never printed", broker)
	case u.Host == "" || u.Port() == "":
		errs.Addf("mqtt.url", "%s %q must be scheme://host:port", broker)
	case u.Scheme == "tcp" || u.Scheme == "mqtt":
		if c.TLS.isSet() {
			errs.Addf("mqtt.tls", "%s is set but mqtt.url %q is not a TLS URL: use ssl://, tls:// or mqtts://", broker)
		}
	case isTLSScheme(u.Scheme):
	default:
		errs.Addf("mqtt.url", "%s %q: scheme %q is not one of tcp, mqtt, ssl, tls, mqtts", broker, u.Scheme)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs.Addf("mqtt.tls.cert_file", "%s and mqtt.tls.key_file must be set together")
	}
	if c.Password != "" && c.Username == "" {
		errs.Addf("mqtt.password", "%s is set without mqtt.username")
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"mqtt.keepalive", c.KeepAlive},
		{"mqtt.connect_timeout", c.ConnectTimeout},
		{"mqtt.write_timeout", c.WriteTimeout},
		{"mqtt.connect_retry_interval", c.ConnectRetryInterval},
		{"mqtt.max_reconnect_interval", c.MaxReconnectInterval},
		{"mqtt.drain_timeout", c.DrainTimeout},
		{"mqtt.reject_log_interval", c.RejectLogInterval},
	} {
		if d.v < 0 {
			errs.Addf(d.key, "%s must be > 0, got %s", d.v)
		}
	}
	if c.KeepAlive > 0 && c.KeepAlive < time.Second {
		errs.Addf("mqtt.keepalive", "%s must be >= 1s (MQTT counts it in seconds), got %s", c.KeepAlive)
	}
	if c.MaxReconnectInterval < c.ConnectRetryInterval {
		errs.Addf("mqtt.max_reconnect_interval", "%s (%s) must be >= mqtt.connect_retry_interval (%s)", c.MaxReconnectInterval, c.ConnectRetryInterval)
	}
	for _, n := range []struct {
		key     string
		v, max  int
		maxText string
	}{
		{"mqtt.max_payload_bytes", c.MaxPayloadBytes, maxMaxPayloadBytes, " (16MiB)"},
		{"mqtt.max_batch", c.MaxBatch, maxInFlight, " (MQTT's in-flight window)"},
		{"mqtt.max_batch_bytes", c.MaxBatchBytes, maxMaxBatchBytes, " (64MiB)"},
		{"mqtt.queue_size", c.QueueSize, maxInFlight, " (MQTT's in-flight window)"},
	} {
		switch {
		case n.v < 0:
			errs.Addf(n.key, "%s must be > 0, got %d", n.v)
		case n.v > n.max:
			errs.Addf(n.key, "%s: %d is above the maximum %d%s", n.v, n.max, n.maxText)
		}
	}
	if c.MaxBatchBytes < c.MaxPayloadBytes {
		errs.Addf("mqtt.max_batch_bytes", "%s (%d) must be >= mqtt.max_payload_bytes (%d)", c.MaxBatchBytes, c.MaxPayloadBytes)
	}
	if len(c.Routes) == 0 {
		errs.Addf("routes", "%s: at least one route is required")
	} else if len(c.Routes) > maxRoutes {
		errs.Addf("routes", "%s: %d routes is above the maximum %d", len(c.Routes), maxRoutes)
	} else if _, err := newRouteTable(c.Routes); err != nil {
		errs.AddAll(err)
	}
	return errs.Err()
}

func isTLSScheme(s string) bool { return s == "ssl" || s == "tls" || s == "mqtts" }

// redactURL replaces the user information of a broker URL (what precedes
// the last "@" of the authority) with "xxxxx", whether or not the rest of
// the URL parses.
func redactURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		scheme, rest = "", s
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return s
	}
	if ok {
		scheme += "://"
	}
	return scheme + "xxxxx" + rest[at:]
}
