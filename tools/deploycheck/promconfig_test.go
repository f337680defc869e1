package deploycheck

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	// The service discoveries the configs use, so config.LoadFile knows them.
	_ "github.com/prometheus/prometheus/discovery/file"
	_ "github.com/prometheus/prometheus/discovery/kubernetes"
)

// loadConfig loads a Prometheus config file with Prometheus' own loader
// (what `promtool check config` and the server run) and checks its rule
// files exist.
func loadConfig(t *testing.T, path string) *config.Config {
	t.Helper()
	full := filepath.Join(repoRoot, path)
	c, err := config.LoadFile(full, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, rf := range c.RuleFiles {
		if matches, _ := filepath.Glob(rf); len(matches) == 0 {
			t.Errorf("%s: rule file %s does not exist", path, rf)
		}
	}
	return c
}

func TestEdgePrometheusConfig(t *testing.T) {
	c := loadConfig(t, "deploy/prometheus/edge/prometheus.yml")
	var found bool
	for _, sc := range c.ScrapeConfigs {
		if sc.JobName == "edgebridge" {
			found = true
		}
	}
	if !found {
		t.Error(`no scrape job "edgebridge": the rules select job="edgebridge"`)
	}
	if c.GlobalConfig.ExternalLabels.Get("site") == "" {
		t.Error("external_labels.site must name the edge site: the central Prometheus tells sites apart by it")
	}
}

// The central Prometheus federates with honor_labels, and its match[]
// selectors take every series the dashboard and the central rules read.
func TestCentralFederation(t *testing.T) {
	c := loadConfig(t, "deploy/prometheus/central/prometheus.yml")
	var job *config.ScrapeConfig
	for _, sc := range c.ScrapeConfigs {
		if sc.MetricsPath == "/federate" {
			job = sc
		}
	}
	if job == nil {
		t.Fatal("no /federate scrape job")
	}
	if !job.HonorLabels {
		t.Error("the federate job must set honor_labels: true, or the edge's node labels are overwritten")
	}
	selectors, err := promql.ParseMetricSelectors(job.Params["match[]"])
	if err != nil || len(selectors) == 0 {
		t.Fatalf("match[] %q: %v", job.Params["match[]"], err)
	}
	federated := func(name string) bool {
		for _, sel := range selectors {
			ok := true
			for _, m := range sel {
				if m.Name == labels.MetricName && !m.Matches(name) {
					ok = false
				}
			}
			if ok {
				return true
			}
		}
		return false
	}
	need := map[string]bool{}
	for _, exprs := range dashboardQueries(t) {
		for _, e := range exprs {
			for _, n := range metricNames(t, e) {
				need[n] = true
			}
		}
	}
	for _, rg := range loadRules(t, centralRules).Groups {
		for _, r := range rg.Rules {
			for _, n := range metricNames(t, r.Expr) {
				need[n] = true
			}
		}
	}
	delete(need, "up") // the central Prometheus' own
	for n := range need {
		if !federated(n) {
			t.Errorf("%s is read centrally but no match[] of the federate job selects it", n)
		}
	}
	// Raw series stay at the edge: federating every bucket of every pod is
	// what the recording rules avoid.
	for _, raw := range []string{"edgebridge_forward_delivery_latency_seconds_bucket", "edgebridge_mqtt_received_total"} {
		if federated(raw) {
			t.Errorf("match[] federates the raw series %s", raw)
		}
	}
}
