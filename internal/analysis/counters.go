package analysis

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
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

// Counting rule, fixed for every release (choosing the worse of two
// reporters look by look would make the evidence depend on the data and
// break the watchdog's martingale argument):
//
//   - requests are what the destination proxies counted
//     (reporter="destination"): every attempt that reached a pod;
//   - plus what the source proxies counted as failing before reaching any
//     pod (response flags UH, UF, UO or NR: no healthy upstream, connection
//     failure, overflow, no route), which no destination proxy sees;
//   - bad, for availability: 5xx; or no response at all (code 0) unless
//     the client went away (flag DC); or, when the response is not 5xx, a
//     grpc-status in the SLO's list. A response is classified once, so
//     nothing is counted twice;
//   - bad, for latency: slower than the threshold, as the destination's
//     histogram says (+Inf bucket minus the threshold's bucket).
//
// Each series is one proxy's counter for one class of response (summed
// over the source workloads): growth is taken per series, then summed.
// This assumes Istio's metric expiry is off (its default): a series that
// expired while its proxy lives would look like a restart.

// SourceOnlyFlags are the Envoy response flags of requests that never
// reached a destination proxy.
var SourceOnlyFlags = []string{"UH", "UF", "UO", "NR"}

// CounterSpec names what ReadCounters reads for one SLO.
type CounterSpec struct {
	SLO string
	// ThresholdMs, for a latency SLO: requests slower than this bucket
	// boundary are bad. Zero means an availability SLO.
	ThresholdMs float64
	// GRPCErrorCodes, for availability: grpc-status codes that are errors.
	GRPCErrorCodes []int32
}

// Specs are the counter specs of a policy's SLOs.
func Specs(slos []SLO) []CounterSpec {
	out := make([]CounterSpec, 0, len(slos))
	for _, s := range slos {
		out = append(out, CounterSpec{SLO: s.Name, ThresholdMs: s.ThresholdMs, GRPCErrorCodes: s.GRPCErrorCodes})
	}
	return out
}

// Workload names one color Deployment in one namespace.
type Workload struct {
	Namespace, Name string
}

// Reading is every color's counter series for one spec, cluster-wide.
type Reading map[Workload][]Series

// Series is one counter series of one workload.
type Series struct {
	ID            string
	Requests, Bad float64
}

// For picks one release's readings out of a cluster-wide reading.
func (r Reading) For(slo, namespace string, workloads map[splitterv1.Color]string) []splitterv1.SeriesReading {
	var out []splitterv1.SeriesReading
	for c, w := range workloads {
		for _, s := range r[Workload{namespace, w}] {
			out = append(out, splitterv1.SeriesReading{Color: c, SLO: slo, Series: s.ID,
				Requests: int64(math.Round(s.Requests)), Bad: int64(math.Round(s.Bad))})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Color != b.Color {
			return a.Color < b.Color
		}
		return a.Series < b.Series
	})
	return out
}

// colorSelector matches the color Deployments of every workload.
const colorSelector = `destination_workload=~".+-(blue|green)"`

// proxyLabels identify the proxy that counted a series. `pod` is what the
// usual Kubernetes scrape configs add; `instance` is always there.
var proxyLabels = []string{"destination_workload_namespace", "destination_workload", "reporter", "pod", "instance"}

// AvailabilityQueries are the two queries an availability reading needs:
// every destination series, and the source series of requests that never
// reached a pod, each summed over the source workloads only.
func AvailabilityQueries() []string {
	by := strings.Join(append(append([]string(nil), proxyLabels...), "response_code", "response_flags", "grpc_response_status"), ", ")
	return []string{
		`sum by (` + by + `) (istio_requests_total{reporter="destination",` + colorSelector + `})`,
		`sum by (` + by + `) (istio_requests_total{reporter="source",` + colorSelector + `,response_flags=~".*(` + strings.Join(SourceOnlyFlags, "|") + `).*"})`,
	}
}

// LatencyQuery reads the +Inf and threshold buckets of every destination
// proxy. `le` may print as 250 or 250.0.
func LatencyQuery(thresholdMs float64) string {
	le := regexp.QuoteMeta(strconv.FormatFloat(thresholdMs, 'f', -1, 64))
	by := strings.Join(append(append([]string(nil), proxyLabels...), "le"), ", ")
	return `sum by (` + by + `) (istio_request_duration_milliseconds_bucket{reporter="destination",` + colorSelector +
		`,le=~"` + escapeLiteral(le) + `(\\.0+)?|\\+Inf"})`
}

