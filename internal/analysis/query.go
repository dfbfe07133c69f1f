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
	"unicode/utf8"

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

// Render executes the template with every value escaped. A value that
// is not valid UTF-8 is an error rather than escaped byte by byte:
// Prometheus' label values are UTF-8, so no series could match it, and a
// regular expression would read its bytes as U+FFFD. (Kubernetes names
// are always valid UTF-8.) Window, inserted as it is, must be a positive
// Prometheus duration, so that no value can change a query's structure.
func (q *Query) Render(v Vars) (string, error) {
	for _, f := range []struct{ name, val string }{
		{"Namespace", v.Namespace}, {"Workload", v.Workload}, {"Service", v.Service},
		{"Candidate", v.Candidate}, {"Live", v.Live},
	} {
		if !utf8.ValidString(f.val) {
			return "", fmt.Errorf("%s %q is not valid UTF-8", f.name, f.val)
		}
	}
	if d, err := model.ParseDuration(v.Window); err != nil || d <= 0 {
		return "", fmt.Errorf("Window %q is not a positive Prometheus duration such as 1m", v.Window)
	}
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

// The escapes of a double-quoted PromQL string that escapeLiteral uses.
// U+FFFD is escaped too: Prometheus' lexer cannot tell it from an invalid
// byte and rejects the query.
var (
	literalEscaper   = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`, "\uFFFD", `\uFFFD`)
	literalUnescaper = strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\n`, "\n", `\r`, "\r", `\t`, "\t", `\uFFFD`, "\uFFFD")
)

// escapeLiteral escapes s, valid UTF-8, for the inside of a double-quoted
// PromQL string.
func escapeLiteral(s string) string { return literalEscaper.Replace(s) }

// unescapeLiteral undoes escapeLiteral.
func unescapeLiteral(s string) string { return literalUnescaper.Replace(s) }

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
