package tlsfiles

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgebridge/edgebridge/internal/field"
)

// Every problem with the files is a *field.Error naming the file's key
// under the section Load was given. (Good material, and a key that does not
// match its certificate, are loaded by the mqtt and forward tests, which
// have a test PKI.)
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tt := range []struct {
		name  string
		files Files
		key   string
		want  string
	}{
		{"system roots", Files{ServerName: "broker"}, "", ""},
		{"missing ca", Files{CAFile: missing}, "x.tls.ca_file", "no such file"},
		{"ca not pem", Files{CAFile: garbage}, "x.tls.ca_file", "holds no PEM certificate"},
		{"cert without key", Files{CertFile: garbage}, "x.tls.cert_file", "x.tls.cert_file and x.tls.key_file must be set together"},
		{"missing cert", Files{CertFile: missing, KeyFile: garbage}, "x.tls.cert_file", "no such file"},
		{"missing key", Files{CertFile: garbage, KeyFile: missing}, "x.tls.key_file", "no such file"},
		{"cert not pem", Files{CertFile: garbage, KeyFile: garbage}, "x.tls.cert_file", "garbage.pem"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.files.Key = "x.tls"
			c, err := Load(tt.files)
			if tt.want == "" {
				if err != nil || c == nil || c.ServerName != tt.files.ServerName {
					t.Fatalf("Load = %+v, %v", c, err)
				}
				return
			}
			var fe *field.Error
			if !errors.As(err, &fe) || fe.Key != tt.key || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load = %v, want an error of %s saying %q", err, tt.key, tt.want)
			}
		})
	}
}
