// Package buffer is edgebridge's durable queue: between the MQTT PUBACK and
// Kafka's acknowledgement, a device's message lives only here.
//
// # Guarantee
//
// Append returns only after its records are committed and fsynced. A
// record is deleted only by Ack (Kafka acknowledged it), by DeadLetter
// (moved, not deleted), or by an overflow policy that counts and logs each
// drop. A crash at any moment — SIGKILL, power loss — loses nothing Append
// reported as stored and brings back nothing Ack reported as deleted.
// Sequence numbers are strictly increasing and never reused, across
// restarts and after the queue was drained.
//
// # On-disk layout
//
// The directory holds a chain of segments, each its own bbolt file named
// after the first sequence it may hold:
//
//	seg-00000000000000000001.db   oldest
//	seg-00000000000000052817.db
//	seg-00000000000000104999.db   head: appends go here
//	dead.db                       dead letters and the sequence reservation
//	quarantine/                   damaged files, moved aside, never deleted
//
// Every file has a "records" bucket keyed by the 8-byte big-endian sequence
// and a "meta" bucket. A stored value is version (1 byte), a CRC-32C of the
// sequence and body (4 bytes), and a body of append time, topic, key,
// reason and value (see record.go). The head's meta holds next_seq, written
// in the same transaction as every append; dead.db's meta holds
// reserved_seq, raised one million sequences ahead of use, so that even a
// damaged head file cannot make a sequence repeat.
//
// # Why segments
//
// bbolt never shrinks its file: after a two-day partition the buffer may
// hold gigabytes, and deleting the records frees pages inside the file, not
// disk. Compacting one big file means copying every live record while the
// queue runs. Instead the head is rolled when it reaches segment_bytes (or
// when it is empty but grew past a quarter of that), and an older segment
// whose records are all acked is closed and its file deleted: the disk is
// returned as the backlog drains, in segment-sized steps, with no copying.
// Acks arrive roughly in order, so segments empty roughly in order; one
// stuck record pins at most one segment.
//
// # Writing
//
// One writer goroutine owns all write transactions. Appends and acks that
// arrive while it commits wait and are committed together in the next
// transaction (group commit): one transaction on the head holds the new
// records, the acks that fall in the head and next_seq; acks in older
// segments take one transaction per segment. bbolt's freelist is not
// synced (NoFreelistSync, hashmap freelist): fewer pages per commit, and
// commits stay fast after a large drain. Reads use short read transactions
// bounded by count and bytes, never one long transaction.
//
// # Limits and overflow policies
//
// max_bytes bounds the logical size: the keys and values of records and
// dead letters, not bbolt's file size. When an append does not fit:
//
//   - block: the append waits until acks make room, or until its context
//     ends (ErrFull). The intake stops acknowledging, so the MQTT broker
//     keeps the messages.
//   - drop_oldest: the oldest waiting records are deleted to make room,
//     each counted in edgebridge_buffer_dropped_records_total{reason=
//     "overflow"} and logged at most once per drop_log_interval. The
//     oldest records the forwarder has not read yet go first, so that a
//     counted drop is a record that never reaches Kafka; records already
//     read (perhaps in flight) are dropped only when that cannot make
//     room. Dead letters are never dropped; when they alone fill the buffer,
//     appends wait as with block.
//
// A full disk (ENOSPC, or any failed commit) and free space below
// min_free_disk make appends wait under either policy: dropping records
// does not return disk space from a bbolt file, and the failed transaction
// was rolled back, leaving everything committed intact. Writes are retried
// with a capped, jittered backoff (internal/retry). max_age, when set,
// expires records older than it under either policy, counted with reason
// "max_age".
//
// # Damage
//
// Open reads little: the head segment and dead.db get bbolt's consistency
// check and every record's checksum verified; the older segments are opened
// read-only with the record count and size their meta keeps, so a start
// with gigabytes buffered reads a few pages per segment. Every page of an
// older segment is walked, on the writer goroutine, before its first write
// (usually its first ack), and after a start that did not follow a clean
// Close (no "clean" marker: a crash, a power loss) in the background too;
// every record's checksum is verified when it is read: a record that fails
// it is dropped with reason "corrupt".
//
// Only evidence of damage quarantines a file: bbolt refusing it as invalid,
// a failed checksum, a memory fault or bbolt panic while walking it. Any
// other failure to open (no descriptors left, no memory for the map, a
// transient I/O error) fails Open with an error naming the file, and
// changes nothing. A damaged file is moved to quarantine/ and what still
// passes its checksum is salvaged into a fresh file at the same path;
// records that could not be salvaged are counted as dropped ("corrupt").
// The salvage is crash-safe and the sequence counter then continues above
// dead.db's reservation, durably, before Open returns (recover.go says
// how): a sequence is never reused, whatever crash or restart follows.
//
// Damage found while running (a read or a commit touching a damaged mapped
// page, which bbolt reports with a fault or a panic) never crashes the
// process: the file is never written again and is listed in the directory's
// "damaged" file, appends wait (the MQTT broker keeps the messages), acks
// of that file are left out (its records are sent again after the
// restart), Writable fails so /readyz fails, and Damaged is closed: the
// daemon then shuts down and exits with its own code, and the next Open
// quarantines the listed file and goes on.
//
// # Where the code is
//
// Each file holds one concern; the sections above say why, the files how.
//
//   - queue.go: the Queue, Open and Close, Append and Ack, Stats, Writable.
//   - open.go: what Open reads: every file of the directory, the lazy open
//     of older segments, the full check of the head and dead.db.
//   - recover.go: damage at Open: quarantine, salvage, the sequence jump.
//   - check.go: the clean-shutdown marker and the background check after an
//     unclean end.
//   - read.go: Read.
//   - writer.go: the writer goroutine: its requests, the group-commit loop,
//     the retry of failed commits and operations.
//   - admit.go: which appends may commit now: max_bytes, min_free_disk, a
//     damaged file; the blocked state and the high-water log.
//   - commit.go: the transactions of a group commit: records and acks on
//     the segments, dead letters and the sequence reservation in dead.db.
//   - chain.go: the chain of segments: look-up, roll, reclaim.
//   - retention.go: records deleted without being delivered (drop_oldest,
//     max_age, corrupt), each counted and the log rate-limited.
//   - deadletter.go: dead letters: DeadLetter, Requeue, DeadLetters,
//     finishing interrupted moves, CompactDeadLetters.
//   - txn.go: the one path of every transaction, its fault handling, and
//     damage found while running.
//   - segment.go, record.go: the file and the record formats, bbolt's
//     options and the full scan.
//   - metrics.go, errors.go, config.go: what the package exports besides the
//     Queue.
package buffer
