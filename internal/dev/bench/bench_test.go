package bench

import (
	"os"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{0, MinPayload, 200, 4096} {
		p := Payload{Phase: 7, Device: 3, N: 1 << 40, Publish: time.Now().UnixNano()}
		b := AppendPayload(nil, p, size)
		if want := max(size, MinPayload); len(b) != want {
			t.Fatalf("size %d: payload of %d bytes, want %d", size, len(b), want)
		}
		got, err := ParsePayload(b)
		if err != nil || got != p {
			t.Fatalf("size %d: parsed %+v, %v; want %+v", size, got, err, p)
		}
	}
	if _, err := ParsePayload([]byte(`{"device":"dev-001","n":1}`)); err == nil {
		t.Fatal("a foreign payload parsed as a bench payload")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != -1 {
		t.Fatal("empty histogram has a median")
	}
	for i := 1; i <= 1000; i++ { // 1..1000 ms
		h.Record(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {0.999, 999 * time.Millisecond}} {
		got := h.Quantile(c.q)
		if diff := float64(got-c.want) / float64(c.want); diff < -0.07 || diff > 0.07 {
			t.Errorf("q%.3f = %s, want %s within 7%%", c.q, got, c.want)
		}
	}
	back := FromSparse(h.Sparse())
	if *back != h {
		t.Fatal("sparse round trip changed the histogram")
	}
}

func TestBucketsAreContiguous(t *testing.T) {
	for us := uint64(0); us < 1<<20; us++ {
		i := bucketOf(us)
		if lowerBound(i) > us || lowerBound(i+1) <= us {
			t.Fatalf("%dus in bucket %d [%d, %d)", us, i, lowerBound(i), lowerBound(i+1))
		}
	}
}

func TestEnvelopePayload(t *testing.T) {
	want := AppendPayload(nil, Payload{Phase: 1, N: 9}, 200)
	env := &edgebridgev1.Envelope{NodeId: "n", DeviceId: "d", MqttTopic: "devices/d/telemetry", Payload: want, Qos: 1,
		Attributes: map[string]string{"a": "b"}}
	b, err := proto.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	b = edgebridgev1.AppendSequence(b, 42)
	if got := envelopePayload(b); string(got) != string(want) {
		t.Fatalf("payload %q, want %q", got, want)
	}
	if envelopePayload([]byte{0xff}) != nil {
		t.Fatal("garbage yielded a payload")
	}
}

func TestReadProcSelf(t *testing.T) {
	before, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "w")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	after, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.RSS <= 0 || after.HWM < after.RSS {
		t.Errorf("RSS %d, HWM %d", after.RSS, after.HWM)
	}
	// utime+stime count in clock ticks (10 ms), so a fast test may not
	// have used one yet: keep the CPU busy until the reading moves.
	cpu := after.CPU
	for start := time.Now(); cpu <= 0 && time.Since(start) < 5*time.Second; {
		if p, err := ReadProc(os.Getpid()); err == nil {
			cpu = p.CPU
		}
	}
	if cpu <= 0 {
		t.Errorf("CPU %s after 5 s of reading /proc in a loop", cpu)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(f.Name(), &fs); err == nil && fs.Type == 0x01021994 {
		t.Skip("TempDir is on tmpfs: writes there never reach storage")
	}
	if d := after.WriteBytes - before.WriteBytes; d < 1<<20 {
		t.Errorf("write_bytes grew by %d after an fsynced 1 MiB write", d)
	}
}
