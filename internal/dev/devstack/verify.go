package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

// Verifier reads the Kafka topic on its own client, decodes each envelope and
// checks what the devices sent against what arrived. It shares no code with
// the bridge beyond the generated envelope type.
//
// Devices count 1, 2, 3... on one connection each, so per device the first
// arrival of a counter must be larger than every counter of that device
// that arrived before it; otherwise order broke. A counter arriving again
// is a duplicate (at-least-once allows it). Gaps are allowed while reading
// (drop_oldest, messages a broker restart lost before acknowledging them):
// loss is decided at the end, by Check or Result, against what the devices
// were acknowledged.
type Verifier struct {
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

// NewVerifier returns an empty verifier.
func NewVerifier() *Verifier {
	return &Verifier{seen: map[string][]uint16{}, max: map[string]int{}, partitions: map[string]map[int32]bool{}}
}

// TopicReader is a Kafka client that reads topic from its start and rides
// through the broker going away: a fetch waits up to maxWait and takes up
// to maxBytes, and a failed request is tried again every retry.
func TopicReader(brokers []string, topic string, maxWait time.Duration, maxBytes int32, retry time.Duration) (*kgo.Client, error) {
	return kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(maxWait),
		kgo.FetchMaxBytes(maxBytes),
		kgo.RetryBackoffFn(func(int) time.Duration { return retry }),
	)
}

// Consume reads topic from the start until ctx is done, feeding v. It
// survives the broker going away and coming back.
func (v *Verifier) Consume(ctx context.Context, brokers []string, topic string) error {
	cl, err := TopicReader(brokers, topic, 200*time.Millisecond, 16<<20, 200*time.Millisecond)
	if err != nil {
		return fmt.Errorf("verifier client: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachRecord(func(r *kgo.Record) { v.AddRecord(r.Partition, r.Value) })
	}
}

// Add checks one Kafka record value.
func (v *Verifier) Add(value []byte) { v.AddRecord(0, value) }

// AddRecord checks one Kafka record value read from partition.
func (v *Verifier) AddRecord(partition int32, value []byte) {
	var env edgebridgev1.Envelope
	var p Payload
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
	if p.Device != env.GetDeviceId() || env.GetMqttTopic() != DeviceTopic(p.Device) ||
		env.GetSequence() == 0 || env.GetNodeId() == "" || p.N < 1 {
		v.badf("envelope seq %d: device_id %q topic %q node %q for payload of %s counter %d",
			env.GetSequence(), env.GetDeviceId(), env.GetMqttTopic(), env.GetNodeId(), p.Device, p.N)
		return
	}
	if v.partitions[p.Device] == nil {
		v.partitions[p.Device] = map[int32]bool{}
	}
	v.partitions[p.Device][partition] = true
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
			v.firstBad = fmt.Sprintf("%s: message %d first arrived after %d (seq %d, partition %d, record #%d)",
				p.Device, p.N, v.max[p.Device], env.GetSequence(), partition, v.records)
		}
	}
}

func (v *Verifier) badf(format string, args ...any) {
	v.bad++
	if v.firstBad == "" {
		v.firstBad = fmt.Sprintf(format, args...)
	}
}

// Counts is a snapshot of what arrived.
type Counts struct {
	Records    int64 // Kafka records read
	Unique     int64 // distinct (device, counter) pairs
	Duplicates int64
	OutOfOrder int64
	Bad        int64 // records that were not a valid envelope of a device payload
	FirstBad   string
	First      time.Time // when the first record was read
}

// Counts returns a snapshot.
func (v *Verifier) Counts() Counts {
	v.mu.Lock()
	defer v.mu.Unlock()
	return Counts{v.records, v.unique, v.duplicates, v.outOfOrder, v.bad, v.firstBad, v.first}
}

// Check says what is wrong with the result, expecting devices x messages:
// nil when every message arrived, in order per device, and every record was
// a valid envelope. Duplicates are allowed (at-least-once).
func (v *Verifier) Check(devices, messages int) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var problems []string
	var missing []string
	for i := range devices {
		id := DeviceID(i)
		if n := arrived(v.seen[id], messages); n != messages {
			missing = append(missing, fmt.Sprintf("%s has %d/%d", id, n, messages))
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		if len(missing) > 5 {
			missing = append(missing[:5], fmt.Sprintf("and %d more devices", len(missing)-5))
		}
		problems = append(problems, "missing messages: "+strings.Join(missing, ", "))
	}
	var split []string
	for dev, ps := range v.partitions {
		if len(ps) > 1 {
			split = append(split, fmt.Sprintf("%s in %d partitions", dev, len(ps)))
		}
	}
	if len(split) > 0 {
		sort.Strings(split)
		problems = append(problems, "records of one device in several partitions (their order is lost): "+strings.Join(split, ", "))
	}
	if v.outOfOrder > 0 {
		problems = append(problems, fmt.Sprintf("%d messages out of order (first: %s)", v.outOfOrder, v.firstBad))
	}
	if v.bad > 0 {
		problems = append(problems, fmt.Sprintf("%d bad records (first: %s)", v.bad, v.firstBad))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// arrived counts the counters 1..n that arrived at least once.
func arrived(seen []uint16, n int) int {
	k := 0
	for i := 1; i <= n && i < len(seen); i++ {
		if seen[i] > 0 {
			k++
		}
	}
	return k
}

// Result compares what arrived with what the broker acknowledged to each
// device.
type Result struct {
	Acked      int64 // messages the broker acknowledged to devices
	Lost       int64 // acknowledged, never arrived
	Extra      int64 // arrived without an acknowledgement (in flight at a broker restart)
	Duplicates int64
	OutOfOrder int64
	Bad        int64
	Split      int // devices whose records landed in more than one partition
	Detail     string
}

// Result compares what arrived with acked[device], the highest counter the
// broker acknowledged to it (devices get their PUBACKs in order, so 1..acked
// were all acknowledged).
func (v *Verifier) Result(acked map[string]int) Result {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := Result{Duplicates: v.duplicates, OutOfOrder: v.outOfOrder, Bad: v.bad}
	var missing []string
	for dev, n := range acked {
		r.Acked += int64(n)
		seen := v.seen[dev]
		lost, firstLost := 0, 0
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
