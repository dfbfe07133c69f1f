// Package analysis turns checks into verdicts: it renders query templates
// with escaped values, runs them against Prometheus with a timeout, and
// judges the result against the check's bounds. Query failures and missing
// data are verdicts (Error, Inconclusive), never Go errors: the engine
// decides what they mean, and lack of evidence is never a Pass.
package analysis

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
)

// Vars are the values a query template may use. Every value is escaped for
// a PromQL string literal before it reaches the template, so no name can
// change a query's structure.
type Vars struct {
	Namespace string // the workload's namespace
	Workload  string // the user's Deployment
	Service   string // the workload's Service
	Candidate string // the candidate color's Deployment, e.g. checkout-green
	Live      string // the live color's Deployment, e.g. checkout-blue
	Window    string // the analysis window as a PromQL duration, e.g. 1m
}

// Query is a parsed query template.
type Query struct {
	Text string
	tmpl *template.Template
}

var funcs = template.FuncMap{
	// regex quotes a value for use inside =~ or !~ (the value is already
	// escaped for the string literal).
	"regex": func(s string) string { return escapeLiteral(regexp.QuoteMeta(unescapeLiteral(s))) },
}

// ParseQuery parses a query template. Unknown fields are an error when
// rendered, which ParseQuery checks with sample values.
func ParseQuery(text string) (*Query, error) {
	t, err := template.New("query").Option("missingkey=error").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, err
	}
	q := &Query{Text: text, tmpl: t}
	sample := Vars{Namespace: "ns", Workload: "w", Service: "s", Candidate: "w-green", Live: "w-blue", Window: "1m"}
	if _, err := q.Render(sample); err != nil {
		return nil, err
	}
	return q, nil
}

// Render executes the template with every value escaped.
func (q *Query) Render(v Vars) (string, error) {
	esc := Vars{
		Namespace: escapeLiteral(v.Namespace), Workload: escapeLiteral(v.Workload), Service: escapeLiteral(v.Service),
		Candidate: escapeLiteral(v.Candidate), Live: escapeLiteral(v.Live), Window: v.Window,
	}
	var b bytes.Buffer
	if err := q.tmpl.Execute(&b, esc); err != nil {
		return "", err
	}
	return b.String(), nil
}

// escapeLiteral escapes s for the inside of a double-quoted PromQL string.
func escapeLiteral(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
}

func unescapeLiteral(s string) string {
	return strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\n`, "\n", `\r`, "\r", `\t`, "\t").Replace(s)
}

// FormatWindow renders a duration as a PromQL range, in whole seconds.
func FormatWindow(d time.Duration) string {
	return model.Duration(d.Round(time.Second)).String()
}

// Built-in queries over the candidate's Istio metrics, as reported by its
// own sidecars (reporter="destination"). An empty result or 0/0 is no data.
var builtins = map[string]string{
	"istio-success-rate": `sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ .Namespace }}",destination_workload="{{ .Candidate }}",response_code!~"5.."}[{{ .Window }}]))
/
sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ .Namespace }}",destination_workload="{{ .Candidate }}"}[{{ .Window }}]))`,
	"istio-latency-p99": `histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="{{ .Namespace }}",destination_workload="{{ .Candidate }}"}[{{ .Window }}])))`,
}

// Builtin returns a built-in query by name.
func Builtin(name string) (*Query, error) {
	text, ok := builtins[name]
	if !ok {
		return nil, fmt.Errorf("unknown builtin %q", name)
	}
	return ParseQuery(text)
}
