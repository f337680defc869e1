package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/field"
	"github.com/edgebridge/edgebridge/internal/forward"
	"github.com/edgebridge/edgebridge/internal/mqtt"
)

func parse(data []byte, opts Options) (*Config, error) {
	f, err := decodeFile(data, opts)
	if err != nil {
		return nil, err
	}
	p := &problems{file: opts.File}
	resolve(&f, opts, p)
	cfg := &Config{NodeID: f.NodeID, ShutdownTimeout: f.ShutdownTimeout, src: f}
	cfg.MQTT = buildMQTT(f, p)
	cfg.Buffer = buildBuffer(f, p)
	cfg.Forward = buildForward(f, cfg.MQTT, p)
	cfg.HTTP = buildHTTP(f, p)
	cfg.Log = buildLog(f, p)
	checkAcross(cfg, f, p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decodeFile decodes data, then fills every field left zero from the
// defaults: a key not written and a key written with a zero value
// ("keepalive: 0s") both mean the default.
func decodeFile(data []byte, opts Options) (file, error) {
	if len(data) > maxFileBytes {
		return file{}, &Error{File: opts.File, Msg: fmt.Sprintf("%d bytes is above the maximum %s of a config file", len(data), ByteSize(maxFileBytes)), Err: ErrInvalid}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		// yaml.v3 says "yaml: line N: ...".
		return file{}, &Error{File: opts.File, Msg: err.Error(), Err: ErrInvalid}
	}
	var f file
	d := &decoder{file: opts.File, lookupEnv: opts.LookupEnv, root: reflect.TypeOf(f)}
	if err := d.decode(&root, reflect.ValueOf(&f).Elem(), ""); err != nil {
		return file{}, err
	}
	return field.Fill(f, defaultFile()), nil
}

// problems collects what is wrong with the file, to report it all at once.
type problems struct {
	file string
	errs []error
}

func (p *problems) add(e *Error) { p.errs = append(p.errs, e) }

// invalid records a problem parse itself found.
func (p *problems) invalid(key, format string, args ...any) {
	p.add(&Error{File: p.file, Key: key, Msg: fmt.Sprintf(format, args...), Err: ErrInvalid})
}

// component records every problem err, a component's Validate, is made of,
// each under the key its *field.Error names, after in (the component's
// sentinel, nil for none). node_id is a key of the file's top level, which
// resolve checks with the same rule (field.NodeID): the components' copies
// of it are not reported again.
func (p *problems) component(err, in error) {
	field.Walk(err, func(e error) {
		var fe *field.Error
		if !errors.As(e, &fe) || fe.Key == "" { // a component error without a key: a bug, but said
			p.add(&Error{File: p.file, Msg: e.Error(), Err: ErrInvalid})
			return
		}
		if fe.Key == "node_id" {
			return
		}
		p.add(&Error{File: p.file, Key: fe.Key, Cause: fe, in: in, Err: ErrInvalid})
	})
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// resolve turns what the file says into what it means: secrets read from
// their files, paths made absolute against the file's directory, node_id
// and http.pprof_listen derived when the file leaves them out.
func resolve(f *file, opts Options, p *problems) {
	path := func(s *string) { // *_file, TLS and buffer paths are relative to the config file
		if *s != "" && !filepath.IsAbs(*s) {
			*s = filepath.Join(dirOr(opts.Dir), *s)
		}
	}
	for _, s := range []*string{&f.MQTT.PasswordFile, &f.MQTT.TLS.CAFile, &f.MQTT.TLS.CertFile, &f.MQTT.TLS.KeyFile,
		&f.Kafka.SASL.PasswordFile, &f.Kafka.TLS.CAFile, &f.Kafka.TLS.CertFile, &f.Kafka.TLS.KeyFile, &f.Buffer.Dir} {
		path(s)
	}
	f.MQTT.Password = secret(p, "mqtt.password", f.MQTT.Password, f.MQTT.PasswordFile)
	f.Kafka.SASL.Password = secret(p, "kafka.sasl.password", f.Kafka.SASL.Password, f.Kafka.SASL.PasswordFile)

	if f.NodeID == "" {
		if v, ok := opts.LookupEnv("NODE_NAME"); ok && v != "" {
			f.NodeID = v
		} else if h, err := opts.Hostname(); err == nil {
			f.NodeID = h
		}
	}
	if f.NodeID == "" {
		p.invalid("node_id", "is empty and neither $NODE_NAME nor the hostname could supply it")
	} else if fe := field.NodeID(f.NodeID); fe != nil {
		p.add(&Error{File: p.file, Key: fe.Key, Cause: fe, Err: ErrInvalid})
	}
	if f.HTTP.PprofListen == "" {
		f.HTTP.PprofListen = DefaultPprofListen
		if isLoopback(f.HTTP.Listen) {
			f.HTTP.PprofListen = f.HTTP.Listen
		}
	}
}

// secret returns the value of key: inline, or read from file (already
// absolute).
func secret(p *problems, key, inline, file string) string {
	if file == "" {
		return inline
	}
	if inline != "" {
		p.invalid(key+"_file", "set %s or %s_file, not both", key, key)
		return ""
	}
	b, err := readBounded(file, maxSecretBytes)
	if err != nil {
		p.invalid(key+"_file", "read secret: %v", err)
		return ""
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		p.invalid(key+"_file", "%s is empty", file)
	}
	return v
}

func buildMQTT(f file, p *problems) mqtt.Config {
	c := mqtt.Config{NodeID: f.NodeID}
	copyByName(reflect.ValueOf(&c).Elem(), reflect.ValueOf(f.MQTT), "mqtt", p.invalid)
	copyByName(reflect.ValueOf(&c.Routes).Elem(), reflect.ValueOf(f.Routes), "routes", p.invalid)
	c = c.WithDefaults()
	p.component(c.Validate(), mqtt.ErrInvalidConfig)
	return c
}

func buildBuffer(f file, p *problems) buffer.Config {
	var c buffer.Config
	copyByName(reflect.ValueOf(&c).Elem(), reflect.ValueOf(f.Buffer), "buffer", p.invalid)
	p.component(c.Validate(), nil)
	for _, n := range []struct {
		key    string
		v, max int64
	}{
		{"buffer.max_bytes", c.MaxBytes, maxBufferBytes},
		{"buffer.min_free_disk", c.MinFreeDisk, maxBufferBytes},
		{"buffer.segment_bytes", c.SegmentBytes, maxSegmentBytes},
	} {
		if n.v > n.max {
			p.invalid(n.key, "%d is above the maximum %d (%s)", n.v, n.max, ByteSize(n.max))
		}
	}
	if mb, sb := c.MaxBytes, c.SegmentBytes; sb > 0 && mb <= maxBufferBytes && mb/sb > maxSegments {
		least := mb / maxSegments
		if mb%maxSegments != 0 {
			least++
		}
		p.invalid("buffer.segment_bytes", "%s makes buffer.max_bytes (%s) %d segments, above the maximum %d: raise buffer.segment_bytes to at least %s",
			ByteSize(sb), ByteSize(mb), mb/sb, maxSegments, ByteSize(least))
	}
	return c
}

// buildForward builds the forwarder's Config. Its ShutdownTimeout is no key
// of the file: the forwarder may take it twice (the flush, then the acks of
// what was flushed), after the intake's drain, so shutdown_timeout is split
// for the three together to stay within it.
func buildForward(f file, mq mqtt.Config, p *problems) forward.Config {
	c := forward.Config{NodeID: f.NodeID}
	copyByName(reflect.ValueOf(&c).Elem(), reflect.ValueOf(f.Kafka), "kafka", p.invalid)
	if f.ShutdownTimeout < 0 {
		p.invalid("shutdown_timeout", "must be > 0, got %s", f.ShutdownTimeout)
	} else if drain := mq.DrainTimeout; f.ShutdownTimeout < drain+2*time.Second {
		p.invalid("shutdown_timeout", "must be at least mqtt.drain_timeout (%s) + 2s, got %s", drain, f.ShutdownTimeout)
	} else {
		c.ShutdownTimeout = (f.ShutdownTimeout - drain) / 2
	}
	c = c.WithDefaults()
	p.component(c.Validate(), forward.ErrInvalidConfig)
	return c
}

func buildHTTP(f file, p *problems) HTTP {
	var c HTTP
	copyByName(reflect.ValueOf(&c).Elem(), reflect.ValueOf(f.HTTP), "http", p.invalid)
	if err := validateListen(c.Listen); err != nil {
		p.invalid("http.listen", "%v", err)
	}
	if err := validateListen(c.PprofListen); err != nil {
		p.invalid("http.pprof_listen", "%v", err)
	}
	return c
}

func buildLog(f file, p *problems) Log {
	c := Log{Format: f.Log.Format}
	if err := c.Level.UnmarshalText([]byte(f.Log.Level)); err != nil || !knownLevel(f.Log.Level) {
		p.invalid("log.level", "must be debug, info, warn or error, got %q", f.Log.Level)
	}
	if c.Format != "json" && c.Format != "text" {
		p.invalid("log.format", "must be json or text, got %q", c.Format)
	}
	return c
}

// checkAcross checks what no one component can: rules between components,
// and the file keys no component has.
func checkAcross(cfg *Config, f file, p *problems) {
	// PLAIN sends the password as it is: without TLS, anyone on the path
	// between the node and the brokers reads it. The file must say so.
	if cfg.Forward.SASL.Mechanism == "plain" && !cfg.Forward.TLS.On() && !f.Kafka.SASL.AllowPlaintext {
		p.invalid("kafka.sasl.mechanism", "plain sends the password in clear text without TLS: turn on kafka.tls.enabled, use scram-sha-512, or set kafka.sasl.allow_plaintext: true on a network you trust")
	}
	// One intake batch must fit in the buffer: the intake could never
	// commit a bigger one, and would stop again at every start.
	if mq := cfg.MQTT; mq.MaxBatchBytes > 0 {
		need := 2 * int64(mq.MaxBatchBytes+mq.MaxPayloadBytes)
		if cfg.Buffer.MaxBytes < need {
			p.invalid("buffer.max_bytes", "must be at least twice mqtt.max_batch_bytes + mqtt.max_payload_bytes (%d), got %d", need, cfg.Buffer.MaxBytes)
		}
	}
}

func knownLevel(s string) bool {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "warning", "error":
		return true
	}
	return false
}
