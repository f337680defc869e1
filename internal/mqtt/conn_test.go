package mqtt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// countingConn counts the writes that reach it and can be told to fail them.
type countingConn struct {
	net.Conn
	writes atomic.Int32
	fail   error
	closed atomic.Bool
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	if c.fail != nil {
		return 0, c.fail
	}
	return c.Conn.Write(p)
}

func (c *countingConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// pubacks returns n 4-byte PUBACK packets for message ids 1..n.
func pubacks(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte{0x40, 0x02, 0, 0}
		binary.BigEndian.PutUint16(out[i][2:], uint16(i+1))
	}
	return out
}

// Contract clause 1: PUBACKs go out in receipt order. The bytes of a burst
// reach the broker in the order paho wrote them, and the burst that piled up
// behind a write in progress costs one more write, not one per PUBACK.
func TestBufferedConnGathersWritesInOrder(t *testing.T) {
	client, broker := net.Pipe() // a Write blocks until the broker side reads
	cc := &countingConn{Conn: client}
	c := newBufferedConn(cc, 0)
	defer c.Close()

	var want bytes.Buffer
	for _, p := range pubacks(1000) {
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		want.Write(p)
	}
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(broker, got); err != nil {
		t.Fatalf("broker read: %v", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the broker received the PUBACKs out of order or altered")
	}
	// The first write took what was pending when the writer woke; it was
	// blocked until the broker read, so the rest went in one more.
	if n := cc.writes.Load(); n > 2 {
		t.Errorf("1000 PUBACKs took %d socket writes, want at most 2", n)
	}
}

// A failed socket write is reported by the next Write and closes the
// connection, so paho's reader fails too and paho reconnects.
func TestBufferedConnWriteErrorClosesConnection(t *testing.T) {
	client, broker := net.Pipe()
	defer broker.Close()
	boom := errors.New("connection reset by broker")
	cc := &countingConn{Conn: client, fail: boom}
	c := newBufferedConn(cc, 0)

	if _, err := c.Write([]byte{0x40, 0x02, 0, 1}); err != nil {
		t.Fatalf("first Write: %v", err)
	}
	<-c.done // the writer goroutine ends on the error
	if _, err := c.Write([]byte{0x40, 0x02, 0, 2}); !errors.Is(err, boom) {
		t.Fatalf("Write after a failed socket write = %v, want %v", err, boom)
	}
	if !cc.closed.Load() {
		t.Fatal("the connection was not closed after a failed write")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read succeeded on a connection closed by a failed write")
	}
	_ = c.Close()
}

// What paho wrote before Close (the last PUBACKs and DISCONNECT of a clean
// stop) reaches the broker; the broker would otherwise redeliver them.
func TestBufferedConnCloseFlushes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan []byte, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			received <- nil
			return
		}
		defer s.Close()
		b, _ := io.ReadAll(s)
		received <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newBufferedConn(raw, 10*time.Second)
	var want bytes.Buffer
	for _, p := range pubacks(5000) {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		want.Write(p)
	}
	want.Write([]byte{0xe0, 0x00}) // DISCONNECT
	if _, err := c.Write([]byte{0xe0, 0x00}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := <-received; !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("broker received %d bytes, want the %d written before Close", len(got), want.Len())
	}
	if _, err := c.Write([]byte{0x40, 0x02, 0, 1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v, want net.ErrClosed", err)
	}
}

// A broker that stops reading cannot hold Close (and with it paho's
// reconnect) past the flush timeout, and a Write waiting for room fails.
func TestBufferedConnCloseWithStuckBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, err := ln.Accept()
		if err == nil {
			accepted <- s // never read
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { (<-accepted).Close() }()
	c := newBufferedConn(raw, time.Hour)

	writeErr := make(chan error, 1)
	go func() {
		chunk := make([]byte, 16<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	// Stuck: the kernel's buffers are full and pending is at its limit.
	testkit.WaitFor(t, "writes to back up", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending)+16<<10 > writeBufferLimit
	})

	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * closeFlushTimeout):
		t.Fatal("Close did not return with the broker not reading")
	}
	select {
	case err := <-writeErr:
		if err == nil {
			t.Fatal("blocked Write returned no error")
		}
	case <-time.After(10 * closeFlushTimeout):
		t.Fatal("a Write waiting for room did not return after Close")
	}
}

// While the intake holds the connection, the PUBACKs of a batch stay in
// the buffer, and release sends them in one write. A hold never keeps back
// more than holdLimit, so paho never blocks on it.
func TestBufferedConnHold(t *testing.T) {
	client, broker := net.Pipe()
	defer broker.Close()
	cc := &countingConn{Conn: client}
	c := newBufferedConn(cc, 0)
	defer c.Close()
	_ = broker.SetReadDeadline(time.Now().Add(time.Minute)) // a broken hold fails, not hangs

	c.hold()
	var want bytes.Buffer
	for _, p := range pubacks(100) {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		want.Write(p)
	}
	if n := cc.writes.Load(); n != 0 {
		t.Fatalf("%d socket writes while held, want none", n)
	}
	c.release()
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(broker, got); err != nil {
		t.Fatalf("broker read after release: %v", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the held PUBACKs arrived out of order or altered")
	}
	if n := cc.writes.Load(); n != 1 {
		t.Errorf("a released batch of 100 PUBACKs took %d socket writes, want 1", n)
	}

	// Past holdLimit the writer writes although the hold is on.
	c.hold()
	defer c.release()
	big := bytes.Repeat([]byte{0x40}, holdLimit)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, len(big))
	if _, err := io.ReadFull(broker, got); err != nil {
		t.Fatalf("%d bytes held back: %v", len(big), err)
	}
}
