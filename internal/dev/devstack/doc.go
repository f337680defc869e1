// Package devstack is the development stack of `make demo`, the
// end-to-end tests and the chaos suite: an in-process Kafka (kfake) that can
// be cut and brought back on the same port with its data, an MQTT broker
// (embedded mochi-mqtt, or a mosquitto process that restarts with its
// persistence), simulated devices publishing QoS 1 (riding through broker
// restarts if asked), the real edgebridge binary as a child process, and a
// verifier that reads Kafka independently of the bridge's code and checks
// every message arrived, in order per device.
//
// It is never linked into the edgebridge binary. Everything listens on
// 127.0.0.1 only, but for the mosquitto listeners a caller adds
// (MosquittoOptions.Hosts).
package devstack
