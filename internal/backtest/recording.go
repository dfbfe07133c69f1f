// Package backtest replays a policy over what Prometheus recorded: a past
// release of a workload (release mode), or a window without one split
// into two identical colors (baseline mode). The replay is driven by the
// same loop as `policy simulate` (simulate.DriveRelease), so the engine,
// the counter queries and the verdict functions are the controller's:
// only the traffic comes from the recording. Fetching is I/O (Fetch);
// everything after it is pure and draws from a seeded generator.
package backtest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
)

// Lead is how much is read before the window: a reading at the window's
// start describes an instant a scrape and a margin earlier (analysis.Align)
// and needs the samples around it. Enough for scrapes up to a minute.
const Lead = 3 * time.Minute

// Query names what to fetch.
type Query struct {
	Namespace, Workload string
	From, To            time.Time
	SLOs                []analysis.CounterSpec
	// Chunk is how long a range each query reads (default 1h): a long
	// window is read in chunks so that no query holds too many samples.
	Chunk time.Duration
	// Now is the current time (retention is counted back from it).
	Now time.Time
}

// Deployments are the workload's Deployments whose series a backtest
// reads: the user's own (before it opted in) and its two colors.
func (q Query) Deployments() []string {
	return []string{q.Workload, q.Workload + "-blue", q.Workload + "-green"}
}

// Recording is the raw samples of one workload's counters over a window.
type Recording struct {
	Namespace, Workload string
	From, To            time.Time
	SLOs                []analysis.CounterSpec
	// Scrape is the scrape interval the samples were taken at.
	Scrape time.Duration
	// matrices holds, per SLO, what its queries returned over the window
	// (availability: destination and source series; latency: buckets).
	matrices [][]model.Matrix
	// Weights are the weights splitter recorded for the workload's Split
	// (splitter_split_weight, when Prometheus scraped the controller), by
	// color; nil when it did not.
	Weights map[splitterv1.Color][]model.SamplePair
}

// weightScrape is how often the controller's weights were scraped.
func (r *Recording) weightScrape() time.Duration {
	return medianGap([]model.Matrix{{&model.SampleStream{Values: r.Weights[splitterv1.Green]}}}, 15*time.Second)
}

// NewRecording makes a recording of samples already read: per SLO, the
// matrices its queries return (see Fetch). For tests and benchmarks.
func NewRecording(namespace, workload string, from, to time.Time, slos []analysis.CounterSpec, scrape time.Duration, matrices [][]model.Matrix) *Recording {
	return &Recording{Namespace: namespace, Workload: workload, From: from, To: to, SLOs: slos, Scrape: scrape, matrices: matrices}
}

// ReadAt is every series of the workload's Deployments for SLO i, read
// as the controller reads them at now (analysis.Classify*): each series
// with a sample in the controller's range selector, at Align(now).
func (r *Recording) ReadAt(i int, now time.Time) (analysis.Reading, error) {
	return r.readAt(i, analysis.Align(now, r.Scrape), now)
}

// readAt reads SLO i's series at the instant at, from the samples a range
// selector ending at now holds.
func (r *Recording) readAt(i int, at, now time.Time) (analysis.Reading, error) {
	t := model.TimeFromUnixNano(at.UnixNano())
	lo := model.TimeFromUnixNano(now.Add(-analysis.ReadingWindow(r.Scrape)).UnixNano())
	hi := model.TimeFromUnixNano(now.UnixNano())
	ms := make([]model.Matrix, len(r.matrices[i]))
	for j, m := range r.matrices[i] {
		ms[j] = inRange(m, lo, hi)
	}
	s := r.SLOs[i]
	if s.ThresholdMs == 0 {
		return analysis.ClassifyAvailability(ms[0], ms[1], t, s.GRPCErrorCodes), nil
	}
	// The selector matched this workload's colors only.
	reading, unreadable := analysis.ClassifyLatency(ms[0], t, s.ThresholdMs)
	if err := unreadable.Err(); err != nil {
		return nil, err
	}
	return reading, nil
}

// inRange is the series of m with a sample in (lo, hi], each cut to the
// samples up to hi: what a range selector ending at hi returns.
func inRange(m model.Matrix, lo, hi model.Time) model.Matrix {
	out := make(model.Matrix, 0, len(m))
	for _, ss := range m {
		end := sort.Search(len(ss.Values), func(k int) bool { return ss.Values[k].Timestamp > hi })
		if end == 0 || ss.Values[end-1].Timestamp <= lo {
			continue
		}
		out = append(out, &model.SampleStream{Metric: ss.Metric, Values: ss.Values[:end]})
	}
	return out
}

