package analysis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Check is one compiled SLO check.
type Check struct {
	Name     string
	Query    *Query
	Min, Max *float64
}

// Bound describes the check's bounds for people, e.g. ">= 0.99".
func (c Check) Bound() string {
	switch {
	case c.Min != nil && c.Max != nil:
		return fmt.Sprintf("%s..%s", num(*c.Min), num(*c.Max))
	case c.Min != nil:
		return ">= " + num(*c.Min)
	case c.Max != nil:
		return "<= " + num(*c.Max)
	}
	return ""
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// Result is the verdict of one check at one instant.
type Result struct {
	Name    string
	Verdict splitterv1.Verdict
	// Value is the measured value; meaningful when HasValue.
	Value    float64
	HasValue bool
	Bound    string
	Message  string
	Query    string // as sent, for logs
	// Incident says the step's evidence shows an incident both colors
	// share (the objective breached while green is no worse than blue):
	// an extension judges fresh evidence rather than the incident again.
	Incident bool
}

// ValueString is the value for status and Events; empty without one.
func (r Result) ValueString() string {
	if !r.HasValue {
		return ""
	}
	return strconv.FormatFloat(r.Value, 'g', 6, 64)
}

// Judge compares a sample to the check's bounds. It is pure: the verdict
// of a value is decided here and nowhere else.
func Judge(c Check, samples model.Vector) Result {
	r := Result{Name: c.Name, Bound: c.Bound()}
	switch len(samples) {
	case 0:
		r.Verdict, r.Message = splitterv1.VerdictInconclusive, "no data: the query returned no series"
		return r
	case 1:
	default:
		r.Verdict, r.Message = splitterv1.VerdictError, fmt.Sprintf("the query returned %d series, want 1 (aggregate it with sum)", len(samples))
		return r
	}
	v := float64(samples[0].Value)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		r.Verdict, r.Message = splitterv1.VerdictInconclusive, fmt.Sprintf("no data: the query returned %v (no requests in the window?)", v)
		return r
	}
	r.Value, r.HasValue = v, true
	switch {
	case c.Min != nil && v < *c.Min:
		r.Verdict, r.Message = splitterv1.VerdictFail, fmt.Sprintf("%s is %s, below the minimum %s", c.Name, r.ValueString(), num(*c.Min))
	case c.Max != nil && v > *c.Max:
		r.Verdict, r.Message = splitterv1.VerdictFail, fmt.Sprintf("%s is %s, above the maximum %s", c.Name, r.ValueString(), num(*c.Max))
	default:
		r.Verdict = splitterv1.VerdictPass
	}
	return r
}

// Evaluator runs checks against one Prometheus.
type Evaluator struct {
	API     promv1.API
	Timeout time.Duration // per query; default 10s
}

// Evaluate renders and runs c at now and judges the result. Every failure
// is a verdict: a template error or query error is Error.
func (e Evaluator) Evaluate(ctx context.Context, c Check, vars Vars, now time.Time) Result {
	q, err := c.Query.Render(vars)
	if err != nil {
		return Result{Name: c.Name, Bound: c.Bound(), Verdict: splitterv1.VerdictError, Message: "rendering the query: " + err.Error()}
	}
	timeout := e.timeout()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	val, warnings, _, err := e.API.Query(ctx, q, now, promv1.WithTimeout(timeout))
	if err != nil {
		msg := err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			msg = fmt.Sprintf("query timed out after %s", timeout)
		}
		return Result{Name: c.Name, Bound: c.Bound(), Verdict: splitterv1.VerdictError, Message: "querying Prometheus: " + msg, Query: q}
	}
	if len(warnings) > 0 {
		return Result{Name: c.Name, Bound: c.Bound(), Verdict: splitterv1.VerdictError, Query: q,
			Message: "Prometheus returned partial data: " + strings.Join(warnings, "; ")}
	}
	var r Result
	switch v := val.(type) {
	case model.Vector:
		r = Judge(c, v)
	case *model.Scalar:
		r = Judge(c, model.Vector{&model.Sample{Value: v.Value, Timestamp: v.Timestamp}})
	default:
		r = Result{Name: c.Name, Bound: c.Bound(), Verdict: splitterv1.VerdictError, Message: fmt.Sprintf("the query returned a %s, want an instant vector", val.Type())}
	}
	r.Query = q
	return r
}
