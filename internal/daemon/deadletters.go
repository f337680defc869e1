package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/config"
)

// deadLetters lists or re-queues the buffer's dead letters. It opens the
// buffer directly, so the bridge must be stopped: its file lock makes the
// open fail fast with an error that says so.
func deadLetters(cfg *config.Config, args []string, stdout, stderr io.Writer) int {
	action := "list"
	if len(args) > 0 {
		action, args = args[0], args[1:]
	}
	var seqs []uint64
	switch action {
	case "list":
		if len(args) > 0 {
			fmt.Fprintf(stderr, "edgebridge deadletters list: unexpected argument %q\n", args[0])
			return ExitUsage
		}
	case "requeue":
		if len(args) == 0 {
			fmt.Fprintln(stderr, "edgebridge deadletters requeue: give the sequences to requeue (see deadletters list)")
			return ExitUsage
		}
		for _, a := range args {
			n, err := strconv.ParseUint(a, 10, 64)
			if err != nil {
				fmt.Fprintf(stderr, "edgebridge deadletters requeue: %q is not a sequence number\n", a)
				return ExitUsage
			}
			seqs = append(seqs, n)
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
	defer q.Close()

	if action == "requeue" {
		if err := q.Requeue(context.Background(), seqs); err != nil {
			fmt.Fprintf(stderr, "edgebridge deadletters requeue: %v\n", err)
			return ExitFailure
		}
		fmt.Fprintf(stdout, "requeued %d dead letters; they are sent after the records already waiting\n", len(seqs))
		return ExitOK
	}
	enc := json.NewEncoder(stdout)
	var after uint64
	for {
		recs, err := q.DeadLetters(after, 1000)
		if err != nil {
			fmt.Fprintf(stderr, "edgebridge deadletters list: %v\n", err)
			return ExitFailure
		}
		for _, r := range recs {
			_ = enc.Encode(deadLetterLine{Seq: r.Seq, Time: r.Time.UTC(), Reason: r.Reason, Topic: r.Topic,
				Key: string(r.Key), ValueBytes: len(r.Value)})
		}
		if len(recs) < 1000 {
			return ExitOK
		}
		after = recs[len(recs)-1].Seq
	}
}

type deadLetterLine struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"dead_lettered_at"`
	Reason     string    `json:"reason"`
	Topic      string    `json:"kafka_topic"`
	Key        string    `json:"key"`
	ValueBytes int       `json:"value_bytes"`
}
