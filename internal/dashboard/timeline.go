package dashboard

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/rollout"
)

// Point is one value of a series at T (Unix milliseconds).
type Point struct {
	T int64   `json:"t"`
	V float64 `json:"v"`
}

// Marker is one moment of a release on the chart.
type Marker struct {
	T int64 `json:"t"`
	// Kind: start, step, gate, verdict, action, pause, resume, fault,
	// snapback, promoted, event.
	Kind    string `json:"kind"`
	Label   string `json:"label"`
	Detail  string `json:"detail,omitempty"`
	Warning bool   `json:"warning,omitempty"`
}

// Timeline is a release's chart: green's weight, each colour's error rate
// and p99 latency, and what happened.
type Timeline struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
	// Weight is green's weight; WeightSource says where it came from:
	// "prometheus" (splitter_split_weight), "events" (rebuilt from the
	// Split's history and StepAdvanced Events) or "status" (the Split now).
	Weight       []Point            `json:"weight"`
	WeightSource string             `json:"weightSource"`
	ErrorRate    map[string][]Point `json:"errorRate"`
	LatencyP99   map[string][]Point `json:"latencyP99"`
	Markers      []Marker           `json:"markers"`
	// Queries are the PromQL run (for the curious, and for Grafana).
	Queries map[string]string `json:"queries,omitempty"`
	// Problem says why a series is missing ("" if none is).
	Problem string `json:"problem,omitempty"`
}

// Window is the span a release's chart covers by default: the current
// release (or the last one) with a margin either side, up to now.
func Window(s *splitterv1.Split, now time.Time) (time.Time, time.Time) {
	st := s.Status
	const margin = 30 * time.Second
	var from, to time.Time
	switch {
	case st.ReleaseStartedAt != nil && (inProgress(st.Phase) || st.Phase == splitterv1.PhasePromoting || st.Phase == splitterv1.PhaseRollingBack):
		from, to = st.ReleaseStartedAt.Time, now
	case len(st.History) > 0:
		h := st.History[0]
		from, to = h.StartedAt.Time, h.FinishedAt.Add(margin)
	case st.ReleaseStartedAt != nil:
		from, to = st.ReleaseStartedAt.Time, now
	default:
		from, to = now.Add(-15*time.Minute), now
	}
	from = from.Add(-margin)
	if to.After(now) {
		to = now
	}
	if !to.After(from) {
		to = from.Add(time.Minute)
	}
	return from, to
}

// Resolution is the step of a chart over [from, to]: about 300 points, no
// finer than a second.
func Resolution(from, to time.Time) time.Duration {
	return max(to.Sub(from)/300, time.Second).Round(time.Second)
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// markerKinds maps Event reasons to marker kinds.
var markerKinds = map[string]string{
	rollout.ReasonReleaseStarted: "start", rollout.ReasonCandidateReady: "step",
	rollout.ReasonStepAdvanced: "step", rollout.ReasonStepExtended: "step",
	rollout.ReasonAwaitingApproval: "gate", rollout.ReasonApproved: "action",
	rollout.ReasonPromotedByOperator: "action", rollout.ReasonRetried: "action",
	rollout.ReasonPaused: "pause", rollout.ReasonPausedByOperator: "pause", rollout.ReasonResumed: "resume",
	rollout.ReasonCheckFailed: "fault", rollout.ReasonWatchdog: "fault", rollout.ReasonChecksErrored: "fault",
	rollout.ReasonInsufficientEvidence: "fault", rollout.ReasonCandidateUnavailable: "fault",
	rollout.ReasonProgressDeadlineExceeded: "fault", rollout.ReasonHookFailed: "fault",
	rollout.ReasonAborted: "fault", rollout.ReasonRolledBack: "fault",
	rollout.ReasonPromoted: "promoted",
}

// Markers are the moments of s (status and Events) within [from, to],
// oldest first: each release's start and end (a snap-back marked as
// such), the operator actions, the latest verdicts, a pause, and the
// Events the user may read.
func Markers(s *splitterv1.Split, evs []Event, from, to time.Time) []Marker {
	st := s.Status
	var out []Marker
	add := func(t time.Time, m Marker) {
		if t.IsZero() || t.Before(from) || t.After(to) {
			return
		}
		m.T = ms(t)
		out = append(out, m)
	}
	for _, h := range st.History {
		add(h.StartedAt.Time, Marker{Kind: "start", Label: "release " + short(h.Revision) + " started", Detail: h.ID})
		switch {
		case snapBack(h.Outcome):
			add(h.FinishedAt.Time, Marker{Kind: "snapback", Label: "snap-back: " + h.Reason, Detail: h.Message, Warning: true})
		case h.Outcome == splitterv1.OutcomePromoted:
			add(h.FinishedAt.Time, Marker{Kind: "promoted", Label: "promoted " + short(h.Revision), Detail: h.Message})
		default:
			add(h.FinishedAt.Time, Marker{Kind: "event", Label: string(h.Outcome) + ": " + h.Reason, Detail: h.Message})
		}
	}
	current := len(st.History) == 0 || st.History[0].ID != st.ReleaseID
	if st.ReleaseStartedAt != nil && current {
		add(st.ReleaseStartedAt.Time, Marker{Kind: "start", Label: "release " + short(st.CandidateRevision) + " started", Detail: st.ReleaseID})
	}
	if st.Phase == splitterv1.PhaseRollingBack && st.PhaseStartedAt != nil {
		add(st.PhaseStartedAt.Time, Marker{Kind: "snapback", Label: "snap-back", Warning: true})
	}
	for _, a := range st.Actions {
		add(a.At.Time, Marker{Kind: "action", Label: a.Verb + " by " + a.By, Detail: a.Detail})
	}
	if st.PausedAt != nil {
		add(st.PausedAt.Time, Marker{Kind: "pause", Label: "paused", Warning: true})
	}
	for _, c := range st.Checks {
		d := c.Value
		if c.Bound != "" {
			d += " (bound " + c.Bound + ")"
		}
		if c.Message != "" {
			d = strings.TrimSpace(d + " " + c.Message)
		}
		add(c.EvaluatedAt.Time, Marker{Kind: "verdict", Label: fmt.Sprintf("%s: %s (step %d)", c.Name, c.Verdict, c.Step), Detail: d,
			Warning: c.Verdict != splitterv1.VerdictPass})
	}
	for _, e := range evs {
		kind, ok := markerKinds[e.Reason]
		if !ok {
			kind = "event"
		}
		add(e.At, Marker{Kind: kind, Label: e.Reason, Detail: e.Note, Warning: e.Warning})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].T < out[j].T })
	return out
}

