// Package forward drains the durable buffer into Kafka with franz-go.
//
// # Guarantee
//
// A record leaves the buffer (Source.Ack) only after Kafka acknowledged it
// with acks=all; the idempotent producer keeps partition order across its
// own retries (at most 5 requests in flight per broker). Records are keyed by
// device id, so one device's records share a partition and arrive in buffer
// order. Every record carries the node id and its sequence in headers and in
// the envelope, so consumers can drop the duplicates a crash leaves behind.
//
// # Flow
//
// Run's goroutine reads the buffer from a cursor and produces each record
// with a context that is never cancelled (cancelling fails buffered records
// and, with idempotence, cannot take back what is on the wire). Promises do
// nothing but hand the record to the ack goroutine on a channel that has room
// for the whole window, so they never block franz-go's promise goroutine. The
// ack goroutine batches the acknowledged sequences into one Source.Ack.
//
// # Window and memory
//
// At most kafka.max_buffered_records records and kafka.max_buffered_bytes
// bytes are read and not yet settled; franz-go gets the same limits, so its
// Produce never blocks. When Kafka is slow or gone the window fills and
// reading stops: the backlog stays on disk and memory stays flat, whatever
// its size. Until a produce request has been answered (at start, and again
// after one failed), the window is one read (kafka.read_batch records, at
// most kafka.batch_max_bytes): a node that starts without its uplink, or
// whose produce requests time out, does not hold a whole window in memory
// to learn that. The first answer opens the whole window.
//
// # Lanes: failures and stalls without head-of-line blocking
//
// The reader knows each record's partition before producing it (Kafka's
// murmur2 key hash over the partition count franz-go last saw). Per
// partition ("lane") it tracks what is in flight. A lane is set aside
// (parked) when:
//   - Kafka failed one of its records. franz-go then fails every record
//     buffered for that partition, so the lane produces nothing more until
//     all its records in flight are settled; then the read cursor is rewound
//     to the lowest failed sequence and the lane's records are sent again, in
//     order, after a backoff for retriable errors. franz-go tells it in the
//     record's promise, or earlier in its log; a record it fails inside
//     Produce (a load error on the whole topic) is told only by a promise
//     that may come much later, so when Produce returns without having
//     queued the record to its partition, the reader waits for the promises
//     franz-go queued so far before it produces the next one.
//   - it holds half of the window and has made no progress for
//     kafka.metadata_min_age (its leader is gone, say). Its later records are
//     skipped and stay in the buffer while the other partitions keep flowing;
//     once it drains, the cursor is rewound to its first skipped record.
//     This check comes before the window's: a stalled lane's record is
//     skipped even when the window is full.
//   - the lanes without progress hold more than half of the window between
//     them (two dead partitions at half each would hold all of it). The
//     largest are taken back: their round's context is cancelled, so
//     franz-go fails the records it may still fail, and the lane is retried
//     after a backoff holding 1/8 of its usual share until Kafka takes one
//     of its records.
//
// Skipped and failed records are never acked, so a rewind finds exactly them
// (acked ones are deleted; those still in flight are recognised and skipped).
//
// # Permanent errors
//
// classify decides. An error that concerns a whole topic never stops the
// other topics:
//   - A topic Kafka refuses until an operator acts (TOPIC_AUTHORIZATION_FAILED
//     on metadata or produce, an unknown topic), or whose metadata Kafka
//     answers with any other error, is parked: its records are skipped and
//     stay in the buffer, in order, and the others flow. After a capped
//     backoff (5s doubling to 5m; a metadata error is asked again after the
//     usual backoff) one record is sent as a probe; once Kafka takes it the
//     cursor is rewound to the topic's first skipped record. A parked topic
//     shows in edgebridge_forward_parked_topics{reason} and is logged when
//     it is parked and when it resumes.
//   - A topic that can never be written (no topic, a name Kafka rejects)
//     sends its records to dead letters.
//
// A rejected batch (MESSAGE_TOO_LARGE, INVALID_RECORD, ...) fails the whole
// partition in franz-go without saying which record was bad, so each failed
// record is sent again alone and goes to dead letters only if it fails
// alone; the others flow on. Any other error is retried, from the buffer,
// after a backoff.
//
// # Kafka up
//
// edgebridge_kafka_up (Producer.Up) goes by Kafka's answers to Produce and,
// while nothing waits, to Metadata requests; a failed dial, TLS or SASL
// handshake or request, or a record refused with CLUSTER_AUTHORIZATION_FAILED
// (no producer ID for this client), says down. Requests answered before
// authentication (ApiVersions) prove nothing. The state is logged when it
// changes, at most twice a minute; the gauge follows every change.
//
// franz-go keeps a refused producer ID for the life of its client, failing
// every record with it: after such a refusal, once none of our records is in
// the client, it is closed and a new one made, after the same capped backoff
// as a parked topic's, so that the node resumes by itself after the grant.
//
// # Shutdown
//
// When Run's context ends the reader stops, franz-go is flushed for at most
// shutdown_timeout, then closed; what was not acknowledged stays in the
// buffer and is sent after the next start.
package forward
