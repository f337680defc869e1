package mqtt

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// mosquitto is a real broker run by a test, on a loopback ephemeral port,
// with persistence in a temporary directory.
type mosquitto struct {
	t    testing.TB
	bin  string
	dir  string
	conf string
	addr string // host:port
	cmd  *exec.Cmd
	exit chan struct{}
}

const mosquittoMissing = "mosquitto not found; install mosquitto: apt-get install mosquitto"

func mosquittoBinary(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	t.Skip(mosquittoMissing)
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startMosquitto writes a config with a raised in-flight window and a
// queue deep enough for the backlog tests, and starts the broker.
func startMosquitto(t testing.TB) *mosquitto {
	t.Helper()
	return startMosquittoInflight(t, 1000)
}

func startMosquittoInflight(t testing.TB, inflight int) *mosquitto {
	t.Helper()
	m := &mosquitto{t: t, bin: mosquittoBinary(t), dir: t.TempDir()}
	port := freePort(t)
	m.addr = fmt.Sprintf("127.0.0.1:%d", port)
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
user root
persistence true
persistence_location %s/
autosave_interval 0
max_inflight_messages %d
max_queued_messages 1000000
max_queued_bytes 0
log_dest file %s/mosquitto.log
`, port, m.dir, inflight, m.dir)
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(m.kill)
	return m
}

func (m *mosquitto) url() string { return "tcp://" + m.addr }

func (m *mosquitto) start() {
	m.t.Helper()
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = io.Discard, io.Discard
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	m.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) { _ = cmd.Wait(); close(exit) }(m.cmd, m.exit)
	testkit.WaitFor(m.t, "mosquitto to listen", func() bool {
		select {
		case <-m.exit:
			log, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
			m.t.Fatalf("mosquitto exited at start:\n%s", log)
		default:
		}
		c, err := net.Dial("tcp", m.addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// stop ends mosquitto with SIGTERM: it saves its persistence file first.
func (m *mosquitto) stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	<-m.exit
	m.cmd = nil
}

func (m *mosquitto) kill() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.exit
	m.cmd = nil
}

// openBuffer opens the real durable buffer in dir.
func openBuffer(t testing.TB, dir string) *buffer.Queue {
	t.Helper()
	q, err := buffer.Open(buffer.Config{Dir: dir, MinFreeDisk: -1}, testkit.Logger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("open buffer: %v", err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

// readUntil reads the buffer in sequence order until stop returns true
// for a record, and returns everything read.
func readUntil(t testing.TB, q *buffer.Queue, stop func(buffer.Record) bool) []buffer.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var all []buffer.Record
	var after uint64
	for {
		recs, err := q.Read(ctx, after, 10000, 64<<20)
		if err != nil {
			t.Fatalf("read buffer after %d records: %v", len(all), err)
		}
		for _, r := range recs {
			all = append(all, r)
			after = r.Seq
			if stop(r) {
				return all
			}
		}
	}
}

// asyncPublisher publishes QoS 1 messages in order from one client,
// keeping a window of them in flight.
type asyncPublisher struct {
	c      paho.Client
	tokens []paho.Token
}

func newAsyncPublisher(t testing.TB, broker, id string) *asyncPublisher {
	return &asyncPublisher{c: newPublisher(t, broker, id)}
}

func (p *asyncPublisher) publish(t testing.TB, topic string, payload []byte) {
	p.tokens = append(p.tokens, p.c.Publish(topic, 1, false, payload))
	if len(p.tokens) >= 500 {
		p.flush(t)
	}
}

func (p *asyncPublisher) flush(t testing.TB) {
	for _, tok := range p.tokens {
		if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
			t.Errorf("publish: %v", tok.Error())
		}
	}
	p.tokens = p.tokens[:0]
}

// checkDeviceOrder asserts that per device the payload counters (device:
// %08d) appear in order 0..n-1: each record is either the next counter or
// a repeat of one already seen (a redelivery after a lost PUBACK), never
// a jump ahead.
func checkDeviceOrder(t testing.TB, recs []buffer.Record, devices []string, n int) (dups int) {
	t.Helper()
	next := map[string]int{}
	for _, r := range recs {
		if r.Reason != "" {
			t.Fatalf("record %d is a dead letter: %s", r.Seq, r.Reason)
		}
		e := decode(t, r)
		dev := e.GetDeviceId()
		p := string(e.GetPayload())
		if len(p) < 8 {
			t.Fatalf("unexpected payload %q", p)
		}
		i, err := strconv.Atoi(p[len(p)-8:])
		if err != nil {
			t.Fatalf("unexpected payload %q", p)
		}
		switch {
		case i == next[dev]:
			next[dev]++
		case i < next[dev]:
			dups++
		default:
			t.Fatalf("device %s: counter %d arrived when %d was next: out of order", dev, i, next[dev])
		}
	}
	for _, d := range devices {
		if next[d] != n {
			t.Errorf("device %s: %d of %d messages stored", d, next[d], n)
		}
	}
	return dups
}

// TestHelperBridgeChild is not a test: TestRedeliveryAfterSIGKILL runs the
// test binary again with EDGEBRIDGE_MQTT_CHILD set to be a bridge process
// whose sink takes the messages and never commits them.
func TestHelperBridgeChild(t *testing.T) {
	if os.Getenv("EDGEBRIDGE_MQTT_CHILD") == "" {
		t.Skip("helper process for TestRedeliveryAfterSIGKILL")
	}
	q := openBuffer(t, os.Getenv("EDGEBRIDGE_MQTT_BUFFER"))
	cfg := testConfig(os.Getenv("EDGEBRIDGE_MQTT_BROKER"))
	cfg.ClientID = os.Getenv("EDGEBRIDGE_MQTT_CLIENT_ID")
	want, _ := strconv.Atoi(os.Getenv("EDGEBRIDGE_MQTT_WANT"))
	sink := &fakeSink{hook: func(ctx context.Context, recs []buffer.Record) error {
		<-ctx.Done() // hold the batch: never reaches q.Append
		return ctx.Err()
	}}
	_ = q // held open, as by the daemon, when the SIGKILL comes
	sub := startSubscriber(t, cfg, sink)
	testkit.WaitFor(t, "ready", sub.Ready)
	fmt.Println("child: ready")
	testkit.WaitFor(t, "messages", func() bool { return testkit.Value(t, sub.m.received) >= float64(want) })
	fmt.Println("child: received")
	select {} // until SIGKILL
}

// Contract 1 (and 5): a bridge SIGKILLed after receiving messages and
// before committing them loses nothing: the broker redelivers them to the
// restarted bridge, which stores each exactly once, in order.
func TestRedeliveryAfterSIGKILL(t *testing.T) {
	if os.Getenv("EDGEBRIDGE_MQTT_CHILD") != "" {
		t.Skip("in child")
	}
	mq := startMosquitto(t)
	bufDir := t.TempDir()
	const n = 25
	child := exec.Command(os.Args[0], "-test.run=^TestHelperBridgeChild$", "-test.v")
	child.Env = append(os.Environ(),
		"EDGEBRIDGE_MQTT_CHILD=1",
		"EDGEBRIDGE_MQTT_BUFFER="+bufDir,
		"EDGEBRIDGE_MQTT_BROKER="+mq.url(),
		"EDGEBRIDGE_MQTT_CLIENT_ID=bridge-kill",
		"EDGEBRIDGE_MQTT_WANT="+strconv.Itoa(n),
	)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	lines := testkit.Lines(out)
	expect := func(want string) {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("child exited before %q", want)
				}
				if l == want {
					return
				}
			case <-timeout:
				t.Fatalf("child did not print %q", want)
			}
		}
	}
	expect("child: ready")
	pub := newPublisher(t, mq.url(), "pub")
	for i := range n {
		publish(t, pub, "devices/k/telemetry", 1, false, payloadOf("k", i))
	}
	expect("child: received")
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()

	q := openBuffer(t, bufDir)
	cfg := testConfig(mq.url())
	cfg.ClientID = "bridge-kill"
	startSubscriber(t, cfg, q)
	// A marker published after the restart arrives after every
	// redelivered message, so the buffer is complete once it is there.
	publish(t, pub, "devices/marker/telemetry", 1, false, payloadOf("marker", 0))
	recs := readUntil(t, q, func(r buffer.Record) bool { return string(r.Key) == "marker" })
	if len(recs) != n+1 {
		t.Fatalf("buffer holds %d records before the marker, want %d (each message once)", len(recs)-1, n)
	}
	if dups := checkDeviceOrder(t, recs[:n], []string{"k"}, n); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
}

// Contract 1, observed at mosquitto: after the bridge stops with messages
// received but not committed, a new connection of the same session gets
// back exactly those messages, and none of those committed before. The
// broker redelivers what was not acknowledged, so this shows no PUBACK
// left before its commit, and every committed message's PUBACK did.
func TestNoPubackBeforeCommitAtMosquitto(t *testing.T) {
	mq := startMosquitto(t)
	cfg := testConfig(mq.url())
	cfg.ClientID = "bridge-observed"
	cfg.DrainTimeout = 200 * time.Millisecond
	var mu sync.Mutex
	blocking := false
	sink := &fakeSink{hook: func(ctx context.Context, recs []buffer.Record) error {
		mu.Lock()
		b := blocking
		mu.Unlock()
		if b {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}}
	sub := startSubscriber(t, cfg, sink)
	testkit.WaitFor(t, "bridge ready", sub.Ready)
	pub := newPublisher(t, mq.url(), "pub")
	const committed, held = 10, 40
	for i := range committed {
		publish(t, pub, "devices/o/telemetry", 1, false, payloadOf("o", i))
	}
	testkit.WaitFor(t, "first messages acknowledged", func() bool { return testkit.Value(t, sub.m.acked) == committed })
	mu.Lock()
	blocking = true
	mu.Unlock()
	for i := committed; i < committed+held; i++ {
		publish(t, pub, "devices/o/telemetry", 1, false, payloadOf("o", i))
	}
	testkit.WaitFor(t, "held messages received", func() bool { return testkit.Value(t, sub.m.received) == committed+held })
	if err := sub.stop(t); err != nil {
		t.Fatal(err)
	}

	// Resume the session with a plain client that acknowledges at once.
	got := make(chan string, 2*(committed+held))
	o := paho.NewClientOptions().AddBroker(mq.url()).SetClientID(cfg.ClientID).SetCleanSession(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	publish(t, pub, "devices/o/telemetry", 1, false, []byte("marker"))
	var redelivered []string
	for p := range got {
		if p == "marker" {
			break
		}
		redelivered = append(redelivered, p)
	}
	if len(redelivered) != held {
		t.Fatalf("broker redelivered %d messages, want the %d never committed: %q", len(redelivered), held, redelivered)
	}
	for i, p := range redelivered {
		if want := string(payloadOf("o", committed+i)); p != want {
			t.Fatalf("redelivered[%d] = %q, want %q", i, p, want)
		}
	}
}

// tcpProxy forwards loopback connections to a broker and can cut them
// all, which the bridge sees as a lost connection.
type tcpProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startProxy(t testing.TB, target string) *tcpProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{l: l, target: target}
	p.wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(out, in); out.Close() })
			p.wg.Go(func() { _, _ = io.Copy(in, out); in.Close() })
		}
	})
	t.Cleanup(func() { l.Close(); p.cut(); p.wg.Wait() })
	return p
}

func (p *tcpProxy) url() string { return "tcp://" + p.l.Addr().String() }

func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Contract 3: per device, records reach the buffer in the order the broker
// delivered them, across lost connections. The bridge's connection is cut
// three times mid-stream; what was in flight comes again (duplicates are
// allowed, contract 5) but nothing is skipped or reordered.
func TestPerDeviceOrderAcrossReconnects(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	mq := startMosquitto(t)
	proxy := startProxy(t, mq.addr)
	q := openBuffer(t, t.TempDir())
	cfg := testConfig(proxy.url())
	cfg.ClientID = "bridge-order"
	cfg.MaxReconnectInterval = 200 * time.Millisecond
	cfg.ConnectRetryInterval = 20 * time.Millisecond
	sub := startSubscriber(t, cfg, q)
	testkit.WaitFor(t, "bridge ready", sub.Ready)

	devices := []string{"d0", "d1", "d2", "d3", "d4"}
	const per = 4000
	pubDone := make(chan struct{})
	p := newAsyncPublisher(t, mq.url(), "pub-order")
	go func() {
		defer close(pubDone)
		for i := range per {
			for _, d := range devices {
				p.publish(t, "devices/"+d+"/telemetry", payloadOf(d, i))
			}
		}
		p.flush(t)
	}()
	total := len(devices) * per
	for _, at := range []float64{0.2, 0.5, 0.8} {
		testkit.WaitFor(t, "progress", func() bool { return testkit.Value(t, sub.m.acked) >= at*float64(total) })
		lost := testkit.Value(t, sub.m.connLost)
		proxy.cut()
		testkit.WaitFor(t, "reconnect", func() bool { return testkit.Value(t, sub.m.connLost) > lost && sub.Ready() })
	}
	<-pubDone
	seen := map[string]int{}
	recs := readUntil(t, q, func(r buffer.Record) bool {
		e := decode(t, r)
		if string(e.GetPayload()) == string(payloadOf(e.GetDeviceId(), per-1)) {
			seen[e.GetDeviceId()]++
		}
		return len(seen) == len(devices)
	})
	dups := checkDeviceOrder(t, recs, devices, per)
	t.Logf("%d records, %d duplicates after 3 reconnects", len(recs), dups)
}

// Contract 3 and backpressure: 100k messages queued at mosquitto while the
// bridge is down are all drained into the buffer, in order, once it
// starts; the bridge's bounded pipeline holds only what the broker's
// in-flight window lets through.
func TestBacklogDrainedInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	mq := startMosquitto(t)
	cfg := testConfig(mq.url())
	cfg.ClientID = "bridge-backlog"
	first := startSubscriber(t, cfg, &fakeSink{})
	testkit.WaitFor(t, "session created", first.Ready)
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}

	devices := []string{"d0", "d1", "d2", "d3"}
	const per = 25000
	p := newAsyncPublisher(t, mq.url(), "pub-backlog")
	for i := range per {
		for _, d := range devices {
			p.publish(t, "devices/"+d+"/telemetry", payloadOf(d, i))
		}
	}
	p.flush(t)

	q := openBuffer(t, t.TempDir())
	startSubscriber(t, cfg, q)
	total := len(devices) * per
	n := 0
	recs := readUntil(t, q, func(buffer.Record) bool { n++; return n == total })
	if dups := checkDeviceOrder(t, recs, devices, per); dups != 0 {
		t.Errorf("%d duplicates without any crash or reconnect", dups)
	}
}
