package buffer

import "time"

// Record is one message in the queue.
//
// The queue copies what it is given and what it returns: a caller may reuse
// the slices of a Record it passed to Append once Append returns, and owns
// the slices of the Records that Read returns.
type Record struct {
	// Seq is assigned by Append: per node, strictly increasing, never
	// reused, also across restarts and after the queue was drained.
	Seq uint64
	// Time is when the record was appended; Append sets it.
	Time time.Time
	// Topic is the Kafka topic the record is destined for.
	Topic string
	// Key is the Kafka key: the device id.
	Key []byte
	// Value is the encoded edgebridge.v1.Envelope, without its sequence.
	Value []byte
	// Reason, when set on a record given to Append, stores it directly as a
	// dead letter with this reason (a message the intake rejected). On a
	// dead letter returned by DeadLetters it is the reason it was stored.
	Reason string
}
