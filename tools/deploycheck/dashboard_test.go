package deploycheck

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const dashboardPath = "deploy/grafana/edgebridge.json"

type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"` // collapsed rows
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// grafanaVars are replaced by what Grafana substitutes before querying.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)

// dashboardQueries returns every PromQL query of the dashboard by panel
// title, template variable queries included.
func dashboardQueries(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, dashboardPath))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("%s: want a title, a uid and panels", dashboardPath)
	}
	out := map[string][]string{}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q has a target without expr", p.Title)
				}
				out[p.Title] = append(out[p.Title], grafanaVars.Replace(tg.Expr))
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
		}
		out["$"+v.Name] = append(out["$"+v.Name], m[1])
	}
	return out
}

// Every query parses, and every metric it names is one the binary exports or
// one the edge rules record from those.
func TestDashboardQueriesUseExportedMetrics(t *testing.T) {
	l := requireLive(t)
	rec := recorded(loadRules(t, edgeRules))
	used := map[string]bool{}
	for title, exprs := range dashboardQueries(t) {
		for _, e := range exprs {
			for _, name := range metricNames(t, e) {
				used[name] = true
				if !l.series[name] && !rec[name] && !synthetic[name] {
					t.Errorf("panel %q: %s is neither exported by the binary nor recorded by %s", title, name, edgeRules)
				}
			}
		}
	}
	// What the dashboard must show.
	for _, want := range []string{
		"node:edgebridge_mqtt_received:rate5m",                    // ingest rate
		"node:edgebridge_forward_records:rate5m",                  // forward rate
		"node:edgebridge_buffer_records:sum",                      // backlog records
		"node:edgebridge_buffer_bytes:sum",                        // backlog bytes
		"node:edgebridge_buffer_oldest_record_age_seconds:max",    // backlog age
		"node:edgebridge_buffer_time_to_drain_seconds:estimate",   // time to drain
		"node_reason:edgebridge_buffer_dropped_records:rate5m",    // drops by reason
		"node_reason:edgebridge_forward_failed:rate5m",            // failures by reason
		"node:edgebridge_forward_delivery_latency_seconds:p99_5m", // Kafka latency
		"node:edgebridge_process_resident_memory_bytes:max",       // RSS
	} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
	if t.Failed() {
		t.Logf("recorded series: %s", strings.Join(sortedKeys(rec), " "))
	}
}
