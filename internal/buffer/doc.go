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
// with a capped backoff. max_age, when set, expires records older than it
// under either policy, counted with reason "max_age".
//
// # Damage
//
// Open runs bbolt's consistency check and verifies every record's
// checksum. A file that fails is moved to quarantine/, logged and counted
// in edgebridge_buffer_quarantined_files_total; the records that still pass
// their checksum are copied into a fresh file and the bridge goes on. A
// record that fails its checksum when read is dropped with reason
// "corrupt": it can no longer be decoded, let alone sent.
package buffer
