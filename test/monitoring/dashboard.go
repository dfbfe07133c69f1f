// Package monitoring generates splitter's Grafana dashboard
// (deploy/grafana/splitter.json) and tests it and the alerting rules
// (deploy/prometheus/): every PromQL expression parses, and names only
// metrics that splitter or Istio export.
//
// Regenerate the JSON with: go test ./test/monitoring/ -run TestDashboard -update
package monitoring

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// The dashboard's JSON model, as much of Grafana's as it uses.
type (
	Dashboard struct {
		UID           string      `json:"uid"`
		Title         string      `json:"title"`
		Description   string      `json:"description"`
		Tags          []string    `json:"tags"`
		Timezone      string      `json:"timezone"`
		Editable      bool        `json:"editable"`
		GraphTooltip  int         `json:"graphTooltip"`
		Refresh       string      `json:"refresh"`
		SchemaVersion int         `json:"schemaVersion"`
		Version       int         `json:"version"`
		Time          TimeRange   `json:"time"`
		Templating    Templating  `json:"templating"`
		Annotations   Annotations `json:"annotations"`
		Panels        []Panel     `json:"panels"`
	}
	TimeRange struct {
		From string `json:"from"`
		To   string `json:"to"`
	}
	Templating struct {
		List []Variable `json:"list"`
	}
	Variable struct {
		Name       string      `json:"name"`
		Label      string      `json:"label"`
		Type       string      `json:"type"`
		Query      any         `json:"query"`
		Datasource *Datasource `json:"datasource,omitempty"`
		Definition string      `json:"definition,omitempty"`
		Refresh    int         `json:"refresh"`
		Sort       int         `json:"sort,omitempty"`
		IncludeAll bool        `json:"includeAll"`
		AllValue   string      `json:"allValue,omitempty"`
		Multi      bool        `json:"multi"`
		Current    struct{}    `json:"current"`
		Hide       int         `json:"hide"`
	}
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	Annotations struct {
		List []Annotation `json:"list"`
	}
	Annotation struct {
		Name        string      `json:"name"`
		Datasource  *Datasource `json:"datasource"`
		Enable      bool        `json:"enable"`
		Hide        bool        `json:"hide"`
		IconColor   string      `json:"iconColor"`
		BuiltIn     int         `json:"builtIn,omitempty"`
		Type        string      `json:"type,omitempty"`
		Expr        string      `json:"expr,omitempty"`
		Step        string      `json:"step,omitempty"`
		TitleFormat string      `json:"titleFormat,omitempty"`
		TextFormat  string      `json:"textFormat,omitempty"`
		TagKeys     string      `json:"tagKeys,omitempty"`
	}
	Panel struct {
		ID          int          `json:"id"`
		Type        string       `json:"type"`
		Title       string       `json:"title"`
		Description string       `json:"description,omitempty"`
		GridPos     GridPos      `json:"gridPos"`
		Datasource  *Datasource  `json:"datasource,omitempty"`
		Targets     []Target     `json:"targets,omitempty"`
		FieldConfig *FieldConfig `json:"fieldConfig,omitempty"`
		Options     any          `json:"options,omitempty"`
		Collapsed   *bool        `json:"collapsed,omitempty"`
		Panels      []Panel      `json:"panels,omitempty"`
	}
	GridPos struct {
		H int `json:"h"`
		W int `json:"w"`
		X int `json:"x"`
		Y int `json:"y"`
	}
	Target struct {
		RefID        string      `json:"refId"`
		Datasource   *Datasource `json:"datasource"`
		Expr         string      `json:"expr"`
		LegendFormat string      `json:"legendFormat,omitempty"`
		Instant      bool        `json:"instant"`
		Range        bool        `json:"range"`
		Format       string      `json:"format,omitempty"`
	}
	FieldConfig struct {
		Defaults  FieldDefaults `json:"defaults"`
		Overrides []any         `json:"overrides"`
	}
	FieldDefaults struct {
		Unit       string         `json:"unit,omitempty"`
		Min        *float64       `json:"min,omitempty"`
		Max        *float64       `json:"max,omitempty"`
		Decimals   *int           `json:"decimals,omitempty"`
		Custom     map[string]any `json:"custom,omitempty"`
		Thresholds *Thresholds    `json:"thresholds,omitempty"`
		Color      map[string]any `json:"color,omitempty"`
	}
	Thresholds struct {
		Mode  string `json:"mode"`
		Steps []Step `json:"steps"`
	}
	Step struct {
		Color string   `json:"color"`
		Value *float64 `json:"value"`
	}
)

