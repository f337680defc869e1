package forward

import (
	"context"

	"github.com/edgebridge/edgebridge/internal/buffer"
)

// Source is the durable queue the Producer drains; *buffer.Queue is one.
//
// Rules:
//   - Read is called from one goroutine. Ack and DeadLetter are called from
//     one other goroutine, concurrently with Read.
//   - Read returns up to maxRecords records (and about maxBytes) with
//     Seq > after, in Seq order, blocking until at least one exists or ctx is
//     done (then it returns an error matching ctx.Err()). It never deletes.
//     Records already acked or dead-lettered are not returned again; a record
//     read and not acked is returned again by a later Read with a lower after:
//     that is how the Producer re-sends what Kafka failed.
//   - The records Read returns, and their slices, belong to the caller.
//   - Ack deletes the records with these sequences and returns once that is
//     durable. Unknown or already deleted sequences are ignored. The Source
//     must not keep seqs after Ack returns; the Producer reuses it.
//   - DeadLetter moves the stored record seq to dead letters with reason and
//     returns once that is durable.
type Source interface {
	Read(ctx context.Context, after uint64, maxRecords, maxBytes int) ([]buffer.Record, error)
	Ack(ctx context.Context, seqs []uint64) error
	DeadLetter(ctx context.Context, seq uint64, reason string) error
}
