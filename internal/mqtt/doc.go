// Package mqtt is the intake of edgebridge: it takes messages from the
// node's MQTT broker, wraps each in an edgebridge.v1.Envelope and appends
// them to a Sink (the durable buffer).
//
// # Guarantee
//
// A QoS 1/2 message is acknowledged to the broker (PUBACK, or PUBREC for
// QoS 2) only after the Sink committed its record, and acknowledgements go
// out in the order the messages were received (MQTT 3.1.1 §4.6). The
// session is persistent (clean session off, a stable client id), so the
// broker keeps what was not acknowledged, while the bridge is down too, and
// sends it again on the next connection. That makes the intake
// at-least-once: a message committed but whose acknowledgement was lost (a
// crash, a dropped connection) is stored again when the broker redelivers
// it, with a new sequence.
//
// # Pipeline
//
// paho calls the message handler from one goroutine per connection, in the
// order the broker sent the messages. The handler only puts the message on
// a bounded channel. A collector goroutine takes everything available (up
// to mqtt.max_batch messages and mqtt.max_batch_bytes) and encodes the
// envelopes; a committer appends a batch to the Sink, one call at a time,
// while the collector fills the next batch; an acker then acknowledges the
// batch's messages in receipt order while the committer commits the next.
// Batches move between the three through FIFO channels, so the order of
// acknowledgements is the order of receipt. Three batches circulate, so at
// most three are held in memory.
//
// # The connection
//
// paho reads and writes the net.Conn packet by packet. The intake dials the
// connection itself (conn.go): reads go through a 64 KiB buffer, and writes
// are gathered by one goroutine that hands the socket everything queued
// while its previous write was in the kernel, so the PUBACKs of a batch
// cost a few syscalls, in order, and a lone one is never held back. A
// failed write closes the connection, which paho sees as a lost connection.
//
// # Backpressure
//
// When the Sink blocks (a full buffer under the block policy), the committer
// waits, the collector fills its batch and waits for a free one, the channel
// fills, the handler blocks and paho stops reading the connection. No
// acknowledgement goes out meanwhile, so the broker's in-flight window for
// the bridge (mosquitto max_inflight_messages) fills and the broker queues
// the rest (max_queued_messages). Nothing is dropped here. See
// docs/mqtt-broker.md for the broker settings this relies on.
//
// # Reconnects
//
// Acknowledgements belong to a connection: paho drops those made after the
// connection that received the message is gone, and the broker redelivers
// the message on the next connection. Messages already in the pipeline are
// still committed (their acknowledgements are dropped), so such a message
// is stored twice; order per device holds, because the redelivered copies
// follow the originals.
//
// # Subscriptions
//
// The broker keeps the subscriptions of the persistent session, and every
// SUBSCRIBE makes it send the matching retained messages again (MQTT 3.1.1
// §3.8.4), each stored again. So the intake subscribes to every route on
// the first connection of the process (the routes may have changed since
// the session was made, and MQTT 3.1.1 cannot list a session's
// subscriptions: a restart stores the retained messages once more), and
// after that only when the CONNACK says the broker has no session (it
// expired it or lost its store; counted in
// edgebridge_mqtt_session_lost_total, as what it held is gone) and for the
// filters not yet granted. A reconnect to a kept session sends no
// SUBSCRIBE. paho v1.5 drops the CONNACK's session present flag on
// reconnects, so the connection (conn.go) reads it from the bytes.
//
// A filter is subscribed only when the SUBACK grants it the route's QoS. A
// refusal (0x80, usually the broker's ACL) is tried again on the same
// connection with backoff; a grant below the route's QoS is an error too,
// since a broker delivering at QoS 0 neither keeps nor redelivers, and is
// tried again on the next connection. Either way the intake is not ready
// (edgebridge_mqtt_up 0, /readyz fails), logs the filter and counts it in
// edgebridge_mqtt_subscribe_errors_total{reason} (refused, qos_downgraded;
// timeout and error count failed SUBSCRIBEs). What the broker delivers at
// the lower QoS is still stored, with the QoS it came at in the envelope.
//
// # Rejected messages
//
// A message whose topic matches no route, whose device id cannot be taken
// from its topic, or whose payload exceeds mqtt.max_payload_bytes is stored
// as a dead letter with that reason, then acknowledged, counted in
// edgebridge_mqtt_rejected_total{reason} and logged at a bounded rate.
package mqtt