// prom is the Prometheus data source the dashboard's variable selects.
var prom = &Datasource{Type: "prometheus", UID: "${datasource}"}

// Phases with a release in progress (splitter_split_phase's phase label).
const activePhases = `Preparing|Shifting|AwaitingApproval|Promoting|RollingBack`

// Selectors of the template variables: the fleet panels take every
// namespace chosen; the release panels one Split.
const (
	fleet = `namespace=~"$namespace"`
	// With several namespaces chosen, Grafana writes $namespace as a
	// regular expression: the release panels match it too.
	one = `namespace=~"$namespace",split="$split"`
	// Istio's labels for the selected Split's two color Deployments,
	// <split>-blue and <split>-green (a Split is named after its workload).
	colors = `destination_workload_namespace=~"$namespace",destination_workload=~"$split-(blue|green)"`
)

func ptr[T any](v T) *T { return &v }

func timeseries(title, desc, unit string, stack bool, targets ...Target) Panel {
	custom := map[string]any{"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": false}
	if stack {
		custom["stacking"] = map[string]any{"mode": "normal", "group": "A"}
		custom["fillOpacity"] = 60
	}
	return Panel{Type: "timeseries", Title: title, Description: desc, Targets: targets,
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{Unit: unit, Custom: custom}, Overrides: []any{}},
		Options: map[string]any{
			"legend":  map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
		}}
}

func bars(title, desc string, targets ...Target) Panel {
	p := timeseries(title, desc, "short", true, targets...)
	p.FieldConfig.Defaults.Custom["drawStyle"] = "bars"
	p.FieldConfig.Defaults.Custom["fillOpacity"] = 80
	return p
}

func stat(title, desc, unit string, red float64, t Target) Panel {
	t.Instant, t.Range = true, false
	return Panel{Type: "stat", Title: title, Description: desc, Targets: []Target{t},
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{Unit: unit, Decimals: ptr(0),
			Color:      map[string]any{"mode": "thresholds"},
			Thresholds: &Thresholds{Mode: "absolute", Steps: []Step{{Color: "green"}, {Color: "red", Value: ptr(red)}}},
		}, Overrides: []any{}},
		Options: map[string]any{"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"colorMode": "background", "graphMode": "none", "textMode": "value"}}
}

func table(title, desc, unit string, t Target) Panel {
	t.Instant, t.Range, t.Format = true, false, "table"
	return Panel{Type: "table", Title: title, Description: desc, Targets: []Target{t},
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{Unit: unit}, Overrides: []any{}},
		Options:     map[string]any{"showHeader": true, "sortBy": []map[string]any{{"displayName": "Value", "desc": true}}}}
}

func row(title string) Panel {
	return Panel{Type: "row", Title: title, Collapsed: ptr(false), Panels: []Panel{}}
}

func q(expr, legend string) Target {
	return Target{Expr: strings.TrimSpace(expr), LegendFormat: legend, Range: true}
}

// increase is how much a counter grew over rng, summed by labels, a
// series' birth included: splitter's counters are created at their first
// count (a Split's first snap-back, a check's first Fail), so they start
// at 1, which increase() alone cannot see. A series born within rng counts
// its whole value; the others their increase().
func increase(metric, by, sel, rng string) string {
	born := fmt.Sprintf(`(%[1]s{%[2]s} unless %[1]s{%[2]s} offset %[3]s)`, metric, sel, rng)
	return fmt.Sprintf(`sum by (%[1]s) ((increase(%[2]s{%[3]s}[%[4]s]) unless %[5]s) or %[5]s)`, by, metric, sel, rng, born)
}

func snapBacks(by, sel, rng string) string { return increase("splitter_snapbacks_total", by, sel, rng) }

