// Package kafka runs real Apache Kafka brokers (KRaft) for the chaos suite:
// the release in pom.xml, fetched from Maven Central into a cache on first
// use and run with the machine's Java. Everything listens on 127.0.0.1; a
// second loopback listener per broker can be advertised under an address of
// the test's own (Options.EdgeAdvertised).
//
// One broker (Options.Brokers 1) is a combined broker+controller node. Three
// brokers run beside a dedicated controller node, with replication factor 3
// and min.insync.replicas=2: stopping two brokers then leaves a live
// controller that shrinks the ISR, so acks=all produces fail with
// NOT_ENOUGH_REPLICAS (with three combined nodes the quorum would be gone and
// produces would only time out).
package kafka

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
)

// Options shape a cluster.
type Options struct {
	// Brokers is 1 (default) or 3.
	Brokers int
	// Dir holds each node's config, data and log. Default t.TempDir().
	Dir string
	// HeapMB is each broker's JVM heap. Default 384 (256 with 3 brokers).
	HeapMB int
	// EdgeAdvertised, if set, adds a second listener named EDGE to broker i,
	// bound on loopback (Node.EdgeBind) and advertised as EdgeAdvertised[i]:
	// a client in a network namespace reaches the brokers through a relay
	// the test runs at those addresses (on the host end of its veth), while
	// the test's own clients keep using the PLAINTEXT listener (Addrs).
	EdgeAdvertised []string
}

// Cluster is a running set of nodes.
type Cluster struct {
	t       testing.TB
	opts    Options
	libs    string
	brokers []*Node
	ctrl    *Node // dedicated controller (3 brokers only)
}