// seriesID hashes the labels that identify a series.
func seriesID(m model.Metric, names ...string) string {
	h := fnv.New64a()
	for _, n := range names {
		h.Write([]byte(m[model.LabelName(n)]))
		h.Write([]byte{0})
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

func workloadOf(m model.Metric) Workload {
	return Workload{string(m["destination_workload_namespace"]), string(m["destination_workload"])}
}

// IsBadResponse classifies one availability series (see the counting rule).
func IsBadResponse(code, flags, grpcStatus string, grpcErrorCodes []int32) bool {
	switch {
	case strings.HasPrefix(code, "5") && len(code) == 3:
		return true
	case code == "0":
		return !strings.Contains(flags, "DC")
	}
	for _, c := range grpcErrorCodes {
		if grpcStatus == strconv.Itoa(int(c)) {
			return true
		}
	}
	return false
}

// ClassifyAvailability turns the two availability queries' results into
// series. Source-side series are all failures that reached no pod.
func ClassifyAvailability(destination, source model.Vector, grpcErrorCodes []int32) Reading {
	out := Reading{}
	ids := append(append([]string(nil), proxyLabels...), "response_code", "response_flags", "grpc_response_status")
	for _, s := range destination {
		v := float64(s.Value)
		bad := 0.0
		if IsBadResponse(string(s.Metric["response_code"]), string(s.Metric["response_flags"]), string(s.Metric["grpc_response_status"]), grpcErrorCodes) {
			bad = v
		}
		w := workloadOf(s.Metric)
		out[w] = append(out[w], Series{ID: seriesID(s.Metric, ids...), Requests: v, Bad: bad})
	}
	for _, s := range source {
		v := float64(s.Value)
		w := workloadOf(s.Metric)
		out[w] = append(out[w], Series{ID: seriesID(s.Metric, ids...), Requests: v, Bad: v})
	}
	return out
}

// ClassifyLatency pairs each proxy's +Inf and threshold buckets. A proxy
// with requests but without the threshold's bucket (custom buckets,
// relabelling) is an error: reading it as zero fast requests would make
// every request slow.
func ClassifyLatency(v model.Vector, thresholdMs float64) (Reading, error) {
	type pair struct {
		w           Workload
		inf, le     float64
		hasInf, has bool
	}
	pairs := map[string]*pair{}
	for _, s := range v {
		id := seriesID(s.Metric, proxyLabels...)
		p := pairs[id]
		if p == nil {
			p = &pair{w: workloadOf(s.Metric)}
			pairs[id] = p
		}
		le := string(s.Metric["le"])
		if le == "+Inf" {
			p.inf, p.hasInf = float64(s.Value), true
			continue
		}
		if f, err := strconv.ParseFloat(le, 64); err == nil && math.Abs(f-thresholdMs) < 1e-9 {
			p.le, p.has = float64(s.Value), true
		}
	}
	out := Reading{}
	ids := make([]string, 0, len(pairs))
	for id := range pairs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p := pairs[id]
		if !p.hasInf {
			continue
		}
		if !p.has {
			if p.inf == 0 {
				continue
			}
			return nil, fmt.Errorf("%s/%s has no istio_request_duration_milliseconds_bucket{le=%q}: the latency SLO's threshold must be one of the proxies' bucket boundaries",
				p.w.Namespace, p.w.Name, strconv.FormatFloat(thresholdMs, 'f', -1, 64))
		}
		out[p.w] = append(out[p.w], Series{ID: id, Requests: p.inf, Bad: math.Max(0, p.inf-p.le)})
	}
	return out, nil
}

// ReadCounters reads every color Deployment's counter series for spec, as
// Prometheus last scraped them: a handful of queries serve every release
// at once. A failed query, a timeout and a result with warnings (partial
// data) are errors: the caller treats the look as Error and keeps its
// baseline.
func (e Evaluator) ReadCounters(ctx context.Context, spec CounterSpec, now time.Time) (Reading, error) {
	if spec.ThresholdMs == 0 {
		qs := AvailabilityQueries()
		dst, err := e.vector(ctx, qs[0], now)
		if err != nil {
			return nil, err
		}
		src, err := e.vector(ctx, qs[1], now)
		if err != nil {
			return nil, err
		}
		return ClassifyAvailability(dst, src, spec.GRPCErrorCodes), nil
	}
	v, err := e.vector(ctx, LatencyQuery(spec.ThresholdMs), now)
	if err != nil {
		return nil, err
	}
	return ClassifyLatency(v, spec.ThresholdMs)
}

// vector runs an instant query that must return a vector, without warnings.
func (e Evaluator) vector(ctx context.Context, q string, now time.Time) (model.Vector, error) {
	timeout := e.timeout()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, warnings, _, err := e.API.Query(ctx, q, now, promv1.WithTimeout(timeout))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("query timed out after %s: %w", timeout, err)
		}
		return nil, fmt.Errorf("querying Prometheus: %w", err)
	}
	if len(warnings) > 0 {
		return nil, fmt.Errorf("Prometheus returned partial data (%s): not counted", strings.Join(warnings, "; "))
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %s returned a %s, want a vector", q, v.Type())
	}
	return vec, nil
}

func (e Evaluator) timeout() time.Duration {
	if e.Timeout == 0 {
		return 10 * time.Second
	}
	return e.Timeout
}

type seriesKey struct {
	color  splitterv1.Color
	slo    string
	series string
}

// Chunk is the evidence between two readings: counts per SLO and color.
type Chunk map[string]map[splitterv1.Color]Count

// Of returns one SLO's count for one color.
func (c Chunk) Of(slo string, color splitterv1.Color) Count { return c[slo][color] }

// Growth is what the counters grew by from prev to now, per series, then
// summed per SLO and color. A series whose value went down restarted (its
// proxy did): its growth is its new value, as Prometheus' increase() has
// it. A series absent from prev counts from its first reading: its past
// is not this window's. A series absent from now (a pod gone) adds
// nothing more. fresh says whether now has series prev lacks.
func Growth(prev, now []splitterv1.SeriesReading) (c Chunk, fresh bool) {
	old := make(map[seriesKey]splitterv1.SeriesReading, len(prev))
	for _, r := range prev {
		old[seriesKey{r.Color, r.SLO, r.Series}] = r
	}
	c = Chunk{}
	for _, r := range now {
		if c[r.SLO] == nil {
			c[r.SLO] = map[splitterv1.Color]Count{}
		}
		p, ok := old[seriesKey{r.Color, r.SLO, r.Series}]
		if !ok {
			fresh = true
			continue
		}
		dn, dx := r.Requests-p.Requests, r.Bad-p.Bad
		if dn < 0 || dx < 0 {
			dn, dx = r.Requests, r.Bad
		}
		dx = min(dx, dn)
		c[r.SLO][r.Color] = c[r.SLO][r.Color].Add(Count{N: float64(dn), X: float64(dx)})
	}
	return c, fresh
}
