package forward

import (
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// outcome is how a record of a topic whose requests Kafka fails ends up.
type outcome int

const (
	retried      outcome = iota // sent again, kept in the buffer
	parked                      // its topic parked, kept in the buffer, logged with the reason
	deadLettered                // in dead letters with its reason
	written                     // Kafka's answer says it has the record already
)

func (o outcome) String() string {
	return [...]string{"retried", "parked", "dead-lettered", "written"}[o]
}

// expected is what the forwarder promises for err in the answer to a
// request of kind about one topic.
func expected(kind kmsg.Key, err *kerr.Error) (outcome, string) {
	cls, reason := classify(err)
	if kind == kmsg.Metadata {
		switch {
		case err == kerr.UnknownTopicOrPartition:
			return parked, "unknown_topic" // let through; franz-go fails the records with it
		case cls == permanentTopic:
			return deadLettered, reason // let through; franz-go fails the records with it
		case cls == parkTopic:
			return parked, reason
		}
		return parked, "metadata"
	}
	switch {
	case err == kerr.DuplicateSequenceNumber:
		// The broker says it wrote the batch before; franz-go takes
		// that as a success. Only the fault makes it a lie.
		return written, ""
	case cls == permanentRecord, cls == permanentTopic:
		return deadLettered, reason
	case cls == parkTopic:
		return parked, reason
	}
	return retried, ""
}

// kafkaErrors is every error kerr knows, by code.
func kafkaErrors() []*kerr.Error {
	var out []*kerr.Error
	for code := int16(-1); code < 1000; code++ {
		e := kerr.TypedErrorForCode(code)
		if e == nil || e.Code != code {
			continue // 0, or a code kerr does not know
		}
		out = append(out, e)
	}
	return out
}

// Finding "no Kafka error on one topic stops the others": every error code
// kerr knows, injected in the Metadata or the Produce answers of its own
// topic, ends the way expected says - retried, parked or dead-lettered -
// while the healthy topic delivers everything past it. Once the faults are
// removed, every record kept reaches Kafka, in order, and no topic stays
// parked.
func TestEveryKafkaErrorOnOneTopic(t *testing.T) {
	errs := kafkaErrors()
	if len(errs) < 100 {
		t.Fatalf("only %d Kafka errors known", len(errs))
	}
	for _, kind := range []kmsg.Key{kmsg.Metadata, kmsg.Produce} {
		t.Run(kind.Name(), func(t *testing.T) {
			topics := make([]string, len(errs))
			for i, e := range errs {
				topics[i] = "code" + strconv.Itoa(int(e.Code))
			}
			c := newCluster(t, kfake.SeedTopics(1, topics...))
			faults := make([]*kfake.FaultHandle, len(errs))
			for i, e := range errs {
				faults[i] = c.Fault(kfake.Fault{Keys: []kmsg.Key{kind}, Topic: topics[i], Err: e, Count: -1})
			}
			src := newMemSource()
			seqs := make([][]uint64, len(errs))
			for range 3 {
				for i := range errs {
					seqs[i] = append(seqs[i], src.add(topics[i], []byte("dev-1"), []byte("x")))
				}
			}
			const healthy = 300
			src.fill(healthy, 10, 20)
			log, sink := testkit.CaptureLogs(t)
			r := startWith(t, testConfig(c.ListenAddrs()), src, log)

			recs := newConsumer(t, c.ListenAddrs(), testTopic).until(t, healthy, 30*time.Second)
			checkOrder(t, recs)

			for i, e := range errs {
				want, reason := expected(kind, e)
				name := e.Message
				var ok func() bool
				switch want {
				case retried:
					ok = func() bool { return faults[i].Hits() >= 2 }
				case parked:
					ok = func() bool {
						return logged(sink, "kafka refuses a topic", `"topic":"`+topics[i]+`"`, `"reason":"`+reason+`"`)
					}
				case deadLettered:
					ok = func() bool {
						dl := src.deadLetters()
						for _, seq := range seqs[i] {
							if dl[seq] != reason {
								return false
							}
						}
						return true
					}
				case written:
					ok = func() bool { return src.kept(seqs[i]...) == 0 }
				}
				testkit.WaitWithin(t, 20*time.Second, name+" to end "+want.String(), ok)
				if want == retried || want == parked {
					if src.kept(seqs[i]...) != len(seqs[i]) {
						t.Errorf("%s: records left the buffer, want them %s", name, want)
					}
				}
				if want != deadLettered {
					for _, seq := range seqs[i] {
						if reason, ok := src.deadLetters()[seq]; ok {
							t.Errorf("%s: seq %d dead-lettered (%s), want it %s", name, seq, reason, want)
						}
					}
				}
			}

			for _, h := range faults {
				h.Remove()
			}
			var keep []string
			n := 0
			for i, e := range errs {
				if want, _ := expected(kind, e); want == retried || want == parked {
					keep = append(keep, topics[i])
					n += len(seqs[i])
				}
			}
			cons := newConsumer(t, c.ListenAddrs(), keep...)
			got := cons.until(t, n, 60*time.Second)
			for dups := checkOrder(t, got); len(got)-dups < n; dups = checkOrder(t, got) {
				got = cons.until(t, n+dups, 30*time.Second)
			}
			seen := map[uint64]bool{}
			for _, g := range got {
				// These faults answer after the broker appended the
				// batch, and the producer-ID errors of other topics
				// bump the epoch meanwhile: the resend is a duplicate,
				// which consumers drop by its edgebridge-seq header.
				appended := g.topic == "code"+strconv.Itoa(int(kerr.RequestTimedOut.Code)) ||
					g.topic == "code"+strconv.Itoa(int(kerr.NotEnoughReplicasAfterAppend.Code))
				if seen[g.seq] && !appended {
					t.Errorf("%s: seq %d arrived twice", g.topic, g.seq)
				}
				seen[g.seq] = true
			}
			if len(seen) != n {
				t.Errorf("%d distinct records kept reached Kafka, want %d", len(seen), n)
			}
			testkit.WaitWithin(t, 20*time.Second, "the buffer to empty", func() bool { return src.remaining() == 0 })
			testkit.WaitWithin(t, 20*time.Second, "no parked topic", func() bool { return parkedTopics(t, r, "") == 0 })
		})
	}
}

// kept counts those of seqs still in the buffer.
func (s *memSource) kept(seqs ...uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, seq := range seqs {
		if s.live[seq-1] {
			n++
		}
	}
	return n
}
