package forward

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

// Contract 2 and 3: 100k records all reach Kafka, in buffer order per
// device, and leave the buffer only once acknowledged; every record carries
// the envelope with its sequence and the content-type, node and seq headers.
func TestNormalFlow(t *testing.T) {
	const n, keys = 100_000, 97
	c := newCluster(t)
	src := newMemSource()
	env, err := proto.Marshal(&edgebridgev1.Envelope{NodeId: "node-1", DeviceId: "dev", Payload: []byte("payload")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		src.add(testTopic, []byte("dev-"+itoa(i%keys)), env)
	}
	cfg := testConfig(c.ListenAddrs())
	cfg.Compression = "zstd"
	r := start(t, cfg, src)

	recs := delivered(t, c, src, n, 60*time.Second)
	if got := testkit.Value(t, r.p.m.records); got != n {
		t.Errorf("edgebridge_forward_records_total = %v, want %d", got, n)
	}
	if !r.p.Up() {
		t.Error("Up() = false after a successful drain")
	}
	for _, g := range recs[:10] {
		if g.headers[HeaderContentType] != edgebridgev1.ContentType || g.headers[HeaderNode] != "node-1" {
			t.Fatalf("headers = %v", g.headers)
		}
		var e edgebridgev1.Envelope
		if err := proto.Unmarshal(g.value, &e); err != nil {
			t.Fatalf("value does not decode as an Envelope: %v", err)
		}
		if e.GetSequence() != g.seq || e.GetNodeId() != "node-1" {
			t.Fatalf("envelope sequence %d node %q, header seq %d", e.GetSequence(), e.GetNodeId(), g.seq)
		}
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for i > 0 {
		n--
		b[n] = digits[i%10]
		i /= 10
	}
	return string(b[n:])
}