func short(rev string) string {
	if len(rev) > 8 {
		return rev[:8]
	}
	return rev
}

// StatusWeight is green's weight from the Split alone: its value now,
// from when the current step began (Prometheus has no history of it).
func StatusWeight(s *splitterv1.Split, from, to time.Time) []Point {
	g := float64(Weights(s.Status)[string(splitterv1.Green)])
	start := from
	if st := s.Status.StepStartedAt; st != nil && st.After(from) && st.Time.Before(to) && inProgress(s.Status.Phase) {
		start = st.Time
	}
	return []Point{{T: ms(start), V: g}, {T: ms(to), V: g}}
}

var getsWeight = regexp.MustCompile(`\b(blue|green) gets (\d+)%`)

// EventWeights is green's weight rebuilt from what the Split says
// happened, when Prometheus has no splitter_split_weight: each release
// starts with its candidate at 0, each StepAdvanced Event says the
// candidate's weight, a promotion gives it 100 and a snap-back 0. Nil
// when nothing happened in [from, to].
func EventWeights(s *splitterv1.Split, evs []Event, from, to time.Time) []Point {
	type change struct {
		t time.Time
		g float64
	}
	greenIf := func(c splitterv1.Color, candidate float64) float64 {
		if c == splitterv1.Green {
			return candidate
		}
		return 100 - candidate
	}
	var cs []change
	st := s.Status
	for _, h := range st.History {
		cs = append(cs, change{h.StartedAt.Time, greenIf(h.Color, 0)})
		if h.Outcome == splitterv1.OutcomePromoted {
			cs = append(cs, change{h.FinishedAt.Time, greenIf(h.Color, 100)})
		} else {
			cs = append(cs, change{h.FinishedAt.Time, greenIf(h.Color, 0)})
		}
	}
	if st.ReleaseStartedAt != nil && st.Candidate != "" && (len(st.History) == 0 || st.History[0].ID != rollout.ReleaseID(st)) {
		cs = append(cs, change{st.ReleaseStartedAt.Time, greenIf(st.Candidate, 0)})
	}
	for _, e := range evs {
		if e.Reason != rollout.ReasonStepAdvanced {
			continue
		}
		if m := getsWeight.FindStringSubmatch(e.Note); m != nil {
			w, _ := strconv.ParseFloat(m[2], 64)
			cs = append(cs, change{e.At, greenIf(splitterv1.Color(m[1]), w)})
		}
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].t.Before(cs[j].t) })
	var out []Point
	for i, c := range cs {
		if c.t.Before(from) || c.t.After(to) {
			continue
		}
		if len(out) == 0 {
			// Before the window's first change: the last change before it,
			// or else the first change's value (a release starts at 0).
			before := c.g
			if i > 0 {
				before = cs[i-1].g
			}
			out = append(out, Point{T: ms(from), V: before})
		}
		out = append(out, Point{T: ms(c.t), V: c.g})
	}
	if len(out) == 0 {
		return nil
	}
	last := out[len(out)-1].V
	if inProgress(st.Phase) || st.Phase == splitterv1.PhaseRollingBack {
		last = float64(Weights(st)[string(splitterv1.Green)]) // the status is newer than any Event
	}
	return append(out, Point{T: ms(to), V: last})
}

