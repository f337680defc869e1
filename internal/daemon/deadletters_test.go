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

	"github.com/edgebridge/edgebridge/internal/buffer"
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

	q, err = buffer.Open(buffer.Config{Dir: bufDir, MinFreeDisk: -1}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if st := q.Stats(); st.DeadLetters != 1 || st.Records != 1 {
		t.Fatalf("after requeue: %+v, want 1 dead letter and 1 record to send", st)
	}
}
