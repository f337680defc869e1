package forward

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// partitioner is Kafka's own key partitioning (murmur2, as the Java
// client), which also learns each topic's partition count so that the
// Producer can tell, before producing, which partition a record goes to.
type partitioner struct {
	// mu guards counts. It is a leaf: franz-go holds its own locks when
	// Partition learns a count; the reader holds none when it asks.
	mu     sync.Mutex
	counts map[string]int
}

func newPartitioner() *partitioner { return &partitioner{counts: make(map[string]int)} }

func (p *partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	return &topicPartitioner{p: p, topic: topic, inner: kgo.StickyKeyPartitioner(nil).ForTopic(topic)}
}

// count returns the partition count of topic last seen by franz-go, 0 when
// not known yet.
func (p *partitioner) count(topic string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[topic]
}

type topicPartitioner struct {
	p     *partitioner
	topic string
	inner kgo.TopicPartitioner
	n     int
}

func (t *topicPartitioner) RequiresConsistency(r *kgo.Record) bool {
	return t.inner.RequiresConsistency(r)
}

func (t *topicPartitioner) Partition(r *kgo.Record, n int) int {
	if n != t.n {
		t.n = n
		t.p.learn(t.topic, n)
	}
	return t.inner.Partition(r, n)
}

func (p *partitioner) learn(topic string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[topic] = n
}
