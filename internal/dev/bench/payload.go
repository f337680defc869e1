package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A payload is what a simulated device publishes:
//
//	magic "EBB1" (4) | phase (1) | device (4) | counter (8) | publish time, unix ns (8) | filler
//
// The phase tags which measurement a message belongs to, so a late arrival
// from one phase never lands in the next phase's histogram.
const (
	payloadMagic = "EBB1"
	// MinPayload is the smallest payload that holds the header.
	MinPayload = 4 + 1 + 4 + 8 + 8
)

var errNotPayload = errors.New("not a bench payload")

// Payload is the decoded header.
type Payload struct {
	Phase   uint8
	Device  uint32
	N       uint64
	Publish int64 // unix ns
}

// AppendPayload writes p as a payload of size bytes into b[:0].
func AppendPayload(b []byte, p Payload, size int) []byte {
	if size < MinPayload {
		size = MinPayload
	}
	b = append(b[:0], payloadMagic...)
	b = append(b, p.Phase)
	b = binary.BigEndian.AppendUint32(b, p.Device)
	b = binary.BigEndian.AppendUint64(b, p.N)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Publish))
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// ParsePayload decodes the header of a payload.
func ParsePayload(b []byte) (Payload, error) {
	if len(b) < MinPayload || string(b[:4]) != payloadMagic {
		return Payload{}, fmt.Errorf("%w (%d bytes)", errNotPayload, len(b))
	}
	return Payload{
		Phase:   b[4],
		Device:  binary.BigEndian.Uint32(b[5:]),
		N:       binary.BigEndian.Uint64(b[9:]),
		Publish: int64(binary.BigEndian.Uint64(b[17:])),
	}, nil
}
