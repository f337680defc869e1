package devstack

import (
	"fmt"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is a single-broker in-process Kafka that keeps its data in a
// directory, so Stop and Start act like a broker outage: clients see
// connections refused, then the same port with the same records.
type Kafka struct {
	dir        string
	port       int
	topic      string
	partitions int32

	mu sync.Mutex
	c  *kfake.Cluster
}

// StartKafka starts a broker on a free loopback port with topic created with
// the given number of partitions.
func StartKafka(dir, topic string, partitions int32) (*Kafka, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	k := &Kafka{dir: dir, port: port, topic: topic, partitions: partitions}
	if err := k.Start(); err != nil {
		return nil, err
	}
	return k, nil
}

// Addr is host:port of the broker; it does not change across Stop/Start.
func (k *Kafka) Addr() string { return fmt.Sprintf("127.0.0.1:%d", k.port) }

// Start (re)starts the broker on its port, reloading its data.
func (k *Kafka) Start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		return nil
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(k.port),
		kfake.DataDir(k.dir),
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start kafka on port %d: %w", k.port, err)
	}
	if c.TopicInfo(k.topic) == nil {
		if err := c.CreateTopic(k.topic, k.partitions, nil); err != nil {
			c.Close()
			return fmt.Errorf("create topic %s: %w", k.topic, err)
		}
	}
	k.c = c
	return nil
}

// Stop closes the broker (its data stays in the directory).
func (k *Kafka) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

// Up reports whether the broker is running.
func (k *Kafka) Up() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c != nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
