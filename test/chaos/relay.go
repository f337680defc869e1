//go:build chaos

package chaos

import (
	"io"
	"net"
	"sync"
	"time"
)

// relay forwards TCP connections from a listener to target, holding every
// chunk for delay in each direction (order kept). The namespace scenarios
// put it on the host end of the Kafka veth, where the brokers advertise
// their EDGE listener: the bridge's Kafka traffic crosses the veth (where
// the faults act) and the relay. With delay 0 it only forwards; with a
// delay it stands in for `tc netem delay` on kernels without sch_netem.
type relay struct {
	ln    net.Listener
	delay time.Duration

	targetMu sync.Mutex
	target   string

	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// newRelay listens on listen; connections are refused until setTarget.
func newRelay(listen string, delay time.Duration) (*relay, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln, delay: delay, conns: map[net.Conn]bool{}}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) setTarget(addr string) {
	r.targetMu.Lock()
	r.target = addr
	r.targetMu.Unlock()
}

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.targetMu.Lock()
		target := r.target
		r.targetMu.Unlock()
		u, err := net.DialTimeout("tcp", target, 5*time.Second)
		if target == "" || err != nil {
			c.Close()
			continue
		}
		if !r.track(c, u) {
			return
		}
		r.wg.Add(2)
		go r.pipe(u, c)
		go r.pipe(c, u)
	}
}

func (r *relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		r.conns[c] = true
	}
	return true
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, each chunk no earlier than delay after it was
// read. Closing either side closes both.
func (r *relay) pipe(dst, src net.Conn) {
	defer r.wg.Done()
	defer dst.Close()
	defer src.Close()
	if r.delay == 0 {
		_, _ = io.Copy(dst, src)
		return
	}
	q := make(chan chunk, 4096)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], time.Now().Add(r.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			src.Close()
			for range q { // let the reader finish
			}
			return
		}
	}
}

func (r *relay) close() {
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}