// Splitter is the fleet dashboard.
func Splitter() Dashboard {
	fleetRow := []Panel{
		row("Fleet"),
		stat("Releases in progress", "Splits in Preparing, Shifting, AwaitingApproval, Promoting or RollingBack.", "short", 1e9,
			q(`sum(max by (namespace, split, phase) (splitter_split_phase{`+fleet+`,phase=~"`+activePhases+`"})) or vector(0)`, "")),
		stat("Stalled Splits", "Splits whose Stalled condition is True: a configuration problem only the user can fix (alert SplitStalled).", "short", 1,
			q(`sum(max by (namespace, split) (splitter_split_stalled{`+fleet+`})) or vector(0)`, "")),
		stat("Gates waiting", "Releases waiting in AwaitingApproval for a person (kubectl splitter approve).", "short", 1,
			q(`count(max by (namespace, split) (splitter_split_gate_waiting_since_timestamp_seconds{`+fleet+`}) > 0) or vector(0)`, "")),
		stat("Snap-backs in range", "Releases snapped back to the live color over the dashboard's time range.", "short", 1,
			q(`round(sum(`+snapBacks("namespace, split, reason", fleet, "$__range")+`)) or vector(0)`, "")),
		stat("Since the last watchdog sweep", "The watchdog sweeps every active release once per interval (the scrape interval by default); alert ControllerNotSweeping at 5 minutes.", "s", 300,
			q(`time() - max(splitter_watchdog_last_sweep_timestamp_seconds)`, "")),

		timeseries("Releases by phase", "How many Splits are in each phase.", "short", true,
			q(`sum by (phase) (max by (namespace, split, phase) (splitter_split_phase{`+fleet+`}))`, "{{phase}}")),
		table("Splits in a release", "Each Split not Idle, with its phase.", "short",
			q(`max by (namespace, split, phase) (splitter_split_phase{`+fleet+`,phase!="Idle"}) == 1`, "")),
		bars("Snap-backs by reason", "Snap-backs per interval, by the reason the release was rolled back.",
			q(snapBacks("reason", fleet, "$__rate_interval"), "{{reason}}")),
		bars("Check verdicts", "Check evaluations per interval, by verdict (hook calls count as checks named hook/<name>).",
			q(increase("splitter_check_verdicts_total", "verdict", fleet, "$__rate_interval"), "{{verdict}}")),
		table("Verdicts by check in range", "Verdicts over the time range, per Split, check and verdict.", "short",
			q(`round(`+increase("splitter_check_verdicts_total", "namespace, split, check, verdict", fleet, "$__range")+`) > 0`, "")),
		timeseries("Weights over time", "The weight (percent) each color should have, per Split: the candidate's share rises step by step, a snap-back drops it to 0 in one write.", "percent", false,
			q(`max by (namespace, split, color) (splitter_split_weight{`+fleet+`})`, "{{namespace}}/{{split}} {{color}}")),
		table("Gates waiting", "How long each waiting gate has waited (alert GateWaitingTooLong at 1 hour).", "s",
			q(`time() - max by (namespace, split) (splitter_split_gate_waiting_since_timestamp_seconds{`+fleet+`} > 0)`, "")),
		timeseries("API writes", "Writes the controller sends to the API server, by kind and result (conflict: a lost race or a failed precondition, retried).", "wps", true,
			q(`sum by (kind, result) (rate(splitter_api_writes_total[$__rate_interval]))`, "{{kind}} {{result}}")),
		timeseries("Watchdog sweep duration", "How long a sweep over every active release takes.", "s", false,
			q(`histogram_quantile(0.99, sum by (le) (rate(splitter_watchdog_sweep_duration_seconds_bucket[$__rate_interval])))`, "p99"),
			q(`histogram_quantile(0.5, sum by (le) (rate(splitter_watchdog_sweep_duration_seconds_bucket[$__rate_interval])))`, "p50"),
			q(`sum(rate(splitter_watchdog_sweep_duration_seconds_sum[$__rate_interval])) / sum(rate(splitter_watchdog_sweep_duration_seconds_count[$__rate_interval]))`, "mean")),
	}

	release := []Panel{
		row("Release: $namespace/$split"),
		timeseries("Weights", "The weight each color should have (splitter_split_weight).", "percent", false,
			q(`max by (color) (splitter_split_weight{`+one+`})`, "{{color}}")),
		timeseries("Phase", "1 while the Split is in the phase.", "short", true,
			q(`max by (phase) (splitter_split_phase{`+one+`}) == 1`, "{{phase}}")),
		stat("Time in the current step", "Since the current step's weights were applied (status.stepStartedAt).", "s", 3600,
			q(`time() - max(splitter_split_step_started_timestamp_seconds{`+one+`} > 0)`, "")),
		timeseries("Request rate per color", "Requests per second each color's sidecars served (Istio, reporter=destination).", "reqps", false,
			q(`sum by (destination_workload) (rate(istio_requests_total{reporter="destination",`+colors+`}[$__rate_interval]))`, "{{destination_workload}}")),
		timeseries("Error rate per color", "Share of 5xx answers. reporter=destination counts what reached the color's sidecar; reporter=source also sees requests that never did (no healthy upstream, a reset), as 5xx or response code 0.", "percentunit", false,
			q(`sum by (destination_workload) (rate(istio_requests_total{reporter="destination",`+colors+`,response_code=~"5.."}[$__rate_interval])) / sum by (destination_workload) (rate(istio_requests_total{reporter="destination",`+colors+`}[$__rate_interval]))`, "{{destination_workload}} (destination)"),
			q(`sum by (destination_workload) (rate(istio_requests_total{reporter="source",`+colors+`,response_code=~"5..|0"}[$__rate_interval])) / sum by (destination_workload) (rate(istio_requests_total{reporter="source",`+colors+`}[$__rate_interval]))`, "{{destination_workload}} (source)")),
		timeseries("p99 latency per color", "99th percentile of the request duration at each color's sidecar (Istio, reporter=destination).", "ms", false,
			q(`histogram_quantile(0.99, sum by (destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination",`+colors+`}[$__rate_interval])))`, "{{destination_workload}}")),
		bars("Check verdicts", "Verdicts per interval, by check and verdict.",
			q(increase("splitter_check_verdicts_total", "check, verdict", one, "$__rate_interval"), "{{check}} {{verdict}}")),
		bars("Snap-backs", "Snap-backs per interval, by reason.",
			q(snapBacks("reason", one, "$__rate_interval"), "{{reason}}")),
	}

	d := Dashboard{
		UID: "splitter-fleet", Title: "splitter: releases",
		Description: "Blue-green and canary releases by splitter: the fleet (phases, snap-backs, verdicts, weights, API writes, the watchdog) and one release (weights, Istio traffic per color). Generated by test/monitoring.",
		Tags:        []string{"splitter", "istio", "releases"},
		Timezone:    "browser", Editable: true, GraphTooltip: 1, Refresh: "30s", SchemaVersion: 39, Version: 1,
		Time: TimeRange{From: "now-6h", To: "now"},
		Templating: Templating{List: []Variable{
			{Name: "datasource", Label: "Prometheus", Type: "datasource", Query: "prometheus", Refresh: 1},
			{Name: "namespace", Label: "Namespace", Type: "query", Datasource: prom, Refresh: 2, Sort: 1,
				Definition: `label_values(splitter_split_phase, namespace)`,
				Query:      map[string]any{"query": `label_values(splitter_split_phase, namespace)`, "refId": "namespace"},
				IncludeAll: true, AllValue: ".+", Multi: true},
			{Name: "split", Label: "Split", Type: "query", Datasource: prom, Refresh: 2, Sort: 1,
				Definition: `label_values(splitter_split_phase{namespace=~"$namespace"}, split)`,
				Query:      map[string]any{"query": `label_values(splitter_split_phase{namespace=~"$namespace"}, split)`, "refId": "split"}},
		}},
		Annotations: Annotations{List: []Annotation{
			{Name: "Annotations & Alerts", Datasource: &Datasource{Type: "grafana", UID: "-- Grafana --"}, Enable: true, Hide: true,
				IconColor: "rgba(0, 211, 255, 1)", BuiltIn: 1, Type: "dashboard"},
			{Name: "Rolled back", Datasource: prom, Enable: true, IconColor: "red", Step: "30s",
				Expr:        `max by (namespace, split) (splitter_split_phase{` + fleet + `,phase=~"RollingBack|RolledBack"}) == 1`,
				TitleFormat: "Rolled back", TextFormat: "{{namespace}}/{{split}}", TagKeys: "namespace,split"},
			{Name: "Waiting for approval", Datasource: prom, Enable: true, IconColor: "yellow", Step: "30s",
				Expr:        `max by (namespace, split) (splitter_split_phase{` + fleet + `,phase="AwaitingApproval"}) == 1`,
				TitleFormat: "Awaiting approval", TextFormat: "{{namespace}}/{{split}}", TagKeys: "namespace,split"},
		}},
	}
	d.Panels = layout(append(fleetRow, release...))
	return d
}

