package mqtt

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// readBufferSize holds a few hundred 200-byte PUBLISH packets: one read
// syscall serves a whole burst of mosquitto's in-flight window.
const readBufferSize = 64 << 10

// openConnection dials the broker as paho's own dialer does for the schemes
// mqtt.url accepts (tcp and mqtt, ssl, tls and mqtts; a proxy from the
// environment is honoured), and buffers the connection's reads.
//
// Why: paho reads every packet straight from the net.Conn, its fixed header
// one byte per Read, so each 200-byte PUBLISH cost three to four read
// syscalls. At 45k msg/s that was a fifth of the bridge's CPU (make bench,
// docs/performance.md). Only reads are buffered: every write still reaches
// the socket when paho makes it, so a PUBACK is never held back.
func openConnection(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	var (
		c   net.Conn
		err error
	)
	switch uri.Scheme {
	case "tcp", "mqtt":
		c, err = proxy.FromEnvironmentUsing(d).Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts":
		c, err = dialTLS(d, uri.Host, o.TLSConfig)
	default:
		return nil, fmt.Errorf("mqtt url scheme %q is not one of tcp, mqtt, ssl, tls, mqtts", uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize)}, nil
}

// dialTLS is paho's TLS dial: straight, or through a proxy from the
// environment (all_proxy) with the handshake done here.
func dialTLS(d *net.Dialer, host string, cfg *tls.Config) (net.Conn, error) {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	pd := proxy.FromEnvironmentUsing(d)
	if pd == proxy.Direct || pd == proxy.Dialer(d) {
		return tls.DialWithDialer(d, "tcp", host, cfg)
	}
	raw, err := pd.Dial("tcp", host)
	if err != nil {
		return nil, err
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(host)
	}
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return tc, nil
}

// bufferedConn is a net.Conn whose reads go through a buffer. Deadlines,
// writes and Close act on the connection itself.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
