package mqtt

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// readBufferSize holds a few hundred 200-byte PUBLISH packets: one read
// syscall serves a whole burst of mosquitto's in-flight window.
const readBufferSize = 64 << 10

// dial dials the broker as paho's own dialer does for the schemes
// mqtt.url accepts (tcp and mqtt, ssl, tls and mqtts; a proxy from the
// environment is honoured), and buffers the connection's reads.
//
// Why: paho reads every packet straight from the net.Conn, its fixed header
// one byte per Read, so each 200-byte PUBLISH cost three to four read
// syscalls; and it writes every 4-byte PUBACK with a write syscall of its
// own. At 45k msg/s each was a fifth to a quarter of the bridge's CPU (make
// bench, docs/performance.md). See bufferedConn for how writes are gathered
// without holding a PUBACK back.
func dial(uri *url.URL, o paho.ClientOptions) (*bufferedConn, error) {
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
	return newBufferedConn(c, o.WriteTimeout), nil
}

// openConnection is paho's custom dialer: it dials and keeps the
// connection for the acker (see bufferedConn.hold).
func (s *Subscriber) openConnection(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	c, err := dial(uri, o)
	if err != nil {
		return nil, err
	}
	s.conn.Store(c)
	return c, nil
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

// writeBufferLimit bounds the bytes accepted from paho and not yet handed
// to the socket; a Write beyond it waits. The bridge writes little more than
// PUBACKs (4 bytes each, at most max_inflight_messages outstanding), so it is
// reached only when the broker stops reading.
const writeBufferLimit = 64 << 10

// holdLimit is how much a hold may keep back: past it the writer writes
// even while held, so a Write never waits on a hold.
const holdLimit = 16 << 10

// closeFlushTimeout bounds how long Close spends handing what is still
// pending to the socket (the last PUBACKs and DISCONNECT of a clean stop).
const closeFlushTimeout = time.Second

// bufferedConn is a net.Conn whose reads go through a buffer and whose writes
// are gathered: Write appends to a pending buffer and returns, and one
// goroutine hands everything pending to the socket in a single write. While
// that write is in the kernel, paho's next PUBACKs accumulate behind it, so a
// burst of acknowledgements after a group commit costs a few syscalls instead
// of one each, and a lone PUBACK goes out at once, never waiting on a timer.
//
// Bytes reach the socket in the order Write accepted them, so PUBACKs keep
// receipt order (contract clause 1). A socket write error is returned by the
// next Write and closes the connection, so paho's reader fails too and it
// reconnects; PUBACKs that were pending are lost with the connection, as they
// would be in the kernel's send buffer, and the broker redelivers those
// messages to the persistent session. The writer goroutine owns the write
// deadline: each socket write gets the mqtt.write_timeout.
type bufferedConn struct {
	net.Conn
	r       *bufio.Reader
	timeout time.Duration

	// connack gathers the first bytes paho reads: the broker's CONNACK.
	// Only Read touches it, and paho never reads from two goroutines at
	// once. session publishes what it said (see sessionPresent).
	connack  [4]byte
	connackN int
	session  atomic.Int32

	mu        sync.Mutex
	cond      *sync.Cond // pending grew or shrank, err was set, or closing began
	pending   []byte
	err       error // the first write error, or net.ErrClosed once closing
	closing   bool
	held      bool // see hold
	closeOnce sync.Once
	done      chan struct{} // closed when the writer goroutine has returned
}

func newBufferedConn(c net.Conn, writeTimeout time.Duration) *bufferedConn {
	bc := &bufferedConn{
		Conn:    c,
		r:       bufio.NewReaderSize(c, readBufferSize),
		timeout: writeTimeout,
		pending: make([]byte, 0, 4<<10),
		done:    make(chan struct{}),
	}
	bc.cond = sync.NewCond(&bc.mu)
	go bc.writeLoop()
	return bc
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.connackN < len(c.connack) && n > 0 {
		c.connackN += copy(c.connack[c.connackN:], p[:n])
		if c.connackN == len(c.connack) {
			c.session.Store(parseConnack(c.connack))
		}
	}
	return n, err
}

// What the CONNACK of a connection said about the session.
const (
	sessionUnknown int32 = iota // not read yet, or not a CONNACK
	sessionNew                  // the broker had no session for the client id
	sessionResumed              // the broker kept the session
)

// parseConnack reads an MQTT 3.1.1 CONNACK (§3.2): type 2, remaining
// length 2, the acknowledge flags (bit 0: session present) and the return
// code. Anything else is unknown, which the intake treats as a new session.
func parseConnack(b [4]byte) int32 {
	if b[0] != 0x20 || b[1] != 0x02 || b[2]&^1 != 0 || b[3] != 0 {
		return sessionUnknown
	}
	if b[2]&1 == 1 {
		return sessionResumed
	}
	return sessionNew
}

// sessionPresent reports the session present flag of the connection's
// CONNACK. paho v1.5 reads the flag but hands it only to the ConnectToken
// of the first Connect; a reconnect drops it (client.reconnect), so the
// intake takes it from the bytes. Once paho called OnConnect it has read
// the CONNACK, so the flag is known.
func (c *bufferedConn) sessionPresent() bool { return c.session.Load() == sessionResumed }

// Write queues p for the socket. It returns the error of an earlier socket
// write, if one failed.
func (c *bufferedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.pending) > 0 && len(c.pending)+len(p) > writeBufferLimit {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	c.pending = append(c.pending, p...)
	if !c.held || len(c.pending) >= holdLimit {
		c.cond.Broadcast()
	}
	return len(p), nil
}

// hold keeps what is written from now on in the buffer until release, up
// to holdLimit: the intake holds while it acknowledges a committed batch,
// so the batch's PUBACKs leave in one write instead of in as many as the
// writer goroutine can catch one by one.
func (c *bufferedConn) hold() {
	c.mu.Lock()
	c.held = true
	c.mu.Unlock()
}

// release ends a hold and hands what is pending to the socket.
func (c *bufferedConn) release() {
	c.mu.Lock()
	c.held = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *bufferedConn) writeLoop() {
	defer close(c.done)
	spare := make([]byte, 0, 4<<10)
	for {
		c.mu.Lock()
		for (len(c.pending) == 0 || c.held && len(c.pending) < holdLimit) && !c.closing && c.err == nil {
			c.cond.Wait()
		}
		if len(c.pending) == 0 || (c.err != nil && !c.closing) {
			c.mu.Unlock()
			return
		}
		out := c.pending
		c.pending = spare[:0]
		// Set under the lock, so a Close that comes later shortens it.
		var deadline time.Time
		switch {
		case c.closing:
			deadline = time.Now().Add(closeFlushTimeout)
		case c.timeout > 0:
			deadline = time.Now().Add(c.timeout)
		}
		_ = c.Conn.SetWriteDeadline(deadline)
		c.cond.Broadcast() // room for a waiting Write
		c.mu.Unlock()

		_, err := c.Conn.Write(out)
		spare = out
		if err != nil {
			c.mu.Lock()
			c.err = fmt.Errorf("write to broker: %w", err)
			c.pending = c.pending[:0]
			c.cond.Broadcast()
			c.mu.Unlock()
			_ = c.Conn.Close()
			return
		}
	}
}

// Close hands what is pending to the socket, for up to closeFlushTimeout,
// and closes the connection. paho closes a connection right after writing
// DISCONNECT, so the final PUBACKs of a clean stop still reach the broker.
func (c *bufferedConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		if c.err == nil {
			c.err = net.ErrClosed
		}
		// Also bounds a socket write already under way.
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	<-c.done
	return c.Conn.Close()
}

// SetDeadline sets the read deadline only: the writer goroutine owns the
// write deadline.
func (c *bufferedConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// SetWriteDeadline is a no-op: the writer goroutine owns the write deadline
// and applies mqtt.write_timeout to every socket write.
func (c *bufferedConn) SetWriteDeadline(time.Time) error { return nil }
