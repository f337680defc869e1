//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgebridge/edgebridge/internal/devstack"
)

// devices publishes QoS 1 messages from n simulated devices, each counting
// 1, 2, 3... on its own connection. Unlike devstack.Devices they ride
// through a broker restart: a device whose connection drops reconnects and
// publishes again from its first counter without a PUBACK, as a real device
// with a clean session does. acked records, per device, the highest counter
// the broker acknowledged.
type devices struct {
	url      string
	n        int
	messages int     // per device
	rate     float64 // total messages per second; 0 = as fast as the broker takes them
	window   int

	published atomic.Int64 // PUBACKs received
	reconnect atomic.Int64

	mu    sync.Mutex
	acked map[string]int
}

func newDevices(url string, n, messages int, rate float64) *devices {
	return &devices{url: url, n: n, messages: messages, rate: rate, window: 32, acked: map[string]int{}}
}

func (d *devices) total() int64 { return int64(d.n) * int64(d.messages) }

// ackedSnapshot copies acked.
func (d *devices) ackedSnapshot() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(d.acked))
	for k, v := range d.acked {
		out[k] = v
	}
	return out
}

// run publishes until every device is done or ctx ends.
func (d *devices) run(ctx context.Context) error {
	errc := make(chan error, d.n)
	var wg sync.WaitGroup
	for i := range d.n {
		id := devstack.DeviceID(i)
		d.mu.Lock()
		d.acked[id] = 0
		d.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.device(ctx, id); err != nil {
				errc <- fmt.Errorf("%s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func (d *devices) device(ctx context.Context, id string) error {
	start := time.Now()
	perDevice := d.rate / float64(d.n)
	next := 1 // first counter without a PUBACK
	for attempt := 0; next <= d.messages; attempt++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt > 0 {
			d.reconnect.Add(1)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if attempt > 3000 { // ten minutes of failing connections
			return fmt.Errorf("gave up after %d connection attempts", attempt)
		}
		n, err := d.session(ctx, id, next, start, perDevice)
		next = n
		if err == nil {
			return nil
		}
	}
	return nil
}

// session publishes from counter next on one connection until done or the
// connection fails, and returns the first counter without a PUBACK.
func (d *devices) session(ctx context.Context, id string, next int, start time.Time, perDevice float64) (int, error) {
	opts := paho.NewClientOptions().
		AddBroker(d.url).
		SetClientID("sim-" + id).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetOrderMatters(true)
	lost := make(chan struct{})
	var once sync.Once
	opts.SetConnectionLostHandler(func(paho.Client, error) { once.Do(func() { close(lost) }) })
	c := paho.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return next, fmt.Errorf("connect: %v", t.Error())
	}
	defer c.Disconnect(100)

	type inflight struct {
		n int
		t paho.Token
	}
	topic := devstack.DeviceTopic(id)
	pending := make([]inflight, 0, d.window)
	wait := func(f inflight) error {
		select {
		case <-f.t.Done():
		case <-lost:
			return fmt.Errorf("connection lost")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(60 * time.Second):
			return fmt.Errorf("no PUBACK for %d after 60s", f.n)
		}
		if err := f.t.Error(); err != nil {
			return err
		}
		d.mu.Lock()
		if f.n == d.acked[id]+1 {
			d.acked[id] = f.n
			d.published.Add(1)
		}
		d.mu.Unlock()
		return nil
	}
	ackedUpTo := func() int {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.acked[id]
	}
	for n := next; n <= d.messages; n++ {
		if perDevice > 0 {
			// Pace by the schedule since start, so a reconnect catches up.
			due := start.Add(time.Duration(float64(n-1) / perDevice * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return ackedUpTo() + 1, ctx.Err()
				}
			}
		}
		b, _ := json.Marshal(devstack.Payload{Device: id, N: n})
		pending = append(pending, inflight{n, c.Publish(topic, 1, false, b)})
		if len(pending) == d.window {
			if err := wait(pending[0]); err != nil {
				return ackedUpTo() + 1, err
			}
			pending = pending[1:]
		}
	}
	for _, f := range pending {
		if err := wait(f); err != nil {
			return ackedUpTo() + 1, err
		}
	}
	return d.messages + 1, nil
}
