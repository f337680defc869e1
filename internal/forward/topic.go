package forward

import "time"

// A topic Kafka refuses as a whole (classify's parkTopic: no write or
// describe ACL, no such topic; or any error in its metadata) is parked
// rather than dead-lettered: its records stay in the buffer, in order,
// while the other topics flow. After a long capped backoff one record is
// sent as a probe; when Kafka takes it the topic resumes from its first
// skipped record, otherwise it waits again for longer.
const (
	topicRetryInitial = 5 * time.Second
	topicRetryMax     = 5 * time.Minute
)

type topicPhase int

const (
	topicOpen    topicPhase = iota
	topicParked             // waiting for retryAt; every record skipped
	topicProbing            // one record in flight to see whether Kafka takes the topic again
)

// topicState is what the scheduler knows of one topic; guarded by
// scheduler.mu.
type topicState struct {
	name        string
	phase       topicPhase
	reason      string
	since       time.Time
	retryAt     time.Time
	tries       int
	inflight    int
	skippedFrom uint64 // lowest sequence skipped while parked or probing; 0 for none
	probeOK     bool   // Kafka took a record while probing: resume
}

func (t *topicState) skip(seq uint64) { lowest(&t.skippedFrom, seq) }

// topic returns the state of a topic; s.mu is held.
func (s *scheduler) topic(name string) *topicState {
	t := s.topics[name]
	if t == nil {
		t = &topicState{name: name}
		s.topics[name] = t
	}
	return t
}

// holdTopic tells whether the record seq of topic must be skipped because
// its topic is parked, or is probing with its probe in flight; s.mu is held.
func (s *scheduler) holdTopic(t *topicState, seq uint64) bool {
	switch t.phase {
	case topicParked:
	case topicProbing:
		if t.inflight == 0 && !t.probeOK {
			return false // this record is the probe
		}
	default:
		return false
	}
	t.skip(seq)
	return true
}

// parkTopic parks t, or keeps it parked for longer after a failed probe;
// s.mu is held. Records of t already in flight fail with it and call this
// again: only the first failure of a round counts as a try.
func (s *scheduler) parkTopic(t *topicState, reason string, err error, now time.Time) {
	switch t.phase {
	case topicParked:
		if t.reason != reason {
			s.m.topics.WithLabelValues(t.reason).Dec()
			s.m.topics.WithLabelValues(reason).Inc()
			s.logReason(t, reason, err)
			t.reason = reason
		}
		return
	case topicOpen:
		t.since = now
		t.tries = 0
		s.m.topics.WithLabelValues(reason).Inc()
		s.parkedTopics++
	case topicProbing:
		s.m.topics.WithLabelValues(t.reason).Dec()
		s.m.topics.WithLabelValues(reason).Inc()
		if t.reason != reason {
			s.logReason(t, reason, err)
		}
	}
	t.tries++
	t.phase = topicParked
	t.reason = reason
	t.probeOK = false
	bo := s.topicBo
	if reason == "metadata" {
		bo = s.bo // an error in the answer, not a refusal: ask again soon
	}
	t.retryAt = now.Add(bo.Delay(t.tries))
	if t.tries == 1 {
		s.log.Warn("kafka refuses a topic, its records wait in the buffer while the other topics flow",
			"topic", t.name, "reason", reason, "retry_in", t.retryAt.Sub(now).Round(time.Millisecond), "err", err)
	} else {
		s.log.Debug("topic still refused", "topic", t.name, "reason", reason, "tries", t.tries, "err", err)
	}
}

// logReason says that a parked topic is now refused for another reason
// than the one logged when it was parked (a topic that did not exist yet,
// then an ACL missing, say): the gauge moves with it, and the log must say
// it too. s.mu is held.
func (s *scheduler) logReason(t *topicState, reason string, err error) {
	s.log.Warn("kafka refuses a topic for another reason now, its records still wait in the buffer",
		"topic", t.name, "reason", reason, "was", t.reason, "err", err)
}

// unparkTopics moves the topics whose wait is over to probing, and the
// probed ones Kafka took back to open, rewinding the cursor to the first
// record each skipped. It returns the earliest end of a wait (zero if
// none) and the lowest sequence they skipped (zero: none). s.mu is held.
func (s *scheduler) unparkTopics(now time.Time) (from uint64, next time.Time) {
	for _, t := range s.topics {
		switch {
		case t.phase == topicParked && !now.Before(t.retryAt):
			t.phase = topicProbing
		case t.phase == topicProbing && t.probeOK:
			t.phase = topicOpen
			t.probeOK = false
			s.parkedTopics--
			s.m.topics.WithLabelValues(t.reason).Dec()
			s.log.Info("kafka takes the topic again, sending its buffered records",
				"topic", t.name, "reason", t.reason, "parked_for", now.Sub(t.since).Round(time.Millisecond), "tries", t.tries)
			t.tries = 0
		case t.phase == topicParked:
			next = earliest(next, t.retryAt)
			continue
		default:
			continue
		}
		if t.skippedFrom > 0 {
			lowest(&from, t.skippedFrom)
		}
		t.skippedFrom = 0
	}
	return from, next
}
