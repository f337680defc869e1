package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a throwaway CA with a server and a client certificate, valid for
// an hour either side of now, as PEM files in Dir and as values.
type PKI struct {
	Dir    string
	CAFile string // ca.pem
	CAPool *x509.CertPool

	// The server's certificate is for 127.0.0.1 (an IP SAN) and the DNS
	// names given to NewPKI, for server authentication.
	ServerCertFile, ServerKeyFile string // server.pem, server.key
	Server                        tls.Certificate

	// The client's certificate, CN node-1, is for client authentication.
	ClientCertFile, ClientKeyFile string // client.pem, client.key
	Client                        tls.Certificate

	// OtherKeyFile is a key that matches no certificate (other.key).
	OtherKeyFile string
}

// NewPKI writes a new PKI into a directory of t.TempDir(). The server's
// certificate is also for serverNames: the name a client checks when it
// dials a broker by a name of the deployment rather than 127.0.0.1.
func NewPKI(t testing.TB, serverNames ...string) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir()}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(p.Dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "EC PRIVATE KEY", der)
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgebridge test ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p.CAPool = x509.NewCertPool()
	p.CAPool.AddCert(ca)
	p.CAFile = write("ca.pem", "CERTIFICATE", caDER)
	leaf := func(name, cn string, serial int64, usage x509.ExtKeyUsage, ips []net.IP, dns []string) (certFile, keyFile string, pair tls.Certificate) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips, DNSNames: dns, KeyUsage: x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = write(name+".pem", "CERTIFICATE", der), writeKey(name+".key", k)
		if pair, err = tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			t.Fatal(err)
		}
		return certFile, keyFile, pair
	}
	p.ServerCertFile, p.ServerKeyFile, p.Server = leaf("server", "127.0.0.1", 2, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}, serverNames)
	p.ClientCertFile, p.ClientKeyFile, p.Client = leaf("client", "node-1", 3, x509.ExtKeyUsageClientAuth, nil, nil)
	p.OtherKeyFile = writeKey("other.key", key())
	return p
}
