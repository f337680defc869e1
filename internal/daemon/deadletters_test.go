package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgebridge/edgebridge/internal/buffer"
	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

// An operator lists the dead letters of a stopped bridge and sends one
// again; while the bridge holds the buffer the command refuses clearly.
func TestDeadLettersCommand(t *testing.T) {
	dir := t.TempDir()
	bufDir := filepath.Join(dir, "buffer")
	cfgPath := filepath.Join(dir, "edgebridge.yaml")
	if err := os.WriteFile(cfgPath, []byte("node_id: edge-01\nkafka:\n  brokers: [k:9092]\nroutes:\n  - filter: devices/+/telemetry\n    kafka_topic: iot.telemetry\nbuffer:\n  dir: "+bufDir+"\n  min_free_disk: -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	q, err := buffer.Open(buffer.Config{Dir: bufDir, MinFreeDisk: -1}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := []buffer.Record{
		{Topic: "", Key: nil, Value: []byte("x"), Reason: "no_route"},
		{Topic: "iot.telemetry", Key: []byte("dev-1"), Value: []byte("too big"), Reason: "message_too_large"},
	}
	if err := q.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(append([]string{"deadletters", "--config", cfgPath}, args...), &out, &errb, Build{})
		return code, out.String(), errb.String()
	}

	// The bridge (here: q) holds the buffer.
	if code, _, stderr := run("list"); code != ExitFailure || !strings.Contains(stderr, "stop it first") {
		t.Fatalf("list while running: exit %d, %q", code, stderr)
	}
	q.Close()

	code, stdout, stderr := run()
	if code != ExitOK {
		t.Fatalf("list: exit %d: %s", code, stderr)
	}
	var lines []deadLetterLine
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var d deadLetterLine
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, d)
	}
	if len(lines) != 2 || lines[0].Reason != "no_route" || lines[1].Reason != "message_too_large" || lines[1].Key != "dev-1" || lines[1].Seq != recs[1].Seq {
		t.Fatalf("listed %+v", lines)
	}

	if code, _, stderr := run("requeue", fmt.Sprint(recs[1].Seq)); code != ExitOK {
		t.Fatalf("requeue: exit %d: %s", code, stderr)
	}
	if code, _, stderr := run("requeue", "abc"); code != ExitUsage || !strings.Contains(stderr, "not a sequence") {
		t.Fatalf("requeue abc: exit %d: %s", code, stderr)
	}
	if code, _, stderr := run("requeue", "999"); code != ExitFailure || !strings.Contains(stderr, "not found") {
		t.Fatalf("requeue unknown: exit %d: %s", code, stderr)
	}

	q = openQueue(t, bufDir)
	if st := q.Stats(); st.DeadLetters != 1 || st.Records != 1 {
		t.Fatalf("after requeue: %+v, want 1 dead letter and 1 record to send", st)
	}
}

// Finding 12 of the fault model: every dead letter can be recovered. A
// no_route or no_device_id dead letter is routed by the routes in force at
// requeue time (before, it was requeued without a topic and came straight
// back); an oversized payload is kept whole; list exports the payloads;
// requeue takes --reason and --all and gives dead.db's disk back.
func TestDeadLettersRequeueRoutesAgain(t *testing.T) {
	dir := t.TempDir()
	bufDir := filepath.Join(dir, "buffer")
	cfgPath := filepath.Join(dir, "edgebridge.yaml")
	writeCfg := func(routes string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte("node_id: edge-01\nkafka:\n  brokers: [k:9092]\nroutes:\n"+routes+"buffer:\n  dir: "+bufDir+"\n  min_free_disk: -1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("  - filter: devices/+/telemetry\n    kafka_topic: iot.telemetry\n")
	envelope := func(topic string, payload []byte) []byte {
		b, err := proto.Marshal(&edgebridgev1.Envelope{NodeId: "edge-01", MqttTopic: topic, Payload: payload, ReceivedAt: timestamppb.New(time.Unix(1700000000, 0))})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	q, err := buffer.Open(buffer.Config{Dir: bufDir, MinFreeDisk: -1}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := []buffer.Record{
		{Value: envelope("alarms/dev-7/fire", []byte("smoke")), Reason: "no_route"},
		{Value: envelope("alarms/never/routed/x", []byte("orphan")), Reason: "no_route"},
		{Topic: "iot.telemetry", Key: []byte("dev-1"), Value: envelope("devices/dev-1/telemetry", []byte("big")), Reason: "message_too_large"},
	}
	// Many more, so that compaction has pages to give back.
	filler := make([]buffer.Record, 3000)
	for i := range filler {
		filler[i] = buffer.Record{Topic: "iot.telemetry", Key: []byte("dev-2"), Value: envelope("devices/dev-2/telemetry", bytes.Repeat([]byte("f"), 500)), Reason: "topic_authorization_failed"}
	}
	if err := q.Append(context.Background(), append(recs, filler...)); err != nil {
		t.Fatal(err)
	}
	q.Close()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(append([]string{"deadletters", "--config", cfgPath}, args...), &out, &errb, Build{})
		return code, out.String(), errb.String()
	}

	code, stdout, stderr := run("list", "--payloads")
	if code != ExitOK {
		t.Fatalf("list: exit %d: %s", code, stderr)
	}
	var first deadLetterLine
	if err := json.Unmarshal([]byte(strings.SplitN(stdout, "\n", 2)[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first.MQTTTopic != "alarms/dev-7/fire" || string(first.Payload) != "smoke" || first.ReceivedAt == nil || !bytes.Equal(first.Value, recs[0].Value) {
		t.Fatalf("list --payloads: %+v", first)
	}

	// The operator adds the route the alarms needed.
	writeCfg("  - filter: devices/+/telemetry\n    kafka_topic: iot.telemetry\n  - filter: alarms/+/fire\n    kafka_topic: iot.alarms\n")
	code, stdout, stderr = run("requeue", "--reason", "no_route")
	if code != ExitOK || !strings.Contains(stdout, "requeued 1 dead letters") || !strings.Contains(stderr, `no route matches "alarms/never/routed/x"`) {
		t.Fatalf("requeue --reason no_route: exit %d\n%s\n%s", code, stdout, stderr)
	}
	before := fileSize(t, filepath.Join(bufDir, "dead.db"))
	code, stdout, stderr = run("requeue", "--all")
	if code != ExitOK || !strings.Contains(stdout, "requeued 3001 dead letters") {
		t.Fatalf("requeue --all: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if after := fileSize(t, filepath.Join(bufDir, "dead.db")); after >= before/2 {
		t.Fatalf("dead.db %d bytes after requeueing all but one, %d before: not compacted", after, before)
	}
	if code, _, stderr := run("requeue", "--all", "5"); code != ExitUsage {
		t.Fatalf("requeue --all 5: exit %d: %s", code, stderr)
	}

	q = openQueue(t, bufDir)
	if st := q.Stats(); st.DeadLetters != 1 || st.Records != 3002 {
		t.Fatalf("after requeue: %+v, want the orphan left and 3002 records to send", st)
	}
	got, err := q.Read(context.Background(), 0, 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Topic != "iot.alarms" || string(got[0].Key) != "dev-7" || !bytes.Equal(got[0].Value, recs[0].Value) {
		t.Fatalf("requeued alarm: topic %q key %q", got[0].Topic, got[0].Key)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// openQueue opens the buffer in dir, as the bridge would, until the test
// ends.
func openQueue(t *testing.T, dir string) *buffer.Queue {
	t.Helper()
	q, err := buffer.Open(buffer.Config{Dir: dir, MinFreeDisk: -1}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}
