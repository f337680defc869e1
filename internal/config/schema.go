package config

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/forward"
	"github.com/edgebridge/edgebridge/internal/mqtt"
)

// file is the YAML schema. Its fields carry the names of the component
// fields they set (mqtt.Config.KeepAlive is mqttFile.KeepAlive): build and
// print copy between the two by name (copyByName), so a key is mapped in
// one place, its yaml tag. A field of the file that no component has
// (password_file, allow_plaintext) is resolved by parse. doc is the
// comment `edgebridge config` prints above the key.
type file struct {
	NodeID          string        `yaml:"node_id" doc:"names this node in every envelope, in headers and in the default client ids; default $NODE_NAME, else the hostname"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" doc:"bound on the whole shutdown: mqtt.drain_timeout, then the Kafka flush and the final acks, which share the rest"`
	MQTT            mqttFile      `yaml:"mqtt" doc:"the MQTT broker the bridge subscribes to"`
	Routes          []routeFile   `yaml:"routes" doc:"topic filters and the Kafka topic of each; at least one"`
	Buffer          bufferFile    `yaml:"buffer" doc:"the on-disk buffer between MQTT and Kafka"`
	Kafka           kafkaFile     `yaml:"kafka" doc:"the Kafka cluster the bridge produces to"`
	HTTP            httpFile      `yaml:"http" doc:"metrics, health and profiles"`
	Log             logFile       `yaml:"log" doc:"the process log, to stderr"`
}

type mqttFile struct {
	URL                  string        `yaml:"url" doc:"broker URL: tcp://, or ssl:// tls:// mqtts:// for TLS; no credentials in it"`
	ClientID             string        `yaml:"client_id" doc:"must stay the same across restarts: the broker keeps the session under it; default edgebridge-<node_id>"`
	Username             string        `yaml:"username" doc:"broker user"`
	Password             string        `yaml:"password" doc:"broker password, usually ${ENV}; or password_file (never printed)"`
	PasswordFile         string        `yaml:"password_file" doc:"file holding the broker password"`
	TLS                  mqttTLSFile   `yaml:"tls" doc:"TLS material for ssl://, tls:// and mqtts:// brokers"`
	KeepAlive            time.Duration `yaml:"keepalive" doc:"MQTT keepalive (>= 1s)"`
	ConnectTimeout       time.Duration `yaml:"connect_timeout" doc:"one connection attempt (dial, TLS, CONNACK)"`
	WriteTimeout         time.Duration `yaml:"write_timeout" doc:"one write to the broker"`
	ConnectRetryInterval time.Duration `yaml:"connect_retry_interval" doc:"first wait after a failed connect; doubles with jitter"`
	MaxReconnectInterval time.Duration `yaml:"max_reconnect_interval" doc:"cap of the reconnect wait"`
	MaxPayloadBytes      ByteSize      `yaml:"max_payload_bytes" doc:"larger payloads become dead letters (payload_too_large); at most 16MiB"`
	MaxBatch             int           `yaml:"max_batch" doc:"messages per buffer commit at most; at most 65535"`
	MaxBatchBytes        ByteSize      `yaml:"max_batch_bytes" doc:"bytes per buffer commit at most; at most 64MiB"`
	QueueSize            int           `yaml:"queue_size" doc:"messages received and not yet batched; at most 65535"`
	DrainTimeout         time.Duration `yaml:"drain_timeout" doc:"at shutdown, time to commit and ack what was already received"`
	RejectLogInterval    time.Duration `yaml:"reject_log_interval" doc:"rejected messages are logged at most once per interval per reason"`
}

type mqttTLSFile struct {
	CAFile     string `yaml:"ca_file" doc:"PEM CAs of the broker certificate; default the system roots"`
	CertFile   string `yaml:"cert_file" doc:"client certificate (PEM), with key_file"`
	KeyFile    string `yaml:"key_file" doc:"client key (PEM), with cert_file"`
	ServerName string `yaml:"server_name" doc:"name checked in the broker certificate; default the host of mqtt.url"`
}

