package forward

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

const (
	alarms    = "iot.alarms"
	telemetry = "iot.telemetry"
)

// The reported case: two routes, and the bridge's principal may write
// iot.telemetry but not iot.alarms. 100 alarms, then 1000 telemetry: all the
// telemetry reaches Kafka, the alarms wait in the buffer (not in dead
// letters), the parked topic shows in edgebridge_forward_parked_topics and
// the log, and once the operator fixes Kafka the alarms follow by
// themselves, in order.
func TestParkedTopicOthersFlow(t *testing.T) {
	const admin, edge, pass = "admin", "edge", "edge-pass"
	writeTelemetry := kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: telemetry,
		Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationWrite, Allow: true}
	describeAlarms := kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: alarms,
		Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationDescribe, Allow: true}
	writeAlarms := describeAlarms
	writeAlarms.Operation = kmsg.ACLOperationWrite
	tests := []struct {
		name   string
		acls   []kfake.ACL
		seed   bool   // iot.alarms exists from the start
		reason string // of the parked topic
		fix    func(t *testing.T, adm *kgo.Client)
	}{{
		name:   "no ACL at all on the topic: its metadata is refused",
		acls:   []kfake.ACL{writeTelemetry},
		seed:   true,
		reason: "topic_authorization_failed",
		fix:    func(t *testing.T, adm *kgo.Client) { grant(t, adm, edge, writeAlarms) },
	}, {
		name:   "describe but no write ACL: its produce is refused",
		acls:   []kfake.ACL{writeTelemetry, describeAlarms},
		seed:   true,
		reason: "topic_authorization_failed",
		fix:    func(t *testing.T, adm *kgo.Client) { grant(t, adm, edge, writeAlarms) },
	}, {
		name:   "the topic does not exist yet",
		acls:   []kfake.ACL{writeTelemetry, writeAlarms},
		reason: "unknown_topic",
		fix:    func(t *testing.T, adm *kgo.Client) { createTopic(t, adm, alarms, 2) },
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []kfake.Opt{kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
				kfake.Superuser("PLAIN", admin, admin), kfake.User("PLAIN", edge, pass, tt.acls...),
				kfake.SeedTopics(4, telemetry)}
			if tt.seed {
				opts = append(opts, kfake.SeedTopics(2, alarms))
			}
			c, err := kfake.NewCluster(opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			asAdmin := []kgo.Opt{kgo.SASL(plain.Auth{User: admin, Pass: admin}.AsMechanism())}

			src := newMemSource()
			for i := range 100 {
				src.add(alarms, []byte("dev-"+strconv.Itoa(i%10)), []byte("alarm"))
			}
			for i := range 1000 {
				src.add(telemetry, []byte("dev-"+strconv.Itoa(i%10)), []byte("reading"))
			}
			cfg := testConfig(c.ListenAddrs())
			cfg.SASL = SASL{Mechanism: "plain", Username: edge, Password: pass}
			log, sink := testkit.CaptureLogs(t)
			r := startWith(t, cfg, src, log)

			recs := newConsumerWith(t, c.ListenAddrs(), asAdmin, telemetry).until(t, 1000, 30*time.Second)
			if dups := checkOrder(t, recs); dups != 0 {
				t.Errorf("%d duplicates", dups)
			}
			testkit.WaitWithin(t, 10*time.Second, "the telemetry to leave the buffer", func() bool { return src.remaining() == 100 })
			testkit.WaitWithin(t, 10*time.Second, "the topic to show as parked", func() bool {
				return parkedTopics(t, r, tt.reason) == 1
			})
			if dl := src.deadLetters(); len(dl) != 0 {
				t.Errorf("%d dead letters, want none: the alarms must wait", len(dl))
			}
			if !logged(sink, "kafka refuses a topic", alarms, tt.reason) {
				t.Errorf("no log line says that %s is parked, and why", alarms)
			}
			if !r.p.Up() || testkit.Value(t, r.p.m.up) != 1 {
				t.Error("Kafka reported down while it takes the telemetry")
			}

			adm := adminClient(t, c, asAdmin)
			tt.fix(t, adm)
			got := newConsumerWith(t, c.ListenAddrs(), asAdmin, alarms).until(t, 100, 30*time.Second)
			if dups := checkOrder(t, got); dups != 0 || len(got) != 100 {
				t.Errorf("%d alarms with %d duplicates, want 100 and none", len(got), dups)
			}
			testkit.WaitWithin(t, 10*time.Second, "the buffer to empty", func() bool { return src.remaining() == 0 })
			testkit.WaitWithin(t, 10*time.Second, "the topic to resume", func() bool { return parkedTopics(t, r, "") == 0 })
			if !logged(sink, "kafka takes the topic again", alarms, tt.reason) {
				t.Errorf("no log line says that %s resumed", alarms)
			}
		})
	}
}

