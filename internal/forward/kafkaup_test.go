package forward

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// Finding "edgebridge_kafka_up tells the truth": with credentials Kafka
// rejects, edgebridge_kafka_up stays 0 however often the broker answers
// the requests that come before authentication (ApiVersions), so that
// EdgebridgeKafkaUnreachable fires, and the log says so once, not once per
// connection attempt.
func TestKafkaUpWithRejectedCredentials(t *testing.T) {
	const user, pass = "edge", "s3cret-Passw0rd"
	pk := testkit.NewPKI(t)
	mutual := &tls.Config{Certificates: []tls.Certificate{pk.Server}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pk.CAPool}
	describeOnly := kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: testTopic,
		Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationDescribe, Allow: true}
	tests := []struct {
		name    string
		cluster []kfake.Opt
		tune    func(*Config)
		// Connections succeed: a metadata answer before the first
		// record may say up; the records' failures then say down.
		authenticated bool
	}{{
		name:    "wrong SASL password",
		cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", user, pass)},
		tune: func(c *Config) {
			c.SASL = SASL{Mechanism: "scram-sha-512", Username: user, Password: "wrong-" + pass}
		},
	}, {
		name:    "no client certificate for a broker that requires one",
		cluster: []kfake.Opt{kfake.TLS(mutual)},
		tune:    func(c *Config) { c.TLS = TLS{CAFile: pk.CAFile} },
	}, {
		name:    "a broker certificate the CA did not sign",
		cluster: []kfake.Opt{kfake.TLS(mutual)},
		tune:    func(c *Config) { c.TLS = TLS{} }, // system roots: the test CA is not among them
	}, {
		name: "no WRITE ACL on any topic: no producer ID",
		cluster: []kfake.Opt{kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("PLAIN", "admin", "admin"),
			kfake.User("PLAIN", user, pass, describeOnly)},
		tune:          func(c *Config) { c.SASL = SASL{Mechanism: "plain", Username: user, Password: pass} },
		authenticated: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, tt.cluster...)
			src := newMemSource()
			src.fill(200, 5, 50)
			cfg := testConfig(c.ListenAddrs())
			tt.tune(&cfg)
			log, sink := testkit.CaptureLogs(t)
			r := startWith(t, cfg, src, log)

			refusals := func() float64 { return gathered(t, r.reg, "edgebridge_kafka_client_connect_errors_total") }
			if tt.authenticated {
				refusals = func() float64 { return testkit.Value(t, r.p.m.retries) }
				testkit.WaitWithin(t, 20*time.Second, "Kafka to be reported down after a refused record", func() bool {
					return refusals() > 0 && testkit.Value(t, r.p.m.up) == 0
				})
			}
			up := 0
			testkit.WaitWithin(t, 20*time.Second, "20 refusals", func() bool {
				if testkit.Value(t, r.p.m.up) != 0 || r.p.Up() {
					up++
				}
				return refusals() >= 20
			})
			if up > 0 {
				t.Errorf("edgebridge_kafka_up was 1 in %d samples while Kafka refused everything", up)
			}
			r.stop(t)
			if n, most := strings.Count(sink.String(), `"msg":"kafka reachable"`), 0; tt.authenticated && n > 1 || !tt.authenticated && n > most {
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

// A principal without any WRITE (or IDEMPOTENT_WRITE) ACL gets no producer
// ID, and franz-go keeps that refusal for the life of its client. The
// records wait in the buffer, Kafka shows down, and once the operator
// grants the ACL the bridge resumes by itself, in order.
func TestProducerIDRefusedUntilGranted(t *testing.T) {
	const admin, edge, pass = "admin", "edge", "edge-pass"
	describe := kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: testTopic,
		Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationDescribe, Allow: true}
	c := newCluster(t, kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("PLAIN", admin, admin),
		kfake.User("PLAIN", edge, pass, describe))
	asAdmin := []kgo.Opt{kgo.SASL(plain.Auth{User: admin, Pass: admin}.AsMechanism())}
	const n = 1000
	src := newMemSource()
	src.fill(n, 20, 50)
	cfg := testConfig(c.ListenAddrs())
	cfg.SASL = SASL{Mechanism: "plain", Username: edge, Password: pass}
	log, sink := testkit.CaptureLogs(t)
	r := startWith(t, cfg, src, log)

	testkit.WaitWithin(t, 20*time.Second, "Kafka to be reported down after a refused record", func() bool {
		return testkit.Value(t, r.p.m.retries) > 0 && testkit.Value(t, r.p.m.up) == 0
	})
	if got := src.remaining(); got != n {
		t.Errorf("%d records left the buffer", n-got)
	}
	write := describe
	write.Operation = kmsg.ACLOperationWrite
	grant(t, adminClient(t, c, asAdmin), edge, write)

	recs := newConsumerWith(t, c.ListenAddrs(), asAdmin, testTopic).until(t, n, 30*time.Second)
	if dups := checkOrder(t, recs); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	testkit.WaitWithin(t, 10*time.Second, "the buffer to empty", func() bool { return src.remaining() == 0 })
	testkit.WaitWithin(t, 10*time.Second, "Kafka to be reported up", r.p.Up)
	if n := strings.Count(sink.String(), "kafka refuses this client a producer ID"); n != 1 {
		t.Errorf("%d lines say the producer ID was refused, want 1", n)
	}
}