// Node is one Kafka process: a broker (possibly also the controller) or the
// dedicated controller.
type Node struct {
	ID       int
	Addr     string // PLAINTEXT listener on loopback ("" for the controller)
	EdgeBind string // EDGE listener on loopback, if Options.EdgeAdvertised was set
	dir      string
	props    string
	libs     string
	heapMB   int
	ctrlAddr string // CONTROLLER listener, for a node with the controller role

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Start formats and starts a cluster and waits until every broker is in the
// cluster metadata. It skips the test when Java or Maven is missing; the
// cluster is killed in t.Cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Brokers == 0 {
		opts.Brokers = 1
	}
	if opts.Brokers != 1 && opts.Brokers != 3 {
		t.Fatalf("kafka: Options.Brokers must be 1 or 3, got %d", opts.Brokers)
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.HeapMB == 0 {
		opts.HeapMB = 384
		if opts.Brokers == 3 {
			opts.HeapMB = 256
		}
	}
	libs, err := Libs()
	if errors.Is(err, ErrNoJava) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, opts: opts, libs: libs}
	t.Cleanup(c.killAll)
	if err := c.configure(); err != nil {
		t.Fatal(err)
	}
	if err := c.format(); err != nil {
		t.Fatal(err)
	}
	nodes := c.Nodes()
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { errs <- n.start() }()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, b := range c.brokers {
		if err := c.WaitBroker(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Addrs are the brokers' loopback addresses (the test's own clients).
func (c *Cluster) Addrs() []string {
	var out []string
	for _, b := range c.brokers {
		out = append(out, b.Addr)
	}
	return out
}

// Broker returns broker i (0-based).
func (c *Cluster) Broker(i int) *Node { return c.brokers[i] }

// Nodes are every process of the cluster: brokers, then the controller.
func (c *Cluster) Nodes() []*Node {
	nodes := append([]*Node(nil), c.brokers...)
	if c.ctrl != nil {
		nodes = append(nodes, c.ctrl)
	}
	return nodes
}

func (c *Cluster) killAll() {
	for _, n := range c.Nodes() {
		n.Kill()
	}
	if c.t.Failed() {
		for _, n := range c.Nodes() {
			c.t.Logf("kafka node %d log tail:\n%s", n.ID, n.LogTail(1500))
		}
	}
}

const log4j2 = `status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
logger.ctrl.name = org.apache.kafka.controller
logger.ctrl.level = info
`

func (c *Cluster) configure() error {
	n := c.opts.Brokers
	rf, minISR := 1, 1
	if n == 3 {
		rf, minISR = 3, 2
	}
	newNode := func(id int, broker, controller bool) (*Node, error) {
		node := &Node{ID: id, dir: filepath.Join(c.opts.Dir, fmt.Sprintf("node-%d", id)), libs: c.libs, heapMB: c.opts.HeapMB}
		if err := os.MkdirAll(node.dir, 0o755); err != nil {
			return nil, err
		}
		if broker {
			p, err := devstack.FreePort()
			if err != nil {
				return nil, err
			}
			node.Addr = fmt.Sprintf("127.0.0.1:%d", p)
			if len(c.opts.EdgeAdvertised) > 0 {
				p, err := devstack.FreePort()
				if err != nil {
					return nil, err
				}
				node.EdgeBind = fmt.Sprintf("127.0.0.1:%d", p)
			}
		}
		if controller {
			p, err := devstack.FreePort()
			if err != nil {
				return nil, err
			}
			node.ctrlAddr = fmt.Sprintf("127.0.0.1:%d", p)
		}
		return node, nil
	}
	var voter *Node
	if n == 1 {
		b, err := newNode(1, true, true)
		if err != nil {
			return err
		}
		c.brokers, voter = []*Node{b}, b
	} else {
		ctrl, err := newNode(100, false, true)
		if err != nil {
			return err
		}
		ctrl.heapMB = 192
		c.ctrl, voter = ctrl, ctrl
		for i := 1; i <= n; i++ {
			b, err := newNode(i, true, false)
			if err != nil {
				return err
			}
			c.brokers = append(c.brokers, b)
		}
	}
	if len(c.opts.EdgeAdvertised) > 0 && len(c.opts.EdgeAdvertised) != n {
		return fmt.Errorf("kafka: %d EdgeAdvertised addresses for %d brokers", len(c.opts.EdgeAdvertised), n)
	}
	for _, node := range c.Nodes() {
		var roles, listeners, advertised []string
		if node.Addr != "" {
			roles = append(roles, "broker")
			listeners = append(listeners, "PLAINTEXT://"+node.Addr)
			advertised = append(advertised, "PLAINTEXT://"+node.Addr)
			if node.EdgeBind != "" {
				listeners = append(listeners, "EDGE://"+node.EdgeBind)
				advertised = append(advertised, "EDGE://"+c.opts.EdgeAdvertised[node.ID-1])
			}
		}
		if node.ctrlAddr != "" {
			roles = append(roles, "controller")
			listeners = append(listeners, "CONTROLLER://"+node.ctrlAddr)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "process.roles=%s\n", strings.Join(roles, ","))
		fmt.Fprintf(&b, "node.id=%d\n", node.ID)
		fmt.Fprintf(&b, "controller.quorum.voters=%d@%s\n", voter.ID, voter.ctrlAddr)
		fmt.Fprintf(&b, "controller.listener.names=CONTROLLER\n")
		fmt.Fprintf(&b, "listeners=%s\n", strings.Join(listeners, ","))
		if len(advertised) > 0 {
			fmt.Fprintf(&b, "advertised.listeners=%s\n", strings.Join(advertised, ","))
			fmt.Fprintf(&b, "inter.broker.listener.name=PLAINTEXT\n")
		}
		fmt.Fprintf(&b, "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,EDGE:PLAINTEXT\n")
		fmt.Fprintf(&b, "log.dirs=%s\n", filepath.Join(node.dir, "data"))
		fmt.Fprintf(&b, `num.partitions=1
default.replication.factor=%[1]d
min.insync.replicas=%[2]d
offsets.topic.replication.factor=%[1]d
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=%[1]d
transaction.state.log.min.isr=%[2]d
share.coordinator.state.topic.replication.factor=%[1]d
share.coordinator.state.topic.min.isr=%[2]d
auto.create.topics.enable=false
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.cleaner.enable=false
# Fence a dead broker within seconds, not the default 9.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=500
controlled.shutdown.enable=true
`, rf, minISR)
		node.props = filepath.Join(node.dir, "server.properties")
		if err := os.WriteFile(node.props, []byte(b.String()), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(node.dir, "log4j2.properties"), []byte(log4j2), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// newClusterID returns a random KRaft cluster ID: 16 bytes in unpadded
// base64url, like Kafka's Uuid.randomUuid, and like it never starting with
// '-'. One in 64 random IDs does, and kafka-storage's argument parser takes
// such a value for an option ("argument --cluster-id/-t: expected one
// argument").
func newClusterID() (string, error) {
	id := make([]byte, 16)
	for {
		if _, err := rand.Read(id); err != nil {
			return "", err
		}
		if s := base64.RawURLEncoding.EncodeToString(id); s[0] != '-' {
			return s, nil
		}
	}
}

func (c *Cluster) format() error {
	clusterID, err := newClusterID()
	if err != nil {
		return err
	}
	nodes := c.Nodes()
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() {
			cmd := n.java("kafka.tools.StorageTool", "format", "--cluster-id", clusterID, "--config", n.props, "--ignore-formatted")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("format kafka node %d: %v\n%s", n.ID, err, out)
				return
			}
			errs <- nil
		}()
	}
	var all []error
	for range nodes {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

func (n *Node) java(main string, args ...string) *exec.Cmd {
	argv := []string{
		fmt.Sprintf("-Xmx%dm", n.heapMB), "-Xms64m",
		// Two cores: a collector and a JIT that do not fight the bridge.
		"-XX:+UseSerialGC", "-XX:CICompilerCount=2", "-XX:-UsePerfData",
		"-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + filepath.Join(n.dir, "log4j2.properties"),
		"-cp", filepath.Join(n.libs, "*"),
		main,
	}
	return exec.Command("java", append(argv, args...)...)
}

// start starts the process (data already formatted) and waits until its
// listeners accept connections.
func (n *Node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(filepath.Join(n.dir, "kafka.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := n.java("kafka.Kafka", n.props)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive a killed test
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start kafka node %d: %w", n.ID, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	n.cmd, n.done, n.log = cmd, done, logf
	for _, addr := range []string{n.Addr, n.ctrlAddr} {
		if addr == "" {
			continue
		}
		if err := devstack.WaitListening(addr, 90*time.Second, done); err != nil {
			return fmt.Errorf("kafka node %d: %w\n%s", n.ID, err, n.LogTail(3000))
		}
	}
	return nil
}

// Restart starts a stopped or killed node again on its ports with its data,
// and for a broker waits until it is back in the cluster metadata.
func (c *Cluster) Restart(ctx context.Context, n *Node) error {
	if err := n.start(); err != nil {
		return err
	}
	if n.Addr == "" {
		return nil
	}
	return c.WaitBroker(ctx, n)
}

// Stop stops the node with SIGTERM (a controlled shutdown that hands its
// partitions' leadership over), then SIGKILL after timeout.
func (n *Node) Stop(timeout time.Duration) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused JVM cannot shut down
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
	}
	n.mu.Lock()
	n.cmd = nil
	n.mu.Unlock()
}

// Kill kills the node with SIGKILL: no controlled shutdown.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Pause freezes the process with SIGSTOP: its sockets stay open and
// connected but nothing answers, like a hung broker or a blackholed host.
func (n *Node) Pause() error { return n.signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (n *Node) Resume() error { return n.signal(syscall.SIGCONT) }

func (n *Node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("kafka node %d is not running", n.ID)
	}
	return n.cmd.Process.Signal(sig)
}

// PID is the JVM's process id, or 0 when it is not running.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// LogTail returns the last max bytes of the node's log.
func (n *Node) LogTail(max int) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "kafka.log"))
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// WaitBroker waits until broker n answers a metadata request that lists it
// (a fenced or starting broker is left out of the metadata).
func (c *Cluster) WaitBroker(ctx context.Context, n *Node) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(n.Addr), kgo.RetryBackoffFn(func(int) time.Duration { return 100 * time.Millisecond }))
	if err != nil {
		return err
	}
	defer cl.Close()
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		req := kmsg.NewPtrMetadataRequest()
		req.Topics = []kmsg.MetadataRequestTopic{}
		resp, err := req.RequestWith(rctx, cl)
		cancel()
		if err == nil {
			for _, b := range resp.Brokers {
				if int(b.NodeID) == n.ID {
					return nil
				}
			}
			err = fmt.Errorf("broker %d not in the metadata yet", n.ID)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka broker %d not ready: %v\n%s", n.ID, last, n.LogTail(3000))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// CreateTopic creates topic with partitions and the cluster's replication
// factor and waits until every partition has a leader.
func (c *Cluster) CreateTopic(ctx context.Context, topic string, partitions int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...))
	if err != nil {
		return err
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic = topic
	rt.NumPartitions = partitions
	rt.ReplicationFactor = int16(c.opts.Brokers)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 30000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
	}
	return c.WaitISR(ctx, topic)
}

