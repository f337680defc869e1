package forward

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
)

// pki is a throwaway CA with a server and a client certificate, as files.
type pki struct {
	caFile, certFile, keyFile string
	server                    tls.Certificate
	pool                      *x509.CertPool
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgebridge test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, []byte, tls.Certificate) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return certPEM, keyPEM, pair
	}
	_, _, server := issue("127.0.0.1", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	clientCert, clientKey, _ := issue("node-1", x509.ExtKeyUsageClientAuth, nil)
	p := pki{
		caFile:   filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, "client.pem"),
		keyFile:  filepath.Join(dir, "client.key"),
		server:   server,
		pool:     x509.NewCertPool(),
	}
	p.pool.AddCert(ca)
	for path, b := range map[string][]byte{
		p.caFile:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		p.certFile: clientCert,
		p.keyFile:  clientKey,
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// TLS and mutual TLS to a broker that requires a client certificate; the
// material is read from files at New.
func TestTLS(t *testing.T) {
	pk := newPKI(t)
	tests := []struct {
		name   string
		mutual bool
	}{{"tls", false}, {"mtls", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := &tls.Config{Certificates: []tls.Certificate{pk.server}, MinVersion: tls.VersionTLS12}
			if tt.mutual {
				srv.ClientAuth = tls.RequireAndVerifyClientCert
				srv.ClientCAs = pk.pool
			}
			c := newCluster(t, kfake.TLS(srv))
			src := newMemSource()
			src.fill(500, 5, 50)
			cfg := testConfig(c.ListenAddrs())
			cfg.TLS = TLS{CAFile: pk.caFile}
			if tt.mutual {
				cfg.TLS.CertFile, cfg.TLS.KeyFile = pk.certFile, pk.keyFile
			}
			start(t, cfg, src)
			waitFor(t, 20*time.Second, "the buffer to drain over TLS", func() bool { return src.remaining() == 0 })
		})
	}
}

// Pitfall "TLS material loaded in the wrong order / missing files": every
// file is read and checked at New, and a problem names the file's key.
func TestTLSMaterialErrors(t *testing.T) {
	pk := newPKI(t)
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
		{"missing key file", TLS{CertFile: pk.certFile, KeyFile: "/nonexistent/key.pem"}, "kafka.tls.key_file"},
		{"key does not match", TLS{CertFile: pk.certFile, KeyFile: garbage}, "kafka.tls.cert_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.TLS = tt.tls
			log, _ := testLogger(t)
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
			log, sink := testLogger(t)
			r := startWith(t, cfg, src, log)
			waitFor(t, 10*time.Second, "the authentication failure to be logged", func() bool {
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
			log, sink = testLogger(t)
			startWith(t, cfg, src, log)
			waitFor(t, 20*time.Second, "the buffer to drain", func() bool { return src.remaining() == 0 })
			if strings.Contains(sink.String(), pass) {
				t.Errorf("the password is in the log")
			}
		})
	}
}
