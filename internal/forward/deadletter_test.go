package forward

import (
	"bytes"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// rejectedBy is a setup of TestPermanentErrorsDeadLetterOnlyTheCulprit: the
// broker answers err to every produce request of key's partition that
// carries marker, the value of the record it adds.
func rejectedBy(marker []byte, key string, err *kerr.Error) func(*kfake.Cluster, *memSource) uint64 {
	return func(c *kfake.Cluster, src *memSource) uint64 {
		p := partitionOf(key, 4)
		c.Fault(kfake.Fault{
			Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Partitions: []int32{p},
			Err: err, Count: -1,
			When: func(req kmsg.Request) bool { return produceCarries(req, p, marker) },
		})
		return src.add(testTopic, []byte(key), marker)
	}
}

// Permanent errors: the rejected record goes to dead letters with its reason
// and the rest flow, in order, although franz-go failed the whole partition
// with it.
func TestPermanentErrorsDeadLetterOnlyTheCulprit(t *testing.T) {
	marker := []byte("POISON-RECORD")
	tests := []struct {
		name   string
		setup  func(c *kfake.Cluster, src *memSource) (poison uint64)
		reason string
	}{{
		name:   "broker answers MESSAGE_TOO_LARGE",
		reason: "message_too_large",
		setup:  rejectedBy(marker, "dev-poison", kerr.MessageTooLarge),
	}, {
		name:   "record larger than kafka.batch_max_bytes",
		reason: "message_too_large",
		setup: func(_ *kfake.Cluster, src *memSource) uint64 {
			return src.add(testTopic, []byte("dev-poison"), bytes.Repeat(marker, (2<<20)/len(marker)))
		},
	}, {
		name:   "broker answers INVALID_RECORD",
		reason: "invalid_record",
		setup:  rejectedBy(marker, "dev-3", kerr.InvalidRecord),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const before, after = 1500, 1500
			c := newCluster(t)
			src := newMemSource()
			src.fill(before, 40, 100)
			poison := tt.setup(c, src)
			src.fill(after, 40, 100)
			r := start(t, testConfig(c.ListenAddrs()), src)

			recs := delivered(t, c, src, before+after, 30*time.Second)
			if dl := src.deadLetters(); len(dl) != 1 || dl[poison] != tt.reason {
				t.Errorf("dead letters = %v, want only seq %d with %q", dl, poison, tt.reason)
			}
			for _, g := range recs {
				if g.seq == poison {
					t.Errorf("the rejected record reached Kafka")
				}
			}
			if got := testkit.Value(t, r.p.m.failed.WithLabelValues(tt.reason)); got != 1 {
				t.Errorf("edgebridge_forward_failed_total{reason=%q} = %v, want 1", tt.reason, got)
			}
		})
	}
}

// produceCarries reports whether a produce request carries marker in
// partition p of the test topic.
func produceCarries(req kmsg.Request, p int32, marker []byte) bool {
	pr, ok := req.(*kmsg.ProduceRequest)
	if !ok {
		return false
	}
	for _, t := range pr.Topics {
		for _, part := range t.Partitions {
			if part.Partition == p && bytes.Contains(part.Records, marker) {
				return true
			}
		}
	}
	return false
}
