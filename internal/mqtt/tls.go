package mqtt

import (
	"crypto/tls"
	"fmt"

	"github.com/edgebridge/edgebridge/internal/tlsfiles"
)

// load reads the files t names; each error names the file's key
// (mqtt.tls.ca_file) and matches ErrTLSMaterial.
func (t TLS) load() (*tls.Config, error) {
	c, err := tlsfiles.Load(tlsfiles.Files{Key: "mqtt.tls", CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTLSMaterial, err)
	}
	return c, nil
}
