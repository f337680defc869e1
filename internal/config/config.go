// Package config reads edgebridge's one YAML configuration file and maps it
// onto the Config of each component (buffer, mqtt, forward, the HTTP server).
//
// Rules of the file, in the order they are applied:
//
//   - Every key must be known. An unknown key is an error naming it and its
//     line, never ignored: a key spelt as another tool spells it
//     (`bootstrap.servers` for `kafka.brokers`) would otherwise leave the
//     default in place and the daemon would talk to the wrong place.
//   - ${NAME} in any value is replaced by the environment variable NAME;
//     ${NAME:-default} gives a default for an unset or empty NAME; $${ is a
//     literal "${". An unset NAME without a default is an error naming it.
//     Expansion happens inside values only, never in keys or comments.
//   - Durations carry a unit ("500ms", "5s", "2m"); sizes are bytes or carry
//     a unit ("512MiB", "4GiB", "1GB"). A bare number is never a duration.
//   - Secrets come inline (usually as ${ENV}) or from a file: `password` or
//     `password_file`, not both. A file's trailing newline is dropped.
//     Relative file paths are relative to the directory of the config file.
//   - "key:" with no value, or no key at all, means the default.
//   - Anchors, aliases and merge keys (<<) work. An alias inside the node it
//     names is an error, and aliases expand to at most 10000 values, so a
//     file cannot recurse or multiply itself ("billion laughs"). The file is
//     at most 1 MiB, a secret file a regular file of at most 64 KiB.
//   - Defaults are applied, then every component's Validate checks its fields
//     together and names the bad field by its key. Every size and count has
//     an upper bound a 4 GB node can honour, named in the error.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/forward"
	"github.com/edgebridge/edgebridge/internal/mqtt"
	"github.com/edgebridge/edgebridge/internal/retry"
)

// Config is the validated configuration, ready to hand to the components.
type Config struct {
	// NodeID names this edge node in every envelope. yaml: node_id.
	// Default: $NODE_NAME (the Kubernetes downward API), else the hostname.
	NodeID string
	// ShutdownTimeout bounds the whole shutdown on SIGTERM: the intake's
	// drain (mqtt.drain_timeout), then the Kafka flush and the final acks,
	// which share the rest equally. Keep it below the pod's
	// terminationGracePeriodSeconds. yaml: shutdown_timeout.
	ShutdownTimeout time.Duration
	MQTT            mqtt.Config    // mqtt.* and routes[]
	Buffer          buffer.Config  // buffer.*
	Forward         forward.Config // kafka.*
	HTTP            HTTP
	Log             Log
}

// HTTP configures the metrics and health endpoint.
type HTTP struct {
	// Listen is the host:port of /metrics, /healthz and /readyz.
	// yaml: http.listen. Default 0.0.0.0:9464.
	Listen string
	// Pprof serves /debug/pprof/ as well. yaml: http.pprof. Default false.
	Pprof bool
	// PprofListen is the host:port of /debug/pprof/. yaml:
	// http.pprof_listen. Default: http.listen when that is a loopback
	// address, else 127.0.0.1:6060, so the profiles never answer on a port
	// open to the cluster unless the file names one.
	PprofListen string
}

// Log configures the process logger.
type Log struct {
	// Level: debug, info, warn or error. yaml: log.level. Default info.
	Level slog.Level
	// Format: json or text. yaml: log.format. Default json.
	Format string
}

// Defaults of the keys this package owns; the components own theirs.
const (
	DefaultShutdownTimeout = 25 * time.Second
	DefaultBufferDir       = "/var/lib/edgebridge"
	DefaultHTTPListen      = "0.0.0.0:9464"
	DefaultPprofListen     = "127.0.0.1:6060"
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "json"
)

