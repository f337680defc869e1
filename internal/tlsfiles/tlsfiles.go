// Package tlsfiles loads the TLS material a client names by file: the CA
// bundle that signs the server, and the client certificate and key. Both
// remote ends of the bridge use it, the MQTT broker (mqtt.tls) and the Kafka
// brokers (kafka.tls), so that both read the files the same way and name the
// file's key in every error.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/edgebridge/edgebridge/internal/field"
)

// Files names the material. Key is the YAML section the fields come from
// ("mqtt.tls", "kafka.tls"): errors name "<Key>.ca_file" and so on.
type Files struct {
	Key string
	// CAFile is a PEM bundle of the CAs to trust instead of the system
	// roots; "" for the system roots.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and key; both or
	// neither.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server certificate.
	ServerName string
	// InsecureSkipVerify turns off the check of server certificates.
	InsecureSkipVerify bool
}

// Load reads every file before it returns, so that a missing or bad file
// fails at start, not at the first dial. Each error is a *field.Error
// naming the file's key.
func Load(f Files) (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         f.ServerName,
		InsecureSkipVerify: f.InsecureSkipVerify, //nolint:gosec // opt-in, documented as test-only
	}
	caKey, certKey, keyKey := f.Key+".ca_file", f.Key+".cert_file", f.Key+".key_file"
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, field.Wrap(caKey, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, field.Errorf(caKey, "%s %q holds no PEM certificate", f.CAFile)
		}
		c.RootCAs = pool
	}
	if f.CertFile == "" && f.KeyFile == "" {
		return c, nil
	}
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, field.Errorf(certKey, "%s and %s must be set together", keyKey)
	}
	// Read the files first so that a missing file is reported as such,
	// not as tls.X509KeyPair's bare error without the key.
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return nil, field.Wrap(certKey, err)
	}
	keyPEM, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, field.Wrap(keyKey, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &field.Error{Key: certKey, Msg: fmt.Sprintf("%s %q and %s %q", certKey, f.CertFile, keyKey, f.KeyFile), Err: err}
	}
	c.Certificates = []tls.Certificate{pair}
	return c, nil
}
