package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// env returns a LookupEnv over m.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// withSecretFile is opts(m) in a directory that holds the file mqtt-pw,
// whose secret is "s3cret".
func withSecretFile(t *testing.T, m map[string]string) Options {
	t.Helper()
	o := opts(m)
	o.Dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(o.Dir, "mqtt-pw"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return o
}

func opts(m map[string]string) Options {
	return Options{
		File:      "edgebridge.yaml",
		LookupEnv: env(m),
		Hostname:  func() (string, error) { return "host-a", nil },
	}
}

const minimal = `
buffer:
  dir: /tmp/eb
kafka:
  brokers: ["127.0.0.1:9092"]
routes:
  - filter: devices/+/telemetry
    kafka_topic: iot.telemetry
`

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal), opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != "host-a" {
		t.Errorf("node_id = %q, want the hostname", cfg.NodeID)
	}
	if cfg.ShutdownTimeout != DefaultShutdownTimeout {
		t.Errorf("shutdown_timeout = %s", cfg.ShutdownTimeout)
	}
	if cfg.Buffer.MaxBytes != 1<<30 || cfg.Buffer.WhenFull != "block" {
		t.Errorf("buffer defaults not applied: %+v", cfg.Buffer)
	}
	if cfg.HTTP.Listen != DefaultHTTPListen || cfg.HTTP.Pprof || cfg.HTTP.PprofListen != DefaultPprofListen {
		t.Errorf("http = %+v", cfg.HTTP)
	}
	if cfg.Log.Level != slog.LevelInfo || cfg.Log.Format != "json" {
		t.Errorf("log = %+v", cfg.Log)
	}
	if cfg.MQTT.URL != "tcp://127.0.0.1:1883" || cfg.MQTT.ClientID != "edgebridge-host-a" || cfg.MQTT.NodeID != "host-a" {
		t.Errorf("mqtt defaults: url %q client_id %q node %q", cfg.MQTT.URL, cfg.MQTT.ClientID, cfg.MQTT.NodeID)
	}
	if r := cfg.MQTT.Routes; len(r) != 1 || r[0].Filter != "devices/+/telemetry" || r[0].KafkaTopic != "iot.telemetry" {
		t.Errorf("routes = %+v", r)
	}
	// The intake's 5s drain first, then flush and acks share the rest.
	if cfg.Forward.NodeID != "host-a" || cfg.Forward.ShutdownTimeout != (DefaultShutdownTimeout-5*time.Second)/2 {
		t.Errorf("kafka: node %q shutdown %s", cfg.Forward.NodeID, cfg.Forward.ShutdownTimeout)
	}

	cfg, err = Parse([]byte(minimal), opts(map[string]string{"NODE_NAME": "k3s-node-7"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != "k3s-node-7" {
		t.Errorf("node_id = %q, want $NODE_NAME", cfg.NodeID)
	}
}

// valuesFile sets a value other than the default for many keys; its
// mqtt.password_file is mqtt-pw (withSecretFile), kafka.sasl.password is
// ${KAFKA_PW} and buffer.dir starts with ${STATE}.
const valuesFile = `
node_id: edge-01
shutdown_timeout: 1m30s
mqtt:
  url: ssl://broker.local:8883
  client_id: bridge-7
  username: bridge
  password_file: mqtt-pw
  tls:
    ca_file: ca.pem
  keepalive: 15s
  max_payload_bytes: 64KiB
  max_batch: 500
routes:
  - filter: site/+/sensors/#
    kafka_topic: iot.sensors
    qos: 2
    device_level: 2
  - filter: devices/+/telemetry
    kafka_topic: iot.telemetry
kafka:
  brokers: [kafka-0:9092, kafka-1:9092]
  compression: lz4
  linger: 20ms
  client_metrics: true
  batch_max_bytes: 1MiB
  max_buffered_bytes: 32MiB
  backoff:
    initial: 200ms
    max: 30s
  tls:
    enabled: true
  sasl:
    mechanism: scram-sha-512
    username: edge
    password: ${KAFKA_PW}
buffer:
  dir: ${STATE}/buf
  max_bytes: 4GiB
  min_free_disk: -1
  when_full: drop_oldest
  segment_bytes: 512MiB
  max_age: 72h
http:
  listen: 127.0.0.1:0
  pprof: true
log:
  level: DEBUG
  format: text
`

// A key written with a zero value means its default, for the daemon's own
// keys as for the components'.
func TestZeroValuesMeanTheDefault(t *testing.T) {
	cfg, err := Parse([]byte(`shutdown_timeout: 0s
buffer:
  dir: ""
  max_bytes: 0
http:
  listen: ""
log:
  level: ""
  format: ""
mqtt:
  keepalive: 0s
kafka:
  brokers: ["127.0.0.1:9092"]
  linger: 0s
routes:
  - filter: devices/+/telemetry
    kafka_topic: iot.telemetry
`), opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	def, err := Parse([]byte(minimal), opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ShutdownTimeout != DefaultShutdownTimeout || cfg.Buffer.Dir != DefaultBufferDir || cfg.HTTP.Listen != DefaultHTTPListen {
		t.Errorf("shutdown_timeout %s, buffer.dir %q, http.listen %q: want the defaults", cfg.ShutdownTimeout, cfg.Buffer.Dir, cfg.HTTP.Listen)
	}
	if cfg.Log.Level != slog.LevelInfo || cfg.Log.Format != DefaultLogFormat {
		t.Errorf("log = %+v, want the defaults", cfg.Log)
	}
	if cfg.Buffer.MaxBytes != def.Buffer.MaxBytes || cfg.MQTT.KeepAlive != def.MQTT.KeepAlive || cfg.Forward.Linger != def.Forward.Linger {
		t.Errorf("buffer.max_bytes %d, mqtt.keepalive %s, kafka.linger %s: want the defaults", cfg.Buffer.MaxBytes, cfg.MQTT.KeepAlive, cfg.Forward.Linger)
	}
}

func TestValues(t *testing.T) {
	o := withSecretFile(t, map[string]string{"STATE": "/data", "KAFKA_PW": "kpw"})
	dir := o.Dir
	cfg, err := Parse([]byte(valuesFile), o)
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.MQTT
	if m.URL != "ssl://broker.local:8883" || m.ClientID != "bridge-7" || m.Username != "bridge" || m.Password != "s3cret" ||
		m.TLS.CAFile != filepath.Join(dir, "ca.pem") || m.KeepAlive != 15*time.Second || m.MaxPayloadBytes != 64<<10 || m.MaxBatch != 500 {
		t.Errorf("mqtt = %+v", m)
	}
	if len(m.Routes) != 2 || m.Routes[0].QoS != 2 || m.Routes[0].DeviceLevel != 2 || m.Routes[1].KafkaTopic != "iot.telemetry" {
		t.Errorf("routes = %+v", m.Routes)
	}
	k := cfg.Forward
	if len(k.Brokers) != 2 || k.Compression != "lz4" || k.Linger != 20*time.Millisecond || !k.ClientMetrics || k.BatchMaxBytes != 1<<20 ||
		k.MaxBufferedBytes != 32<<20 || k.Backoff.Initial != 200*time.Millisecond || k.Backoff.Max != 30*time.Second ||
		!k.TLS.Enabled || k.SASL.Mechanism != "scram-sha-512" || k.SASL.Password != "kpw" || k.ShutdownTimeout != (90*time.Second-m.DrainTimeout)/2 {
		t.Errorf("kafka = %+v", k)
	}
	if cfg.NodeID != "edge-01" || cfg.ShutdownTimeout != 90*time.Second {
		t.Errorf("top level = %q %s", cfg.NodeID, cfg.ShutdownTimeout)
	}
	b := cfg.Buffer
	if b.Dir != "/data/buf" || b.MaxBytes != 4<<30 || b.MinFreeDisk != -1 || b.WhenFull != "drop_oldest" ||
		b.SegmentBytes != 512<<20 || b.MaxAge != 72*time.Hour {
		t.Errorf("buffer = %+v", b)
	}
	if cfg.HTTP.Listen != "127.0.0.1:0" || !cfg.HTTP.Pprof || cfg.HTTP.PprofListen != "127.0.0.1:0" {
		t.Errorf("http = %+v", cfg.HTTP)
	}
	if cfg.Log.Level != slog.LevelDebug || cfg.Log.Format != "text" {
		t.Errorf("log = %+v", cfg.Log)
	}
}

// Every error the file can produce names the key (and the line where there is
// one), so an operator can fix it without reading code.
func TestErrors(t *testing.T) {
	tests := []struct {
		name   string
		yaml   string
		env    map[string]string
		is     error
		want   string
		absent string // nor does the error say this
	}{
		{
			name: "the seeds' brokers mistake: a key from another tool is rejected, not ignored",
			yaml: "buffer:\n  dir: /x\nkafka_brokers: [a:9092]\n",
			is:   ErrUnknownKey,
			want: `edgebridge.yaml:3: kafka_brokers: unknown key`,
		},
		{
			name: "the seeds' bootstrap.servers under kafka points to brokers",
			yaml: "kafka:\n  bootstrap.servers: a:9092\n",
			is:   ErrUnknownKey,
			want: `edgebridge.yaml:2: kafka.bootstrap.servers: unknown key (did you mean "brokers"?)`,
		},
		{
			name: "no brokers at all is not silently localhost",
			yaml: "routes:\n  - filter: a/+\n    kafka_topic: t\n",
			is:   ErrInvalid,
			want: `kafka.brokers must list at least one broker`,
		},
		{
			name: "cross-field: backoff max below initial",
			yaml: base + "kafka:\n  brokers: [a:9092]\n  backoff:\n    initial: 5s\n    max: 1s\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: invalid kafka config: kafka.backoff.max must be >= kafka.backoff.initial`,
		},
		{
			name: "mqtt url scheme, named by the file's key",
			yaml: base + "kafka:\n  brokers: [a:9092]\nmqtt:\n  url: http://x:1883\n",
			is:   ErrInvalid,
			want: `mqtt.url "http://x:1883": scheme "http" is not one of`,
		},
		{
			name: "route errors are named by the file's key",
			yaml: "kafka:\n  brokers: [a:9092]\nroutes:\n  - filter: a/#/b\n    kafka_topic: t\n",
			is:   ErrInvalid,
			want: `routes[0].filter`,
		},
		{
			name: "no routes",
			yaml: "kafka:\n  brokers: [a:9092]\n",
			is:   ErrInvalid,
			want: `routes: at least one route is required`,
		},
		{
			name: "password and password_file both set",
			yaml: base + "kafka:\n  brokers: [a:9092]\nmqtt:\n  username: u\n  password: p\n  password_file: /etc/pw\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: mqtt.password_file: set mqtt.password or mqtt.password_file, not both`,
		},
		{
			name: "sasl plain sends the password in clear without tls",
			yaml: base + "kafka:\n  brokers: [a:9092]\n  sasl:\n    mechanism: plain\n    username: u\n    password: p\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: kafka.sasl.mechanism: plain sends the password in clear text without TLS`,
		},
		{
			name: "password file missing",
			yaml: base + "kafka:\n  brokers: [a:9092]\n  sasl:\n    mechanism: plain\n    username: u\n    password_file: /nonexistent/pw\n",
			is:   ErrInvalid,
			want: `kafka.sasl.password_file: read secret: stat /nonexistent/pw: no such file or directory`,
		},
		{
			name: "unset env var in a secret names the variable, not a value",
			yaml: base + "kafka:\n  brokers: [a:9092]\nmqtt:\n  username: u\n  password: ${MQTT_PASSWORD}\n",
			is:   ErrEnvNotSet,
			want: `edgebridge.yaml:8: mqtt.password: environment variable not set: MQTT_PASSWORD`,
		},
		{
			name: "list where brokers belong as a list",
			yaml: "kafka:\n  brokers: a:9092\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml:2: kafka.brokers: expected a list, got "a:9092"`,
		},
		{
			name: "misspelt nested key suggests the right one",
			yaml: "buffer:\n  dir: /x\n  max_byte: 1GiB\n",
			is:   ErrUnknownKey,
			want: `edgebridge.yaml:3: buffer.max_byte: unknown key (did you mean "max_bytes"?); keys under buffer:`,
		},
		{
			name: "key at the wrong level points to where it belongs",
			yaml: "dir: /x\n",
			is:   ErrUnknownKey,
			want: `edgebridge.yaml:1: dir: unknown key here (buffer.dir is a key)`,
		},
		{
			name: "unset environment variable is named",
			yaml: "buffer:\n  dir: ${EB_STATE_DIR}\n",
			is:   ErrEnvNotSet,
			want: `edgebridge.yaml:2: buffer.dir: environment variable not set: EB_STATE_DIR`,
		},
		{
			name: "unterminated reference",
			yaml: "buffer:\n  dir: ${EB\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml:2: buffer.dir: unterminated "${"`,
		},
		{
			name: "bad variable name",
			yaml: "buffer:\n  dir: ${1X}\n",
			is:   ErrInvalid,
			want: `buffer.dir: invalid environment variable name "1X"`,
		},
		{
			name: "duration without unit",
			yaml: "shutdown_timeout: 30\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml:1: shutdown_timeout: invalid duration "30": use a number with a unit`,
		},
		{
			name: "bad size",
			yaml: "buffer:\n  dir: /x\n  max_bytes: 4 gigs\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml:3: buffer.max_bytes: invalid size "4 gigs"`,
		},
		{
			name: "bad bool",
			yaml: "http:\n  pprof: yes please\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml:2: http.pprof: expected true or false, got "yes please"`,
		},
		{
			name: "list where a mapping belongs",
			yaml: "buffer:\n  - dir\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml:2: buffer: expected a mapping of keys, got a list`,
		},
		{
			name: "mapping where a value belongs",
			yaml: "node_id:\n  a: b\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml:2: node_id: expected a single value, got a mapping`,
		},
		{
			name: "yaml syntax error",
			yaml: "buffer:\n  dir: [\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: yaml: line `,
		},
		{
			name: "duplicate key",
			yaml: "log:\n  level: info\n  level: debug\n",
			is:   ErrInvalid,
			want: `already defined at line 2`,
		},
		{
			name: "component validation names the key",
			yaml: "buffer:\n  dir: /x\n  when_full: drop_newest\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: buffer.when_full must be "block" or "drop_oldest", got "drop_newest"`,
		},
		{
			name: "cross-field rule of a component",
			yaml: "buffer:\n  dir: /x\n  max_bytes: 1MiB\n  segment_bytes: 2MiB\n",
			is:   ErrInvalid,
			want: `buffer.segment_bytes (2097152) must be <= buffer.max_bytes (1048576)`,
		},
		{
			name: "an intake batch must fit in the buffer",
			yaml: "buffer:\n  dir: /x\n  max_bytes: 4MiB\n  segment_bytes: 1MiB\n",
			is:   ErrInvalid,
			want: `buffer.max_bytes: must be at least twice mqtt.max_batch_bytes + mqtt.max_payload_bytes`,
		},
		{
			name: "a buffer larger than any edge disk",
			yaml: "buffer:\n  dir: /x\n  max_bytes: 9223372036854775807\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: buffer.max_bytes: 9223372036854775807 is above the maximum 1099511627776 (1TiB)`,
			// One bound is enough; the segment count of such a size overflowed.
			absent: "segments",
		},
		{
			name: "min free disk larger than any edge disk",
			yaml: "buffer:\n  dir: /x\n  min_free_disk: 2TiB\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: buffer.min_free_disk: 2199023255552 is above the maximum 1099511627776 (1TiB)`,
		},
		{
			name: "a segment larger than can be mapped",
			yaml: "buffer:\n  dir: /x\n  max_bytes: 8GiB\n  segment_bytes: 2GiB\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: buffer.segment_bytes: 2147483648 is above the maximum 1073741824 (1GiB)`,
		},
		{
			name: "more segments than files to keep open",
			yaml: "buffer:\n  dir: /x\n  max_bytes: 1TiB\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: buffer.segment_bytes: 16MiB makes buffer.max_bytes (1TiB) 65536 segments, above the maximum 4096: raise buffer.segment_bytes to at least 256MiB`,
		},
		{
			name: "the segment size to raise to is rounded up",
			yaml: "buffer:\n  dir: /x\n  max_bytes: 1000000000001\n  segment_bytes: 64KiB\n",
			is:   ErrInvalid,
			want: `raise buffer.segment_bytes to at least 244140626B`,
		},
		{
			name: "a Kafka window larger than the node's memory",
			yaml: base + "kafka:\n  brokers: [a:9092]\n  max_buffered_records: 100000000\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: invalid kafka config: kafka.max_buffered_records: 100000000 is above the maximum 1000000`,
		},
		{
			name: "a payload size beyond 32 bits names the bound of its key",
			yaml: "mqtt:\n  max_payload_bytes: 8GiB\n  max_batch_bytes: 8GiB\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: invalid mqtt config: mqtt.max_payload_bytes: 8589934592 is above the maximum 16777216 (16MiB)`,
		},
		{
			name: "an intake queue longer than MQTT's in-flight window",
			yaml: "mqtt:\n  queue_size: 2000000000\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: invalid mqtt config: mqtt.queue_size: 2000000000 is above the maximum 65535`,
		},
		{
			name: "shutdown timeout shorter than the intake's drain",
			yaml: "shutdown_timeout: 3s\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: shutdown_timeout: must be at least mqtt.drain_timeout (5s) + 2s, got 3s`,
		},
		{
			name: "negative shutdown timeout",
			yaml: "shutdown_timeout: -1s\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: shutdown_timeout: must be > 0, got -1s`,
		},
		{
			name: "node id with a topic wildcard",
			yaml: "node_id: edge/+\n",
			is:   ErrInvalid,
			want: `node_id: "edge/+" must be at most 253 printable ASCII characters`,
		},
		{
			name:   "node_id is a key of the file's top level, not of one component",
			yaml:   base + "kafka:\n  brokers: [a:9092]\nnode_id: \"a b\"\n",
			is:     ErrInvalid,
			want:   "edgebridge.yaml: node_id: \"a b\" must be at most 253 printable ASCII characters",
			absent: "invalid mqtt config: node_id",
		},
		{
			name: "listen without port",
			yaml: "http:\n  listen: localhost\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: http.listen: "localhost" must be host:port`,
		},
		{
			name: "pprof listen without port",
			yaml: "http:\n  pprof: true\n  pprof_listen: localhost\n",
			is:   ErrInvalid,
			want: `edgebridge.yaml: http.pprof_listen: "localhost" must be host:port`,
		},
		{
			name: "log level",
			yaml: "log:\n  level: verbose\n",
			is:   ErrInvalid,
			want: `log.level: must be debug, info, warn or error, got "verbose"`,
		},
		{
			name: "log format",
			yaml: "log:\n  format: logfmt\n",
			is:   ErrInvalid,
			want: `log.format: must be json or text, got "logfmt"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), opts(tt.env))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, tt.want)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if tt.absent != "" && strings.Contains(err.Error(), tt.absent) {
				t.Errorf("error\n  %v\nsays %q", err, tt.absent)
			}
		})
	}
}

// base is a routes section that makes the rest of a test file the subject.
const base = "routes:\n  - filter: devices/+/telemetry\n    kafka_topic: iot.telemetry\n"

func TestSeveralErrorsReportedTogether(t *testing.T) {
	_, err := Parse([]byte("log:\n  level: loud\n  format: xml\n"), opts(nil))
	if err == nil || !strings.Contains(err.Error(), "log.level") || !strings.Contains(err.Error(), "log.format") {
		t.Fatalf("want both log.level and log.format named, got %v", err)
	}
}

func TestEnvExpansion(t *testing.T) {
	e := env(map[string]string{"HOST": "broker", "EMPTY": "", "PW": "pa$$w0rd${"})
	tests := []struct{ in, want string }{
		{"tcp://${HOST}:1883", "tcp://broker:1883"},
		{"${MISSING:-fallback}", "fallback"},
		{"${EMPTY:-fallback}", "fallback"},
		{"${EMPTY}", ""},
		{"$${HOST}", "${HOST}"},
		{"price $5 and $HOST", "price $5 and $HOST"},
		{"${PW}", "pa$$w0rd${"}, // values are not expanded again
	}
	for _, tt := range tests {
		got, err := expand(tt.in, e)
		if err != nil || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// Comments are not values: a ${NAME} in a comment is not expanded and so
// cannot fail for an unset variable.
func TestEnvNotExpandedInComments(t *testing.T) {
	_, err := Parse([]byte(minimal+"# dir: ${UNSET_IN_COMMENT}\nlog:\n  level: info # or ${ALSO_UNSET}\n"), opts(nil))
	if err != nil {
		t.Fatal(err)
	}
}

func TestRelativePaths(t *testing.T) {
	o := opts(nil)
	o.Dir = "/etc/edgebridge"
	cfg, err := Parse([]byte(minimal+"mqtt:\n  tls:\n    ca_file: /abs/ca.pem\n    cert_file: c.pem\n    key_file: k.pem\n  url: ssl://b:8883\n"), o)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MQTT.TLS.CAFile != "/abs/ca.pem" || cfg.MQTT.TLS.CertFile != "/etc/edgebridge/c.pem" {
		t.Errorf("tls paths = %+v", cfg.MQTT.TLS)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edgebridge.yaml")
	if err := os.WriteFile(path, []byte(base+"kafka:\n  brokers: [a:9092]\nbuffer:\n  dir: /x\n  max_bytes: 2GB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Buffer.MaxBytes != 2e9 {
		t.Errorf("max_bytes = %d", cfg.Buffer.MaxBytes)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("nope: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":1: nope") {
		t.Errorf("error does not start with file:line: %v", err)
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"4GiB", 4 << 30, true},
		{"512MiB", 512 << 20, true},
		{"512mib", 512 << 20, true},
		{"64 KiB", 64 << 10, true},
		{"1GB", 1e9, true},
		{"10kB", 10e3, true},
		{"1.5GiB", 3 << 29, true},
		{"1048576", 1 << 20, true},
		{"0", 0, true},
		{"-1", -1, true},
		{"", 0, false},
		{"GiB", 0, false},
		{"4 gigs", 0, false},
		{"1.2.3MB", 0, false},
		{"99999999999TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	if s := ByteSize(4 << 30).String(); s != "4GiB" {
		t.Errorf("String = %q", s)
	}
}

// A file that is not a config, or one that expands itself through its
// anchors, is refused with an error naming the problem: the parser never
// recurses until the stack overflows, nor expands aliases until memory is
// gone, nor reads a secret file that never ends.
func TestHostileFiles(t *testing.T) {
	// Each route merges the one before it; the last is repeated: every
	// repetition expands the whole chain again.
	var laughs strings.Builder
	laughs.WriteString("kafka:\n  brokers: [a:9092]\nroutes:\n  - &r0 {filter: devices/+/telemetry, kafka_topic: t}\n")
	for i := 1; i < 30; i++ {
		fmt.Fprintf(&laughs, "  - &r%d {<<: *r%d}\n", i, i-1)
	}
	laughs.WriteString(strings.Repeat("  - *r29\n", 3000))
	huge := minimal + "# " + strings.Repeat("x", 1<<20) + "\n"

	bigSecret := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(bigSecret, bytes.Repeat([]byte("x"), 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{
			name: "a merge key that merges its own mapping",
			yaml: "buffer: &b\n  dir: /x\n  <<: *b\n",
			want: `edgebridge.yaml:3: buffer: alias *b refers to a node that contains it (its anchor &b is at line 1)`,
		},
		{
			name: "a list that holds itself",
			yaml: "routes: &r [*r]\n",
			want: `edgebridge.yaml:1: routes[0]: alias *r refers to a node that contains it`,
		},
		{
			name: "a section that holds its parent",
			yaml: "kafka: &k\n  backoff: *k\n",
			want: `edgebridge.yaml:2: kafka.backoff: alias *k refers to a node that contains it`,
		},
		{
			name: "billion laughs: aliases of aliases multiply the file",
			yaml: laughs.String(),
			want: `aliases expand to more than 10000 values`,
		},
		{
			name: "a file larger than any config",
			yaml: huge,
			want: fmt.Sprintf("edgebridge.yaml: %d bytes is above the maximum 1MiB of a config file", len(huge)),
		},
		{
			name: "a secret file that never ends",
			yaml: minimal + "mqtt:\n  username: u\n  password_file: /dev/zero\n",
			want: `mqtt.password_file: read secret: /dev/zero is not a regular file`,
		},
		{
			name: "a secret file larger than any password",
			yaml: minimal + "mqtt:\n  username: u\n  password_file: " + bigSecret + "\n",
			want: `mqtt.password_file: read secret: ` + bigSecret + ` is larger than the maximum 64KiB`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), opts(nil))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n  %.500v\nwant it to contain\n  %s", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %.200v is not ErrInvalid", err)
			}
		})
	}
}

// SASL PLAIN goes without TLS only when the file says so.
func TestSASLPlainWithoutTLS(t *testing.T) {
	sasl := base + "kafka:\n  brokers: [a:9092]\n  sasl:\n    mechanism: plain\n    username: u\n    password: p\n"
	tests := []struct {
		name, yaml string
		ok         bool
	}{
		{"refused by default", sasl, false},
		{"allowed", sasl + "    allow_plaintext: true\n", true},
		{"over tls", sasl + "  tls:\n    enabled: true\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.yaml), opts(nil))
			if (err == nil) != tt.ok {
				t.Fatalf("Parse error %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok && !strings.Contains(err.Error(), "kafka.sasl.allow_plaintext: true") {
				t.Errorf("the refusal does not name kafka.sasl.allow_plaintext: %v", err)
			}
			if err == nil && cfg.Forward.SASL.Mechanism != "plain" {
				t.Errorf("sasl = %+v", cfg.Forward.SASL)
			}
		})
	}
}

// /debug/pprof/ answers on the metrics port only when that port is
// reachable from the node alone, or when the file names the address.
func TestPprofListen(t *testing.T) {
	tests := []struct {
		name, http, want string
	}{
		{"metrics open to the cluster: pprof on loopback", "  listen: 0.0.0.0:9464\n", DefaultPprofListen},
		{"metrics on all interfaces, no host", "  listen: :9464\n", DefaultPprofListen},
		{"metrics on a node address", "  listen: 192.0.2.17:9464\n", DefaultPprofListen},
		{"metrics on loopback: pprof beside them", "  listen: 127.0.0.1:9464\n", "127.0.0.1:9464"},
		{"metrics on localhost", "  listen: localhost:9464\n", "localhost:9464"},
		{"metrics on IPv6 loopback", "  listen: \"[::1]:9464\"\n", "[::1]:9464"},
		{"named by the file", "  listen: 0.0.0.0:9464\n  pprof_listen: 0.0.0.0:6061\n", "0.0.0.0:6061"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(minimal+"http:\n  pprof: true\n"+tt.http), opts(nil))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.HTTP.PprofListen != tt.want {
				t.Errorf("pprof listens on %q, want %q", cfg.HTTP.PprofListen, tt.want)
			}
		})
	}
}
