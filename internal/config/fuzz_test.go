package config

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// FuzzParse feeds arbitrary files to Parse, seeded with the README's
// examples, the deployed config and the files the other tests use. Parse
// must never panic, overflow its stack or run away with memory, and every
// error it returns is one of the sentinels, so callers can tell a bad file
// from a bug.
func FuzzParse(f *testing.F) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		f.Fatal(err)
	}
	examples := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(examples) == 0 {
		f.Fatal("README.md has no ```yaml example")
	}
	for _, m := range examples {
		f.Add(m[1])
	}
	deployed, err := os.ReadFile("../../deploy/k3s/edgebridge.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(deployed)
	for _, s := range []string{
		minimal,
		base + "kafka:\n  brokers: [a:9092]\n  sasl:\n    mechanism: plain\n    username: u\n    password: ${PW}\n    allow_plaintext: true\n",
		"buffer: &b\n  dir: /x\n  <<: *b\n",
		"routes:\n  - &r0 {filter: devices/+/telemetry, kafka_topic: t}\n  - &r1 {<<: *r0}\n  - *r1\n  - *r1\n",
		"mqtt:\n  url: tcp://u:${PW}@h:1883\n  password_file: pw\n",
		"node_id: ${NODE_NAME:-edge}\nhttp:\n  pprof: true\n  pprof_listen: 127.0.0.1:6060\n",
		"buffer:\n  max_bytes: 1.5GiB\n  min_free_disk: -1\n  segment_bytes: 99999999TiB\n",
	} {
		f.Add([]byte(s))
	}

	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("s3cret\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	env := map[string]string{
		"NODE_NAME": "edge-node-17", "HOST_IP": "192.0.2.17", "PW": "s3cret",
		"MQTT_PASSWORD": "s3cret", "KAFKA_SASL_USERNAME": "edge", "KAFKA_SASL_PASSWORD": "s3cret",
	}
	o := Options{
		File:      "edgebridge.yaml",
		Dir:       dir,
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Hostname:  func() (string, error) { return "host-a", nil },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, o)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrEnvNotSet) {
				t.Fatalf("error matches no sentinel: %v", err)
			}
			return
		}
		// What Parse accepts, the components accept.
		if err := cfg.MQTT.Validate(); err != nil {
			t.Fatalf("accepted a file mqtt refuses: %v", err)
		}
		if err := cfg.Buffer.Validate(); err != nil {
			t.Fatalf("accepted a file buffer refuses: %v", err)
		}
		if err := cfg.Forward.Validate(); err != nil {
			t.Fatalf("accepted a file forward refuses: %v", err)
		}
	})
}
