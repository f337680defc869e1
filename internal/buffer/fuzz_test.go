package buffer

import (
	"bytes"
	"testing"
	"time"
)

// FuzzDecodeRecord feeds arbitrary stored values to the decoder: it must
// never panic, and whatever it accepts must re-encode to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for i, r := range []Record{
		rec("dev-1", 1),
		{Topic: "t", Key: nil, Value: nil},
		{Topic: "", Key: []byte("k"), Value: []byte("no route"), Reason: "no_route"},
		{Topic: "iot.telemetry", Key: bytes.Repeat([]byte("k"), 300), Value: bytes.Repeat([]byte{0}, 5000)},
	} {
		v := encodeBody(&r, time.Unix(1700000000, int64(i)))
		seal(v, uint64(i+1))
		f.Add(uint64(i+1), v)
	}
	f.Add(uint64(7), []byte{})
	f.Add(uint64(7), []byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, seq uint64, v []byte) {
		r, err := decodeRecord(seq, v, "")
		if err != nil {
			return
		}
		if verify(seq, v) != nil {
			t.Fatalf("decoded a record whose checksum verify rejects")
		}
		again := encodeBody(&r, r.Time)
		seal(again, seq)
		if !bytes.Equal(again, v) {
			t.Fatalf("round trip changed the record:\n in %x\nout %x", v, again)
		}
		// Key and Value share one allocation: appending to either, as
		// the caller owning them may, must leave the other intact.
		key, value := bytes.Clone(r.Key), bytes.Clone(r.Value)
		grown := append(r.Value, bytes.Repeat([]byte{0xee}, ValueSpare+1)...)
		_ = append(r.Key, 0xdd)
		if !bytes.Equal(r.Key, key) || !bytes.Equal(grown[:len(value)], value) {
			t.Fatalf("appending to the key or value of a record changed the other")
		}
		hinted, err := decodeRecord(seq, v, r.Topic)
		if err != nil || hinted.Topic != r.Topic {
			t.Fatalf("decoding with the topic as hint: %v, topic %q want %q", err, hinted.Topic, r.Topic)
		}
	})
}
