package edgebridgev1

import "google.golang.org/protobuf/encoding/protowire"

// ContentType is the content-type header of every Kafka record whose value
// is an Envelope.
const ContentType = "application/x-protobuf; messageType=edgebridge.v1.Envelope"

// AppendSequence appends the sequence field (2) to b, an encoded Envelope
// whose sequence is unset, and returns the extended slice.
//
// The intake encodes the envelope before the buffer assigns the sequence,
// and the forwarder must not pay a decode and re-encode per record to fill
// it in. The protobuf encoding allows fields in any order, and a parser
// keeps the last value of a scalar field it sees, so the result decodes as
// the same Envelope with Sequence set.
func AppendSequence(b []byte, seq uint64) []byte {
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	return protowire.AppendVarint(b, seq)
}
