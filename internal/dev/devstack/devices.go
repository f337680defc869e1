package devstack

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Payload is what a simulated device publishes: its id and a counter that
// starts at 1 and has no gaps, so the verifier can tell lost, duplicated and
// reordered messages apart.
type Payload struct {
	Device string `json:"device"`
	N      int    `json:"n"`
}

// DeviceID names device i.
func DeviceID(i int) string { return fmt.Sprintf("dev-%03d", i) }

// DeviceTopic is the topic device id publishes to.
func DeviceTopic(id string) string { return "devices/" + id + "/telemetry" }

// Devices publishes Messages QoS 1 messages from each of N devices, each on
// a connection of its own, so the broker receives a device's messages in
// counter order.
type Devices struct {
	BrokerURL string
	N         int
	Messages  int
	// Rate is the total messages per second over all devices; 0 is as fast
	// as the broker takes them. Each device keeps to its schedule from the
	// start, so after a stall it catches up.
	Rate float64
	// Window is how many PUBACKs each device may await; default 32.
	Window int
	// Reconnect makes a device whose connection fails (a broker restart)
	// connect again and publish again from its first counter without a
	// PUBACK, as a real device with a clean session does. Without it Run
	// returns at the first failure.
	Reconnect bool

	// Published counts messages the broker acknowledged (PUBACK).
	Published atomic.Int64
	// Reconnects counts the connections made again after one failed.
	Reconnects atomic.Int64

	mu    sync.Mutex
	acked map[string]int // device -> highest counter with a PUBACK
}

// Total is how many messages the devices publish in all.
func (d *Devices) Total() int64 { return int64(d.N) * int64(d.Messages) }

// Acked returns, per device, the highest counter the broker acknowledged:
// a device publishes again from the first counter without a PUBACK, so
// counters 1 to that one were all acknowledged.
func (d *Devices) Acked() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.acked)
}

// Run connects every device and publishes until all messages are
// acknowledged by the broker, ctx ends, or (without Reconnect) a connection
// fails.
func (d *Devices) Run(ctx context.Context) error {
	start := time.Now()
	d.mu.Lock()
	d.acked = make(map[string]int, d.N)
	for i := range d.N {
		d.acked[DeviceID(i)] = 0
	}
	d.mu.Unlock()
	errc := make(chan error, d.N)
	var wg sync.WaitGroup
	for i := range d.N {
		id := DeviceID(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.device(ctx, id, start); err != nil {
				errc <- fmt.Errorf("%s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc // nil when every device finished
}

func (d *Devices) device(ctx context.Context, id string, start time.Time) error {
	next := 1 // first counter without a PUBACK
	for attempt := 0; next <= d.Messages; attempt++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt > 0 {
			d.Reconnects.Add(1)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if attempt > 3000 { // ten minutes of failing connections
			return fmt.Errorf("gave up after %d connection attempts", attempt)
		}
		n, err := d.session(ctx, id, next, start)
		if err == nil {
			return nil
		}
		if !d.Reconnect {
			return err
		}
		next = n
	}
	return nil
}

// session publishes from counter next on one connection until done or the
// connection fails, and returns the first counter without a PUBACK.
func (d *Devices) session(ctx context.Context, id string, next int, start time.Time) (int, error) {
	window := d.Window
	if window <= 0 {
		window = 32
	}
	opts := paho.NewClientOptions().
		AddBroker(d.BrokerURL).
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
	topic := DeviceTopic(id)
	pending := make([]inflight, 0, window)
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
			return fmt.Errorf("publish: %w", err)
		}
		d.mu.Lock()
		if f.n == d.acked[id]+1 {
			d.acked[id] = f.n
			d.Published.Add(1)
		}
		d.mu.Unlock()
		return nil
	}
	ackedUpTo := func() int {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.acked[id]
	}
	perDevice := d.Rate / float64(d.N)
	for n := next; n <= d.Messages; n++ {
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
		b, _ := json.Marshal(Payload{Device: id, N: n})
		pending = append(pending, inflight{n, c.Publish(topic, 1, false, b)})
		if len(pending) == window {
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
	return d.Messages + 1, nil
}
