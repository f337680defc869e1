package forward

import (
	"crypto/tls"
	"fmt"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/edgebridge/edgebridge/internal/tlsfiles"
)

// load reads the TLS material, all of it, before the client exists: a
// client built first and given its certificates later dials without them.
// It returns nil when TLS is off. Each error names the file's key
// (kafka.tls.ca_file) and matches ErrTLSMaterial.
func (t TLS) load() (*tls.Config, error) {
	if !t.On() {
		return nil, nil
	}
	c, err := tlsfiles.Load(tlsfiles.Files{
		Key: "kafka.tls", CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
		ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTLSMaterial, err)
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
