package forward

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kslog"
)

// stateLogEvery and stateLogBurst bound the "kafka reachable" / "kafka
// unreachable" lines to two per interval, whatever the hooks see: a broker
// that accepts the connection and then rejects the credentials answers
// ApiVersions before every refusal, many times a second. Two, so that a
// change right after the first line is told at once.
const (
	stateLogEvery = time.Minute
	stateLogBurst = 2
)

// kafkaState follows whether Kafka takes our records, from franz-go's broker
// hooks, and logs and exports the changes. Kafka is up once a produce
// request is answered and down once one fails, a dial or the connection's
// TLS or SASL handshake fails, or any request fails. Only answers to
// Produce and Metadata requests count as up (Metadata only with nothing to
// produce: a blackholed produce path next to a healthy metadata path is
// down); requests that succeed before authentication, such as ApiVersions,
// prove nothing.
type kafkaState struct {
	log      *slog.Logger
	m        *metrics
	buffered func() int64
	resumed  func() // a produce was answered after none or a failed one

	mu   sync.Mutex // guards the fields below; never held while calling out
	up   bool
	seen bool
	// What the log last said, the lines of the current interval, and the
	// changes it has not told.
	loggedUp    bool
	windowStart time.Time
	lines       int
	untold      int
	// produced: the last produce request was answered. Until the first
	// answer and after a failed one, the Producer reads one batch at a
	// time instead of filling its window (see readLoop).
	produced bool
}

var (
	_ kgo.HookBrokerE2E     = (*kafkaState)(nil)
	_ kgo.HookBrokerConnect = (*kafkaState)(nil)
)

func (s *kafkaState) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	err := e2e.Err()
	switch {
	case key == int16(kmsg.Produce):
		s.mu.Lock()
		resumed := err == nil && !s.produced
		s.produced = err == nil
		s.mu.Unlock()
		if resumed && s.resumed != nil {
			s.resumed()
		}
		s.set(err == nil, meta.NodeID, err)
	case err != nil:
		s.set(false, meta.NodeID, err)
	case key == int16(kmsg.Metadata) && s.buffered() == 0:
		s.set(true, meta.NodeID, nil)
	}
}

func (s *kafkaState) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		s.set(false, meta.NodeID, err)
	}
}

// set records what a hook (or a refused record) saw. The gauge follows every
// change; the log says the state when it differs from what the log last
// said, at most stateLogBurst times per stateLogEvery, with the number of
// changes in between.
func (s *kafkaState) set(up bool, node int32, err error) {
	now := time.Now()
	s.mu.Lock()
	first := !s.seen
	changed := first || s.up != up
	s.up, s.seen = up, true
	if changed {
		s.untold++
		if up {
			s.m.up.Set(1)
		} else {
			s.m.up.Set(0)
		}
	}
	if now.Sub(s.windowStart) >= stateLogEvery {
		s.windowStart, s.lines = now, 0
	}
	tell := first || up != s.loggedUp && s.lines < stateLogBurst
	changes := s.untold
	if tell {
		s.loggedUp, s.untold = up, 0
		s.lines++
	}
	s.mu.Unlock()
	switch {
	case !tell:
	case up:
		s.log.Info("kafka reachable", "broker", node, "changes", changes)
	default:
		s.log.Warn("kafka unreachable, records wait in the buffer", "broker", node, "changes", changes, "err", err)
	}
}

func (s *kafkaState) isProducing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.produced
}

func (s *kafkaState) isUp() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up
}

// partitioner is Kafka's own key partitioning (murmur2, as the Java
// client), which also learns each topic's partition count so that the
// Producer can tell, before producing, which partition a record goes to.
type partitioner struct {
	mu     sync.Mutex // guards counts
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

// kgoLogger hands franz-go's log to slog through kslog, and reads in it the
// earliest sign that franz-go is failing the records it holds for a
// partition: franz-go logs, under the partition's lock and before it fails
// them, an entry with the partition's topic and number and the error (a
// batch Kafka rejected, a load error), or at error level one with an error
// and no partition when it fails every partition (a fatal producer-ID
// error, a broker too old). It goes by the shape of the entry, not by its
// message, so that a reworded message does not lose the hint; entries of
// that shape that fail nothing cost a resend. The first failed promise
// stays the guard when no entry comes (see lane.round).
type kgoLogger struct {
	inner *kslog.Logger
	hint  func(topic string, partition int32)
}

// Level is at least info so that the entries above always reach Log; Log
// forwards only what the injected handler wants.
func (l *kgoLogger) Level() kgo.LogLevel { return max(l.inner.Level(), kgo.LogLevelInfo) }

func (l *kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var (
		topic     string
		partition = int32(-1)
		failed    bool
	)
	for i := 0; i+1 < len(keyvals); i += 2 {
		switch keyvals[i] {
		case "topic":
			topic, _ = keyvals[i+1].(string)
		case "partition":
			partition, _ = keyvals[i+1].(int32)
		case "err":
			err, _ := keyvals[i+1].(error)
			failed = err != nil
		}
	}
	switch {
	case failed && topic != "" && partition >= 0:
		l.hint(topic, partition)
	case failed && topic == "" && level == kgo.LogLevelError:
		l.hint("", -1)
	}
	if level <= l.inner.Level() {
		l.inner.Log(level, msg, keyvals...)
	}
}
