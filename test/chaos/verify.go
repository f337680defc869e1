//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/edgebridge/edgebridge/internal/devstack"
	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

// verifier reads the Kafka topic on its own franz-go consumer, decodes each
// envelope (the generated type is all it shares with the bridge) and keeps,
// per device, which counters arrived and how often.
//
// Order: a device's counters are published in increasing order on one
// connection, so the first arrival of each counter must be larger than
// every counter of that device that arrived before it. A counter arriving
// again is a duplicate (allowed: at-least-once). Gaps are allowed while
// reading; loss is decided at the end against what the broker acknowledged
// to the devices (devices.acked).
type verifier struct {
	mu         sync.Mutex
	seen       map[string][]uint16 // device -> counter -> arrivals
	max        map[string]int
	partitions map[string]map[int32]bool
	records    int64
	unique     int64
	duplicates int64
	outOfOrder int64
	bad        int64
	firstBad   string
	first      time.Time // when the first record was read
}

func newVerifier() *verifier {
	return &verifier{seen: map[string][]uint16{}, max: map[string]int{}, partitions: map[string]map[int32]bool{}}
}

// consume reads topic from the start until ctx is done.
func (v *verifier) consume(ctx context.Context, brokers []string, topic string) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.FetchMaxBytes(16<<20),
		kgo.RetryBackoffFn(func(int) time.Duration { return 250 * time.Millisecond }),
	)
	if err != nil {
		return fmt.Errorf("verifier client: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachRecord(func(r *kgo.Record) { v.add(r.Partition, r.Value) })
	}
}

func (v *verifier) add(partition int32, value []byte) {
	var env edgebridgev1.Envelope
	var p devstack.Payload
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.records == 0 {
		v.first = time.Now()
	}
	v.records++
	if err := proto.Unmarshal(value, &env); err != nil {
		v.badf("undecodable envelope: %v", err)
		return
	}
	if err := json.Unmarshal(env.GetPayload(), &p); err != nil {
		v.badf("payload of seq %d is not a device payload: %v", env.GetSequence(), err)
		return
	}
	if p.Device != env.GetDeviceId() || env.GetMqttTopic() != devstack.DeviceTopic(p.Device) ||
		env.GetSequence() == 0 || env.GetNodeId() == "" || p.N < 1 {
		v.badf("envelope seq %d: device_id %q topic %q node %q for payload %+v",
			env.GetSequence(), env.GetDeviceId(), env.GetMqttTopic(), env.GetNodeId(), p)
		return
	}
	ps := v.partitions[p.Device]
	if ps == nil {
		ps = map[int32]bool{}
		v.partitions[p.Device] = ps
	}
	ps[partition] = true
	seen := v.seen[p.Device]
	for len(seen) <= p.N {
		seen = append(seen, 0)
	}
	v.seen[p.Device] = seen
	seen[p.N]++
	switch {
	case seen[p.N] > 1:
		v.duplicates++
	case p.N > v.max[p.Device]:
		v.max[p.Device] = p.N
		v.unique++
	default:
		v.unique++
		v.outOfOrder++
		if v.firstBad == "" {
			v.firstBad = fmt.Sprintf("%s: message %d first arrived after %d (seq %d, partition %d)",
				p.Device, p.N, v.max[p.Device], env.GetSequence(), partition)
		}
	}
}

func (v *verifier) badf(format string, args ...any) {
	v.bad++
	if v.firstBad == "" {
		v.firstBad = fmt.Sprintf(format, args...)
	}
}

type counts struct {
	Records, Unique, Duplicates, OutOfOrder, Bad int64
	First                                        time.Time
}

func (v *verifier) counts() counts {
	v.mu.Lock()
	defer v.mu.Unlock()
	return counts{v.records, v.unique, v.duplicates, v.outOfOrder, v.bad, v.first}
}

// result compares what arrived with what the broker acknowledged to each
// device (acked[device] = the highest counter with a PUBACK; devices get
// their PUBACKs in order, so 1..acked all were acknowledged).
type result struct {
	Acked      int64 // messages the broker acknowledged to devices
	Lost       int64 // acknowledged, never arrived
	Extra      int64 // arrived without an acknowledgement (in flight at a broker restart)
	Duplicates int64
	OutOfOrder int64
	Bad        int64
	Split      int // devices whose records landed in more than one partition
	Detail     string
}

func (v *verifier) result(acked map[string]int) result {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := result{Duplicates: v.duplicates, OutOfOrder: v.outOfOrder, Bad: v.bad}
	var missing []string
	for dev, n := range acked {
		r.Acked += int64(n)
		seen := v.seen[dev]
		lost := 0
		firstLost := 0
		for i := 1; i <= n; i++ {
			if i >= len(seen) || seen[i] == 0 {
				lost++
				if firstLost == 0 {
					firstLost = i
				}
			}
		}
		for i := n + 1; i < len(seen); i++ {
			if seen[i] > 0 {
				r.Extra++
			}
		}
		if lost > 0 {
			r.Lost += int64(lost)
			missing = append(missing, fmt.Sprintf("%s lost %d of %d (first %d)", dev, lost, n, firstLost))
		}
	}
	for dev := range v.seen {
		if _, ok := acked[dev]; !ok {
			missing = append(missing, dev+" arrived but never published")
		}
	}
	for _, ps := range v.partitions {
		if len(ps) > 1 {
			r.Split++
		}
	}
	sort.Strings(missing)
	if len(missing) > 5 {
		missing = append(missing[:5], fmt.Sprintf("and %d more", len(missing)-5))
	}
	var detail []string
	if len(missing) > 0 {
		detail = append(detail, strings.Join(missing, ", "))
	}
	if v.firstBad != "" {
		detail = append(detail, "first problem: "+v.firstBad)
	}
	r.Detail = strings.Join(detail, "; ")
	return r
}