// WaitISR waits until every partition of topic has a leader and all
// brokers in its ISR.
func (c *Cluster) WaitISR(ctx context.Context, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...))
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		mreq := kmsg.NewPtrMetadataRequest()
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr(topic)
		mreq.Topics = append(mreq.Topics, mt)
		mresp, err := mreq.RequestWith(ctx, cl)
		if err == nil && len(mresp.Topics) == 1 && mresp.Topics[0].ErrorCode == 0 && len(mresp.Topics[0].Partitions) > 0 {
			ok := true
			for _, p := range mresp.Topics[0].Partitions {
				ok = ok && p.ErrorCode == 0 && p.Leader >= 0 && len(p.ISR) == c.opts.Brokers
			}
			if ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s: partitions without a leader or a full ISR: %w", topic, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitNotEnoughReplicas produces probe records to topic until the brokers
// refuse them with NOT_ENOUGH_REPLICAS (the ISR shrank below
// min.insync.replicas), or ctx ends. Each probe makes one attempt, so the
// broker's answer comes back instead of being retried. A probe that lands
// (too few brokers down yet) is written to the topic: use a topic of its own
// or one whose readers ignore undecodable records.
func (c *Cluster) WaitNotEnoughReplicas(ctx context.Context, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.DefaultProduceTopic(topic),
		kgo.DisableIdempotentWrite(), kgo.RecordRetries(0), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProduceRequestTimeout(5*time.Second), kgo.RecordDeliveryTimeout(10*time.Second),
		kgo.RetryBackoffFn(func(int) time.Duration { return 100 * time.Millisecond }))
	if err != nil {
		return err
	}
	defer cl.Close()
	var last error
	for {
		err := cl.ProduceSync(ctx, kgo.StringRecord("probe")).FirstErr()
		if errors.Is(err, kerr.NotEnoughReplicas) || errors.Is(err, kerr.NotEnoughReplicasAfterAppend) {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("no NOT_ENOUGH_REPLICAS from the brokers, last produce: %v", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