// availabilityCodes are the grpc codes the policy's first availability
// SLO counts as errors.
func availabilityCodes(p *splitterv1.SplitPolicySpec) []int32 {
	if p == nil {
		return nil
	}
	for _, slo := range p.SLOs {
		if slo.Threshold == nil {
			return slo.GRPCErrorCodes
		}
	}
	return nil
}

// byColor splits a matrix by destination_workload's colour suffix.
func byColor(m model.Matrix) map[string][]Point {
	out := map[string][]Point{}
	for _, ss := range m {
		w := string(ss.Metric["destination_workload"])
		color := ""
		switch {
		case strings.HasSuffix(w, "-blue"):
			color = string(splitterv1.Blue)
		case strings.HasSuffix(w, "-green"):
			color = string(splitterv1.Green)
		default:
			continue
		}
		out[color] = append(out[color], points(ss.Values)...)
	}
	return out
}

func points(vs []model.SamplePair) []Point {
	out := make([]Point, 0, len(vs))
	for _, v := range vs {
		f := float64(v.Value)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		out = append(out, Point{T: int64(v.Timestamp), V: f})
	}
	return out
}

// rangeQuery runs one query_range and returns its matrix.
func rangeQuery(ctx context.Context, api promv1.API, q string, r promv1.Range) (model.Matrix, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, _, _, err := api.QueryRange(ctx, q, r, promv1.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("querying Prometheus: %w", err)
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("query_range returned a %s", v.Type())
	}
	return m, nil
}

// BuildTimeline reads s's chart over [from, to] from Prometheus (nil: none).
func BuildTimeline(ctx context.Context, api promv1.API, scrape time.Duration, s *splitterv1.Split, evs []Event, from, to time.Time) Timeline {
	tl := Timeline{From: ms(from), To: ms(to), ErrorRate: map[string][]Point{}, LatencyP99: map[string][]Point{},
		Markers: Markers(s, evs, from, to), Queries: map[string]string{}}
	if tl.Markers == nil {
		tl.Markers = []Marker{}
	}
	tl.Weight, tl.WeightSource = StatusWeight(s, from, to), "status"
	if ws := EventWeights(s, evs, from, to); ws != nil {
		tl.Weight, tl.WeightSource = ws, "events"
	}
	if api == nil {
		tl.Problem = "no Prometheus (--prometheus-url): error rates and latency are not shown"
		return tl
	}
	step := Resolution(from, to)
	r := promv1.Range{Start: from, End: to, Step: step}
	w := analysis.RateWindow(scrape, step)
	workload := s.Spec.Workload
	if workload == "" {
		workload = s.Name
	}
	tl.Queries["weight"] = analysis.WeightRangeQuery(s.Namespace, s.Name, string(splitterv1.Green))
	tl.Queries["errorRate"] = analysis.ErrorRateRangeQuery(s.Namespace, workload, availabilityCodes(s.Status.Policy), w)
	tl.Queries["latencyP99"] = analysis.LatencyP99RangeQuery(s.Namespace, workload, w)
	// The three queries at once: a Prometheus that does not answer costs
	// one timeout, not three.
	names := []string{"weight", "errorRate", "latencyP99"}
	results := make([]model.Matrix, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { results[i], errs[i] = rangeQuery(ctx, api, tl.Queries[n], r) })
	}
	wg.Wait()
	var problems []string
	for i, n := range names {
		if errs[i] != nil {
			problems = append(problems, n+": "+errs[i].Error())
			continue
		}
		m := results[i]
		switch n {
		case "weight":
			if len(m) > 0 && len(m[0].Values) > 0 {
				tl.Weight, tl.WeightSource = points(m[0].Values), "prometheus"
			}
		case "errorRate":
			tl.ErrorRate = byColor(m)
		case "latencyP99":
			tl.LatencyP99 = byColor(m)
		}
	}
	tl.Problem = strings.Join(problems, "; ")
	return tl
}

// parseTime reads a time parameter: Unix seconds (fractions allowed) or RFC 3339.
func parseTime(v string) (time.Time, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), nil
	}
	return time.Parse(time.RFC3339Nano, v)
}

func (s *Server) timeline(w http.ResponseWriter, r *http.Request) {
	sp, ok := s.get(r.Context(), w, r)
	if !ok {
		return
	}
	now := s.opts.Now()
	from, to := Window(sp, now)
	q := r.URL.Query()
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := q.Get(p.name); v != "" {
			t, err := parseTime(v)
			if err != nil {
				http.Error(w, fmt.Sprintf("%s=%q: want Unix seconds or RFC 3339", p.name, v), http.StatusBadRequest)
				return
			}
			*p.t = t
		}
	}
	if !to.After(from) || to.Sub(from) > 7*24*time.Hour {
		http.Error(w, "want from < to, at most 7 days apart", http.StatusBadRequest)
		return
	}
	writeJSON(w, BuildTimeline(r.Context(), s.opts.Prometheus, s.opts.Scrape, sp, s.splitEvents(r.Context(), sp), from, to))
}
