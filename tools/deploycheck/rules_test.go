package deploycheck

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"sigs.k8s.io/yaml"
)

const (
	edgeRules    = "deploy/prometheus/edge/edgebridge-rules.yml"
	centralRules = "deploy/prometheus/central/edgebridge-central-rules.yml"
	operations   = "docs/operations.md"
)

// synthetic are the series Prometheus itself writes: `up` for every target,
// ALERTS for every alert. Every other name must come from the binary.
var synthetic = map[string]bool{"up": true, "ALERTS": true}

var promql = parser.NewParser(parser.Options{})

// loadRules parses a rule file with Prometheus' own rule loader, which also
// parses every expression and checks every template.
func loadRules(t *testing.T, path string) *rulefmt.RuleGroups {
	t.Helper()
	g, errs := rulefmt.ParseFile(filepath.Join(repoRoot, path), false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%s: %v", path, err)
	}
	if g == nil || len(g.Groups) == 0 {
		t.Fatalf("%s: no rule groups", path)
	}
	return g
}

// metricNames lists the metric names an expression selects.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		t.Fatalf("parse %q: %v", expr, err)
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			if name == "" {
				t.Errorf("%q selects series without naming a metric", expr)
			}
			names = append(names, name)
		}
		return nil
	})
	return names
}

// recorded lists the names the recording rules of groups write.
func recorded(groups ...*rulefmt.RuleGroups) map[string]bool {
	out := map[string]bool{}
	for _, g := range groups {
		for _, rg := range g.Groups {
			for _, r := range rg.Rules {
				if r.Record != "" {
					out[r.Record] = true
				}
			}
		}
	}
	return out
}

func TestRulesUseExportedMetrics(t *testing.T) {
	l := requireLive(t)
	edge, central := loadRules(t, edgeRules), loadRules(t, centralRules)
	known := recorded(edge) // the centre sees them through federation
	for path, g := range map[string]*rulefmt.RuleGroups{edgeRules: edge, centralRules: central} {
		for _, rg := range g.Groups {
			for _, r := range rg.Rules {
				for _, name := range metricNames(t, r.Expr) {
					if !l.series[name] && !known[name] && !synthetic[name] {
						t.Errorf("%s: %s%s uses %s, which the binary does not export and no rule records", path, r.Alert, r.Record, name)
					}
				}
			}
		}
	}
}

// The PrometheusRule the operator loads holds exactly the groups of the plain
// rule file.
func TestPrometheusRuleMatchesRuleFile(t *testing.T) {
	r := build(t, "deploy/k3s/monitoring")
	if len(r.prometheusRules) != 1 {
		t.Fatalf("want 1 PrometheusRule, got %d", len(r.prometheusRules))
	}
	spec, err := yaml.Marshal(r.prometheusRules[0].Spec)
	if err != nil {
		t.Fatal(err)
	}
	fromCR, errs := rulefmt.Parse(spec, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("PrometheusRule: %v", err)
	}
	fromFile := loadRules(t, edgeRules)
	if fromCR == nil || !reflect.DeepEqual(fromCR.Groups, fromFile.Groups) {
		t.Errorf("PrometheusRule edgebridge and %s differ: keep them identical", edgeRules)
	}
}