type routeFile struct {
	Filter      string `yaml:"filter" doc:"MQTT topic filter; filters must not overlap"`
	KafkaTopic  string `yaml:"kafka_topic" doc:"Kafka topic of the matching messages"`
	QoS         int    `yaml:"qos" doc:"subscription QoS, 1 or 2; default 1"`
	DeviceLevel int    `yaml:"device_level" doc:"topic level (from 1) of the device id, the Kafka key; default the filter's first +"`
}

type kafkaFile struct {
	Brokers                []string      `yaml:"brokers" doc:"seed brokers, host:port; required"`
	ClientID               string        `yaml:"client_id" doc:"client id for broker logs and quotas; default edgebridge-<node_id>"`
	Acks                   string        `yaml:"acks" doc:"only all is accepted"`
	Compression            string        `yaml:"compression" doc:"zstd, lz4, snappy or none"`
	Linger                 time.Duration `yaml:"linger" doc:"wait for more records per batch"`
	ClientMetrics          bool          `yaml:"client_metrics" doc:"push franz-go's client telemetry (KIP-714) to brokers that subscribe to it"`
	BatchMaxBytes          ByteSize      `yaml:"batch_max_bytes" doc:"record batch size limit; keep <= the topic's max.message.bytes"`
	MaxBufferedRecords     int           `yaml:"max_buffered_records" doc:"records read from the buffer and not yet acked by Kafka"`
	MaxBufferedBytes       ByteSize      `yaml:"max_buffered_bytes" doc:"the same window in bytes (>= batch_max_bytes)"`
	ReadBatch              int           `yaml:"read_batch" doc:"records per buffer read"`
	DialTimeout            time.Duration `yaml:"dial_timeout" doc:"TCP + TLS + SASL connect"`
	RequestTimeoutOverhead time.Duration `yaml:"request_timeout_overhead" doc:"added to a request's own timeout before giving up on a broker"`
	ProduceRequestTimeout  time.Duration `yaml:"produce_request_timeout" doc:"time a broker may take to answer a produce (acks=all)"`
	MetadataMinAge         time.Duration `yaml:"metadata_min_age" doc:"least time between metadata refreshes"`
	MetadataMaxAge         time.Duration `yaml:"metadata_max_age" doc:"most time between metadata refreshes (at most 60s)"`
	Backoff                backoffFile   `yaml:"backoff" doc:"jittered exponential retry waits"`
	TLS                    kafkaTLSFile  `yaml:"tls" doc:"TLS to the brokers"`
	SASL                   saslFile      `yaml:"sasl" doc:"SASL authentication to the brokers"`
}

type backoffFile struct {
	Initial time.Duration `yaml:"initial" doc:"first retry wait"`
	Max     time.Duration `yaml:"max" doc:"cap of the retry wait"`
}

type kafkaTLSFile struct {
	Enabled            bool   `yaml:"enabled" doc:"TLS to the brokers (any TLS file turns it on)"`
	CAFile             string `yaml:"ca_file" doc:"PEM CAs of the broker certificates; default the system roots"`
	CertFile           string `yaml:"cert_file" doc:"client certificate (PEM) for mutual TLS, with key_file"`
	KeyFile            string `yaml:"key_file" doc:"client key (PEM), with cert_file"`
	ServerName         string `yaml:"server_name" doc:"name checked in the broker certificates; default the broker's host"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" doc:"tests only: turns off the check of broker certificates"`
}

type saslFile struct {
	Mechanism      string `yaml:"mechanism" doc:"plain, scram-sha-256 or scram-sha-512; empty for none"`
	Username       string `yaml:"username" doc:"SASL user"`
	Password       string `yaml:"password" doc:"SASL password, usually ${ENV}; or password_file (never printed)"`
	PasswordFile   string `yaml:"password_file" doc:"file holding the SASL password"`
	AllowPlaintext bool   `yaml:"allow_plaintext" doc:"let plain run without TLS, which sends the password as it is"`
}

