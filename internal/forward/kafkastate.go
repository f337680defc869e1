package forward

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
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