// file is the YAML schema. Zero values mean "not set": the component's
// defaults apply.
type file struct {
	NodeID          string        `yaml:"node_id"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	MQTT            mqttFile      `yaml:"mqtt"`
	Routes          []routeFile   `yaml:"routes"`
	Buffer          bufferFile    `yaml:"buffer"`
	Kafka           kafkaFile     `yaml:"kafka"`
	HTTP            httpFile      `yaml:"http"`
	Log             logFile       `yaml:"log"`
}

type mqttFile struct {
	URL                  string        `yaml:"url"`
	ClientID             string        `yaml:"client_id"`
	Username             string        `yaml:"username"`
	Password             string        `yaml:"password"`
	PasswordFile         string        `yaml:"password_file"`
	TLS                  mqttTLSFile   `yaml:"tls"`
	KeepAlive            time.Duration `yaml:"keepalive"`
	ConnectTimeout       time.Duration `yaml:"connect_timeout"`
	WriteTimeout         time.Duration `yaml:"write_timeout"`
	ConnectRetryInterval time.Duration `yaml:"connect_retry_interval"`
	MaxReconnectInterval time.Duration `yaml:"max_reconnect_interval"`
	MaxPayloadBytes      ByteSize      `yaml:"max_payload_bytes"`
	MaxBatch             int           `yaml:"max_batch"`
	MaxBatchBytes        ByteSize      `yaml:"max_batch_bytes"`
	QueueSize            int           `yaml:"queue_size"`
	DrainTimeout         time.Duration `yaml:"drain_timeout"`
	RejectLogInterval    time.Duration `yaml:"reject_log_interval"`
}

type mqttTLSFile struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

type routeFile struct {
	Filter      string `yaml:"filter"`
	KafkaTopic  string `yaml:"kafka_topic"`
	QoS         int    `yaml:"qos"`
	DeviceLevel int    `yaml:"device_level"`
}

type kafkaFile struct {
	Brokers                []string      `yaml:"brokers"`
	ClientID               string        `yaml:"client_id"`
	Acks                   string        `yaml:"acks"`
	Compression            string        `yaml:"compression"`
	Linger                 time.Duration `yaml:"linger"`
	ClientMetrics          bool          `yaml:"client_metrics"`
	BatchMaxBytes          ByteSize      `yaml:"batch_max_bytes"`
	MaxBufferedRecords     int           `yaml:"max_buffered_records"`
	MaxBufferedBytes       ByteSize      `yaml:"max_buffered_bytes"`
	ReadBatch              int           `yaml:"read_batch"`
	DialTimeout            time.Duration `yaml:"dial_timeout"`
	RequestTimeoutOverhead time.Duration `yaml:"request_timeout_overhead"`
	ProduceRequestTimeout  time.Duration `yaml:"produce_request_timeout"`
	MetadataMinAge         time.Duration `yaml:"metadata_min_age"`
	MetadataMaxAge         time.Duration `yaml:"metadata_max_age"`
	Backoff                backoffFile   `yaml:"backoff"`
	TLS                    kafkaTLSFile  `yaml:"tls"`
	SASL                   saslFile      `yaml:"sasl"`
}

type backoffFile struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

type kafkaTLSFile struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

type saslFile struct {
	Mechanism      string `yaml:"mechanism"`
	Username       string `yaml:"username"`
	Password       string `yaml:"password"`
	PasswordFile   string `yaml:"password_file"`
	AllowPlaintext bool   `yaml:"allow_plaintext"`
}

type bufferFile struct {
	Dir             string        `yaml:"dir"`
	MaxBytes        ByteSize      `yaml:"max_bytes"`
	MaxAge          time.Duration `yaml:"max_age"`
	MinFreeDisk     ByteSize      `yaml:"min_free_disk"`
	WhenFull        string        `yaml:"when_full"`
	SegmentBytes    ByteSize      `yaml:"segment_bytes"`
	DropLogInterval time.Duration `yaml:"drop_log_interval"`
	LockTimeout     time.Duration `yaml:"lock_timeout"`
}

type httpFile struct {
	Listen      string `yaml:"listen"`
	Pprof       bool   `yaml:"pprof"`
	PprofListen string `yaml:"pprof_listen"`
}

type logFile struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Upper bounds of buffer.* (the buffer package bounds them from below), so
// that a unit too many is refused at validate rather than tried on disk.
const (
	// maxBufferBytes bounds buffer.max_bytes and buffer.min_free_disk:
	// more disk than an edge node has; a larger value is a unit slip.
	maxBufferBytes = 1 << 40
	// maxSegmentBytes: the head segment is mapped at twice its size up
	// front, and a damaged segment is rescanned whole.
	maxSegmentBytes = 1 << 30
	// maxSegments bounds buffer.max_bytes / buffer.segment_bytes: every
	// segment is an open bbolt file (a descriptor, a mapping, a freelist
	// rebuilt by scanning it at Open), kept for the life of the process.
	maxSegments = 4096
)

// Options are the process facts Parse needs; Load fills them from the OS.
type Options struct {
	// File names the file in error messages.
	File string
	// Dir resolves relative *_file paths. Default: the working directory.
	Dir string
	// LookupEnv resolves ${NAME}. Default os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Hostname is the last fallback of node_id. Default os.Hostname.
	Hostname func() (string, error)
}

// Bounds on what Parse reads. A complete config is a few KiB and a
// password a few dozen bytes: past these the file is not a config (a path
// mistaken for another, /dev/zero), and reading on would only fill memory.
const (
	maxFileBytes   = 1 << 20
	maxSecretBytes = 64 << 10
)

// Load reads, expands, decodes, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := readBounded(path, maxFileBytes)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, Options{File: path, Dir: filepath.Dir(path)})
}

// readBounded reads a regular file of at most limit bytes. Devices and
// FIFOs are refused before they are opened: a FIFO blocks the open itself,
// and a device may never end.
func readBounded(path string, limit int64) ([]byte, error) {
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than the maximum %s", path, ByteSize(limit))
	}
	return data, nil
}

// Parse is Load on bytes already read.
func Parse(data []byte, opts Options) (*Config, error) {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.Hostname == nil {
		opts.Hostname = os.Hostname
	}
	return parse(data, opts)
}

func parse(data []byte, opts Options) (*Config, error) {
	if len(data) > maxFileBytes {
		return nil, &Error{File: opts.File, Msg: fmt.Sprintf("%d bytes is above the maximum %s of a config file", len(data), ByteSize(maxFileBytes)), Err: ErrInvalid}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		// yaml.v3 says "yaml: line N: ...".
		return nil, &Error{File: opts.File, Msg: err.Error(), Err: ErrInvalid}
	}
	var f file
	d := &decoder{file: opts.File, lookupEnv: opts.LookupEnv, root: reflect.TypeOf(f)}
	if err := d.decode(&root, reflect.ValueOf(&f).Elem(), ""); err != nil {
		return nil, err
	}

	var errs []error
	invalid := func(key, format string, args ...any) {
		errs = append(errs, &Error{File: opts.File, Key: key, Msg: fmt.Sprintf(format, args...), Err: ErrInvalid})
	}
	path := func(p string) string { // *_file and TLS paths are relative to the config file
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dirOr(opts.Dir), p)
	}
	secret := func(key, inline, file string) string {
		if file == "" {
			return inline
		}
		if inline != "" {
			invalid(key+"_file", "set %s or %s_file, not both", key, key)
			return ""
		}
		b, err := readBounded(path(file), maxSecretBytes)
		if err != nil {
			invalid(key+"_file", "read secret: %v", err)
			return ""
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			invalid(key+"_file", "%s is empty", path(file))
		}
		return v
	}

	cfg := &Config{NodeID: f.NodeID, ShutdownTimeout: f.ShutdownTimeout}
	if cfg.NodeID == "" {
		if v, ok := opts.LookupEnv("NODE_NAME"); ok && v != "" {
			cfg.NodeID = v
		} else if h, err := opts.Hostname(); err == nil {
			cfg.NodeID = h
		}
	}
	switch {
	case cfg.NodeID == "":
		invalid("node_id", "is empty and neither $NODE_NAME nor the hostname could supply it")
	case len(cfg.NodeID) > 253 || strings.ContainsFunc(cfg.NodeID, func(r rune) bool {
		return r <= ' ' || r > '~' || r == '/' || r == '+' || r == '#'
	}):
		invalid("node_id", "%q must be at most 253 printable ASCII characters without spaces, '/', '+' or '#'", cfg.NodeID)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.ShutdownTimeout < 0 {
		invalid("shutdown_timeout", "must be > 0, got %s", cfg.ShutdownTimeout)
	}

	m := f.MQTT
	cfg.MQTT = mqtt.Config{
		NodeID:   cfg.NodeID,
		URL:      m.URL,
		ClientID: m.ClientID,
		Username: m.Username,
		Password: secret("mqtt.password", m.Password, m.PasswordFile),
		TLS: mqtt.TLS{
			CAFile:     path(m.TLS.CAFile),
			CertFile:   path(m.TLS.CertFile),
			KeyFile:    path(m.TLS.KeyFile),
			ServerName: m.TLS.ServerName,
		},
		KeepAlive:            m.KeepAlive,
		ConnectTimeout:       m.ConnectTimeout,
		WriteTimeout:         m.WriteTimeout,
		ConnectRetryInterval: m.ConnectRetryInterval,
		MaxReconnectInterval: m.MaxReconnectInterval,
		MaxPayloadBytes:      intSize("mqtt.max_payload_bytes", m.MaxPayloadBytes, invalid),
		MaxBatch:             m.MaxBatch,
		MaxBatchBytes:        intSize("mqtt.max_batch_bytes", m.MaxBatchBytes, invalid),
		QueueSize:            m.QueueSize,
		DrainTimeout:         m.DrainTimeout,
		RejectLogInterval:    m.RejectLogInterval,
	}
	for _, r := range f.Routes {
		cfg.MQTT.Routes = append(cfg.MQTT.Routes, mqtt.Route{
			Filter: r.Filter, KafkaTopic: r.KafkaTopic, QoS: r.QoS, DeviceLevel: r.DeviceLevel,
		})
	}
	cfg.MQTT = cfg.MQTT.WithDefaults()
	if err := cfg.MQTT.Validate(); err != nil {
		errs = append(errs, componentError(opts.File, err))
	}

	b := f.Buffer
	cfg.Buffer = buffer.Config{
		Dir:             path(b.Dir),
		MaxBytes:        int64(b.MaxBytes),
		MaxAge:          b.MaxAge,
		MinFreeDisk:     int64(b.MinFreeDisk),
		WhenFull:        b.WhenFull,
		SegmentBytes:    int64(b.SegmentBytes),
		DropLogInterval: b.DropLogInterval,
		LockTimeout:     b.LockTimeout,
	}
	if cfg.Buffer.Dir == "" {
		cfg.Buffer.Dir = DefaultBufferDir
	}
	cfg.Buffer = cfg.Buffer.WithDefaults()
	if err := cfg.Buffer.Validate(); err != nil {
		errs = append(errs, componentError(opts.File, err))
	}
	for _, n := range []struct {
		key    string
		v, max int64
	}{
		{"buffer.max_bytes", cfg.Buffer.MaxBytes, maxBufferBytes},
		{"buffer.min_free_disk", cfg.Buffer.MinFreeDisk, maxBufferBytes},
		{"buffer.segment_bytes", cfg.Buffer.SegmentBytes, maxSegmentBytes},
	} {
		if n.v > n.max {
			invalid(n.key, "%d is above the maximum %d (%s)", n.v, n.max, ByteSize(n.max))
		}
	}
	if mb, sb := cfg.Buffer.MaxBytes, cfg.Buffer.SegmentBytes; sb > 0 && mb <= maxBufferBytes && mb/sb > maxSegments {
		least := mb / maxSegments
		if mb%maxSegments != 0 {
			least++
		}
		invalid("buffer.segment_bytes", "%s makes buffer.max_bytes (%s) %d segments, above the maximum %d: raise buffer.segment_bytes to at least %s",
			ByteSize(sb), ByteSize(mb), mb/sb, maxSegments, ByteSize(least))
	}

	k := f.Kafka
	cfg.Forward = forward.Config{
		NodeID:                 cfg.NodeID,
		Brokers:                k.Brokers,
		ClientID:               k.ClientID,
		Acks:                   k.Acks,
		Compression:            k.Compression,
		Linger:                 k.Linger,
		ClientMetrics:          k.ClientMetrics,
		BatchMaxBytes:          intSize("kafka.batch_max_bytes", k.BatchMaxBytes, invalid),
		MaxBufferedRecords:     k.MaxBufferedRecords,
		MaxBufferedBytes:       intSize("kafka.max_buffered_bytes", k.MaxBufferedBytes, invalid),
		ReadBatch:              k.ReadBatch,
		DialTimeout:            k.DialTimeout,
		RequestTimeoutOverhead: k.RequestTimeoutOverhead,
		ProduceRequestTimeout:  k.ProduceRequestTimeout,
		MetadataMinAge:         k.MetadataMinAge,
		MetadataMaxAge:         k.MetadataMaxAge,
		Backoff:                retry.Policy{Initial: k.Backoff.Initial, Max: k.Backoff.Max},
		ShutdownTimeout:        cfg.ShutdownTimeout,
		TLS: forward.TLS{
			Enabled:            k.TLS.Enabled,
			CAFile:             path(k.TLS.CAFile),
			CertFile:           path(k.TLS.CertFile),
			KeyFile:            path(k.TLS.KeyFile),
			ServerName:         k.TLS.ServerName,
			InsecureSkipVerify: k.TLS.InsecureSkipVerify,
		},
		SASL: forward.SASL{
			Mechanism: k.SASL.Mechanism,
			Username:  k.SASL.Username,
			Password:  secret("kafka.sasl.password", k.SASL.Password, k.SASL.PasswordFile),
		},
	}
	// The forwarder may take its ShutdownTimeout twice (the flush, then
	// the acks of what was flushed), after the intake's drain: split
	// shutdown_timeout so the three together stay within it.
	if drain := cfg.MQTT.WithDefaults().DrainTimeout; cfg.ShutdownTimeout > 0 {
		if cfg.ShutdownTimeout < drain+2*time.Second {
			invalid("shutdown_timeout", "must be at least mqtt.drain_timeout (%s) + 2s, got %s", drain, cfg.ShutdownTimeout)
		} else {
			cfg.Forward.ShutdownTimeout = (cfg.ShutdownTimeout - drain) / 2
		}
	}
	if err := cfg.Forward.Validate(); err != nil {
		errs = append(errs, componentError(opts.File, err))
	}
	// PLAIN sends the password as it is: without TLS, anyone on the path
	// between the node and the brokers reads it. The file must say so.
	if strings.EqualFold(k.SASL.Mechanism, "plain") && !cfg.Forward.TLS.On() && !k.SASL.AllowPlaintext {
		invalid("kafka.sasl.mechanism", "plain sends the password in clear text without TLS: turn on kafka.tls.enabled, use scram-sha-512, or set kafka.sasl.allow_plaintext: true on a network you trust")
	}

	cfg.HTTP = HTTP{Listen: f.HTTP.Listen, Pprof: f.HTTP.Pprof, PprofListen: f.HTTP.PprofListen}
	if cfg.HTTP.Listen == "" {
		cfg.HTTP.Listen = DefaultHTTPListen
	}
	if err := validateListen(cfg.HTTP.Listen); err != nil {
		invalid("http.listen", "%v", err)
	}
	if cfg.HTTP.PprofListen == "" {
		cfg.HTTP.PprofListen = DefaultPprofListen
		if isLoopback(cfg.HTTP.Listen) {
			cfg.HTTP.PprofListen = cfg.HTTP.Listen
		}
	}
	if err := validateListen(cfg.HTTP.PprofListen); err != nil {
		invalid("http.pprof_listen", "%v", err)
	}

	level := f.Log.Level
	if level == "" {
		level = DefaultLogLevel
	}
	if err := cfg.Log.Level.UnmarshalText([]byte(level)); err != nil || !knownLevel(level) {
		invalid("log.level", "must be debug, info, warn or error, got %q", level)
	}
	cfg.Log.Format = f.Log.Format
	if cfg.Log.Format == "" {
		cfg.Log.Format = DefaultLogFormat
	}
	if cfg.Log.Format != "json" && cfg.Log.Format != "text" {
		invalid("log.format", "must be json or text, got %q", cfg.Log.Format)
	}

	// One intake batch must fit in the buffer: the intake could never
	// commit a bigger one, and would stop again at every start.
	if mq := cfg.MQTT.WithDefaults(); mq.MaxBatchBytes > 0 {
		need := 2 * int64(mq.MaxBatchBytes+mq.MaxPayloadBytes)
		if cfg.Buffer.MaxBytes < need {
			invalid("buffer.max_bytes", "must be at least twice mqtt.max_batch_bytes + mqtt.max_payload_bytes (%d), got %d", need, cfg.Buffer.MaxBytes)
		}
	}

	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// intSize converts a size for an int field of a component, which names
// the field's own bound; only a size beyond int (on a 32-bit platform) is
// refused here.
func intSize(key string, v ByteSize, invalid func(key, format string, args ...any)) int {
	if int64(v) > math.MaxInt || int64(v) < math.MinInt {
		invalid(key, "%d is above the maximum %d", int64(v), math.MaxInt)
		return 0
	}
	return int(v)
}

func knownLevel(s string) bool {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "warning", "error":
		return true
	}
	return false
}

// componentError marks a component's Validate error as a config error. The
// components already name the key ("buffer.max_bytes must be > 0").
// keyRenames maps key names a component uses in its messages to the names
// of the file, where the two differ.
var keyRenames = strings.NewReplacer("mqtt.broker", "mqtt.url", "mqtt.routes[", "routes[", "mqtt.routes", "routes")

// One Error per line keeps the file name in front of each problem.
func componentError(file string, err error) error {
	var errs []error
	for _, line := range strings.Split(keyRenames.Replace(err.Error()), "\n") {
		errs = append(errs, &Error{File: file, Msg: line, Err: errors.Join(ErrInvalid, err)})
	}
	return errors.Join(errs...)
}

func validateListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q must be host:port, e.g. 0.0.0.0:9464: %v", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has an invalid port %q", addr, port)
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q has an invalid host %q", addr, host)
	}
	return nil
}

// isLoopback reports whether addr's host is a loopback address or
// "localhost": reachable from this node only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func dirOr(dir string) string {
	if dir == "" {
		return "."
	}
	return dir
}
