package deploycheck

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kfake"
)

// live is the real edgebridge binary running against an in-process Kafka
// (kfake) and an embedded MQTT broker (mochi), after it forwarded messages.
type live struct {
	// addr is host:port of its /metrics, /healthz and /readyz.
	addr string
	// families is its /metrics, parsed.
	families map[string]*dto.MetricFamily
	// series holds every sample name a query may use: the family names,
	// plus _bucket/_sum/_count for histograms and summaries.
	series map[string]bool
	// scrape is the /metrics text, for failure messages.
	scrape string
}

var (
	liveBridge *live
	liveErr    error
	bridgeBin  string // the edgebridge binary the tests run
	binErr     error
)

// TestMain finds or builds the binary and starts it once for every test
// that needs a running bridge.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deploycheck-bin-")
	if err != nil {
		panic(err)
	}
	bridgeBin, binErr = binary(dir)
	var stop func()
	if binErr != nil {
		liveErr = binErr
	} else {
		liveBridge, stop, liveErr = startLive(bridgeBin)
	}
	code := m.Run()
	if stop != nil {
		stop()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireLive(t *testing.T) *live {
	t.Helper()
	if liveErr != nil {
		t.Fatalf("run the edgebridge binary for a /metrics scrape: %v", liveErr)
	}
	return liveBridge
}

// binary returns $EDGEBRIDGE_BIN, or builds the binary from the repository
// into dir.
func binary(dir string) (string, error) {
	if b := os.Getenv("EDGEBRIDGE_BIN"); b != "" {
		return filepath.Abs(b)
	}
	out := filepath.Join(dir, "edgebridge")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/edgebridge")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/edgebridge: %v\n%s", err, b)
	}
	return out, nil
}

const (
	liveTopic    = "iot.telemetry"
	liveMessages = 200
)

func startLive(bin string) (_ *live, stop func(), err error) {
	var cleanups []func()
	stop = func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
			stop = nil
		}
	}()
	dir, err := os.MkdirTemp("", "deploycheck-")
	if err != nil {
		return nil, stop, err
	}
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })

	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, liveTopic))
	if err != nil {
		return nil, stop, fmt.Errorf("start kfake: %w", err)
	}
	cleanups = append(cleanups, kafka.Close)

	broker := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := broker.AddHook(new(allowAll), nil); err != nil {
		return nil, stop, err
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := broker.AddListener(tcp); err != nil {
		return nil, stop, err
	}
	if err := broker.Serve(); err != nil {
		return nil, stop, err
	}
	cleanups = append(cleanups, func() { broker.Close() })

	httpAddr, err := freeAddr()
	if err != nil {
		return nil, stop, err
	}
	cfg := fmt.Sprintf(`node_id: deploycheck
shutdown_timeout: 10s
mqtt:
  url: tcp://%s
routes:
  - filter: devices/+/telemetry
    kafka_topic: %s
buffer:
  dir: %s
  max_bytes: 64MiB
  min_free_disk: -1
kafka:
  brokers: [%q]
http:
  listen: %s
log:
  format: text
`, tcp.Address(), liveTopic, filepath.Join(dir, "buffer"), kafka.ListenAddrs()[0], httpAddr)
	cfgPath := filepath.Join(dir, "edgebridge.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, stop, err
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return nil, stop, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	cleanups = append(cleanups, func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s\nedgebridge output:\n%s", fmt.Sprintf(format, args...), logs.String())
	}

	l := &live{addr: httpAddr}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := waitFor(ctx, exited, func() bool { code, _, _ := l.get("/readyz"); return code == http.StatusOK }); err != nil {
		return nil, stop, fail("edgebridge did not become ready: %v", err)
	}
	// Traffic, so client and latency metrics exist with their labels.
	for i := range liveMessages {
		topic := fmt.Sprintf("devices/dev-%d/telemetry", i%10)
		if err := broker.Publish(topic, []byte(fmt.Sprintf(`{"n":%d}`, i)), false, 1); err != nil {
			return nil, stop, fmt.Errorf("publish: %w", err)
		}
	}
	if err := waitFor(ctx, exited, func() bool {
		if err := l.load(); err != nil {
			return false
		}
		return sum(l.families["edgebridge_forward_records_total"]) >= liveMessages
	}); err != nil {
		return nil, stop, fail("edgebridge did not forward %d messages to Kafka: %v\n%s", liveMessages, err, l.scrape)
	}
	return l, stop, nil
}

// waitFor polls cond until it holds, the process exits or ctx ends.
func waitFor(ctx context.Context, exited chan error, cond func() bool) error {
	for !cond() {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("edgebridge exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// load scrapes and parses /metrics.
func (l *live) load() error {
	code, body, err := l.get("/metrics")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("/metrics: status %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("parse /metrics: %w", err)
	}
	series := map[string]bool{}
	for name, f := range fams {
		series[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			series[name+"_bucket"], series[name+"_sum"], series[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			series[name+"_sum"], series[name+"_count"] = true, true
		}
	}
	l.families, l.series, l.scrape = fams, series, body
	return nil
}

func (l *live) get(path string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + l.addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// names lists the exported series names, for failure messages.
func (l *live) names() string {
	var n []string
	for k := range l.series {
		n = append(n, k)
	}
	sort.Strings(n)
	return strings.Join(n, "\n")
}

func sum(f *dto.MetricFamily) float64 {
	var s float64
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			s += m.Counter.GetValue()
		case m.Gauge != nil:
			s += m.Gauge.GetValue()
		}
	}
	return s
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// allowAll lets every client connect, publish and subscribe (loopback only).
type allowAll struct{ mochi.HookBase }

func (h *allowAll) ID() string { return "allow-all" }
func (h *allowAll) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnectAuthenticate, mochi.OnACLCheck}, []byte{b})
}
func (h *allowAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (h *allowAll) OnACLCheck(*mochi.Client, string, bool) bool              { return true }

// TestLiveMetricsScrape prints what the binary exports (with -v), the list
// every rule and dashboard query is checked against.
func TestLiveMetricsScrape(t *testing.T) {
	l := requireLive(t)
	if len(l.series) == 0 {
		t.Fatal("the scrape has no metrics")
	}
	if testing.Verbose() {
		t.Logf("series names exported by edgebridge:\n%s", l.names())
	}
}
