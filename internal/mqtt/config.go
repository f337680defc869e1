package mqtt

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Config configures a Subscriber. The zero value of each field means its
// default (see WithDefaults).
type Config struct {
	// NodeID names this edge node in every envelope and in the default
	// client id. yaml: node_id. Required.
	NodeID string
	// Broker is the broker URL: tcp://host:port, or ssl://, tls:// or
	// mqtts:// for TLS. yaml: mqtt.url. Default "tcp://127.0.0.1:1883".
	Broker string
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
	TLS TLSConfig
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
	// Default 256 KiB.
	MaxPayloadBytes int
	// MaxBatch is the most messages committed to the buffer at once.
	// yaml: mqtt.max_batch. Default 1000.
	MaxBatch int
	// MaxBatchBytes bounds the encoded size of one batch (a batch holds at
	// least one message). yaml: mqtt.max_batch_bytes. Default 4 MiB.
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

// TLSConfig names the TLS material, loaded by New.
type TLSConfig struct {
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

func (t TLSConfig) isSet() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// Defaults of Config.
const (
	DefaultBroker               = "tcp://127.0.0.1:1883"
	DefaultKeepAlive            = 30 * time.Second
	DefaultConnectTimeout       = 10 * time.Second
	DefaultWriteTimeout         = 10 * time.Second
	DefaultConnectRetryInterval = time.Second
	DefaultMaxReconnectInterval = 30 * time.Second
	DefaultMaxPayloadBytes      = 256 << 10
	DefaultMaxBatch             = 1000
	DefaultMaxBatchBytes        = 4 << 20
	DefaultQueueSize            = 1024
	DefaultDrainTimeout         = 5 * time.Second
	DefaultRejectLogInterval    = 10 * time.Second
)

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

// WithDefaults returns c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	if c.Broker == "" {
		c.Broker = DefaultBroker
	}
	if c.ClientID == "" && c.NodeID != "" {
		c.ClientID = "edgebridge-" + c.NodeID
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	setDur(&c.KeepAlive, DefaultKeepAlive)
	setDur(&c.ConnectTimeout, DefaultConnectTimeout)
	setDur(&c.WriteTimeout, DefaultWriteTimeout)
	setDur(&c.ConnectRetryInterval, DefaultConnectRetryInterval)
	setDur(&c.MaxReconnectInterval, DefaultMaxReconnectInterval)
	setDur(&c.DrainTimeout, DefaultDrainTimeout)
	setDur(&c.RejectLogInterval, DefaultRejectLogInterval)
	setInt := func(n *int, def int) {
		if *n == 0 {
			*n = def
		}
	}
	setInt(&c.MaxPayloadBytes, DefaultMaxPayloadBytes)
	setInt(&c.MaxBatch, DefaultMaxBatch)
	setInt(&c.MaxBatchBytes, DefaultMaxBatchBytes)
	setInt(&c.QueueSize, DefaultQueueSize)
	return c
}

// Validate checks c after defaults are applied and names every bad field
// by its configuration key. It does not read the TLS files: New does.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if c.NodeID == "" {
		bad("node_id is required")
	} else if !utf8.ValidString(c.NodeID) {
		bad("node_id %q is not valid UTF-8", c.NodeID)
	}
	if strings.ContainsAny(c.ClientID, "\x00") || len(c.ClientID) > 65535 {
		bad("mqtt.client_id %q is not a legal MQTT client id", c.ClientID)
	}
	// The URL is quoted redacted: a password in it would otherwise be
	// printed by every error below, and url.Parse's own error repeats it.
	broker := redactURL(c.Broker)
	u, err := url.Parse(c.Broker)
	switch {
	case err != nil:
		bad("mqtt.url %q is not a URL", broker)
	case u.User != nil:
		bad("mqtt.url %q holds credentials: set mqtt.username and mqtt.password_file (or mqtt.password: ${ENV}) instead, which are never printed", broker)
	case u.Host == "" || u.Port() == "":
		bad("mqtt.url %q must be scheme://host:port", broker)
	case u.Scheme == "tcp" || u.Scheme == "mqtt":
		if c.TLS.isSet() {
			bad("mqtt.tls is set but mqtt.url %q is not a TLS URL: use ssl://, tls:// or mqtts://", broker)
		}
	case isTLSScheme(u.Scheme):
	default:
		bad("mqtt.url %q: scheme %q is not one of tcp, mqtt, ssl, tls, mqtts", broker, u.Scheme)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("mqtt.tls.cert_file and mqtt.tls.key_file must be set together")
	}
	if c.Password != "" && c.Username == "" {
		bad("mqtt.password is set without mqtt.username")
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
			bad("%s must be > 0, got %s", d.key, d.v)
		}
	}
	if c.KeepAlive > 0 && c.KeepAlive < time.Second {
		bad("mqtt.keepalive must be >= 1s (MQTT counts it in seconds), got %s", c.KeepAlive)
	}
	if c.MaxReconnectInterval < c.ConnectRetryInterval {
		bad("mqtt.max_reconnect_interval (%s) must be >= mqtt.connect_retry_interval (%s)", c.MaxReconnectInterval, c.ConnectRetryInterval)
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
			bad("%s must be > 0, got %d", n.key, n.v)
		case n.v > n.max:
			bad("%s: %d is above the maximum %d%s", n.key, n.v, n.max, n.maxText)
		}
	}
	if c.MaxBatchBytes < c.MaxPayloadBytes {
		bad("mqtt.max_batch_bytes (%d) must be >= mqtt.max_payload_bytes (%d)", c.MaxBatchBytes, c.MaxPayloadBytes)
	}
	if len(c.Routes) == 0 {
		bad("routes: at least one route is required")
	} else if len(c.Routes) > maxRoutes {
		bad("routes: %d routes is above the maximum %d", len(c.Routes), maxRoutes)
	} else if _, err := newRouteTable(c.Routes); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
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
