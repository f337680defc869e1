package mqtt

import (
	"errors"
	"strings"
	"testing"
)

// Config-time validation of routes: a bad filter, Kafka topic, QoS or
// device level, and overlapping filters, are refused with an error naming
// the field by its YAML key.
func TestRouteValidation(t *testing.T) {
	long := strings.Repeat("a", 250)
	tests := []struct {
		name   string
		routes []Route
		want   []string // substrings of the error; nil means valid
	}{
		{"plus level", []Route{{Filter: "devices/+/telemetry", KafkaTopic: "telemetry"}}, nil},
		{"hash with level", []Route{{Filter: "site/+/#", KafkaTopic: "t", DeviceLevel: 4}}, nil},
		{"explicit level on hash", []Route{{Filter: "raw/#", KafkaTopic: "raw", DeviceLevel: 2}}, nil},
		{"qos 2", []Route{{Filter: "a/+", KafkaTopic: "a", QoS: 2}}, nil},
		{"kafka topic charset", []Route{{Filter: "a/+", KafkaTopic: "Edge.events_v1-x"}}, nil},
		{"disjoint", []Route{{Filter: "a/+/x", KafkaTopic: "x"}, {Filter: "a/+/y", KafkaTopic: "y"}}, nil},
		{"dollar disjoint from wildcard", []Route{{Filter: "+/+", KafkaTopic: "x"}, {Filter: "$SYS/+", KafkaTopic: "y"}}, nil},
		{"different depth", []Route{{Filter: "a/+", KafkaTopic: "x"}, {Filter: "a/+/c", KafkaTopic: "y"}}, nil},

		{"empty filter", []Route{{Filter: "", KafkaTopic: "x"}}, []string{"routes[0].filter", "empty"}},
		{"hash not last", []Route{{Filter: "a/#/b", KafkaTopic: "x", DeviceLevel: 1}}, []string{"routes[0].filter", "last level"}},
		{"partial plus", []Route{{Filter: "a/b+/+", KafkaTopic: "x"}}, []string{"routes[0].filter", "whole level"}},
		{"partial hash", []Route{{Filter: "a/+/b#", KafkaTopic: "x"}}, []string{"whole level"}},
		{"nul", []Route{{Filter: "a/+\x00", KafkaTopic: "x"}}, []string{"U+0000"}},
		{"empty kafka topic", []Route{{Filter: "a/+"}}, []string{"routes[0].kafka_topic", "empty"}},
		{"kafka topic slash", []Route{{Filter: "a/+", KafkaTopic: "a/b"}}, []string{"routes[0].kafka_topic", `'/'`}},
		{"kafka topic dot", []Route{{Filter: "a/+", KafkaTopic: "."}}, []string{"not a legal topic name"}},
		{"kafka topic dotdot", []Route{{Filter: "a/+", KafkaTopic: ".."}}, []string{"not a legal topic name"}},
		{"kafka topic too long", []Route{{Filter: "a/+", KafkaTopic: long}}, []string{"249"}},
		{"qos 3", []Route{{Filter: "a/+", KafkaTopic: "x", QoS: 3}}, []string{"routes[0].qos must be 1 or 2"}},
		{"qos negative", []Route{{Filter: "a/+", KafkaTopic: "x", QoS: -1}}, []string{"routes[0].qos"}},
		{"no plus no level", []Route{{Filter: "a/b", KafkaTopic: "x"}}, []string{"routes[0].device_level is required"}},
		{"level on literal", []Route{{Filter: "plant/pump-7/+", KafkaTopic: "x", DeviceLevel: 2}}, nil},
		{"level beyond filter", []Route{{Filter: "a/+", KafkaTopic: "x", DeviceLevel: 3}}, []string{"routes[0].device_level 3 is beyond the 2 levels"}},
		{"level negative", []Route{{Filter: "a/+", KafkaTopic: "x", DeviceLevel: -2}}, []string{"device_level must be >= 1"}},
		{"second route named", []Route{{Filter: "a/+", KafkaTopic: "x"}, {Filter: "b/+", KafkaTopic: "bad topic"}}, []string{"routes[1].kafka_topic"}},
		{"overlap plus literal", []Route{{Filter: "a/+", KafkaTopic: "x"}, {Filter: "a/b", KafkaTopic: "y", DeviceLevel: 2}},
			[]string{`routes[0].filter "a/+" overlaps routes[1].filter "a/b"`, `topic "a/b"`}},
		{"overlap hash parent", []Route{{Filter: "a/#", KafkaTopic: "x", DeviceLevel: 2}, {Filter: "+", KafkaTopic: "y"}},
			[]string{`routes[0].filter "a/#" overlaps routes[1].filter "+"`, `topic "a"`}},
		{"identical", []Route{{Filter: "a/+", KafkaTopic: "x"}, {Filter: "a/+", KafkaTopic: "y"}}, []string{"overlaps"}},
		{"overlap third pair", []Route{{Filter: "x/+", KafkaTopic: "x"}, {Filter: "y/+", KafkaTopic: "y"}, {Filter: "+/q", KafkaTopic: "z"}},
			[]string{"routes[0].filter", "routes[2].filter", "routes[1].filter"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{NodeID: "n1", Routes: tt.routes}
			err := cfg.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not match ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// Routes: each topic goes to the one route whose filter matches it, and the
// Kafka key (device id) is the topic level the route names.
func TestMatchAndDeviceID(t *testing.T) {
	rt, err := newRouteTable([]Route{
		{Filter: "devices/+/telemetry", KafkaTopic: "telemetry"},
		{Filter: "site/+/+/events", KafkaTopic: "events", DeviceLevel: 3},
		{Filter: "raw/#", KafkaTopic: "raw", DeviceLevel: 3},
		{Filter: "$share-like/+", KafkaTopic: "dollar"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		topic, kafka, device string
	}{
		{"devices/dev-1/telemetry", "telemetry", "dev-1"},
		{"devices/dev 2 ü/telemetry", "telemetry", "dev 2 ü"},
		{"devices//telemetry", "telemetry", ""}, // empty level: no device id
		{"devices/dev-1/telemetry/extra", "", ""},
		{"devices/dev-1", "", ""},
		{"site/berlin/pump-7/events", "events", "pump-7"},
		{"raw/a/b/c", "raw", "b"},
		{"raw/a/b", "raw", "b"},
		{"raw/a", "raw", ""}, // "#" matched fewer levels than the device level
		{"raw", "raw", ""},   // "raw/#" matches its parent
		{"$share-like/x", "dollar", "x"},
		{"other/thing", "", ""},
		{"/devices/dev-1/telemetry", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			r := rt.match(tt.topic)
			if tt.kafka == "" {
				if r != nil {
					t.Fatalf("match(%q) = route %q, want none", tt.topic, r.filter)
				}
				return
			}
			if r == nil || r.kafkaTopic != tt.kafka {
				t.Fatalf("match(%q) = %v, want kafka topic %q", tt.topic, r, tt.kafka)
			}
			if got := r.deviceID(tt.topic); got != tt.device {
				t.Errorf("deviceID(%q) = %q, want %q", tt.topic, got, tt.device)
			}
		})
	}
}

// refMatch is MQTT 3.1.1 §4.7 matching written as plainly as possible, to
// check the allocation-free matcher against.
func refMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	var rec func(f, t []string) bool
	rec = func(f, t []string) bool {
		switch {
		case len(f) == 0:
			return len(t) == 0
		case f[0] == "#":
			return true
		case len(t) == 0:
			return false
		case f[0] != "+" && f[0] != t[0]:
			return false
		}
		return rec(f[1:], t[1:])
	}
	return rec(strings.Split(filter, "/"), strings.Split(topic, "/"))
}

// The topic-to-route matcher agrees with the reference, never panics, and
// overlap detection is sound: a topic matching two filters means they were
// reported as overlapping, and a reported overlap's example topic matches both.
func FuzzMatch(f *testing.F) {
	seeds := [][3]string{
		{"devices/+/telemetry", "devices/+/status", "devices/d1/telemetry"},
		{"a/#", "a", "a"},
		{"+/+", "$SYS/+", "$SYS/x"},
		{"#", "a/b", "a/b"},
		{"a//b", "a/+/b", "a//b"},
		{"+", "+/#", "/"},
		{"a/+/#", "a/b/c/d", "a/b"},
		{"x/y", "x/y/#", "x/y"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, fa, fb, topic string) {
		if topic == "" || strings.ContainsAny(topic, "+#") {
			topic = "t/" + strings.NewReplacer("+", "p", "#", "h").Replace(topic)
		}
		var levels [][]string
		for _, flt := range []string{fa, fb} {
			if validateFilter(flt) != nil {
				return
			}
			lv := strings.Split(flt, "/")
			levels = append(levels, lv)
			if got, want := matchFilter(lv, topic), refMatch(flt, topic); got != want {
				t.Fatalf("matchFilter(%q, %q) = %v, reference says %v", flt, topic, got, want)
			}
		}
		w, ok := overlap(levels[0], levels[1])
		if refMatch(fa, topic) && refMatch(fb, topic) && !ok {
			t.Fatalf("%q matches %q and %q, but overlap says disjoint", topic, fa, fb)
		}
		if ok && !(refMatch(fa, w) && refMatch(fb, w)) {
			t.Fatalf("overlap(%q, %q) example %q does not match both", fa, fb, w)
		}
		// A valid single route never panics extracting a device id, and
		// the id is the named level of the topic.
		rt, err := newRouteTable([]Route{{Filter: fa, KafkaTopic: "k", DeviceLevel: 1 + len(topic)%4}})
		if err != nil {
			return
		}
		if r := rt.match(topic); r != nil {
			parts := strings.Split(topic, "/")
			want := ""
			if r.deviceLevel < len(parts) {
				want = parts[r.deviceLevel]
			}
			if got := r.deviceID(topic); got != want {
				t.Fatalf("deviceID(%q) with level %d = %q, want %q", topic, r.deviceLevel+1, got, want)
			}
		}
	})
}
