package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/edgebridge/edgebridge/internal/field"
)

// Route sends the messages whose topic matches Filter to KafkaTopic.
type Route struct {
	// Filter is an MQTT topic filter ("+" and "#" wildcards). Filters of
	// different routes must not overlap: one message, one route.
	// yaml: routes[].filter. Required.
	Filter string
	// KafkaTopic is the Kafka topic the records go to.
	// yaml: routes[].kafka_topic. Required.
	KafkaTopic string
	// QoS is the subscription QoS, 1 or 2. QoS 0 is refused: the broker
	// neither keeps nor redelivers QoS 0 messages, so the delivery contract
	// could not hold. yaml: routes[].qos. Default 1.
	QoS int
	// DeviceLevel is the topic level, counted from 1, that holds the
	// device id: with filter "site/+/sensors/#", level 2. It must be a
	// level of the filter or under its trailing "#"; a literal level gives
	// one device id for the whole route (a filter naming one device).
	// yaml: routes[].device_level. Default: the filter's first "+".
	DeviceLevel int
}

// Reasons a message is rejected (stored as a dead letter, not forwarded).
// They are the values of the reason label of edgebridge_mqtt_rejected_total
// and the Reason of the dead-letter record.
const (
	ReasonNoRoute         = "no_route"
	ReasonNoDeviceID      = "no_device_id"
	ReasonPayloadTooLarge = "payload_too_large"
	// ReasonInvalidTopic: the topic is not UTF-8 (a broker should have
	// refused it); the envelope has it quoted in attribute mqtt_topic_raw.
	ReasonInvalidTopic = "invalid_topic"
	// ReasonEncodeFailed: the envelope could not be encoded; the record
	// value is the bare payload. Not expected to happen.
	ReasonEncodeFailed = "encode_failed"
)

var rejectReasons = []string{ReasonNoRoute, ReasonNoDeviceID, ReasonPayloadTooLarge, ReasonInvalidTopic, ReasonEncodeFailed}

// route is a validated Route.
type route struct {
	filter      string
	levels      []string // the filter split at "/"
	kafkaTopic  string
	qos         byte
	deviceLevel int // index (from 0) into the topic's levels
}

// routeTable maps a topic to its route. Validation guarantees at most one
// route matches any topic, so the first match is the only one.
type routeTable struct {
	routes []route
}

