package forward

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// TLS and mutual TLS to a broker that requires a client certificate; the
// material is read from files at New.
func TestTLS(t *testing.T) {
	pk := testkit.NewPKI(t)
	tests := []struct {
		name   string
		mutual bool
	}{{"tls", false}, {"mtls", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := &tls.Config{Certificates: []tls.Certificate{pk.Server}, MinVersion: tls.VersionTLS12}
			if tt.mutual {
				srv.ClientAuth = tls.RequireAndVerifyClientCert
				srv.ClientCAs = pk.CAPool
			}
			c := newCluster(t, kfake.TLS(srv))
			src := newMemSource()
			src.fill(500, 5, 50)
			cfg := testConfig(c.ListenAddrs())
			cfg.TLS = TLS{CAFile: pk.CAFile}
			if tt.mutual {
				cfg.TLS.CertFile, cfg.TLS.KeyFile = pk.ClientCertFile, pk.ClientKeyFile
			}
			start(t, cfg, src)
			testkit.WaitWithin(t, 20*time.Second, "the buffer to drain over TLS", func() bool { return src.remaining() == 0 })
		})
	}
}

// Pitfall "TLS material loaded in the wrong order / missing files": every
// file is read and checked at New, and a problem names the file's key.
func TestTLSMaterialErrors(t *testing.T) {
	pk := testkit.NewPKI(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tls  TLS
		want string
	}{
		{"missing ca file", TLS{CAFile: "/nonexistent/ca.pem"}, "kafka.tls.ca_file"},
		{"ca file without certificates", TLS{CAFile: garbage}, "no PEM certificate"},
		{"missing key file", TLS{CertFile: pk.ClientCertFile, KeyFile: "/nonexistent/key.pem"}, "kafka.tls.key_file"},
		{"key does not match", TLS{CertFile: pk.ClientCertFile, KeyFile: garbage}, "kafka.tls.cert_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.TLS = tt.tls
			log, _ := testkit.CaptureLogs(t)
			_, err := New(cfg, log, prometheus.NewRegistry(), newMemSource())
			if !errors.Is(err, ErrTLSMaterial) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want ErrTLSMaterial naming %q", err, tt.want)
			}
		})
	}
}

// SASL PLAIN and SCRAM deliver with the right password; with a wrong one
// nothing leaves the buffer, Kafka is reported down, and the password is in
// no log line.
func TestSASL(t *testing.T) {
	const user, pass = "edge", "s3cret-Passw0rd"
	for _, mech := range []struct{ kfake, ours string }{
		{"PLAIN", "plain"}, {"SCRAM-SHA-256", "scram-sha-256"}, {"SCRAM-SHA-512", "scram-sha-512"},
	} {
		t.Run(mech.ours, func(t *testing.T) {
			c := newCluster(t, kfake.EnableSASL(), kfake.Superuser(mech.kfake, user, pass))

			src := newMemSource()
			src.fill(100, 5, 50)
			cfg := testConfig(c.ListenAddrs())
			cfg.SASL = SASL{Mechanism: mech.ours, Username: user, Password: "wrong-" + pass}
			log, sink := testkit.CaptureLogs(t)
			r := startWith(t, cfg, src, log)
			testkit.WaitWithin(t, 10*time.Second, "the authentication failure to be logged", func() bool {
				return strings.Contains(sink.String(), "kafka unreachable")
			})
			r.stop(t)
			if src.remaining() != 100 {
				t.Errorf("records left the buffer without authentication")
			}
			if strings.Contains(sink.String(), pass) {
				t.Errorf("the password is in the log")
			}

			cfg.SASL.Password = pass
			log, sink = testkit.CaptureLogs(t)
			startWith(t, cfg, src, log)
			testkit.WaitWithin(t, 20*time.Second, "the buffer to drain", func() bool { return src.remaining() == 0 })
			if strings.Contains(sink.String(), pass) {
				t.Errorf("the password is in the log")
			}
		})
	}
}