// Every alert the deployment promises exists, carries a severity and a
// runbook link, and the runbook section exists in docs/operations.md.
func TestAlertsHaveRunbooks(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, operations))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`).FindAllStringSubmatch(string(doc), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	alerts := map[string]rulefmt.Rule{}
	for _, path := range []string{edgeRules, centralRules} {
		for _, rg := range loadRules(t, path).Groups {
			for _, r := range rg.Rules {
				if r.Alert != "" {
					alerts[r.Alert] = r
				}
			}
		}
	}
	for _, want := range []string{
		"EdgebridgeBufferFilling",      // buffer above 80% of max_bytes
		"EdgebridgeBacklogStale",       // oldest record older than N minutes
		"EdgebridgeKafkaUnreachable",   // Kafka unreachable for N minutes
		"EdgebridgeDroppingRecords",    // any drop
		"EdgebridgeDeadLettersGrowing", // dead letters growing
		"EdgebridgeMQTTDisconnected",   // MQTT disconnected
		"EdgebridgeRestarting",         // pod restarting
	} {
		if _, ok := alerts[want]; !ok {
			t.Errorf("alert %s is missing", want)
		}
	}
	for name, r := range alerts {
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", name, s)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s: needs a summary and a description", name)
		}
		u := r.Annotations["runbook_url"]
		_, anchor, ok := strings.Cut(u, "/docs/operations.md#")
		if !ok {
			t.Errorf("%s: runbook_url %q does not point into docs/operations.md", name, u)
			continue
		}
		if anchor != strings.ToLower(name) || !anchors[anchor] {
			t.Errorf("%s: runbook_url anchor %q: want a section headed %q in %s", name, anchor, name, operations)
		}
	}
}

// githubAnchor is the id GitHub gives a Markdown heading.
func githubAnchor(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// rule returns the expression of the rule named name, on one line.
func rule(t *testing.T, path, name string) string {
	t.Helper()
	for _, rg := range loadRules(t, path).Groups {
		for _, r := range rg.Rules {
			if r.Alert == name || r.Record == name {
				return strings.Join(strings.Fields(r.Expr), " ")
			}
		}
	}
	t.Fatalf("%s: no rule %s", path, name)
	return ""
}

// The rules' expressions, evaluated by the PromQL engine on series shaped
// like the binary's (promtool test rules, without the `for` clauses): each
// fires for the node in trouble and stays quiet for the healthy one.
func TestRuleBehaviour(t *testing.T) {
	engine := promqltest.NewTestEngine(t, false, 5*time.Minute, 50000)
	cases := []struct {
		name, path, rule, load, at, want string
		wrap                             string // fmt verb around the expression
	}{{
		name: "buffer filling fires above 80% of max_bytes", path: edgeRules, rule: "EdgebridgeBufferFilling",
		load: `edgebridge_buffer_bytes{job="edgebridge", node="a"} 790x10
			edgebridge_buffer_bytes{job="edgebridge", node="b"} 810x10
			edgebridge_buffer_max_bytes{job="edgebridge", node="a"} 1000x10
			edgebridge_buffer_max_bytes{job="edgebridge", node="b"} 1000x10`,
		at: "5m", wrap: "%s", want: `{job="edgebridge", node="b"} 0.81`,
	}, {
		name: "backlog stale after 15 minutes", path: edgeRules, rule: "EdgebridgeBacklogStale",
		load: `edgebridge_buffer_oldest_record_age_seconds{job="edgebridge", node="a"} 0+60x20
			edgebridge_buffer_oldest_record_age_seconds{job="edgebridge", node="b"} 3x20`,
		at: "16m", wrap: "%s", want: `edgebridge_buffer_oldest_record_age_seconds{job="edgebridge", node="a"} 960`,
	}, {
		name: "a single dropped record fires", path: edgeRules, rule: "EdgebridgeDroppingRecords",
		load: `edgebridge_buffer_dropped_records_total{job="edgebridge", node="a", reason="overflow"} 0 0 0 0 1x6
			edgebridge_buffer_dropped_records_total{job="edgebridge", node="b", reason="overflow"} 0x10
			edgebridge_mqtt_dropped_total{job="edgebridge", node="a", reason="stopping"} 0x10
			edgebridge_mqtt_dropped_total{job="edgebridge", node="b", reason="stopping"} 0x10`,
		at: "9m", wrap: "sgn(%s)", want: `{node="a", reason="overflow"} 1`,
	}, {
		name: "a parked topic fires with its reason", path: edgeRules, rule: "EdgebridgeTopicParked",
		load: `edgebridge_forward_parked_topics{job="edgebridge", node="a", reason="topic_authorization_failed"} 0 1x10
			edgebridge_forward_parked_topics{job="edgebridge", node="a", reason="unknown_topic"} 0x10
			edgebridge_forward_parked_topics{job="edgebridge", node="b", reason="topic_authorization_failed"} 0x10`,
		at: "5m", wrap: "%s", want: `{node="a", reason="topic_authorization_failed"} 1`,
	}, {
		name: "dead letters growing", path: edgeRules, rule: "EdgebridgeDeadLettersGrowing",
		load: `edgebridge_buffer_dead_lettered_records_total{job="edgebridge", node="a"} 5x5 6x5
			edgebridge_buffer_dead_lettered_records_total{job="edgebridge", node="b"} 5x10`,
		at: "10m", wrap: "sgn(%s)", want: `{node="a"} 1`,
	}, {
		name: "three restarts in 30 minutes", path: edgeRules, rule: "EdgebridgeRestarting",
		load: `process_start_time_seconds{job="edgebridge", node="a"} 100 400 700 1000x26
			process_start_time_seconds{job="edgebridge", node="b"} 100 400 400x27`,
		at: "29m", wrap: "%s", want: `{job="edgebridge", node="a"} 3`,
	}, {
		name: "time to drain only while the backlog shrinks", path: edgeRules, rule: "node:edgebridge_buffer_time_to_drain_seconds:estimate",
		load: `node:edgebridge_buffer_records:sum{node="a"} 6000x5
			node:edgebridge_buffer_records:sum{node="b"} 6000x5
			node:edgebridge_forward_records:rate5m{node="a"} 150x5
			node:edgebridge_forward_records:rate5m{node="b"} 50x5
			node:edgebridge_buffer_appended_records:rate5m{node="a"} 50x5
			node:edgebridge_buffer_appended_records:rate5m{node="b"} 100x5`,
		at: "5m", wrap: "%s", want: `{node="a"} 60`,
	}, {
		name: "a node that stopped reporting", path: centralRules, rule: "EdgebridgeNodeSilent",
		load: `node:edgebridge_buffer_records:sum{site="s", node="a"} 0x130
			node:edgebridge_buffer_records:sum{site="s", node="b"} 0x60 _x70`,
		at: "120m", wrap: "%s", want: `{node="b", site="s"} 0`,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expr := fmt.Sprintf(tc.wrap, rule(t, tc.path, tc.rule))
			var load []string
			for _, line := range strings.Split(tc.load, "\n") {
				load = append(load, "  "+strings.TrimSpace(line))
			}
			script := fmt.Sprintf("load 1m\n%s\n\neval instant at %s %s\n  %s\n", strings.Join(load, "\n"), tc.at, expr, tc.want)
			promqltest.RunTest(t, script, engine)
		})
	}
}

// sortedKeys is for stable failure messages.
func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
