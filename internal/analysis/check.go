package analysis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
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
	timeout := e.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	val, _, _, err := e.API.Query(ctx, q, now, promv1.WithTimeout(timeout))
	if err != nil {
		msg := err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			msg = fmt.Sprintf("query timed out after %s", timeout)
		}
		return Result{Name: c.Name, Bound: c.Bound(), Verdict: splitterv1.VerdictError, Message: "querying Prometheus: " + msg, Query: q}
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

// CounterSpec names what ColorCounters reads for one SLO.
type CounterSpec struct {
	SLO string
	// ThresholdMs, for a latency SLO: requests slower than this bucket
	// boundary are bad. Zero means an availability SLO (bad = 5xx, or no
	// response at all unless the client disconnected, or a gRPC error).
	ThresholdMs float64
	// GRPCErrorCodes, for availability: grpc-status codes that are errors.
	GRPCErrorCodes []int32
}

// CounterKey names one workload's counter as one reporter counts it.
type CounterKey struct {
	Namespace, Workload, Reporter string
}

// CounterReading is a cumulative reading: requests and bad requests.
type CounterReading struct {
	Requests, Bad float64
}

// ColorCounters reads the raw cumulative counters of every color
// Deployment (a workload named *-blue or *-green) in every namespace, from
// both reporters, as Prometheus last scraped them: a handful of queries
// serve every release at once. Raw counters, not rate(): the engine takes
// differences against readings it keeps in status, so a check covers
// exactly the requests since its baseline.
func (e Evaluator) ColorCounters(ctx context.Context, spec CounterSpec, now time.Time) (map[CounterKey]CounterReading, error) {
	sel := `reporter=~"source|destination",destination_workload=~".+-(blue|green)"`
	by := " by (destination_workload_namespace, destination_workload, reporter) "
	timeout := e.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	query := func(q string) (map[CounterKey]float64, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		v, _, _, err := e.API.Query(ctx, q, now, promv1.WithTimeout(timeout))
		if err != nil {
			return nil, err
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return nil, fmt.Errorf("query %s returned a %s", q, v.Type())
		}
		out := map[CounterKey]float64{}
		for _, s := range vec {
			out[CounterKey{string(s.Metric["destination_workload_namespace"]), string(s.Metric["destination_workload"]), string(s.Metric["reporter"])}] = float64(s.Value)
		}
		return out, nil
	}
	var total, bad map[CounterKey]float64
	var err error
	if spec.ThresholdMs == 0 {
		if total, err = query(`sum` + by + `(istio_requests_total{` + sel + `})`); err != nil {
			return nil, err
		}
		if bad, err = query(`sum` + by + `(istio_requests_total{` + sel + `,response_code=~"5.."})`); err != nil {
			return nil, err
		}
		extra := []string{`response_code="0",response_flags!~".*DC.*"`}
		if len(spec.GRPCErrorCodes) > 0 {
			codes := make([]string, len(spec.GRPCErrorCodes))
			for i, c := range spec.GRPCErrorCodes {
				codes[i] = strconv.Itoa(int(c))
			}
			// gRPC failures arrive as HTTP 200; 5xx are counted already.
			extra = append(extra, `response_code!~"5..",grpc_response_status=~"`+strings.Join(codes, "|")+`"`)
		}
		for _, m := range extra {
			more, err := query(`sum` + by + `(istio_requests_total{` + sel + `,` + m + `})`)
			if err != nil {
				return nil, err
			}
			for k, v := range more {
				bad[k] += v
			}
		}
	} else {
		if total, err = query(`sum` + by + `(istio_request_duration_milliseconds_count{` + sel + `})`); err != nil {
			return nil, err
		}
		le := regexp.QuoteMeta(strconv.FormatFloat(spec.ThresholdMs, 'f', -1, 64))
		var fast map[CounterKey]float64
		if fast, err = query(`sum` + by + `(istio_request_duration_milliseconds_bucket{` + sel + `,le=~"` + escapeLiteral(le) + `(\\.0+)?"})`); err != nil {
			return nil, err
		}
		bad = map[CounterKey]float64{}
		for k, n := range total {
			bad[k] = n - fast[k]
		}
	}
	out := make(map[CounterKey]CounterReading, len(total))
	for k, n := range total {
		out[k] = CounterReading{Requests: n, Bad: math.Max(0, bad[k])}
	}
	return out, nil
}

// Snapshots picks one workload's colors out of readings.
func Snapshots(slo string, readings map[CounterKey]CounterReading, namespace string, workloads map[splitterv1.Color]string) []splitterv1.CountSnapshot {
	var out []splitterv1.CountSnapshot
	for c, w := range workloads {
		for _, reporter := range []string{"destination", "source"} {
			r, ok := readings[CounterKey{namespace, w, reporter}]
			if !ok {
				continue
			}
			out = append(out, splitterv1.CountSnapshot{Color: c, SLO: slo, Reporter: reporter,
				Requests: int64(math.Round(r.Requests)), Bad: int64(math.Round(r.Bad))})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return string(a.Color)+a.Reporter < string(b.Color)+b.Reporter
	})
	return out
}