// parkedTopics is edgebridge_forward_parked_topics{reason}, or its sum
// over the reasons when reason is "".
func parkedTopics(t testing.TB, r *running, reason string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "edgebridge_forward_parked_topics" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && (reason == "" || l.GetValue() == reason) {
					sum += m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}

// logged reports whether one line of the log holds msg and every one of
// the words.
func logged(sink *testkit.Buffer, msg string, words ...string) bool {
	for line := range strings.Lines(sink.String()) {
		if !strings.Contains(line, `"msg":"`+msg) {
			continue
		}
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}

func adminClient(t *testing.T, c *kfake.Cluster, opts []kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// grant gives user what a says, as an operator would.
func grant(t *testing.T, adm *kgo.Client, user string, a kfake.ACL) {
	t.Helper()
	req := kmsg.NewPtrCreateACLsRequest()
	c := kmsg.NewCreateACLsRequestCreation()
	c.ResourceType, c.ResourceName, c.ResourcePatternType = a.Resource, a.Name, a.Pattern
	c.Principal, c.Host, c.Operation, c.PermissionType = "User:"+user, "*", a.Operation, kmsg.ACLPermissionTypeAllow
	req.Creations = append(req.Creations, c)
	resp, err := req.RequestWith(context.Background(), adm)
	answered(t, "create ACL", err, func() []kmsg.CreateACLsResponseResult { return resp.Results },
		func(r kmsg.CreateACLsResponseResult) int16 { return r.ErrorCode })
}

func createTopic(t *testing.T, adm *kgo.Client, topic string, partitions int32) {
	t.Helper()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, partitions, 1
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), adm)
	answered(t, "create topic", err, func() []kmsg.CreateTopicsResponseTopic { return resp.Topics },
		func(r kmsg.CreateTopicsResponseTopic) int16 { return r.ErrorCode })
}

// answered fails the test when an admin request failed: err, or the error
// code of one of its answers (read only when err is nil).
func answered[A any](t *testing.T, what string, err error, answers func() []A, code func(A) int16) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for _, a := range answers() {
		if err := kerr.ErrorForCode(code(a)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// Topic-wide errors: a topic Kafka refuses until an operator acts
// (authorization, unknown topic) is parked with its records kept; one that
// can never be written (a name Kafka rejects, no topic at all) goes to dead
// letters. The other topic keeps flowing either way.
func TestTopicErrors(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "secret", "bad"))
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "secret", Err: kerr.TopicAuthorizationFailed, Count: -1})
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "bad", Err: kerr.InvalidTopicException, Count: -1})
	src := newMemSource()
	want := map[uint64]string{}
	kept := 0
	for i := range 600 {
		switch i % 4 {
		case 0:
			src.add(testTopic, []byte("dev-"+strconv.Itoa(i%7)), []byte("ok"))
		case 1:
			src.add("secret", []byte("dev-1"), []byte("x"))
			kept++
		case 2:
			want[src.add("bad", []byte("dev-1"), []byte("x"))] = "invalid_topic"
		case 3:
			src.add("no-such-topic", []byte("dev-1"), []byte("x"))
			kept++
		}
	}
	want[src.add("", []byte("dev-1"), []byte("x"))] = "no_topic"
	r := start(t, testConfig(c.ListenAddrs()), src)

	recs := newConsumer(t, c.ListenAddrs(), testTopic).until(t, 150, 30*time.Second)
	checkOrder(t, recs)
	testkit.WaitWithin(t, 20*time.Second, "the dead letters", func() bool { return len(src.deadLetters()) == len(want) })
	testkit.WaitWithin(t, 20*time.Second, "only the parked topics' records in the buffer", func() bool { return src.remaining() == kept })
	dl := src.deadLetters()
	for seq, reason := range want {
		if dl[seq] != reason {
			t.Errorf("seq %d: dead letter reason %q, want %q", seq, dl[seq], reason)
		}
	}
	for _, reason := range []string{"topic_authorization_failed", "unknown_topic"} {
		testkit.WaitWithin(t, 20*time.Second, "a topic parked for "+reason, func() bool {
			return parkedTopics(t, r, reason) == 1
		})
	}
	if got := parkedTopics(t, r, ""); got != 2 {
		t.Errorf("edgebridge_forward_parked_topics = %v, want 2", got)
	}
	if got := src.remaining(); got != kept {
		t.Errorf("%d records in the buffer, want the %d of the parked topics", got, kept)
	}
}
