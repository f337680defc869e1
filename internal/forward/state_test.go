package forward

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Finding "edgebridge_kafka_up tells the truth": with credentials Kafka
// rejects, edgebridge_kafka_up stays 0 however often the broker answers
// the requests that come before authentication (ApiVersions), so that
// EdgebridgeKafkaUnreachable fires, and the log says so once, not once per
// connection attempt.
func TestKafkaUpWithRejectedCredentials(t *testing.T) {
	const user, pass = "edge", "s3cret-Passw0rd"
	pk := newPKI(t)
	mutual := &tls.Config{Certificates: []tls.Certificate{pk.server}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pk.pool}
	tests := []struct {
		name    string
		cluster []kfake.Opt
		tune    func(*Config)
	}{{
		name:    "wrong SASL password",
		cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", user, pass)},
		tune: func(c *Config) {
			c.SASL = SASL{Mechanism: "scram-sha-512", Username: user, Password: "wrong-" + pass}
		},
	}, {
		name:    "no client certificate for a broker that requires one",
		cluster: []kfake.Opt{kfake.TLS(mutual)},
		tune:    func(c *Config) { c.TLS = TLS{CAFile: pk.caFile} },
	}, {
		name:    "a broker certificate the CA did not sign",
		cluster: []kfake.Opt{kfake.TLS(mutual)},
		tune:    func(c *Config) { c.TLS = TLS{} }, // system roots: the test CA is not among them
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, tt.cluster...)
			src := newMemSource()
			src.fill(200, 5, 50)
			cfg := testConfig(c.ListenAddrs())
			tt.tune(&cfg)
			log, sink := testLogger(t)
			r := startWith(t, cfg, src, log)

			up := 0
			waitFor(t, 20*time.Second, "20 rejected connections", func() bool {
				if value(t, r.p.m.up) != 0 || r.p.Up() {
					up++
				}
				return gathered(t, r.reg, "edgebridge_kafka_client_connect_errors_total") >= 20
			})
			if up > 0 {
				t.Errorf("edgebridge_kafka_up was 1 in %d samples while Kafka rejected every connection", up)
			}
			r.stop(t)
			if n := strings.Count(sink.String(), `"msg":"kafka reachable"`); n != 0 {
				t.Errorf("%d lines say Kafka is reachable", n)
			}
			if n := strings.Count(sink.String(), `"msg":"kafka unreachable`); n != 1 {
				t.Errorf("%d lines say Kafka is unreachable, want 1", n)
			}
			if got := src.remaining(); got != 200 {
				t.Errorf("%d records left the buffer", 200-got)
			}
		})
	}
}
