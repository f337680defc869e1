package forward

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// load reads the TLS material, all of it, before the client exists: a
// client built first and given its certificates later dials without them.
// It returns nil when TLS is off.
func (t TLS) load() (*tls.Config, error) {
	if !t.On() {
		return nil, nil
	}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in, documented as test-only
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: kafka.tls.ca_file: %w", ErrTLSMaterial, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: kafka.tls.ca_file %q: no PEM certificate in it", ErrTLSMaterial, t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		for key, path := range map[string]string{"kafka.tls.cert_file": t.CertFile, "kafka.tls.key_file": t.KeyFile} {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrTLSMaterial, key, err)
			}
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: kafka.tls.cert_file %q with kafka.tls.key_file %q: %w", ErrTLSMaterial, t.CertFile, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// mechanism returns the SASL mechanism, nil when SASL is off.
func (s SASL) mechanism() sasl.Mechanism {
	switch s.Mechanism {
	case "plain":
		return plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism()
	case "scram-sha-256":
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism()
	case "scram-sha-512":
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism()
	}
	return nil
}