type bufferFile struct {
	Dir             string        `yaml:"dir" doc:"where the segment files live (use a hostPath)"`
	MaxBytes        ByteSize      `yaml:"max_bytes" doc:"logical size limit; at most 1TiB and 4096 segments"`
	MaxAge          time.Duration `yaml:"max_age" doc:"records older than this are dropped (reason max_age); 0 never"`
	MinFreeDisk     ByteSize      `yaml:"min_free_disk" doc:"free space left on the filesystem; -1 disables"`
	WhenFull        string        `yaml:"when_full" doc:"block (stop acking) or drop_oldest"`
	SegmentBytes    ByteSize      `yaml:"segment_bytes" doc:"segment file size; 64KiB to 1GiB"`
	DropLogInterval time.Duration `yaml:"drop_log_interval" doc:"drops are logged at most once per interval (always counted)"`
	LockTimeout     time.Duration `yaml:"lock_timeout" doc:"wait for another process holding the buffer files"`
}

type httpFile struct {
	Listen      string `yaml:"listen" doc:"address of /metrics, /healthz, /readyz"`
	Pprof       bool   `yaml:"pprof" doc:"also serve /debug/pprof/ on pprof_listen"`
	PprofListen string `yaml:"pprof_listen" doc:"address of /debug/pprof/; default http.listen if that is a loopback address, else 127.0.0.1:6060"`
}

type logFile struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error"`
	Format string `yaml:"format" doc:"json or text"`
}

// defaultFile is the file with every default in place: the components'
// from their DefaultConfig, the daemon's from the constants of this
// package. Keys whose default is derived (node_id, the client ids,
// http.pprof_listen) are empty here and resolved by parse.
func defaultFile() file {
	f := file{
		ShutdownTimeout: DefaultShutdownTimeout,
		Buffer:          bufferFile{Dir: DefaultBufferDir},
		HTTP:            httpFile{Listen: DefaultHTTPListen},
		Log:             logFile{Level: DefaultLogLevel, Format: DefaultLogFormat},
	}
	copyByName(reflect.ValueOf(&f.MQTT).Elem(), reflect.ValueOf(mqtt.DefaultConfig()), "mqtt", nil)
	copyByName(reflect.ValueOf(&f.Kafka).Elem(), reflect.ValueOf(forward.DefaultConfig()), "kafka", nil)
	dir := f.Buffer.Dir
	copyByName(reflect.ValueOf(&f.Buffer).Elem(), reflect.ValueOf(buffer.DefaultConfig()), "buffer", nil)
	f.Buffer.Dir = dir
	return f
}

// copyByName copies src into dst: the fields of two structs by name (a field
// only one of them has is left alone), lists element by element, and sizes
// between ByteSize and int. key is dst's path in the file, for the one
// error a copy can have: a size beyond int on a 32-bit platform, reported
// to bad. Any other mismatch is a bug of this package, and panics.
func copyByName(dst, src reflect.Value, key string, bad func(key, format string, args ...any)) {
	switch {
	case dst.Type() == src.Type():
		dst.Set(src)
	case dst.Kind() == reflect.Struct && src.Kind() == reflect.Struct:
		for i := range dst.NumField() {
			df := dst.Type().Field(i)
			sf, ok := src.Type().FieldByName(df.Name)
			if !df.IsExported() || !ok {
				continue
			}
			copyByName(dst.Field(i), src.FieldByIndex(sf.Index), join(key, yamlKey(df, sf)), bad)
		}
	case dst.Kind() == reflect.Slice && src.Kind() == reflect.Slice:
		if src.IsNil() {
			dst.SetZero()
			return
		}
		out := reflect.MakeSlice(dst.Type(), src.Len(), src.Len())
		for i := range src.Len() {
			copyByName(out.Index(i), src.Index(i), fmt.Sprintf("%s[%d]", key, i), bad)
		}
		dst.Set(out)
	case dst.CanInt() && src.CanInt():
		if v := src.Int(); dst.OverflowInt(v) {
			bad(key, "%d is above the maximum %d", v, math.MaxInt)
		} else {
			dst.SetInt(v)
		}
	default:
		panic(fmt.Sprintf("config: %s: no copy from %s to %s", key, src.Type(), dst.Type()))
	}
}

// yamlKey is the key of a field pair, from whichever of the two is the
// file's.
func yamlKey(a, b reflect.StructField) string {
	for _, f := range []reflect.StructField{a, b} {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" {
			return name
		}
	}
	return a.Name
}
