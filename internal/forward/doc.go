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
// # Invariants
//
// What the design below keeps true, whatever Kafka does:
//   - A record leaves the buffer only once Kafka acknowledged it, or it
//     went to dead letters; a record read and not settled is in the window
//     (in flight), or skipped: then the lane or topic that skipped it
//     remembers the lowest sequence it skipped, and a rewind of the read
//     cursor to just below it reads it again.
//   - Per partition, records reach Kafka in buffer order: a lane produces
//     only while it is open and franz-go has not said it fails the
//     partition; a failed lane resumes only once nothing of its round is in
//     flight, and then from its first skipped record.
//   - The window bounds memory: at most kafka.max_buffered_records records
//     and kafka.max_buffered_bytes bytes are in flight (a record larger
//     than the window goes alone). One lane without progress holds at most
//     half of it, and all such lanes together at most half.
//   - Every state that stops records shows: lanes not open in
//     edgebridge_forward_parked_partitions, parked or probing topics in
//     edgebridge_forward_parked_topics{reason}, and a log line when each
//     starts and ends.
//   - No wait is without an end: a failed lane and a parked topic carry the
//     time they are tried again, and the reader's every wait ends on a wake
//     from the ack loop or at the earliest of those times.
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
//     backoff (5s doubling to 5m; a metadata error that is not a refusal
//     is asked again after kafka.backoff) one record is sent as a probe;
//     once Kafka takes it the cursor is rewound to the topic's first
//     skipped record. A parked topic shows in
//     edgebridge_forward_parked_topics{reason} and is logged when it is
//     parked and when it resumes.
//   - A topic that can never be written (no topic, a name Kafka rejects)
//     sends its records to dead letters.
//
// A rejected batch (MESSAGE_TOO_LARGE, INVALID_RECORD, ...) fails the whole
// partition in franz-go without saying which record was bad, so each failed
// record is sent again alone and goes to dead letters only if it fails
// alone; the others flow on. Any other error is retried, from the buffer,
// after a backoff.
//
// # Scheduler
//
// Producer holds the Kafka client, the Source, the metrics and the I/O:
// the reader (Run's goroutine) reads, builds records and produces; the ack
// loop acks and dead-letters. The state machine of the lanes and topics
// above is the scheduler's (scheduler.go, lane.go, topic.go), under its
// own mutex. It does no I/O and reads no clock (every method takes now):
// the reader asks admit whether to produce, skip or wait for each record
// and unpark what may resume; the ack loop first makes a batch's outcome
// durable in the Source, holding no lock, then books it (settled).
//
// Locks: scheduler.mu, kafkaState.mu and partitioner.mu are leaves, never
// held together, and none is held while calling franz-go. franz-go calls
// in under its own partition locks (the partitioner, kgoLogger's hint,
// the hooks); the hint takes no lock at all (scheduler.partitionFailing).
//
// A lane (one partition) is open, stalled, failed or isolating; a topic is
// open, parked or probing. A topic's phase comes first: a record of a
// parked topic is skipped whatever its lane. The rows below, each tested
// by the row of the same name in scheduler_test.go:
//
//	row  state         event                                              next          and
//	W1   any           admit: record in flight, or settled since the      same          skip
//	                   Read began (read again after a rewind)
//	L1   open          admit: room in the lane and in the window          open          produce
//	L2   open          admit: lane at its share, progress within          open          wait until then
//	                   metadata_min_age
//	L3   open          admit: lane at its share, no progress for          stalled       skip, log
//	                   metadata_min_age (even with the window full)
//	L4   open          admit: room in the lane, window full               open          wait; reclaim
//	L5   open          admit: franz-go failing the partition              failed        skip; retry now
//	L6   open          admit: suspect record, lane has records in flight  failed        skip; retry now
//	L7   open          admit: suspect record, lane empty                  isolating     produce it alone
//	L8   not open      admit                                              same          skip
//	L9   any           franz-go hint or failed promise                    same          mark failing, cancel round
//	L10  open          settled: failure, retriable                        failed        retry after backoff, log
//	L11  open          settled: failure, cancelled with its round         failed        retry now
//	L12  open          settled: failure, batch rejected                   failed        retry now; record suspect
//	L13  stalled       settled: failure (a cause of L10-L12)              failed        as L10-L12 by the cause
//	L14  isolating     settled: the suspect failed, not for its batch     failed        as L10-L11; still suspect
//	                   (retriable, or cancelled with its round)
//	L15  failed        settled: another failure of the same round         failed        retry time kept
//	L16  failed        settled: ack of a record after the failed one      failed        count reordered
//	L17  any           settled: ack                                       same          backoff and probation reset
//	L18  isolating     settled: the suspect dead-lettered                 isolating     the lane's suspects cleared
//	L19  open,stalled  reclaim: lanes without progress hold more than     failed        round cancelled, probation,
//	                   half of the window, this one among the largest                   retry after backoff, log
//	L20  stalled       unpark: lane at half its share or less             open          same round, rewind, log
//	L21  stalled       unpark: lane above half its share                  stalled
//	L22  failed        unpark: nothing in flight, retry time passed       open          new round, rewind
//	L23  failed        unpark: records in flight, or before retry time    failed        next wake at retry time
//	L24  isolating     unpark: nothing in flight                          open          new round, rewind
//	T1   open          settled: failure, topic refused                    parked        skip, gauge, log
//	T2   open          metadata: topic answered with an error that is     parked        retry after kafka.backoff
//	                   not a refusal (reason metadata)
//	T3   open          metadata: refused, TOPIC_AUTHORIZATION_FAILED or   parked        retry after 5s-5m, as T1
//	                   UNKNOWN_TOPIC_ID
//	T4   parked        admit (and before its partitions are asked)        parked        skip
//	T5   parked        settled: refused for another reason                parked        gauge moves, log
//	T6   parked        unpark: retry time passed                          probing       rewind
//	T7   probing       admit: no probe in flight                          probing       produce the probe
//	T8   probing       admit: probe in flight                             probing       skip
//	T9   probing       settled: the probe acked                           probing       interrupt the reader
//	T10  probing       unpark: the probe was acked                        open          rewind, log
//	T11  probing       settled: the probe refused                         parked        longer wait
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
