package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
)

// Consumer reads the bridge's Kafka topic from the start and notes each
// envelope's arrival against the publish time in its payload.
type Consumer struct {
	Recorder
	cl *kgo.Client
}

// NewConsumer connects to brokers; Run consumes.
func NewConsumer(brokers []string, topic string) (*Consumer, error) {
	cl, err := devstack.TopicReader(brokers, topic, 500*time.Millisecond, 64<<20, 100*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("kafka consumer: %w", err)
	}
	return &Consumer{cl: cl}, nil
}

// Run consumes until ctx is done; it survives the broker going away.
func (c *Consumer) Run(ctx context.Context) {
	defer c.cl.Close()
	for {
		fs := c.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) { c.Observe(envelopePayload(r.Value), now) })
	}
}

// envelopePayload returns field 5 (payload) of an encoded
// edgebridge.v1.Envelope without decoding the rest: the consumer must not be
// the bottleneck of what it measures.
func envelopePayload(b []byte) []byte {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num == 5 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil
			}
			return v
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil
		}
		b = b[n:]
	}
	return nil
}
