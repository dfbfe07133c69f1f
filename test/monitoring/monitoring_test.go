package monitoring

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"splitter.dev/splitter/internal/controller"
	"splitter.dev/splitter/test/testbed"
)

var update = flag.Bool("update", false, "rewrite deploy/grafana/splitter.json from the generator")

const (
	dashboardFile = "../../deploy/grafana/splitter.json"
	rulesDir      = "../../deploy/prometheus"
	rulesFile     = "alerts.yaml"
	rulesTestFile = "alerts_test.yaml"
	istioRefFile  = "../../../shared/reference/istio-metrics.md"
)

// istioMetrics are the metrics Istio's proxies export (Istio's standard
// metrics reference; the project's copy is istio-metrics.md in the
// shared reference, which TestIstioListMatchesReference checks this list
// against when it is there). Histograms are listed by their base name.
var istioMetrics = []string{
	"istio_requests_total",
	"istio_request_duration_milliseconds", // histogram
	"istio_request_bytes",                 // histogram
	"istio_response_bytes",                // histogram
	"istio_tcp_sent_bytes_total",
	"istio_tcp_received_bytes_total",
	"istio_tcp_connections_opened_total",
	"istio_tcp_connections_closed_total",
}

var istioHistograms = map[string]bool{
	"istio_request_duration_milliseconds": true, "istio_request_bytes": true, "istio_response_bytes": true,
}

// Sample values of Grafana's variables, to make the expressions PromQL.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m", "$__range", "6h", "$__interval", "30s",
	"${namespace}", "shop", "$namespace", "shop", "${split}", "checkout", "$split", "checkout",
)

func TestDashboardUpToDate(t *testing.T) {
	got, err := Splitter().JSON()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.MkdirAll(filepath.Dir(dashboardFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dashboardFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatalf("%v: generate it with go test ./test/monitoring/ -run TestDashboard -update", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the generator's output: regenerate it with go test ./test/monitoring/ -run TestDashboard -update", dashboardFile)
	}
}

func TestDashboardLayout(t *testing.T) {
	d := Splitter()
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if g := p.GridPos; g.X < 0 || g.X+g.W > 24 || g.H <= 0 {
			t.Errorf("panel %q off the grid: %+v", p.Title, g)
		}
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
	// Panels do not overlap.
	for i, a := range d.Panels {
		for _, b := range d.Panels[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				t.Errorf("panels %q %+v and %q %+v overlap", a.Title, ga, b.Title, gb)
			}
		}
	}
}

func dashboardExpressions(t *testing.T) []Expression {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	exprs, err := Expressions(raw)
	if err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return exprs
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(rulesDir, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(raw, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

func ruleExpressions(t *testing.T) []Expression {
	var out []Expression
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			out = append(out, Expression{rulesFile + ": " + g.Name + "/" + r.Alert + r.Record, r.Expr})
		}
	}
	return out
}

// metricNames are the metric names an expression selects, and whether
// some selector names none (a bare {label="..."}).
func metricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				if m.Type != labels.MatchEqual {
					bad = fmt.Errorf("%s: a metric name matched by pattern cannot be checked", vs)
				}
				name = m.Value
			}
		}
		if name == "" {
			bad = fmt.Errorf("%s selects no metric by name", vs)
		}
		seen[name] = true
		return nil
	})
	if bad != nil {
		return nil, bad
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
		err  bool
	}{
		{`splitter_split_phase`, []string{"splitter_split_phase"}, false},
		{`sum by (namespace, split) (rate(a_total{le="1",split=~"x"}[5m])) / on (split) group_left (phase) b`, []string{"a_total", "b"}, false},
		{`time() - max(x offset 10m) > 300 and on () absent(y)`, []string{"x", "y"}, false},
		{`vector(0)`, nil, false},
		{`{__name__="z", job="j"}`, []string{"z"}, false},
		{`{__name__=~"z.*"}`, nil, true},
		{`sum(rate(x[5m])`, nil, true},
		{`histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))`, []string{"h_bucket"}, false},
	} {
		got, err := metricNames(tc.expr)
		if (err != nil) != tc.err {
			t.Errorf("%s: error %v, want an error: %v", tc.expr, err, tc.err)
			continue
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: names %v, want %v", tc.expr, got, tc.want)
		}
	}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

var (
	controllerMetricsOnce sync.Once
	controllerMetrics     *controller.Metrics
)

