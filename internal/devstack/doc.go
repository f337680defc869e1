// Package devstack is the development stack of `make demo` and the
// end-to-end tests: an in-process Kafka (kfake) that can be cut and brought
// back on the same port with its data, an MQTT broker (embedded mochi-mqtt,
// or a mosquitto process), simulated devices publishing QoS 1, the real
// edgebridge binary as a child process, and a verifier that reads Kafka
// independently of the bridge's code and checks every message arrived, in
// order per device.
//
// It is never linked into the edgebridge binary. Everything listens on
// 127.0.0.1 only.
package devstack
