package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// SinkClientID is the ceiling subscriber's MQTT client id.
const SinkClientID = "bench-ceiling"

// TopicFilter matches every simulated device.
const TopicFilter = "devices/+/telemetry"

// RunSink is the ceiling: a raw paho QoS 1 subscriber on a persistent
// session, as the bridge subscribes, that acknowledges each message as soon
// as its handler returns and throws it away after noting its arrival. It
// runs in its own process (`edgebridge-bench sink`) so its CPU and memory
// are read from /proc exactly like the bridge's.
//
// Protocol on in/out, one line each: it prints "ready" once subscribed;
// "stats <phase>" answers a JSON PhaseStats line; end of input disconnects
// and returns.
func RunSink(brokerURL string, in io.Reader, out io.Writer) error {
	var rec Recorder
	subscribed := make(chan error, 1)
	opts := paho.NewClientOptions().
		AddBroker(brokerURL).
		SetClientID(SinkClientID).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetKeepAlive(60 * time.Second).
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			rec.Observe(m.Payload(), time.Now())
		})
	opts.SetOnConnectHandler(func(c paho.Client) {
		t := c.Subscribe(TopicFilter, 1, nil)
		go func() {
			t.Wait()
			subscribed <- t.Error()
		}()
	})
	c := paho.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("sink connect: %v", t.Error())
	}
	defer c.Disconnect(250)
	if err := <-subscribed; err != nil {
		return fmt.Errorf("sink subscribe: %w", err)
	}
	w := bufio.NewWriter(out)
	fmt.Fprintln(w, "ready")
	w.Flush()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		arg, ok := strings.CutPrefix(sc.Text(), "stats ")
		if !ok {
			return fmt.Errorf("sink: unknown command %q", sc.Text())
		}
		phase, err := strconv.ParseUint(arg, 10, 8)
		if err != nil {
			return fmt.Errorf("sink: bad phase %q", arg)
		}
		s := rec.Stats(uint8(phase))
		s.HistSparse = s.Hist.Sparse()
		b, _ := json.Marshal(s)
		w.Write(append(b, '\n'))
		w.Flush()
	}
	return sc.Err()
}

// Sink is a running `edgebridge-bench sink` child process.
type Sink struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	mu   sync.Mutex
	done chan error
}

// StartSink starts the ceiling subscriber as a child of the running
// executable and waits until it is subscribed.
func StartSink(ctx context.Context, brokerURL string) (*Sink, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	s := &Sink{cmd: exec.Command(self, "sink", "-mqtt", brokerURL), done: make(chan error, 1)}
	s.cmd.Stderr = os.Stderr
	if s.in, err = s.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s.out = bufio.NewScanner(stdout)
	s.out.Buffer(make([]byte, 1<<16), 1<<22)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sink: %w", err)
	}
	ready := make(chan bool, 1)
	go func() { ready <- s.out.Scan() && s.out.Text() == "ready" }()
	select {
	case ok := <-ready:
		if !ok {
			s.Kill()
			return nil, fmt.Errorf("sink did not start")
		}
	case <-ctx.Done():
		s.Kill()
		return nil, ctx.Err()
	}
	go func() { s.done <- s.cmd.Wait() }()
	return s, nil
}

// PID is the sink process's id.
func (s *Sink) PID() int { return s.cmd.Process.Pid }

// Stats asks the sink for a phase's stats.
func (s *Sink) Stats(phase uint8) (PhaseStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := fmt.Fprintf(s.in, "stats %d\n", phase); err != nil {
		return PhaseStats{}, fmt.Errorf("sink stats: %w", err)
	}
	if !s.out.Scan() {
		return PhaseStats{}, fmt.Errorf("sink stats: no answer: %v", s.out.Err())
	}
	var st PhaseStats
	if err := json.Unmarshal(s.out.Bytes(), &st); err != nil {
		return PhaseStats{}, fmt.Errorf("sink stats: %w", err)
	}
	st.Hist = FromSparse(st.HistSparse)
	return st, nil
}

// Stop closes the sink's input, so it disconnects cleanly (its session and
// subscription stay on the broker, which queues for it), and waits.
func (s *Sink) Stop() error {
	s.in.Close()
	select {
	case err := <-s.done:
		return err
	case <-time.After(10 * time.Second):
		s.Kill()
		return fmt.Errorf("sink did not stop")
	}
}

// Kill ends the sink at once.
func (s *Sink) Kill() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
	}
}

// ForgetSession connects as clientID with a clean session and leaves, so
// the broker drops that client's subscriptions and stops queueing for it.
func ForgetSession(brokerURL, clientID string) error {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID(clientID).SetCleanSession(true))
	if t := c.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("forget session %s: %v", clientID, t.Error())
	}
	c.Disconnect(100)
	return nil
}