// splitterMetrics are the names splitter's /metrics serves: the
// controller's metrics (every collector, series or not) and whatever
// controller-runtime's registry gathers (the notifications' metrics,
// controller-runtime's own). Histograms come with their three series.
func splitterMetrics(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	histogram := func(name string) {
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			known[name+s] = true
		}
	}
	// Registered once per test binary (-count=2 runs this twice).
	controllerMetricsOnce.Do(func() { controllerMetrics = controller.NewMetrics() })
	for _, c := range controllerMetrics.Collectors() {
		descs := make(chan *prometheus.Desc, 16)
		c.Describe(descs)
		close(descs)
		for d := range descs {
			match := fqName.FindStringSubmatch(d.String())
			if match == nil {
				t.Fatalf("no name in %s", d)
			}
			known[match[1]] = true
			switch c.(type) {
			case prometheus.Histogram, *prometheus.HistogramVec:
				histogram(match[1])
			}
		}
	}
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		known[mf.GetName()] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			histogram(mf.GetName())
		}
	}
	for _, want := range []string{"splitter_split_phase", "splitter_watchdog_sweep_duration_seconds_bucket"} {
		if !known[want] {
			t.Fatalf("the registry lacks %s: the names are not read right", want)
		}
	}
	return known
}

func TestExpressionsNameExportedMetrics(t *testing.T) {
	known := splitterMetrics(t)
	for _, n := range istioMetrics {
		known[n] = true
		if istioHistograms[n] {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				known[n+s] = true
			}
		}
	}
	exprs := append(dashboardExpressions(t), ruleExpressions(t)...)
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions found: the dashboard or the rules were not read", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		names, err := metricNames(grafanaVars.Replace(e.Expr))
		if err != nil {
			t.Errorf("%s: %v\n\t%s", e.Where, err, e.Expr)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s names no metric: %s", e.Where, e.Expr)
		}
		for _, n := range names {
			used[n] = true
			if !known[n] {
				t.Errorf("%s: %s is exported by neither splitter nor Istio\n\t%s", e.Where, n, e.Expr)
			}
		}
	}
	t.Logf("%d expressions, metrics used: %s", len(exprs), strings.Join(sortedKeys(used), " "))
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(testbed.Promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestRulesPromtool(t *testing.T) {
	runPromtool(t, rulesDir, "check", "rules", rulesFile)
	runPromtool(t, rulesDir, "test", "rules", rulesTestFile)
}

// TestDashboardPromtool checks every dashboard expression with promtool's
// parser too (an older Prometheus than the module's), as recording rules.
func TestDashboardPromtool(t *testing.T) {
	bin := testbed.Promtool(t)
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for i, e := range dashboardExpressions(t) {
		rules = append(rules, rule{Record: fmt.Sprintf("splitter:dashboard_%d", i), Expr: grafanaVars.Replace(e.Expr)})
	}
	raw, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "rules", file).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check rules on the dashboard's expressions: %v\n%s", err, out)
	}
}

// TestRulesTested: each alert has a promtool case where it fires and one
// where it does not.
func TestRulesTested(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(rulesDir, rulesTestFile))
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		t.Fatal(err)
	}
	if len(tests.RuleFiles) != 1 || tests.RuleFiles[0] != rulesFile {
		t.Errorf("%s tests %v, want [%s]", rulesTestFile, tests.RuleFiles, rulesFile)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	var alerts []string
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: a firing case %v, a quiet case %v in %s", r.Alert, fires[r.Alert], quiet[r.Alert], rulesTestFile)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s needs a severity label, a summary and a description", r.Alert)
			}
		}
	}
	want := []string{"SplitStalled", "ReleaseRolledBack", "GateWaitingTooLong", "ControllerNotSweeping"}
	if strings.Join(alerts, ",") != strings.Join(want, ",") {
		t.Errorf("alerts %v, want %v", alerts, want)
	}
}

// TestIstioListMatchesReference checks istioMetrics against the project's
// copy of Istio's reference when the shared directory is checked out.
func TestIstioListMatchesReference(t *testing.T) {
	raw, err := os.ReadFile(istioRefFile)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s not here: the list in this file stands", istioRefFile)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The "## Metrics" table: `name` cells.
	section := string(raw)
	if i := strings.Index(section, "## Metrics"); i >= 0 {
		section = section[i:]
		if j := strings.Index(section[3:], "\n## "); j >= 0 {
			section = section[:j+3]
		}
	}
	var ref []string
	for _, m := range regexp.MustCompile("`(istio_[a-z_]+)`").FindAllStringSubmatch(section, -1) {
		ref = append(ref, m[1])
	}
	sort.Strings(ref)
	ours := append([]string(nil), istioMetrics...)
	sort.Strings(ours)
	if strings.Join(ref, " ") != strings.Join(ours, " ") {
		t.Errorf("Istio metrics: the reference lists %v, this test %v", ref, ours)
	}
}

