//go:build chaos

package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func produce(ctx context.Context, t *testing.T, addrs []string, topic string, n int) error {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic),
		kgo.RecordRetries(3), kgo.RecordDeliveryTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for range n {
		recs = append(recs, kgo.StringRecord("x"))
	}
	return cl.ProduceSync(ctx, recs...).FirstErr()
}

func count(ctx context.Context, t *testing.T, addrs []string, topic string, want int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := 0
	for got < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records: %v", got, want, ctx.Err())
		}
		got += fs.NumRecords()
	}
	if got != want {
		t.Fatalf("read %d records, want %d", got, want)
	}
}

// A single combined node stores what it acknowledged across a restart.
func TestSingleBrokerRestart(t *testing.T) {
	c := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.CreateTopic(ctx, "t", 2); err != nil {
		t.Fatal(err)
	}
	if err := produce(ctx, t, c.Addrs(), "t", 100); err != nil {
		t.Fatal(err)
	}
	c.Broker(0).Stop(30 * time.Second)
	if err := c.Restart(ctx, c.Broker(0)); err != nil {
		t.Fatal(err)
	}
	count(ctx, t, c.Addrs(), "t", 100)
}

// Three brokers, RF 3, min ISR 2: one broker down is invisible to acks=all;
// two down fail it with NOT_ENOUGH_REPLICAS; restored, it works again.
func TestThreeBrokersMinISR(t *testing.T) {
	c := Start(t, Options{Brokers: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, topic := range []string{"t", "probe"} {
		if err := c.CreateTopic(ctx, topic, 3); err != nil {
			t.Fatal(err)
		}
	}
	c.Broker(2).Kill()
	if err := produce(ctx, t, c.Addrs(), "t", 100); err != nil {
		t.Fatalf("one broker down: %v", err)
	}
	c.Broker(1).Stop(30 * time.Second)
	if err := c.WaitNotEnoughReplicas(ctx, "probe"); err != nil {
		t.Fatalf("two brokers down: %v", err)
	}
	for _, i := range []int{1, 2} {
		if err := c.Restart(ctx, c.Broker(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := produce(ctx, t, c.Addrs(), "t", 100); err != nil {
		t.Fatalf("restored: %v", err)
	}
	count(ctx, t, c.Addrs(), "t", 200)
}
