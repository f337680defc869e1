package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The exit codes are documented for operators and scripts: check each.
func TestMainExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(good, "node_id: edge-01\nkafka:\n  brokers: [k:9092]\nroutes:\n  - filter: devices/+/telemetry\n    kafka_topic: iot.telemetry\nbuffer:\n  dir: "+dir+"\n")
	write(bad, "node_id: edge-01\nkafka:\n  bootstrap.servers: k:9092\n")

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"version", []string{"version"}, ExitOK, "edgebridge v9.9.9 (revision abc", ""},
		{"help", []string{"help"}, ExitOK, "Exit codes:", ""},
		{"validate ok", []string{"validate", "--config", good}, ExitOK, "ok (node_id edge-01", ""},
		{"validate names the bad key", []string{"validate", "--config", bad}, ExitUsage, "", `bad.yaml:3: kafka.bootstrap.servers: unknown key (did you mean "brokers"?)`},
		{"run with a bad config does not start", []string{"--config", bad}, ExitUsage, "", "kafka.bootstrap.servers"},
		{"missing file", []string{"validate", "--config", filepath.Join(dir, "nope.yaml")}, ExitUsage, "", "nope.yaml"},
		{"no --config", []string{"run"}, ExitUsage, "", "--config FILE is required"},
		{"unknown command", []string{"start"}, ExitUsage, "", `unknown command "start"`},
		{"unknown flag", []string{"run", "--conf", good}, ExitUsage, "", "flag provided but not defined"},
		{"stray argument", []string{"validate", "--config", good, "extra"}, ExitUsage, "", `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(tt.args, &out, &errb, Build{Version: "v9.9.9", Revision: "abc123"})
			if code != tt.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout %q lacks %q", out.String(), tt.stdout)
			}
			if !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stderr %q lacks %q", errb.String(), tt.stderr)
			}
		})
	}
}

// A password in mqtt.url (from ${ENV} or written out) is refused, and the
// refusal points to mqtt.password_file without printing the password.
func TestValidateRefusesURLCredentials(t *testing.T) {
	const secret = "Sup3rSecret"
	t.Setenv("MQTT_PASSWORD", secret)
	dir := t.TempDir()
	for _, url := range []string{
		"tcp://edgebridge:${MQTT_PASSWORD}@127.0.0.1:1883",
		"ssl://edgebridge:" + secret + "@broker.local:8883",
		"tcp://edgebridge:" + secret + "@127.0.0.1", // no port either
	} {
		t.Run(url, func(t *testing.T) {
			cfg := filepath.Join(dir, "c.yaml")
			if err := os.WriteFile(cfg, []byte("node_id: n1\nmqtt:\n  url: "+url+"\nroutes:\n  - filter: devices/+/telemetry\n    kafka_topic: iot.telemetry\n"+
				"buffer:\n  dir: "+dir+"/buf\nkafka:\n  brokers: [\"127.0.0.1:9092\"]\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			code := Main([]string{"validate", "--config", cfg}, &out, &errb, Build{})
			if code != ExitUsage {
				t.Errorf("exit code %d, want %d", code, ExitUsage)
			}
			if !strings.Contains(errb.String(), "holds credentials: set mqtt.username and mqtt.password_file") {
				t.Errorf("stderr does not point to mqtt.password_file:\n%s", errb.String())
			}
			if strings.Contains(out.String()+errb.String(), secret) {
				t.Errorf("the password is printed:\nstdout: %s\nstderr: %s", out.String(), errb.String())
			}
		})
	}
}
