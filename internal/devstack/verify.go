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
// Devices count 1, 2, 3... with no gaps, so per device: a counter already
// seen is a duplicate (at-least-once allows it); a new counter must be the
// next one (max+1), anything else means order broke or something is missing.
type Verifier struct {
	mu         sync.Mutex
	seen       map[string]map[int]bool
	max        map[string]int
	partitions map[string]map[int32]bool
	records    int64
	unique     int64
	duplicates int64
	outOfOrder int64
	bad        int64
	firstBad   string
}

// NewVerifier returns an empty verifier.
func NewVerifier() *Verifier {
	return &Verifier{seen: map[string]map[int]bool{}, max: map[string]int{}, partitions: map[string]map[int32]bool{}}
}

// Consume reads topic from the start until ctx is done, feeding v. It
// survives the broker going away and coming back.
func (v *Verifier) Consume(ctx context.Context, brokers []string, topic string) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 200 * time.Millisecond }),
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
	v.records++
	if err := proto.Unmarshal(value, &env); err != nil {
		v.badf("undecodable envelope: %v", err)
		return
	}
	if err := json.Unmarshal(env.GetPayload(), &p); err != nil {
		v.badf("payload of seq %d is not a device payload: %v", env.GetSequence(), err)
		return
	}
	if p.Device != env.GetDeviceId() || env.GetMqttTopic() != DeviceTopic(p.Device) || env.GetSequence() == 0 || env.GetNodeId() == "" {
		v.badf("envelope seq %d: device_id %q topic %q node %q for payload of %s", env.GetSequence(), env.GetDeviceId(), env.GetMqttTopic(), env.GetNodeId(), p.Device)
		return
	}
	if v.partitions[p.Device] == nil {
		v.partitions[p.Device] = map[int32]bool{}
	}
	v.partitions[p.Device][partition] = true
	seen := v.seen[p.Device]
	if seen == nil {
		seen = map[int]bool{}
		v.seen[p.Device] = seen
	}
	switch {
	case seen[p.N]:
		v.duplicates++
	case p.N == v.max[p.Device]+1:
		seen[p.N] = true
		v.max[p.Device] = p.N
		v.unique++
	default:
		if v.firstBad == "" {
			v.firstBad = fmt.Sprintf("%s: message %d arrived after %d (seq %d, partition %d, record #%d)", p.Device, p.N, v.max[p.Device], env.GetSequence(), partition, v.records)
		}
		seen[p.N] = true
		v.unique++
		v.outOfOrder++
		if p.N > v.max[p.Device] {
			v.max[p.Device] = p.N
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
}

// Counts returns a snapshot.
func (v *Verifier) Counts() Counts {
	v.mu.Lock()
	defer v.mu.Unlock()
	return Counts{v.records, v.unique, v.duplicates, v.outOfOrder, v.bad, v.firstBad}
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
		if n := len(v.seen[id]); n != messages {
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