// Fetch reads the recording: the same raw counter series the controller
// reads (analysis.AvailabilityQueriesOver, LatencyQueryOver), restricted
// to the workload's Deployments, over the window and Lead before it.
// Bad input is an error that says what to change: a window past
// Prometheus' retention, a workload Prometheus has never seen, a window
// without samples.
func Fetch(ctx context.Context, api promv1.API, q Query) (*Recording, error) {
	if !q.To.After(q.From) {
		return nil, fmt.Errorf("--to (%s) must be after --from (%s)", stamp(q.To), stamp(q.From))
	}
	if q.Now.IsZero() {
		q.Now = time.Now()
	}
	if q.To.After(q.Now) {
		return nil, fmt.Errorf("--to (%s) is in the future (now %s)", stamp(q.To), stamp(q.Now))
	}
	if q.Chunk <= 0 {
		q.Chunk = time.Hour
	}
	if err := checkRetention(ctx, api, q); err != nil {
		return nil, err
	}
	sel := analysis.WorkloadSelector(q.Namespace, q.Deployments()...)
	if err := checkKnown(ctx, api, q, sel); err != nil {
		return nil, err
	}
	rec := &Recording{Namespace: q.Namespace, Workload: q.Workload, From: q.From, To: q.To, SLOs: q.SLOs}
	for _, s := range q.SLOs {
		var queries []string
		if s.ThresholdMs == 0 {
			queries = analysis.AvailabilityQueriesOver(sel, q.Chunk)
		} else {
			queries = []string{analysis.LatencyQueryOver(sel, s.ThresholdMs, q.Chunk)}
		}
		var ms []model.Matrix
		for _, text := range queries {
			m, err := readRange(ctx, api, text, q.From.Add(-Lead), q.To, q.Chunk)
			if err != nil {
				return nil, err
			}
			ms = append(ms, m)
		}
		rec.matrices = append(rec.matrices, ms)
	}
	if !rec.hasSamples() {
		return nil, fmt.Errorf("no samples of %s/%s between %s and %s: Prometheus has its series, but not in this window (was it receiving traffic then?)",
			q.Namespace, q.Workload, stamp(q.From), stamp(q.To))
	}
	rec.Scrape = rec.scrapeInterval()
	w, err := readWeights(ctx, api, q)
	if err != nil {
		return nil, err
	}
	rec.Weights = w
	return rec, nil
}

// checkRetention refuses a window that starts before what Prometheus
// keeps. Backends without the runtime-information endpoint (Thanos,
// Mimir) are not checked: the data check after the fetch still holds.
func checkRetention(ctx context.Context, api promv1.API, q Query) error {
	info, err := api.Runtimeinfo(ctx)
	if err != nil {
		return nil
	}
	keep, ok := parseRetention(info.StorageRetention)
	if !ok {
		return nil
	}
	if oldest := q.Now.Add(-keep); q.From.Before(oldest) {
		return fmt.Errorf("--from (%s) is older than Prometheus keeps data (retention %s: nothing before %s): start the window later, or use a longer-term store",
			stamp(q.From), info.StorageRetention, stamp(oldest))
	}
	return nil
}

// parseRetention reads Prometheus' "15d", "1d or 500MiB": the time part.
func parseRetention(s string) (time.Duration, bool) {
	for _, part := range strings.Split(s, " or ") {
		if d, err := model.ParseDuration(strings.TrimSpace(part)); err == nil && d > 0 {
			return time.Duration(d), true
		}
	}
	return 0, false
}

// checkKnown tells an unknown workload from a quiet window: the series
// API over the whole retention says whether Prometheus ever saw it.
func checkKnown(ctx context.Context, api promv1.API, q Query, sel string) error {
	since := q.From.Add(-30 * 24 * time.Hour)
	found, _, _, err := api.Series(ctx, []string{`istio_requests_total{` + sel + `}`}, since, q.Now)
	if err != nil {
		return fmt.Errorf("asking Prometheus for %s/%s's series: %w", q.Namespace, q.Workload, err)
	}
	if len(found) == 0 {
		return fmt.Errorf("Prometheus has no istio_requests_total series for Deployment %s (nor %s-blue, %s-green) in namespace %s: check the names, and that the workload is in the mesh",
			q.Workload, q.Workload, q.Workload, q.Namespace)
	}
	return nil
}