// layout places panels left to right on Grafana's 24-column grid: a row
// takes a line; stats are 4 wide and 4 high, tables and charts 12 by 8.
func layout(panels []Panel) []Panel {
	x, y, lineH := 0, 0, 0
	for i := range panels {
		p := &panels[i]
		p.ID = i + 1
		if p.Type != "row" {
			p.Datasource = prom
			for j := range p.Targets {
				p.Targets[j].RefID = string(rune('A' + j))
				p.Targets[j].Datasource = prom
			}
		}
		w, h := 12, 8
		switch p.Type {
		case "row":
			w, h = 24, 1
		case "stat":
			w, h = 4, 4
		}
		if p.Type == "row" || x+w > 24 {
			x, y, lineH = 0, y+lineH, 0
		}
		p.GridPos = GridPos{H: h, W: w, X: x, Y: y}
		x += w
		lineH = max(lineH, h)
		if p.Type == "row" {
			x, y, lineH = 0, y+h, 0
		}
	}
	return panels
}

// JSON is the dashboard as committed: indented, with a final newline.
func (d Dashboard) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the dashboard: %w", err)
	}
	return append(b, '\n'), nil
}

// Expression is one PromQL expression of a dashboard, and where it is: the
// panel's or annotation's title, or the variable's name.
type Expression struct {
	Where, Expr string
}

