package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/config"
	"github.com/edgebridge/edgebridge/internal/mqtt"
	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

// dlChunk is how many dead letters one read or one requeue handles, so that
// memory stays bounded whatever dead.db holds.
const dlChunk = 1000

// deadLetters lists or re-queues the buffer's dead letters. It opens the
// buffer directly, so the bridge must be stopped: its file lock makes the
// open fail fast with an error that says so.
func deadLetters(cfg *config.Config, args []string, stdout, stderr io.Writer) int {
	action := "list"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		action, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("edgebridge deadletters "+action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	payloads := fs.Bool("payloads", false, "list: include each dead letter's MQTT payload (base64) and stored value (base64)")
	all := fs.Bool("all", false, "requeue: every dead letter")
	reason := fs.String("reason", "", "requeue: every dead letter with this reason")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	args = fs.Args()
	var seqs []uint64
	switch action {
	case "list":
		if len(args) > 0 || *all || *reason != "" {
			fmt.Fprintln(stderr, "edgebridge deadletters list: takes no arguments but --payloads")
			return ExitUsage
		}
	case "requeue":
		for _, a := range args {
			n, err := strconv.ParseUint(a, 10, 64)
			if err != nil {
				fmt.Fprintf(stderr, "edgebridge deadletters requeue: %q is not a sequence number\n", a)
				return ExitUsage
			}
			seqs = append(seqs, n)
		}
		if n := btoi(len(seqs) > 0) + btoi(*all) + btoi(*reason != ""); n != 1 {
			fmt.Fprintln(stderr, "edgebridge deadletters requeue: give the sequences to requeue (see deadletters list), --all, or --reason R: one of them")
			return ExitUsage
		}
	default:
		fmt.Fprintf(stderr, "edgebridge deadletters: unknown action %q (list or requeue)\n", action)
		return ExitUsage
	}

	bcfg := cfg.Buffer
	bcfg.LockTimeout = time.Second
	q, err := buffer.Open(bcfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		fmt.Fprintf(stderr, "edgebridge deadletters: %v\n(is edgebridge running? stop it first: it holds the buffer)\n", err)
		return ExitFailure
	}
	if action == "list" {
		defer q.Close()
		return listDeadLetters(q, *payloads, stdout, stderr)
	}
	router, err := mqtt.NewRouter(cfg.MQTT.Routes)
	if err != nil {
		q.Close()
		fmt.Fprintf(stderr, "edgebridge deadletters requeue: %v\n", err)
		return ExitUsage
	}
	code := requeueDeadLetters(q, router, seqs, *reason, stdout, stderr)
	if err := q.Close(); err != nil {
		fmt.Fprintf(stderr, "edgebridge deadletters requeue: close the buffer: %v\n", err)
		return ExitFailure
	}
	if code == ExitOK {
		before, after, err := buffer.CompactDeadLetters(bcfg)
		if err != nil {
			fmt.Fprintf(stderr, "edgebridge deadletters requeue: the dead letters were requeued, but %v\n", err)
			return ExitFailure
		}
		fmt.Fprintf(stdout, "dead.db compacted from %d to %d bytes\n", before, after)
	}
	return code
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func listDeadLetters(q *buffer.Queue, payloads bool, stdout, stderr io.Writer) int {
	enc := json.NewEncoder(stdout)
	var after uint64
	for {
		recs, err := q.DeadLetters(after, dlChunk)
		if err != nil {
			fmt.Fprintf(stderr, "edgebridge deadletters list: %v\n", err)
			return ExitFailure
		}
		for _, r := range recs {
			line := deadLetterLine{Seq: r.Seq, Time: r.Time.UTC(), Reason: r.Reason, Topic: r.Topic,
				Key: string(r.Key), ValueBytes: len(r.Value)}
			var env edgebridgev1.Envelope
			if proto.Unmarshal(r.Value, &env) == nil && env.GetNodeId() != "" {
				line.MQTTTopic = env.GetMqttTopic()
				line.DeviceID = env.GetDeviceId()
				if t := env.GetReceivedAt(); t != nil {
					at := t.AsTime().UTC()
					line.ReceivedAt = &at
				}
				if payloads {
					line.Payload = env.GetPayload()
					if line.Payload == nil {
						line.Payload = []byte{}
					}
				}
			}
			if payloads {
				line.Value = r.Value
			}
			_ = enc.Encode(line)
		}
		if len(recs) < dlChunk {
			return ExitOK
		}
		after = recs[len(recs)-1].Seq
	}
}

// requeueDeadLetters requeues the given sequences, or every dead letter
// (with reason, when set), a chunk at a time. A dead letter without a Kafka
// topic or key (no_route, no_device_id) is routed by the routes in force
// now; one that still matches none stays a dead letter and is reported.
func requeueDeadLetters(q *buffer.Queue, router *mqtt.Router, seqs []uint64, reason string, stdout, stderr io.Writer) int {
	ctx := context.Background()
	var requeued, skipped int
	requeue := func(recs []buffer.Record) error {
		var ok []uint64
		for _, r := range recs {
			if _, _, why := routeDeadLetter(router, r); why != "" {
				skipped++
				fmt.Fprintf(stderr, "dead letter %d (%s) not requeued: %s\n", r.Seq, r.Reason, why)
				continue
			}
			ok = append(ok, r.Seq)
		}
		err := q.Requeue(ctx, ok, func(r *buffer.Record) error {
			topic, key, why := routeDeadLetter(router, *r)
			if why != "" {
				return errors.New(why)
			}
			r.Topic, r.Key = topic, key
			return nil
		})
		if err == nil {
			requeued += len(ok)
		}
		return err
	}

	var err error
	if len(seqs) > 0 {
		err = requeueSeqs(q, seqs, requeue)
	} else {
		// Requeued dead letters leave dead.db, so the next chunk starts
		// after the last one seen, requeued or not.
		var after uint64
		for err == nil {
			var recs []buffer.Record
			if recs, err = q.DeadLetters(after, dlChunk); err != nil || len(recs) == 0 {
				break
			}
			after = recs[len(recs)-1].Seq
			recs = slices.DeleteFunc(recs, func(r buffer.Record) bool { return reason != "" && r.Reason != reason })
			err = requeue(recs)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgebridge deadletters requeue: %v (%d requeued before)\n", err, requeued)
		return ExitFailure
	}
	fmt.Fprintf(stdout, "requeued %d dead letters; they are sent after the records already waiting, so after newer records of the same device\n", requeued)
	if skipped > 0 {
		fmt.Fprintf(stdout, "%d dead letters not requeued (see above): add a route for them and run this again\n", skipped)
	}
	return ExitOK
}

// requeueSeqs finds the named dead letters and hands them to requeue, a
// chunk at a time; a sequence that is not a dead letter is an error.
func requeueSeqs(q *buffer.Queue, seqs []uint64, requeue func([]buffer.Record) error) error {
	want := map[uint64]bool{}
	for _, s := range seqs {
		want[s] = true
	}
	var found []buffer.Record
	var after uint64
	for len(want) > 0 {
		recs, err := q.DeadLetters(after, dlChunk)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if want[r.Seq] {
				delete(want, r.Seq)
				found = append(found, r)
			}
		}
		if len(recs) < dlChunk {
			break
		}
		after = recs[len(recs)-1].Seq
	}
	if len(want) > 0 {
		missing := make([]uint64, 0, len(want))
		for s := range want {
			missing = append(missing, s)
		}
		slices.Sort(missing)
		return fmt.Errorf("dead letters %v: %w", missing, buffer.ErrNotFound)
	}
	for chunk := range slices.Chunk(found, dlChunk) {
		if err := requeue(chunk); err != nil {
			return err
		}
	}
	return nil
}

// routeDeadLetter returns the Kafka topic and key a requeued dead letter
// gets: its own when it has both, else those the routes give its MQTT
// topic now. why says why it cannot be sent.
func routeDeadLetter(router *mqtt.Router, r buffer.Record) (topic string, key []byte, why string) {
	if r.Topic != "" && len(r.Key) > 0 {
		return r.Topic, r.Key, ""
	}
	var env edgebridgev1.Envelope
	if err := proto.Unmarshal(r.Value, &env); err != nil || env.GetMqttTopic() == "" {
		return "", nil, "its value is not an envelope with an MQTT topic"
	}
	topic, device, reason := router.Route(env.GetMqttTopic())
	switch reason {
	case mqtt.ReasonNoRoute:
		return "", nil, fmt.Sprintf("no route matches %q", env.GetMqttTopic())
	case mqtt.ReasonNoDeviceID:
		return "", nil, fmt.Sprintf("the route for %q finds no device id in it", env.GetMqttTopic())
	}
	return topic, []byte(device), ""
}

type deadLetterLine struct {
	Seq        uint64     `json:"seq"`
	Time       time.Time  `json:"dead_lettered_at"`
	Reason     string     `json:"reason"`
	Topic      string     `json:"kafka_topic"`
	Key        string     `json:"key"`
	ValueBytes int        `json:"value_bytes"`
	MQTTTopic  string     `json:"mqtt_topic,omitempty"`
	DeviceID   string     `json:"device_id,omitempty"`
	ReceivedAt *time.Time `json:"received_at,omitempty"`
	// With --payloads: base64, as encoding/json writes []byte.
	Payload []byte `json:"payload,omitempty"`
	Value   []byte `json:"value,omitempty"`
}
