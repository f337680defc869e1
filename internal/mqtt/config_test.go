package mqtt

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// Config validation names each bad field by its YAML key.
func TestConfigValidate(t *testing.T) {
	base := testConfig("tcp://127.0.0.1:1883")
	tests := []struct {
		name string
		mod  func(*Config)
		want string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"tls broker with files", func(c *Config) { c.URL = "ssl://h:8883"; c.TLS.CAFile = "/ca.pem" }, ""},
		{"no node id", func(c *Config) { c.NodeID = "" }, "node_id is required"},
		{"node id not utf8", func(c *Config) { c.NodeID = "\xff" }, "node_id"},
		{"broker no port", func(c *Config) { c.URL = "tcp://localhost" }, "mqtt.url"},
		{"broker scheme", func(c *Config) { c.URL = "http://h:1" }, "mqtt.url \"http://h:1\": scheme"},
		{"tls on tcp", func(c *Config) { c.TLS.CAFile = "/ca.pem" }, "mqtt.tls is set but mqtt.url"},
		{"cert without key", func(c *Config) { c.URL = "ssl://h:1"; c.TLS.CertFile = "/c.pem" }, "mqtt.tls.cert_file and mqtt.tls.key_file"},
		{"password without user", func(c *Config) { c.Password = "s3cret" }, "mqtt.password is set without mqtt.username"},
		{"negative timeout", func(c *Config) { c.WriteTimeout = -time.Second }, "mqtt.write_timeout must be > 0"},
		{"keepalive sub-second", func(c *Config) { c.KeepAlive = time.Millisecond }, "mqtt.keepalive must be >= 1s"},
		{"reconnect below retry", func(c *Config) { c.MaxReconnectInterval = time.Millisecond }, "mqtt.max_reconnect_interval"},
		{"batch bytes below payload", func(c *Config) { c.MaxBatchBytes = 10; c.MaxPayloadBytes = 100 }, "mqtt.max_batch_bytes (10) must be >= mqtt.max_payload_bytes (100)"},
		{"negative queue", func(c *Config) { c.QueueSize = -1 }, "mqtt.queue_size must be > 0"},
		{"queue beyond the in-flight window", func(c *Config) { c.QueueSize = 1_000_000_000 }, "mqtt.queue_size: 1000000000 is above the maximum 65535 (MQTT's in-flight window)"},
		{"batch beyond the in-flight window", func(c *Config) { c.MaxBatch = 100_000 }, "mqtt.max_batch: 100000 is above the maximum 65535"},
		{"payload too large", func(c *Config) { c.MaxPayloadBytes = 256 << 20; c.MaxBatchBytes = 256 << 20 }, "mqtt.max_payload_bytes: 268435456 is above the maximum 16777216 (16MiB)"},
		{"batch bytes too large", func(c *Config) { c.MaxBatchBytes = 1 << 30 }, "mqtt.max_batch_bytes: 1073741824 is above the maximum 67108864 (64MiB)"},
		{"everything at its bound", func(c *Config) {
			c.QueueSize, c.MaxBatch, c.MaxPayloadBytes, c.MaxBatchBytes = 65535, 65535, 16<<20, 64<<20
		}, ""},
		{"too many routes", func(c *Config) { c.Routes = make([]Route, 1001) }, "routes: 1001 routes is above the maximum 1000"},
		{"no routes", func(c *Config) { c.Routes = nil }, "routes: at least one route"},
		{"credentials in the url", func(c *Config) { c.URL = "tcp://bridge:s3cret@h:1883" },
			`mqtt.url "tcp://xxxxx@h:1883" holds credentials: set mqtt.username and mqtt.password_file`},
		{"user alone in the url", func(c *Config) { c.URL = "ssl://bridge@h:8883" }, `mqtt.url "ssl://xxxxx@h:8883" holds credentials`},
		{"credentials in a url that does not parse", func(c *Config) { c.URL = "tcp://bridge:s3cret@h:1883\x7f" }, `mqtt.url "tcp://xxxxx@h:1883\x7f" is not a URL`},
		{"credentials in a url without scheme", func(c *Config) { c.URL = "bridge:s3cret@h:1883" }, `mqtt.url "xxxxx@h:1883"`},
		{"credentials in a url with a bad scheme", func(c *Config) { c.URL = "http://bridge:s3cret@h:1/x@y" }, `mqtt.url "http://xxxxx@h:1/x@y"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mod(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
	if got := base.WithDefaults().ClientID; got != "edgebridge-node-1" {
		t.Errorf("default client id = %q, want edgebridge-node-1", got)
	}
}

// TLS material is loaded by New, with an error naming the file's YAML key
// and the problem: missing file, no PEM, key not matching the certificate.
func TestTLSFileErrors(t *testing.T) {
	p := testkit.NewPKI(t)
	garbage := filepath.Join(p.Dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(p.Dir, "missing.pem")
	tests := []struct {
		name string
		tls  TLS
		want []string
	}{
		{"missing ca", TLS{CAFile: missing}, []string{"mqtt.tls.ca_file", "missing.pem", "no such file"}},
		{"ca not pem", TLS{CAFile: garbage}, []string{"mqtt.tls.ca_file", "garbage.pem", "no PEM certificate"}},
		{"missing cert", TLS{CAFile: p.CAFile, CertFile: missing, KeyFile: p.ClientKeyFile}, []string{"mqtt.tls.cert_file", "no such file"}},
		{"missing key", TLS{CAFile: p.CAFile, CertFile: p.ClientCertFile, KeyFile: missing}, []string{"mqtt.tls.key_file", "no such file"}},
		{"cert not pem", TLS{CertFile: garbage, KeyFile: p.ClientKeyFile}, []string{"mqtt.tls.cert_file", "garbage.pem"}},
		{"key mismatch", TLS{CertFile: p.ClientCertFile, KeyFile: p.OtherKeyFile}, []string{"mqtt.tls.cert_file", "other.key", "does not match"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("ssl://127.0.0.1:8883")
			cfg.TLS = tt.tls
			_, err := New(cfg, testkit.Logger(t), nil, &fakeSink{})
			if !errors.Is(err, ErrTLSMaterial) {
				t.Fatalf("New = %v, want ErrTLSMaterial", err)
			}
			if missing := absent(err.Error(), tt.want); len(missing) > 0 {
				t.Errorf("error %q does not contain %q", err, missing)
			}
		})
	}
}

// TLS: the intake verifies the broker against the configured CA and
// presents its client certificate to a broker that requires one.
func TestTLSClientCertificate(t *testing.T) {
	p := testkit.NewPKI(t)
	broker, _ := startMochi(t, &tls.Config{
		Certificates: []tls.Certificate{p.Server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.CAPool,
		MinVersion:   tls.VersionTLS12,
	})
	cfg := testConfig(broker)
	cfg.TLS = TLS{CAFile: p.CAFile, CertFile: p.ClientCertFile, KeyFile: p.ClientKeyFile}
	sink := &fakeSink{}
	sub := startSubscriber(t, cfg, sink)
	testkit.WaitFor(t, "subscriber ready over TLS", sub.Ready)

	pubCfg := &tls.Config{RootCAs: p.CAPool, MinVersion: tls.VersionTLS12}
	pair, err := tls.LoadX509KeyPair(p.ClientCertFile, p.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pubCfg.Certificates = []tls.Certificate{pair}
	pub := newTLSPublisher(t, broker, pubCfg)
	publish(t, pub, "devices/secure/telemetry", 1, false, []byte("over tls"))
	testkit.WaitFor(t, "record over TLS", func() bool { return sink.len() == 1 })
}

// absent returns the strings of want that s does not contain.
func absent(s string, want []string) []string {
	var out []string
	for _, w := range want {
		if !strings.Contains(s, w) {
			out = append(out, w)
		}
	}
	return out
}