// Expressions reads every PromQL expression of a dashboard's JSON, whatever
// its shape: each "expr", and the series selector of each label_values()
// variable query.
func Expressions(raw []byte) ([]Expression, error) {
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("decoding the dashboard: %w", err)
	}
	var out []Expression
	var errs []error
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			here := path
			for _, k := range []string{"title", "name"} {
				if s, ok := v[k].(string); ok {
					here = fmt.Sprintf("%s %q", path, s)
					break
				}
			}
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				switch s, isString := v[k].(string); {
				case isString && k == "expr":
					where := here
					if ref, ok := v["refId"].(string); ok {
						where += " " + ref
					}
					out = append(out, Expression{where, s})
				case isString && (k == "query" || k == "definition") && strings.HasPrefix(s, "label_values("):
					sel, err := LabelValuesSelector(s)
					if err != nil {
						errs = append(errs, fmt.Errorf("%s.%s: %w", here, k, err))
					} else if k == "query" { // definition repeats it
						out = append(out, Expression{here, sel})
					}
				default:
					walk(here+"."+k, v[k])
				}
			}
		case []any:
			for i, e := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
	}
	walk("dashboard", doc)
	return out, errors.Join(errs...)
}

// LabelValuesSelector is the series selector of Grafana's
// label_values(selector, label).
func LabelValuesSelector(q string) (string, error) {
	inner, ok := strings.CutPrefix(strings.TrimSpace(q), "label_values(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return "", fmt.Errorf("not label_values(...): %q", q)
	}
	inner = strings.TrimSuffix(inner, ")")
	i := strings.LastIndex(inner, ",")
	if i < 0 {
		return "", fmt.Errorf("label_values without a series selector: %q", q)
	}
	return strings.TrimSpace(inner[:i]), nil
}

// PrometheusRule wraps a Prometheus rule file (deploy/prometheus/alerts.yaml)
// as the Prometheus Operator's PrometheusRule, for kubectl apply -k
// deploy/prometheus; the YAML it returns is what is committed.
func PrometheusRule(ruleFile []byte) ([]byte, error) {
	var rules struct {
		Groups []any `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(ruleFile, &rules); err != nil {
		return nil, fmt.Errorf("reading the rule file: %w", err)
	}
	if len(rules.Groups) == 0 {
		return nil, errors.New("the rule file has no groups")
	}
	obj := map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "PrometheusRule",
		"metadata": map[string]any{
			"name":   "splitter",
			"labels": map[string]any{"app.kubernetes.io/name": "splitter", "app.kubernetes.io/component": "alerts"},
		},
		"spec": map[string]any{"groups": rules.Groups},
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encoding the PrometheusRule: %w", err)
	}
	header := "# Generated from alerts.yaml by go test ./test/monitoring/ -run TestPrometheusRule -update: edit alerts.yaml.\n"
	return append([]byte(header), out...), nil
}