// readRange reads query's raw samples from `from` to `to`, chunk by
// chunk, as instant queries whose range selector is the chunk (the query
// text's own range must be chunk long). Samples are merged per series;
// a sample on a chunk's edge (Prometheus 2 includes both ends) is kept once.
func readRange(ctx context.Context, api promv1.API, query string, from, to time.Time, chunk time.Duration) (model.Matrix, error) {
	bySeries := map[model.Fingerprint]*model.SampleStream{}
	var order []model.Fingerprint
	for end := from.Add(chunk); ; end = end.Add(chunk) {
		at := end
		if at.After(to) {
			at = to
		}
		v, warnings, _, err := api.Query(ctx, query, at, promv1.WithTimeout(time.Minute))
		if err != nil {
			return nil, fmt.Errorf("querying Prometheus (%s): %w", query, err)
		}
		if len(warnings) > 0 {
			return nil, fmt.Errorf("Prometheus returned partial data for %s (%s)", query, strings.Join(warnings, "; "))
		}
		m, ok := v.(model.Matrix)
		if !ok {
			return nil, fmt.Errorf("query %s returned a %s, want a matrix", query, v.Type())
		}
		for _, ss := range m {
			fp := ss.Metric.Fingerprint()
			cur := bySeries[fp]
			if cur == nil {
				cur = &model.SampleStream{Metric: ss.Metric}
				bySeries[fp] = cur
				order = append(order, fp)
			}
			for _, p := range ss.Values {
				if n := len(cur.Values); n > 0 && p.Timestamp <= cur.Values[n-1].Timestamp {
					continue
				}
				cur.Values = append(cur.Values, p)
			}
		}
		if !at.Before(to) {
			break
		}
	}
	out := make(model.Matrix, 0, len(order))
	for _, fp := range order {
		out = append(out, bySeries[fp])
	}
	return out, nil
}

// readWeights reads splitter_split_weight for the workload's Split. Its
// `namespace` label may have been renamed exported_namespace by a scrape
// config that sets its own.
func readWeights(ctx context.Context, api promv1.API, q Query) (map[splitterv1.Color][]model.SamplePair, error) {
	text := `splitter_split_weight{split="` + escape(q.Workload) + `"}[` + analysis.FormatWindow(q.Chunk) + `]`
	m, err := readRange(ctx, api, text, q.From.Add(-Lead), q.To, q.Chunk)
	if err != nil {
		return nil, err
	}
	out := map[splitterv1.Color][]model.SamplePair{}
	for _, ss := range m {
		ns := string(ss.Metric["exported_namespace"])
		if ns == "" {
			ns = string(ss.Metric["namespace"])
		}
		c := splitterv1.Color(ss.Metric["color"])
		if ns != q.Namespace || (c != splitterv1.Blue && c != splitterv1.Green) {
			continue
		}
		// Two scrapes of the controller (replicas): one series per
		// instance; only the leader sets it, and they agree.
		if len(ss.Values) > len(out[c]) {
			out[c] = ss.Values
		}
	}
	if len(out[splitterv1.Blue]) == 0 || len(out[splitterv1.Green]) == 0 {
		return nil, nil
	}
	return out, nil
}

// escape quotes a value for a PromQL double-quoted string.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func (r *Recording) hasSamples() bool {
	from, to := model.TimeFromUnixNano(r.From.UnixNano()), model.TimeFromUnixNano(r.To.UnixNano())
	for _, ms := range r.matrices {
		for _, m := range ms {
			for _, ss := range m {
				for _, p := range ss.Values {
					if p.Timestamp >= from && p.Timestamp <= to {
						return true
					}
				}
			}
		}
	}
	return false
}

// scrapeInterval is the median spacing of the samples.
func (r *Recording) scrapeInterval() time.Duration {
	var all []model.Matrix
	for _, ms := range r.matrices {
		all = append(all, ms...)
	}
	return medianGap(all, 15*time.Second)
}

// medianGap is the median spacing of the matrices' samples (def without).
func medianGap(ms []model.Matrix, def time.Duration) time.Duration {
	var gaps []int64
	for _, m := range ms {
		for _, ss := range m {
			for i := 1; i < len(ss.Values) && len(gaps) < 10000; i++ {
				gaps = append(gaps, int64(ss.Values[i].Timestamp-ss.Values[i-1].Timestamp))
			}
		}
	}
	if len(gaps) == 0 {
		return def
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	return (time.Duration(gaps[len(gaps)/2]) * time.Millisecond).Round(100 * time.Millisecond)
}

// weightAt is the recorded weight of c at t (the last sample at or before
// t), and whether one was recorded.
func (r *Recording) weightAt(c splitterv1.Color, t time.Time) (float64, bool) {
	ps := r.Weights[c]
	ts := model.TimeFromUnixNano(t.UnixNano())
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Timestamp > ts }) - 1
	if i < 0 {
		return 0, false
	}
	return float64(ps[i].Value), true
}

// weightChanges says whether c's recorded weight changed between lo and hi.
func (r *Recording) weightChanges(c splitterv1.Color, lo, hi time.Time) bool {
	w0, ok := r.weightAt(c, lo)
	if !ok {
		return true
	}
	a, b := model.TimeFromUnixNano(lo.UnixNano()), model.TimeFromUnixNano(hi.UnixNano())
	ps := r.Weights[c]
	for i := sort.Search(len(ps), func(i int) bool { return ps[i].Timestamp > a }); i < len(ps) && ps[i].Timestamp <= b; i++ {
		if float64(ps[i].Value) != w0 {
			return true
		}
	}
	return false
}

// ErrNoRelease is returned by Release for a window without one.
var ErrNoRelease = errors.New("no release in the window")

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func round(f float64) int64 { return int64(math.Round(f)) }
