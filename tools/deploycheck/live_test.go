package deploycheck

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// live is the real edgebridge binary running against an in-process Kafka
// and an embedded MQTT broker (devstack's), after it forwarded messages.
type live struct {
	br   *devstack.Bridge
	logs *testkit.Buffer // what it printed, for failure messages
	// forwarded is set once the bridge has forwarded the traffic and
	// families, series and scrape hold a /metrics read after that.
	forwarded bool
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

// requireLive returns the running bridge once it has forwarded the traffic
// startLive published, with its /metrics loaded.
func requireLive(t *testing.T) *live {
	t.Helper()
	if liveErr != nil {
		t.Fatalf("run the edgebridge binary for a /metrics scrape: %v", liveErr)
	}
	l := liveBridge
	if !l.forwarded {
		defer func() {
			if !l.forwarded { // WaitFor failed the test: the next ones fail at once
				liveErr = fmt.Errorf("edgebridge did not forward %d messages to Kafka (%s)", liveMessages, t.Name())
				t.Logf("edgebridge output:\n%s\nlast /metrics:\n%s", l.logs.String(), l.scrape)
			}
		}()
		testkit.WaitFor(t, fmt.Sprintf("edgebridge to forward %d messages to Kafka", liveMessages), func() bool {
			return l.load() == nil && sum(l.families["edgebridge_forward_records_total"]) >= liveMessages
		})
		l.forwarded = true
	}
	return l
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

// startLive starts Kafka, an MQTT broker and the bridge, waits until the
// bridge is ready and publishes liveMessages through the broker, so that
// client and latency metrics exist with their labels; requireLive waits
// until they are forwarded.
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

	kafka, err := devstack.StartKafka(filepath.Join(dir, "kafka"), liveTopic, 2)
	if err != nil {
		return nil, stop, err
	}
	cleanups = append(cleanups, kafka.Stop)
	broker, err := devstack.StartMochi(slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, stop, err
	}
	cleanups = append(cleanups, func() { broker.Close() })

	port, err := devstack.FreePort()
	if err != nil {
		return nil, stop, err
	}
	cfg := devstack.BridgeConfig{
		NodeID: "deploycheck", MQTTURL: broker.URL(), Brokers: []string{kafka.Addr()}, Topic: liveTopic,
		BufferDir: filepath.Join(dir, "buffer"), MaxBytes: "64MiB", MinFreeDisk: "-1",
		HTTPListen: fmt.Sprintf("127.0.0.1:%d", port), LogFormat: "text", Production: true,
	}
	cfgPath := filepath.Join(dir, "edgebridge.yaml")
	if err := cfg.WriteFile(cfgPath); err != nil {
		return nil, stop, err
	}
	l := &live{logs: &testkit.Buffer{}}
	l.br = &devstack.Bridge{Bin: bin, Config: cfgPath, Output: l.logs, Metrics: cfg.HTTPListen}
	if err := l.br.Launch(); err != nil {
		return nil, stop, err
	}
	cleanups = append(cleanups, func() { _ = l.br.Stop(20 * time.Second) })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := l.br.WaitReady(ctx); err != nil {
		return nil, stop, fmt.Errorf("%v\nedgebridge output:\n%s", err, l.logs.String())
	}
	devices := &devstack.Devices{BrokerURL: broker.URL(), N: 10, Messages: liveMessages / 10}
	if err := devices.Run(ctx); err != nil {
		return nil, stop, fmt.Errorf("publish: %w", err)
	}
	return l, stop, nil
}

// load scrapes and parses /metrics.
func (l *live) load() error {
	code, body, err := l.br.Get("/metrics")
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
