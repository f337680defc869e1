// Package bench is the load tool behind `make bench` (cmd/edgebridge-bench):
// simulated devices that publish QoS 1 messages carrying their publish time,
// a raw MQTT subscriber that measures the broker's ceiling, a Kafka consumer
// that timestamps each envelope's arrival, /proc readings of the process
// under test, and the scenarios that put them together.
//
// It is never linked into the edgebridge binary.
package bench