func newRouteTable(rs []Route) (*routeTable, error) {
	t := &routeTable{routes: make([]route, 0, len(rs))}
	var errs []error
	for i, r := range rs {
		key := fmt.Sprintf("routes[%d]", i)
		rt, err := compileRoute(key, r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t.routes = append(t.routes, rt)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for i := range t.routes {
		for j := i + 1; j < len(t.routes); j++ {
			a, b := t.routes[i], t.routes[j]
			if w, ok := overlap(a.levels, b.levels); ok {
				errs = append(errs, field.Errorf(fmt.Sprintf("routes[%d].filter", i), "%s %q overlaps routes[%d].filter %q: topic %q matches both", a.filter, j, b.filter, w))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

func compileRoute(key string, r Route) (route, error) {
	if err := validateFilter(r.Filter); err != nil {
		return route{}, field.Errorf(key+".filter", "%s %q: %v", r.Filter, err)
	}
	if err := validateKafkaTopic(r.KafkaTopic); err != nil {
		return route{}, field.Errorf(key+".kafka_topic", "%s %q: %v", r.KafkaTopic, err)
	}
	qos := r.QoS
	if qos == 0 {
		qos = 1
	}
	if qos != 1 && qos != 2 {
		return route{}, field.Errorf(key+".qos", "%s must be 1 or 2, got %d", r.QoS)
	}
	levels := strings.Split(r.Filter, "/")
	dl := r.DeviceLevel
	if dl == 0 {
		for i, l := range levels {
			if l == "+" {
				dl = i + 1
				break
			}
		}
		if dl == 0 {
			return route{}, field.Errorf(key+".device_level", "%s is required: filter %q has no \"+\" level to take the device id from", r.Filter)
		}
	}
	if dl < 0 {
		return route{}, field.Errorf(key+".device_level", "%s must be >= 1, got %d", dl)
	}
	if dl > len(levels) && levels[len(levels)-1] != "#" {
		return route{}, field.Errorf(key+".device_level", "%s %d is beyond the %d levels of filter %q", dl, len(levels), r.Filter)
	}
	return route{filter: r.Filter, levels: levels, kafkaTopic: r.KafkaTopic, qos: byte(qos), deviceLevel: dl - 1}, nil
}

// validateFilter checks MQTT 3.1.1 §4.7 topic filter syntax.
func validateFilter(f string) error {
	switch {
	case f == "":
		return fmt.Errorf("empty filter")
	case len(f) > 65535:
		return fmt.Errorf("longer than 65535 bytes")
	case !utf8.ValidString(f):
		return fmt.Errorf("not valid UTF-8")
	case strings.ContainsRune(f, 0):
		return fmt.Errorf("contains U+0000")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if l == "#" {
			if i != len(levels)-1 {
				return fmt.Errorf("\"#\" must be the last level")
			}
			continue
		}
		if l != "+" && strings.ContainsAny(l, "+#") {
			return fmt.Errorf("wildcard %q must occupy a whole level", l)
		}
	}
	return nil
}

// validateKafkaTopic applies Kafka's topic name rules.
func validateKafkaTopic(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("empty topic name")
	case len(t) > 249:
		return fmt.Errorf("longer than 249 characters")
	case t == "." || t == "..":
		return fmt.Errorf("%q is not a legal topic name", t)
	}
	for _, c := range []byte(t) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("character %q not allowed: only [a-zA-Z0-9._-]", c)
		}
	}
	return nil
}

// overlap reports whether some topic matches both filters and returns one.
func overlap(a, b []string) (string, bool) {
	// A filter starting with a wildcard does not match topics starting
	// with '$' (MQTT 3.1.1 §4.7.2), so "+/x" and "$SYS/x" are disjoint.
	if len(a) > 0 && len(b) > 0 && (isWild(a[0]) && strings.HasPrefix(b[0], "$") || isWild(b[0]) && strings.HasPrefix(a[0], "$")) {
		return "", false
	}
	var w []string
	for i := 0; ; i++ {
		switch {
		case i < len(a) && a[i] == "#":
			return witnessTopic(append(w, b[i:]...)), true
		case i < len(b) && b[i] == "#":
			return witnessTopic(append(w, a[i:]...)), true
		case i == len(a) && i == len(b):
			return witnessTopic(w), true
		case i == len(a) || i == len(b):
			return "", false
		case a[i] == "+" && b[i] == "+":
			w = append(w, "x")
		case a[i] == "+":
			w = append(w, b[i])
		case b[i] == "+" || a[i] == b[i]:
			w = append(w, a[i])
		default:
			return "", false
		}
	}
}

func isWild(l string) bool { return l == "+" || l == "#" }

// witnessTopic turns the overlap of two filters into a topic: where one
// filter's "#" or "+" met the other's wildcard, any level will do.
func witnessTopic(levels []string) string {
	out := make([]string, len(levels))
	for i, l := range levels {
		out[i] = l
		if isWild(l) {
			out[i] = "x"
		}
	}
	return strings.Join(out, "/")
}

// match returns the route for topic, or nil when none matches.
func (t *routeTable) match(topic string) *route {
	for i := range t.routes {
		if matchFilter(t.routes[i].levels, topic) {
			return &t.routes[i]
		}
	}
	return nil
}

// matchFilter reports whether topic matches the filter split into levels,
// without allocating.
func matchFilter(levels []string, topic string) bool {
	if topic == "" {
		return false
	}
	if topic[0] == '$' && isWild(levels[0]) {
		return false
	}
	rest := topic
	for i, l := range levels {
		if l == "#" {
			return true
		}
		end := strings.IndexByte(rest, '/')
		level := rest
		if end >= 0 {
			level = rest[:end]
		}
		if l != "+" && l != level {
			return false
		}
		if end < 0 {
			// The topic has no more levels: the filter matches if it has
			// none either, or only a trailing "#" ("a/#" matches "a").
			return i == len(levels)-1 || i == len(levels)-2 && levels[i+1] == "#"
		}
		rest = rest[end+1:]
	}
	return false // the topic has more levels than the filter
}

// deviceID returns the topic level that holds the device id, or "" when
// the topic has no such level or it is empty.
func (r *route) deviceID(topic string) string {
	rest := topic
	for i := 0; ; i++ {
		end := strings.IndexByte(rest, '/')
		if i == r.deviceLevel {
			if end < 0 {
				return rest
			}
			return rest[:end]
		}
		if end < 0 {
			return ""
		}
		rest = rest[end+1:]
	}
}

// Router maps an MQTT topic to its Kafka topic and device id the way the
// intake does. The deadletters command routes no_route and no_device_id
// dead letters with it again, by the routes in force when it runs.
type Router struct{ t *routeTable }

// NewRouter compiles routes; it fails as Config.Validate does.
func NewRouter(routes []Route) (*Router, error) {
	t, err := newRouteTable(routes)
	if err != nil {
		return nil, err
	}
	return &Router{t: t}, nil
}

// Route returns the Kafka topic and device id of a message on mqttTopic,
// or the reason the intake would reject it (ReasonNoRoute,
// ReasonNoDeviceID).
func (r *Router) Route(mqttTopic string) (kafkaTopic, deviceID, reason string) {
	rt := r.t.match(mqttTopic)
	if rt == nil {
		return "", "", ReasonNoRoute
	}
	if deviceID = rt.deviceID(mqttTopic); deviceID == "" {
		return rt.kafkaTopic, "", ReasonNoDeviceID
	}
	return rt.kafkaTopic, deviceID, ""
}
