package buffer

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// Record is one message in the queue, in both directions: the caller fills
// Topic, Key, Value (and Reason) for Append, which sets Seq and Time; Read
// and DeadLetters return every field as stored.
//
// Reason is the one field whose meaning depends on the direction. Given to
// Append, a non-empty Reason is an instruction: store this record as a dead
// letter, not in the queue (the intake rejected it; it is never read by
// Read). Returned by DeadLetters, it is the reason the dead letter was
// stored with, by Append or by DeadLetter. Read returns only waiting
// records, whose Reason is always empty.
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
	// Reason: on Append, set means "store as a dead letter with this
	// reason"; on a dead letter DeadLetters returns, the stored reason;
	// empty on every record Read returns. See the type's comment.
	Reason string
}

// On disk a record is stored under its 8-byte big-endian sequence as
//
//	version (1 byte) | crc32c (4 bytes, big-endian) | body
//	body = uvarint(unix nanos) | uvarint(len topic) topic
//	       | uvarint(len key) key | uvarint(len reason) reason | value
//
// The checksum covers the sequence key and the body, so a record that bbolt
// returns under the wrong key is caught as well as flipped bits.
const recordVersion = 1

const recordHeaderLen = 5

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeBody returns the record's body with room for the header in front.
// Appenders encode bodies concurrently; the writer, which assigns the
// sequence, only seals the header.
func encodeBody(r *Record, t time.Time) []byte {
	n := recordHeaderLen + 4*binary.MaxVarintLen64 + len(r.Topic) + len(r.Key) + len(r.Reason) + len(r.Value)
	b := make([]byte, recordHeaderLen, n)
	b = binary.AppendUvarint(b, uint64(t.UnixNano()))
	b = appendString(b, r.Topic)
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	b = appendString(b, r.Reason)
	return append(b, r.Value...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// seal writes the header of a value made by encodeBody for sequence seq.
func seal(v []byte, seq uint64) {
	v[0] = recordVersion
	binary.BigEndian.PutUint32(v[1:5], checksum(seq, v[recordHeaderLen:]))
}

func checksum(seq uint64, body []byte) uint32 {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return crc32.Update(crc32.Checksum(k[:], castagnoli), castagnoli, body)
}

// decodeRecord decodes a stored value. It copies everything out of v, which
// may be memory owned by a bbolt transaction.
//
// topicHint is a topic string to reuse when the record's topic is the same:
// the records of a read usually share one, and the string is not
// allocated again for each.
func decodeRecord(seq uint64, v []byte, topicHint string) (Record, error) {
	if len(v) < recordHeaderLen {
		return Record{}, fmt.Errorf("record %d: %w: %d bytes is shorter than the header", seq, ErrCorrupt, len(v))
	}
	if v[0] != recordVersion {
		return Record{}, fmt.Errorf("record %d: %w: unknown version %d", seq, ErrCorrupt, v[0])
	}
	body := v[recordHeaderLen:]
	if got, want := checksum(seq, body), binary.BigEndian.Uint32(v[1:5]); got != want {
		return Record{}, fmt.Errorf("record %d: %w: checksum %08x, stored %08x", seq, ErrCorrupt, got, want)
	}
	r := Record{Seq: seq}
	nanos, n := binary.Uvarint(body)
	if n <= 0 {
		return Record{}, fmt.Errorf("record %d: %w: bad time", seq, ErrCorrupt)
	}
	body = body[n:]
	r.Time = time.Unix(0, int64(nanos))
	var topic, key, reason []byte
	var ok bool
	if topic, body, ok = cutField(body); !ok {
		return Record{}, fmt.Errorf("record %d: %w: bad topic", seq, ErrCorrupt)
	}
	if key, body, ok = cutField(body); !ok {
		return Record{}, fmt.Errorf("record %d: %w: bad key", seq, ErrCorrupt)
	}
	if reason, body, ok = cutField(body); !ok {
		return Record{}, fmt.Errorf("record %d: %w: bad reason", seq, ErrCorrupt)
	}
	if string(topic) == topicHint {
		r.Topic = topicHint
	} else {
		r.Topic = string(topic)
	}
	r.Reason = string(reason)
	// One allocation holds the key and the value, with room after the
	// value for what a reader appends in place (the forwarder appends the
	// envelope's sequence field): what a read window holds is one copy.
	buf := make([]byte, len(key)+len(body), len(key)+len(body)+ValueSpare)
	copy(buf, key)
	copy(buf[len(key):], body)
	r.Key = buf[:len(key):len(key)]
	r.Value = buf[len(key):]
	return r, nil
}

// ValueSpare is the room after each Value that Read returns: a caller can
// append that many bytes without a copy.
const ValueSpare = 16

func cutField(b []byte) (field, rest []byte, ok bool) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return nil, nil, false
	}
	return b[n : n+int(l)], b[n+int(l):], true
}

// recordTime returns the append time of a stored value without decoding or
// copying the rest.
func recordTime(v []byte) (time.Time, bool) {
	if len(v) < recordHeaderLen {
		return time.Time{}, false
	}
	nanos, n := binary.Uvarint(v[recordHeaderLen:])
	if n <= 0 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(nanos)), true
}

// storedSize is what a record counts against max_bytes: its key and value
// as stored, not bbolt's page overhead.
func storedSize(value []byte) int64 { return int64(8 + len(value)) }

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}
