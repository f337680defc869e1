package devstack

import (
	"context"
	"encoding/json"
	"fmt"
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

// Devices publishes Messages QoS 1 messages from each of N devices.
type Devices struct {
	BrokerURL string
	N         int
	Messages  int
	// Rate is the total messages per second over all devices; 0 is as fast
	// as the broker takes them.
	Rate float64
	// Window is how many PUBACKs each device may await; default 32.
	Window int

	// Published counts messages the broker acknowledged (PUBACK).
	Published atomic.Int64
}

// Run connects every device and publishes until all messages are
// acknowledged by the broker, ctx ends, or a publish fails. Each device uses
// one connection, so the broker receives its messages in counter order.
func (d *Devices) Run(ctx context.Context) error {
	window := d.Window
	if window <= 0 {
		window = 32
	}
	var perDevice time.Duration
	if d.Rate > 0 {
		perDevice = time.Duration(float64(time.Second) * float64(d.N) / d.Rate)
	}
	errc := make(chan error, d.N)
	var wg sync.WaitGroup
	for i := range d.N {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.device(ctx, DeviceID(i), window, perDevice); err != nil {
				errc <- fmt.Errorf("%s: %w", DeviceID(i), err)
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc // nil when every device finished
}

func (d *Devices) device(ctx context.Context, id string, window int, every time.Duration) error {
	opts := paho.NewClientOptions().
		AddBroker(d.BrokerURL).
		SetClientID("sim-" + id).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetOrderMatters(true)
	c := paho.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("connect: %v", t.Error())
	}
	defer c.Disconnect(250)

	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	topic := DeviceTopic(id)
	pending := make([]paho.Token, 0, window)
	wait := func(t paho.Token) error {
		select {
		case <-t.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := t.Error(); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		d.Published.Add(1)
		return nil
	}
	for n := 1; n <= d.Messages; n++ {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		b, _ := json.Marshal(Payload{Device: id, N: n})
		pending = append(pending, c.Publish(topic, 1, false, b))
		if len(pending) == window {
			if err := wait(pending[0]); err != nil {
				return err
			}
			pending = pending[1:]
		}
	}
	for _, t := range pending {
		if err := wait(t); err != nil {
			return err
		}
	}
	return nil
}
