package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Load is a set of simulated devices, each on its own MQTT connection,
// publishing QoS 1 to devices/<id>/telemetry.
type Load struct {
	BrokerURL string
	// Prefix names the devices (client ids and topics); default "bench".
	// Two Loads on one broker need different prefixes.
	Prefix  string
	Devices int
	Size    int // payload bytes
	// Window is how many PUBACKs each device may await.
	Window int

	clients []paho.Client
	next    []uint64 // per-device counter, continues across runs

	// Published counts PUBACKed messages over every run.
	Published atomic.Int64
}

func (l *Load) name(i int) string {
	if l.Prefix == "" {
		return fmt.Sprintf("bench-%03d", i)
	}
	return fmt.Sprintf("%s-%03d", l.Prefix, i)
}

// Connect opens every device's connection.
func (l *Load) Connect() error {
	if l.Window <= 0 {
		l.Window = 64
	}
	for i := range l.Devices {
		opts := paho.NewClientOptions().
			AddBroker(l.BrokerURL).
			SetClientID("dev-" + l.name(i)).
			SetCleanSession(true).
			SetAutoReconnect(false).
			SetConnectTimeout(10 * time.Second).
			SetWriteTimeout(10 * time.Second).
			SetKeepAlive(60 * time.Second)
		c := paho.NewClient(opts)
		if t := c.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
			l.Close()
			return fmt.Errorf("device %d connect: %v", i, t.Error())
		}
		l.clients = append(l.clients, c)
		l.next = append(l.next, 0)
	}
	return nil
}

// Close disconnects every device.
func (l *Load) Close() {
	for _, c := range l.clients {
		c.Disconnect(100)
	}
	l.clients = nil
}

// Run publishes phase-tagged messages until ctx is done or count messages
// (0: no limit) were acknowledged by the broker, at rate messages per second
// over all devices together (0: as fast as PUBACKs come back). A paced
// device that falls behind its schedule sends at once to catch up, so a
// slow broker shows up as latency, not as a lower offered rate. It returns
// the number of messages acknowledged in this run.
func (l *Load) Run(ctx context.Context, phase uint8, rate float64, count int) (int64, error) {
	var (
		wg   sync.WaitGroup
		done atomic.Int64
		errs = make(chan error, len(l.clients))
	)
	var quota atomic.Int64
	quota.Store(int64(count))
	start := time.Now()
	for i, c := range l.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var every time.Duration
			if rate > 0 {
				every = time.Duration(float64(time.Second) * float64(len(l.clients)) / rate)
			}
			if err := l.device(ctx, c, i, phase, start, every, count > 0, &quota, &done); err != nil {
				errs <- fmt.Errorf("device %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return done.Load(), <-errs
}

func (l *Load) device(ctx context.Context, c paho.Client, i int, phase uint8, start time.Time, every time.Duration, limited bool, quota, done *atomic.Int64) error {
	topic := "devices/" + l.name(i) + "/telemetry"
	pending := make([]paho.Token, 0, l.Window)
	buf := make([]byte, 0, l.Size)
	wait := func(t paho.Token) error {
		<-t.Done() // a PUBACK or a connection error: paho completes every token
		if err := t.Error(); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		done.Add(1)
		l.Published.Add(1)
		return nil
	}
	var timer *time.Timer
	for k := 0; ; k++ {
		if ctx.Err() != nil {
			break
		}
		if limited && quota.Add(-1) < 0 {
			break
		}
		if every > 0 {
			if d := time.Until(start.Add(time.Duration(k) * every)); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
				if ctx.Err() != nil {
					break
				}
			}
		}
		l.next[i]++
		buf = AppendPayload(buf, Payload{Phase: phase, Device: uint32(i), N: l.next[i], Publish: time.Now().UnixNano()}, l.Size)
		// paho keeps the slice until the packet is written: give it its own.
		pending = append(pending, c.Publish(topic, 1, false, append([]byte(nil), buf...)))
		if len(pending) == cap(pending) {
			if err := wait(pending[0]); err != nil {
				return err
			}
			pending = append(pending[:0], pending[1:]...)
		}
	}
	// Wait for what is in flight, without a deadline beyond a generous one:
	// a stopped run still counts what the broker took.
	drain, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, t := range pending {
		select {
		case <-t.Done():
			if t.Error() == nil {
				done.Add(1)
				l.Published.Add(1)
			}
		case <-drain.Done():
			return errors.New("publishes not acknowledged within 30s")
		}
	}
	return nil
}
