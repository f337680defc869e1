package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/config"
	"github.com/edgebridge/edgebridge/internal/dev/devstack"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
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
		{"config prints the defaults", []string{"config"}, ExitOK, "  # MQTT keepalive (>= 1s)\n  keepalive: 30s\n", ""},
		{"config prints a file in effect", []string{"config", "--config", good}, ExitOK, "node_id: edge-01\n", ""},
		{"config refuses a bad file", []string{"config", "--config", bad}, ExitUsage, "", "kafka.bootstrap.servers"},
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

// testConfig is a config with nothing listening at the brokers, the
// buffer in bufDir and /metrics on listen; kafka, http and buffer lines are
// added to those sections.
func testConfig(t *testing.T, bufDir, listen, kafka, http, buffer string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`node_id: n1
mqtt:
  url: tcp://127.0.0.1:1
routes:
  - filter: devices/+/telemetry
    kafka_topic: iot.telemetry
kafka:
  brokers: ["127.0.0.1:1"]
%shttp:
  listen: %s
%sbuffer:
  dir: %s
  max_bytes: 64MiB
%s`, kafka, listen, http, bufDir, buffer)), config.Options{File: "edgebridge.yaml", Dir: bufDir})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runAsync runs Run with cfg and returns once http.listen answers: Run's
// result, the function that stops it, and its log.
func runAsync(t *testing.T, cfg *config.Config) (<-chan error, context.CancelFunc, *testkit.Buffer) {
	t.Helper()
	logs := &testkit.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, NewLogger(logs, cfg.Log), Build{Version: "test"}) }()
	addr := strings.Replace(cfg.HTTP.Listen, "0.0.0.0", "127.0.0.1", 1)
	if err := devstack.WaitListening(addr, 10*time.Second, nil); err != nil {
		cancel()
		t.Fatalf("%v\n%s", err, logs.String())
	}
	return done, cancel, logs
}

// startRun runs Run, with nothing listening at the brokers, until the test
// ends; kafkaLines and httpLines are added to those sections. It returns once
// http.listen answers.
func startRun(t *testing.T, listen, kafkaLines, httpLines string) *testkit.Buffer {
	t.Helper()
	cfg := testConfig(t, t.TempDir(), listen, kafkaLines, httpLines, "")
	done, cancel, logs := runAsync(t, cfg)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return logs
}

func freeAddr(t *testing.T, host string) string {
	t.Helper()
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// kafka.tls.insecure_skip_verify is for tests only: a bridge that runs
// with it says so at start and in a gauge an alert can watch.
func TestInsecureSkipVerifyIsVisible(t *testing.T) {
	tests := []struct {
		name  string
		tls   string
		gauge string
		warns bool
	}{
		{"off", "  tls:\n    enabled: true\n", "edgebridge_kafka_tls_insecure_skip_verify 0", false},
		{"on", "  tls:\n    insecure_skip_verify: true\n", "edgebridge_kafka_tls_insecure_skip_verify 1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			listen := freeAddr(t, "127.0.0.1")
			logs := startRun(t, listen, tt.tls, "")
			if _, body := httpGet(t, "http://"+listen+"/metrics"); !strings.Contains(body, tt.gauge+"\n") {
				t.Errorf("/metrics lacks %q", tt.gauge)
			}
			const warning = `"level":"WARN","msg":"kafka broker certificates are not verified`
			if got := strings.Contains(logs.String(), warning); got != tt.warns {
				t.Errorf("warning logged = %v, want %v:\n%s", got, tt.warns, logs.String())
			}
		})
	}
}

// With the metrics port open to the cluster, /debug/pprof/ answers on
// http.pprof_listen only.
func TestPprofNotOnAnOpenMetricsPort(t *testing.T) {
	listen, pprofListen := freeAddr(t, "0.0.0.0"), freeAddr(t, "127.0.0.1")
	startRun(t, listen, "", "  pprof: true\n  pprof_listen: "+pprofListen+"\n")
	metrics := "http://" + strings.Replace(listen, "0.0.0.0", "127.0.0.1", 1)
	if code, _ := httpGet(t, metrics+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ on http.listen %s: status %d, want 404", listen, code)
	}
	if code, _ := httpGet(t, metrics+"/metrics"); code != http.StatusOK {
		t.Errorf("/metrics on http.listen: status %d", code)
	}
	if code, body := httpGet(t, "http://"+pprofListen+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ on http.pprof_listen %s: status %d", pprofListen, code)
	}
}

// Finding 3 of the fault model: a buffer page that goes bad while the
// bridge runs (here the oldest segment truncated under its mapping, found
// by a /metrics scrape) does not crash the process: /readyz fails, Run
// ends with ErrBufferDamaged (exit code 4) after the ordinary shutdown, and
// the next start quarantines the file and runs.
func TestBufferDamageEndsRunForARestart(t *testing.T) {
	dir := t.TempDir()
	bufDir := filepath.Join(dir, "buffer")
	q, err := buffer.Open(buffer.Config{Dir: bufDir, MinFreeDisk: -1, SegmentBytes: 64 << 10, MaxBytes: 64 << 20}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		recs := make([]buffer.Record, 100)
		for j := range recs {
			recs[j] = buffer.Record{Topic: "iot.telemetry", Key: []byte("dev"), Value: bytes.Repeat([]byte("v"), 250)}
		}
		if err := q.Append(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
	}
	if q.Stats().Segments < 3 {
		t.Fatalf("%d segments, want 3 or more", q.Stats().Segments)
	}
	q.Close()

	listen := freeAddr(t, "127.0.0.1")
	cfg := testConfig(t, bufDir, listen, "", "", "  segment_bytes: 64KiB\n  min_free_disk: -1\nshutdown_timeout: 10s\n")
	done, cancel, logs := runAsync(t, cfg)
	defer cancel()
	if err := os.Truncate(filepath.Join(bufDir, "seg-00000000000000000001.db"), 8192); err != nil {
		t.Fatal(err)
	}
	httpGet(t, "http://"+listen+"/metrics")
	select {
	case err := <-done:
		if !errors.Is(err, ErrBufferDamaged) {
			t.Fatalf("Run = %v, want ErrBufferDamaged\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run goes on with a damaged buffer\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "buffer file damaged while running") {
		t.Errorf("no log line says why:\n%s", logs.String())
	}

	// The restart: the file is quarantined, the rest is kept, Run runs.
	done, cancel2, logs := runAsync(t, cfg)
	if _, body := httpGet(t, "http://"+listen+"/metrics"); !strings.Contains(body, "edgebridge_buffer_quarantined_files_total 1\n") {
		t.Errorf("restart did not quarantine the damaged file\n%s", logs.String())
	}
	cancel2()
	if err := <-done; err != nil {
		t.Fatalf("Run after the restart = %v\n%s", err, logs.String())
	}
}

// A registry that already holds the daemon's gauge is an error from Run's
// set-up, never a panic.
func TestWarnInsecureDuplicateIsAnError(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := &config.Config{}
	if err := warnInsecure(cfg, slog.New(slog.DiscardHandler), reg); err != nil {
		t.Fatal(err)
	}
	if err := warnInsecure(cfg, slog.New(slog.DiscardHandler), reg); err == nil || !strings.Contains(err.Error(), "register daemon metrics") {
		t.Errorf("second registration: %v, want a registration error", err)
	}
}
