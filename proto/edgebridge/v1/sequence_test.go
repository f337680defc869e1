package edgebridgev1

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestAppendSequenceDecodesAsEnvelope(t *testing.T) {
	for _, seq := range []uint64{1, 127, 128, 1 << 40, ^uint64(0)} {
		in := &Envelope{
			NodeId:     "edge-01",
			DeviceId:   "dev-7",
			MqttTopic:  "devices/dev-7/telemetry",
			Payload:    []byte{0, 1, 2, 0xff},
			Qos:        1,
			Retained:   true,
			ReceivedAt: timestamppb.New(time.Unix(1700000000, 42)),
			Attributes: map[string]string{"a": "b"},
		}
		b, err := proto.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out Envelope
		if err := proto.Unmarshal(AppendSequence(b, seq), &out); err != nil {
			t.Fatalf("seq %d: unmarshal: %v", seq, err)
		}
		in.Sequence = seq
		if !proto.Equal(in, &out) {
			t.Fatalf("seq %d: got %v, want %v", seq, &out, in)
		}
	}
}
