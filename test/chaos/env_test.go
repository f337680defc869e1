//go:build chaos

package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
	"github.com/edgebridge/edgebridge/test/kafka"
)

// bridgeBin is the edgebridge binary TestMain builds once.
var bridgeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgebridge-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	bridgeBin, err = devstack.BuildBridge(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	if len(rows) > 0 {
		fmt.Printf("\nresults (%s mode):\n%s\n", mode(), table())
		if os.Getenv("EDGEBRIDGE_WRITE_RELIABILITY") == "1" {
			if err := writeReliability(mode(), code == 0); err != nil {
				fmt.Fprintln(os.Stderr, "write docs/reliability.md:", err)
				code = 1
			}
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// soak selects the full sizes (make soak); the default is the CI size.
func soak() bool { return os.Getenv("EDGEBRIDGE_SOAK") == "1" }

func mode() string {
	if soak() {
		return "soak (full sizes)"
	}
	return "ci"
}

func pick[T any](ci, full T) T {
	if soak() {
		return full
	}
	return ci
}

func kafkaVersion() string { return kafka.Version }

type envOpts struct {
	brokers    int   // 1 or 3
	partitions int32 // default 8
	// netns runs the bridge in a network namespace of its own, reaching
	// Kafka through a veth pair and a relay on its host end.
	netns bool
	// slowLink makes that link slow and lossy: 300ms each way and 5%
	// packet loss each way, with tc netem when the kernel has it, else
	// with the relay's delay and iptables statistic drops.
	slowLink  bool
	bufferDir string // default a directory in t.TempDir()
	bridge    func(*devstack.BridgeConfig)
}

// env is one scenario's stack: real Kafka, mosquitto, the real bridge and
// an independent verifier reading the topic.
type env struct {
	t      *testing.T
	ctx    context.Context
	dir    string
	topic  string
	kafka  *kafka.Cluster
	net    *edgeNet
	relays []*relay
	mq     *devstack.Mosquitto
	br     *devstack.Bridge
	brLog  string      // the bridge's stdout and stderr, over every run
	mem    *memSampler // the bridge's memory, over every run
	v      *devstack.Verifier
	t0     time.Time
	link   string // how the slow link was made

	recorded bool // verify added the scenario's row
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.brokers == 0 {
		o.brokers = 1
	}
	if o.partitions == 0 {
		o.partitions = 8
	}
	ctx, cancel := context.WithTimeout(context.Background(), pick(20*time.Minute, 90*time.Minute))
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, dir: t.TempDir(), topic: "edge.telemetry", t0: time.Now()}
	// A scenario that stops before its final check still gets a row.
	t.Cleanup(func() {
		if e.recorded {
			return
		}
		switch {
		case t.Failed():
			addRow(row{Scenario: "- " + t.Name(), Drain: "-", Duration: time.Since(e.t0), Notes: "FAILED before the final check (see the test log)"})
		case t.Skipped():
			addRow(row{Scenario: "- " + t.Name(), Drain: "-", Notes: "skipped (needs root)"})
		}
	})
	kopts := kafka.Options{Brokers: o.brokers, Dir: filepath.Join(e.dir, "kafka")}
	if o.netns {
		e.net = newEdgeNet(t)
		var delay time.Duration
		if o.slowLink {
			if e.net.netem {
				e.net.setNetem([]string{"delay", "300ms", "loss", "5%"})
				e.link = "tc netem delay 300ms loss 5% on both ends of the Kafka veth"
			} else {
				delay = 300 * time.Millisecond
				e.net.lossy(0.05, true)
				e.link = "kernel without sch_netem: relay delay 300ms each way + iptables statistic 5% drop each way on the Kafka veth"
			}
		}
		for range o.brokers {
			r, err := newRelay(e.net.HostKafka+":0", delay)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(r.close)
			e.relays = append(e.relays, r)
			kopts.EdgeAdvertised = append(kopts.EdgeAdvertised, r.addr())
		}
	}
	e.kafka = kafka.Start(t, kopts)
	for i, r := range e.relays {
		r.setTarget(e.kafka.Broker(i).EdgeBind)
	}
	if err := e.kafka.CreateTopic(ctx, e.topic, o.partitions); err != nil {
		t.Fatal(err)
	}
	mqDir := filepath.Join(e.dir, "mosquitto")
	if err := os.MkdirAll(mqDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// mosquitto as docs/mqtt-broker.md tells an edge node to run it, with a
	// second listener for a bridge in a namespace.
	mo := devstack.MosquittoOptions{AutosaveInterval: 60 * time.Second}
	if e.net != nil {
		mo.Hosts = []string{e.net.HostMQTT}
	}
	mq, err := devstack.StartMosquittoWith(mqDir, mo)
	if errors.Is(err, devstack.ErrNoMosquitto) {
		t.Skip("needs mosquitto: apt-get install mosquitto (.ci/run installs it)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mq.Close() })
	e.mq = mq
	urls := e.mq.URLs()

	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := devstack.BridgeConfig{
		NodeID:       "chaos",
		MQTTURL:      urls[len(urls)-1], // the namespace's listener, if any
		Brokers:      e.kafka.Addrs(),
		Topic:        e.topic,
		BufferDir:    o.bufferDir,
		MaxBytes:     "2GiB",
		SegmentBytes: "16MiB",
		MinFreeDisk:  "16MiB",
		WhenFull:     "block",
		HTTPListen:   fmt.Sprintf("127.0.0.1:%d", port),
		LogFormat:    "json",
	}
	if cfg.BufferDir == "" {
		cfg.BufferDir = filepath.Join(e.dir, "buffer")
	}
	ns := ""
	if e.net != nil {
		cfg.Brokers = nil
		for _, r := range e.relays {
			cfg.Brokers = append(cfg.Brokers, r.addr())
		}
		cfg.HTTPListen = fmt.Sprintf("%s:%d", e.net.NSMQTT, port)
		ns = e.net.name
	}
	if o.bridge != nil {
		o.bridge(&cfg)
	}
	e.newBridge(cfg, ns)

	e.v = devstack.NewVerifier()
	vctx, vcancel := context.WithCancel(ctx)
	vdone := make(chan struct{})
	go func() { defer close(vdone); _ = e.v.Consume(vctx, e.kafka.Addrs(), e.topic) }()
	t.Cleanup(func() { vcancel(); <-vdone })
	return e
}

// newBridge writes cfg and sets up the real edgebridge binary (in network
// namespace ns, when not empty), its log and its memory sampler; the
// scenario starts it.
func (e *env) newBridge(cfg devstack.BridgeConfig, ns string) {
	t := e.t
	t.Helper()
	cfgPath := filepath.Join(e.dir, "edgebridge.yaml")
	if err := cfg.WriteFile(cfgPath); err != nil {
		t.Fatal(err)
	}
	e.brLog = filepath.Join(e.dir, "edgebridge.log")
	e.br = &devstack.Bridge{Bin: bridgeBin, Config: cfgPath, LogFile: e.brLog, Metrics: cfg.HTTPListen}
	if ns != "" {
		e.br.Prefix = []string{"ip", "netns", "exec", ns}
	}
	e.mem = sampleMemory(e.br.PID)
	t.Cleanup(func() {
		e.mem.close()
		e.br.Kill()
		if t.Failed() {
			out, _ := os.ReadFile(e.brLog)
			if len(out) > 6000 {
				out = out[len(out)-6000:]
			}
			t.Logf("bridge log tail:\n%s", out)
		}
	})
}

// launchBridge starts the bridge process; it waits for nothing.
func (e *env) launchBridge() {
	e.t.Helper()
	if err := e.br.Launch(); err != nil {
		e.t.Fatal(err)
	}
}

// bridgeReady waits (up to 2 minutes) for the bridge's /readyz.
func (e *env) bridgeReady() error {
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	return e.br.WaitReady(ctx)
}

// startBridge starts the bridge and waits until it is ready.
func (e *env) startBridge() {
	e.t.Helper()
	e.launchBridge()
	if err := e.bridgeReady(); err != nil {
		e.t.Fatal(err)
	}
}

// metric returns the sum of every series of name, or -1 when /metrics
// cannot be read.
func (e *env) metric(name string) float64 {
	m, err := e.br.Scrape()
	if err != nil {
		return -1
	}
	return m[name]
}

// waitFor polls cond every 50ms (each poll may scrape the bridge) until it
// holds, and fails the test, with what the verifier counted, when timeout
// passes or the test's own deadline does.
func (e *env) waitFor(what string, timeout time.Duration, cond func() bool) {
	e.t.Helper()
	held := false
	defer func() {
		if !held {
			e.t.Logf("verifier: %+v", e.v.Counts())
		}
	}()
	testkit.WaitEvery(e.t, timeout, 50*time.Millisecond, what, func() bool {
		if err := e.ctx.Err(); err != nil {
			e.t.Fatalf("waiting for %s: %v", what, err)
		}
		return cond()
	})
	held = true
}

// gauge reads a metric of the bridge, failing the test if /metrics does
// not answer.
func (e *env) gauge(name string) float64 {
	e.t.Helper()
	for range 50 {
		if v := e.metric(name); v >= 0 {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("bridge /metrics does not answer (reading %s)", name)
	return 0
}

// newDevices is n devices publishing messages each, at rate messages per
// second in all (0 is as fast as the broker takes them), that ride through
// a broker restart.
func newDevices(url string, n, messages int, rate float64) *devstack.Devices {
	return &devstack.Devices{BrokerURL: url, N: n, Messages: messages, Rate: rate, Reconnect: true}
}

// traffic is devices publishing in the background until stop or the end
// of the test.
type traffic struct {
	*devstack.Devices
	cancel context.CancelFunc
	done   <-chan error // Run's result
}

// startTraffic starts n devices publishing at rate messages per second in
// all, riding through broker restarts, until stopped.
func (e *env) startTraffic(n int, rate float64) *traffic {
	ctx, cancel := context.WithCancel(e.ctx)
	e.t.Cleanup(cancel)
	d := newDevices(e.mq.URL(), n, 1_000_000, rate)
	return &traffic{Devices: d, cancel: cancel, done: e.runDevices(ctx, d)}
}

// stop stops the devices and waits for them.
func (tr *traffic) stop() {
	tr.cancel()
	<-tr.done
}

// waitPublished waits up to timeout until d published n more messages.
func (e *env) waitPublished(what string, d *devstack.Devices, n int64, timeout time.Duration) {
	e.t.Helper()
	target := d.Published.Load() + n
	e.waitFor(what, timeout, func() bool { return d.Published.Load() >= target })
}

// runDevices starts d in the background; the returned channel gets its
// result.
func (e *env) runDevices(ctx context.Context, d *devstack.Devices) <-chan error {
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	return done
}

// verify waits (up to timeout) until every message the broker acknowledged
// to a device arrived, then checks order and records the scenario's row.
// It fails the test on any loss, reordering or bad record. dropped is what
// the bridge counted as dropped by its overflow policy: at most that many
// may be missing (more would be an uncounted loss; fewer is logged: counted
// drops that reached Kafka anyway).
func (e *env) verify(name string, d *devstack.Devices, timeout time.Duration, r row, dropped int64) devstack.Result {
	e.t.Helper()
	acked := d.Acked()
	var res devstack.Result
	deadline := time.Now().Add(timeout)
	for {
		res = e.v.Result(acked)
		if res.Lost <= dropped || time.Now().After(deadline) || e.ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	peak, _ := e.mem.memory()
	r.Scenario = name
	r.Messages, r.Lost, r.Duplicates = res.Acked, max(0, res.Lost-dropped), res.Duplicates
	if dropped > 0 {
		r.Notes += fmt.Sprintf("; missing %d of %d counted drops", res.Lost, dropped)
	}
	if r.PeakRSS == 0 {
		r.PeakRSS = peak
	}
	if r.Duration == 0 {
		r.Duration = time.Since(e.t0)
	}
	if r.Drain == "" {
		r.Drain = "-"
	}
	defer func() {
		if e.t.Failed() {
			r.Notes = "FAILED: " + r.Notes
		}
		addRow(r)
		e.recorded = true
	}()
	c := e.v.Counts()
	e.t.Logf("%s: acked %d, kafka records %d, unique %d, lost %d, duplicates %d, unacked arrivals %d, out of order %d, bad %d, split %d, peak RSS %s",
		name, res.Acked, c.Records, c.Unique, res.Lost, res.Duplicates, res.Extra, res.OutOfOrder, res.Bad, res.Split, mib(r.PeakRSS))
	if res.Acked == 0 {
		e.t.Error("no message was acknowledged by the broker: the scenario proved nothing")
	}
	switch {
	case dropped > 0 && res.Lost > dropped:
		e.t.Errorf("%d broker-acknowledged messages missing but the bridge counted only %d drops: %d vanished uncounted: %s", res.Lost, dropped, res.Lost-dropped, res.Detail)
	case dropped > 0 && res.Lost < dropped:
		// drop_oldest spares the records the forwarder has already read, so
		// a counted drop is a record that never reaches Kafka: the counter
		// must equal what is missing.
		e.t.Errorf("the bridge counted %d drops but only %d messages are missing: %d counted drops reached Kafka anyway", dropped, res.Lost, dropped-res.Lost)
	case dropped == 0 && res.Lost > 0:
		e.t.Errorf("LOST %d broker-acknowledged messages: %s", res.Lost, res.Detail)
	}
	if res.OutOfOrder > 0 || res.Bad > 0 || res.Split > 0 {
		e.t.Errorf("%d out of order, %d bad records, %d devices split across partitions: %s", res.OutOfOrder, res.Bad, res.Split, res.Detail)
	}
	return res
}

const (
	mBuffered = "edgebridge_buffer_records"
	mForward  = "edgebridge_forward_records_total"
	mKafkaUp  = "edgebridge_kafka_up"
	mAcked    = "edgebridge_mqtt_acked_total"
	mDropped  = "edgebridge_buffer_dropped_records_total"
)