func TestExpressionsReadsEveryShape(t *testing.T) {
	raw := []byte(`{
	  "templating": {"list": [
	    {"name": "ns", "query": {"query": "label_values(up{job=\"a\"}, namespace)"}, "definition": "label_values(up{job=\"a\"}, namespace)"},
	    {"name": "old", "query": "label_values(b_total, split)"}
	  ]},
	  "annotations": {"list": [{"name": "marks", "expr": "c == 1"}]},
	  "panels": [{"title": "outer", "type": "row", "panels": [{"title": "inner", "targets": [{"refId": "A", "expr": "sum(d)"}, {"refId": "B", "expr": "e"}]}]}]
	}`)
	got, err := Expressions(raw)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range got {
		lines = append(lines, e.Where+": "+e.Expr)
	}
	want := []string{
		`dashboard.annotations.list[0] "marks": c == 1`,
		`dashboard.panels[0] "outer".panels[0] "inner".targets[0] A: sum(d)`,
		`dashboard.panels[0] "outer".panels[0] "inner".targets[1] B: e`,
		`dashboard.templating.list[0] "ns".query: up{job="a"}`,
		`dashboard.templating.list[1] "old": b_total`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if _, err := Expressions([]byte(`{"templating": {"list": [{"query": "label_values(namespace)"}]}}`)); err == nil {
		t.Error("label_values without a selector: no error")
	}
}

// TestIncreaseCountsNewSeries runs the dashboard's counter expression in
// promtool: a series born within the range (at 1) counts, as does an old
// series' increase, and neither twice.
func TestIncreaseCountsNewSeries(t *testing.T) {
	bin := testbed.Promtool(t)
	expr := func(rng string) string { return "round(" + increase("c_total", "k", "", rng) + ")" }
	type sample struct {
		Labels string  `json:"labels"`
		Value  float64 `json:"value"`
	}
	type exprTest struct {
		Expr       string   `json:"expr"`
		EvalTime   string   `json:"eval_time"`
		ExpSamples []sample `json:"exp_samples"`
	}
	tests := []exprTest{
		{expr("10m"), "14m", []sample{{`{k="old"}`, 1}}},
		{expr("10m"), "20m", []sample{{`{k="new"}`, 1}, {`{k="old"}`, 1}}},
		{expr("10m"), "24m", []sample{{`{k="new"}`, 1}, {`{k="old"}`, 1}}}, // born 9 minutes ago
		{expr("10m"), "28m", []sample{{`{k="new"}`, 1}, {`{k="old"}`, 1}}},
		{expr("1m"), "15m", []sample{{`{k="new"}`, 1}, {`{k="old"}`, 0}}},
		{expr("1m"), "22m", []sample{{`{k="new"}`, 0}, {`{k="old"}`, 1}}},
		{expr("1m"), "26m", []sample{{`{k="new"}`, 1}, {`{k="old"}`, 0}}},
	}
	raw, err := yaml.Marshal(map[string]any{
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval": "1m",
			"input_series": []map[string]string{
				{"series": `c_total{k="old"}`, "values": "1x10 2x10 3x10"}, // +1 at 11m and 22m
				{"series": `c_total{k="new"}`, "values": "_x15 1x10 2x10"}, // born at 15m, +1 at 26m
			},
			"promql_expr_test": tests,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "increase_test.yaml")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "test", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}
}

func TestPrometheusRuleUpToDate(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(rulesDir, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	got, err := PrometheusRule(src)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(rulesDir, "prometheusrule.yaml")
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v: generate it with go test ./test/monitoring/ -run TestPrometheusRule -update", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s: regenerate it with go test ./test/monitoring/ -run TestPrometheusRule -update", file, rulesFile)
	}
}

// TestKustomizations renders deploy/grafana and deploy/prometheus as
// kubectl apply -k does: the dashboard's ConfigMap carries splitter.json
// as committed, the PrometheusRule alerts.yaml's groups.
func TestKustomizations(t *testing.T) {
	render := func(dir string) []map[string]any {
		t.Helper()
		m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
		if err != nil {
			t.Fatalf("kustomize %s: %v", dir, err)
		}
		var out []map[string]any
		for _, r := range m.Resources() {
			obj, err := r.Map()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, obj)
		}
		return out
	}

	objs := render(filepath.Dir(dashboardFile))
	dashboard, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0]["kind"] != "ConfigMap" {
		t.Fatalf("deploy/grafana renders %v, want one ConfigMap", objs)
	}
	meta := objs[0]["metadata"].(map[string]any)
	if l, _ := meta["labels"].(map[string]any); l["grafana_dashboard"] != "1" {
		t.Errorf("the dashboard's ConfigMap lacks the label grafana_dashboard=1: %v", meta)
	}
	if data, _ := objs[0]["data"].(map[string]any); data["splitter.json"] != string(dashboard) {
		t.Error("the ConfigMap's splitter.json is not deploy/grafana/splitter.json")
	}

	objs = render(rulesDir)
	if len(objs) != 1 || objs[0]["kind"] != "PrometheusRule" {
		t.Fatalf("deploy/prometheus renders %v, want one PrometheusRule", objs)
	}
	var file map[string]any
	raw, err := os.ReadFile(filepath.Join(rulesDir, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(objs[0]["spec"].(map[string]any)["groups"])
	want, _ := json.Marshal(file["groups"])
	if !bytes.Equal(got, want) {
		t.Errorf("the PrometheusRule's groups differ from %s:\n%s\n%s", rulesFile, got, want)
	}
}
