package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"splitter.dev/splitter/internal/policy"
	"splitter.dev/splitter/internal/simulate"
)

// regressionSeedOffset numbers the regression's releases as
// BenchmarkMonteCarlo numbers its "5x regression" scenario (seed 300+6
// next to "green = blue" at 300), so the defaults reproduce its figures.
const regressionSeedOffset = 6

// simDriftTime is --drift's correlation time.
const simDriftTime = 10 * time.Minute

// simulateCmd is `splitter policy simulate`: Monte-Carlo releases of a
// policy through the engine, healthy ones and, with --regression, bad ones.
func simulateCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "the SplitPolicy YAML file")
	rps := fs.Float64("rps", 0, "the workload's request rate (both colors together)")
	errRate := fs.String("error-rate", "", "share of requests that fail today on both colors, e.g. 0.2% or 0.002 (availability SLOs)")
	slow := fs.String("latency-slow", "", "share of requests slower than a latency SLO's threshold on both colors (default: --error-rate)")
	p99 := fs.Duration("latency-p99", 0, "instead of --latency-slow: both colors' p99 latency today; each latency SLO's slow share follows from a lognormal latency with this p99 (and --latency-p50)")
	p50 := fs.Duration("latency-p50", 0, "with --latency-p99: the median latency (default: a quarter of the p99)")
	regression := fs.String("regression", "", "also simulate releases whose candidate is this many times worse, e.g. 5x")
	runs := fs.Int("runs", 2000, "releases to simulate (each for the healthy case and the regression)")
	scrape := fs.Duration("scrape-interval", 15*time.Second, "Prometheus' scrape interval")
	seed := fs.Uint64("seed", 300, "random seed (the same seed gives the same figures)")
	callers := fs.String("callers", "", "callers' shares of the traffic, e.g. 90%,10%: the pods then export what Istio exports (a series per caller and response code, born at its first response; latency histograms per label set), read as the controller reads them")
	clump := fs.Int("clump", 1, "bad requests come in clumps of this many (one failure counted several times, as retries count it)")
	drift := fs.Float64("drift", 0, "both colors' rates wander together: the standard deviation of a shared log-rate (Ornstein-Uhlenbeck, 10-minute correlation time), e.g. 1.0 for a rate wandering x/÷2.7")
	output := fs.String("o", "text", "output format: text or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "splitter policy simulate: "+format+"\n", a...)
		return 2
	}
	if *file == "" || fs.NArg() > 0 {
		return usageErr("name one policy file with -f")
	}
	if *rps <= 0 {
		return usageErr("--rps must be above 0")
	}
	if *runs <= 0 {
		return usageErr("--runs must be above 0")
	}
	if *scrape <= 0 {
		return usageErr("--scrape-interval must be above 0")
	}
	if *output != "text" && *output != "json" {
		return usageErr("-o is text or json")
	}
	tr := simulate.Traffic{RPS: *rps, Scrape: *scrape}
	var err error
	if tr.ErrorRate, err = parseShare(*errRate); err != nil || *errRate == "" {
		return usageErr("--error-rate: want a share such as 0.2%% or 0.002")
	}
	tr.SlowRate = tr.ErrorRate
	if *slow != "" {
		if tr.SlowRate, err = parseShare(*slow); err != nil {
			return usageErr("--latency-slow: %v", err)
		}
	}
	if *clump < 1 {
		return usageErr("--clump must be 1 or more")
	}
	if *drift < 0 || *drift > 3 {
		return usageErr("--drift: want a standard deviation between 0 and 3")
	}
	tr.Clump = *clump
	if *drift > 0 {
		tr.Drift = simulate.Drift{SD: *drift, Time: simDriftTime}
	}
	if *callers != "" {
		if tr.Callers, err = parseCallers(*callers); err != nil {
			return usageErr("--callers: %v", err)
		}
	}
	var latency *simulate.Latency
	switch {
	case *p99 < 0 || *p50 < 0:
		return usageErr("--latency-p99 and --latency-p50 must be above 0")
	case *p99 > 0 && *slow != "":
		return usageErr("give --latency-slow or --latency-p99, not both")
	case *p50 > 0 && *p99 == 0:
		return usageErr("--latency-p50 goes with --latency-p99")
	case *p99 > 0:
		latency = &simulate.Latency{P50: *p50, P99: *p99}
		if latency.P50 == 0 {
			latency.P50 = *p99 / 4
		}
		if latency.P50 > latency.P99 {
			return usageErr("--latency-p50 (%s) must not exceed --latency-p99 (%s)", latency.P50, latency.P99)
		}
	}
	times := 0.0
	if *regression != "" {
		if times, err = strconv.ParseFloat(strings.TrimSuffix(*regression, "x"), 64); err != nil || times <= 1 {
			return usageErr("--regression: want a factor above 1, such as 5x")
		}
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		fmt.Fprintf(stderr, "splitter policy simulate: %v\n", err)
		return 1
	}
	_, findings, plans := policy.LintPlans(data)
	if len(findings) > 0 {
		for _, f := range findings {
			fmt.Fprintf(stderr, "%s: %s\n", *file, f)
		}
		fmt.Fprintf(stderr, "splitter policy simulate: %s fails lint: fix it first (splitter policy lint %s)\n", *file, *file)
		return 1
	}
	if len(plans) == 0 {
		fmt.Fprintf(stderr, "splitter policy simulate: %s holds no SplitPolicy\n", *file)
		return 1
	}
	// Short-lived garbage dominates; collecting less often saves a tenth.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	var reports []simReport
	for _, np := range plans {
		tr := tr
		if latency != nil {
			tr.SlowBySLO = latency.SlowBySLO(np.Plan.SLOs)
		}
		r := simulatePolicy(np, tr, times, *runs, *seed)
		if latency != nil {
			r.Model.Latency = &simLatency{P50: latency.P50.String(), P99: latency.P99.String(), SlowBySLO: tr.SlowBySLO}
		}
		reports = append(reports, r)
	}
	if *output == "json" {
		if err := writeJSON(stdout, reports); err != nil {
			fmt.Fprintf(stderr, "splitter policy simulate: %v\n", err)
			return 1
		}
		return 0
	}
	for i, r := range reports {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		fmt.Fprint(stdout, formatSimulation(r))
	}
	return 0
}

// parseShare reads "0.2%" or "0.002".
func parseShare(s string) (float64, error) {
	v, err := parseFraction(s)
	if err != nil {
		return 0, err
	}
	if v < 0 || v >= 1 {
		return 0, fmt.Errorf("%q is not between 0 and 100%%", s)
	}
	return v, nil
}

// parseFraction reads "0.2%" or "0.002" as 0.002.
func parseFraction(s string) (float64, error) {
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is not a share such as 0.2%% or 0.002", s)
	}
	if pct {
		v /= 100
	}
	return v, nil
}

// parseCallers reads callers' shares of the traffic ("90%,10%" or
// "0.9,0.1"; a single "100%" is one caller): each above 0, adding up to
// 100%.
func parseCallers(s string) ([]float64, error) {
	var out []float64
	sum := 0.0
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		v, err := parseFraction(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a share above 0, such as 10%% or 0.1", f)
		}
		out = append(out, v)
		sum += v
	}
	if math.Abs(sum-1) > 1e-6 {
		return nil, fmt.Errorf("the callers' shares add up to %.4g%%, not 100%%", 100*sum)
	}
	return out, nil
}

// simReport is what simulate found for one policy (also its JSON).
type simReport struct {
	Policy     string       `json:"policy"`
	Model      simModel     `json:"model"`
	Healthy    simOutcomes  `json:"healthy"`
	Regression *simOutcomes `json:"regression,omitempty"`
}

type simModel struct {
	RPS float64 `json:"rps"`
	// ErrorRate and SlowRate are both colors' (the live one's, with a
	// regression).
	ErrorRate      float64 `json:"errorRate"`
	SlowRate       float64 `json:"slowRate"`
	Regression     float64 `json:"regression,omitempty"`
	ScrapeInterval string  `json:"scrapeInterval"`
	Runs           int     `json:"runs"`
	Seed           uint64  `json:"seed"`
	PodsPerColor   int     `json:"podsPerColor"`
	RestartEvery   string  `json:"podRestartEvery"`
	FailedReads    float64 `json:"failedReads"`
	Propagation    string  `json:"weightPropagation"`
	Steps          []int32 `json:"steps"`
	// Callers, with --callers: each caller's share, and the pods export
	// Istio's series.
	Callers []float64 `json:"callers,omitempty"`
	// Clump and Drift, with --clump and --drift.
	Clump int     `json:"clump,omitempty"`
	Drift float64 `json:"drift,omitempty"`
	// Latency, with --latency-p99, is the lognormal latency the latency
	// SLOs' slow shares come from (SlowRate is then unused).
	Latency *simLatency `json:"latency,omitempty"`
	// Note says what the model leaves out of this policy.
	Note string `json:"note,omitempty"`
}

type simLatency struct {
	P50       string             `json:"p50"`
	P99       string             `json:"p99"`
	SlowBySLO map[string]float64 `json:"slowBySLO"`
}

type simOutcomes struct {
	Runs       int `json:"runs"`
	Promoted   int `json:"promoted"`
	Paused     int `json:"paused"`
	RolledBack int `json:"rolledBack"`
	Unfinished int `json:"unfinished"`
	// RolledBackShare is the false-rollback rate of healthy releases, the
	// detection rate of a regression; Paused is for lack of evidence.
	RolledBackShare simShare       `json:"rolledBackShare"`
	PausedShare     simShare       `json:"pausedShare"`
	Promotion       *simQuantiles  `json:"promotionSeconds,omitempty"`
	Detection       *simQuantiles  `json:"detectionSeconds,omitempty"`
	ByStep          []simStepCatch `json:"detectionByStep,omitempty"`
	Reasons         map[string]int `json:"rollbackReasons,omitempty"`
}

// simShare is a share with its 95% Wilson interval.
type simShare struct {
	Share float64 `json:"share"`
	Low   float64 `json:"low"`
	High  float64 `json:"high"`
}

type simQuantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

type simStepCatch struct {
	Step   int     `json:"step"` // 0: before the first step
	Weight int32   `json:"weight"`
	Caught int     `json:"caught"`
	P50    float64 `json:"p50"`
	P90    float64 `json:"p90"`
}

// simulatePolicy runs the healthy releases and, when times > 1, the
// regression's.
func simulatePolicy(np policy.NamedPlan, tr simulate.Traffic, times float64, runs int, seed uint64) simReport {
	r := simReport{Policy: np.Name, Model: simModel{RPS: tr.RPS, ErrorRate: tr.ErrorRate, SlowRate: tr.SlowRate, Regression: times,
		ScrapeInterval: tr.Scrape.String(), Runs: runs, Seed: seed, PodsPerColor: simulate.Pods, RestartEvery: simulate.Restarts.String(),
		FailedReads: simulate.ReadFail, Propagation: simulate.Propagation.String(), Steps: np.Plan.Steps, Callers: tr.Callers, Drift: tr.Drift.SD}}
	if tr.Clump > 1 {
		r.Model.Clump = tr.Clump
	}
	switch {
	case len(np.Plan.SLOs) == 0:
		r.Model.Note = "this policy has no slos: its PromQL checks are not modelled (they pass here), so nothing is judged on counts and no regression is caught"
	case len(np.Plan.Checks) > 0 || len(np.Plan.Hooks) > 0:
		r.Model.Note = "this policy's PromQL checks and hooks are not modelled: they pass here"
	}
	// The regression's releases draw from their own seed: they run
	// alongside the healthy ones, same figures.
	var bad *simulate.Tally
	done := make(chan struct{})
	go func() {
		defer close(done)
		if times > 1 {
			bad = simulate.RunN(simulate.NewSpec(np.Plan, tr, times), runs, seed+regressionSeedOffset)
		}
	}()
	r.Healthy = outcomes(np.Plan, simulate.RunN(simulate.NewSpec(np.Plan, tr, 1), runs, seed))
	<-done
	if bad != nil {
		o := outcomes(np.Plan, bad)
		r.Regression = &o
	}
	return r
}

func outcomes(plan *policy.Plan, t *simulate.Tally) simOutcomes {
	share := func(k int) simShare {
		lo, hi := simulate.Wilson(k, t.N)
		return simShare{Share: float64(k) / float64(t.N), Low: lo, High: hi}
	}
	o := simOutcomes{Runs: t.N, Promoted: t.Outcomes["promoted"], Paused: t.Outcomes["paused"], RolledBack: t.Outcomes["rolledback"],
		Unfinished: t.N - t.Outcomes["promoted"] - t.Outcomes["paused"] - t.Outcomes["rolledback"], Reasons: t.Reasons}
	o.RolledBackShare, o.PausedShare = share(o.RolledBack), share(o.Paused)
	o.Promotion, o.Detection = quantiles(t.Promote), quantiles(t.Detect)
	weights := make([]int32, 0, len(t.DetectAt))
	for w := range t.DetectAt {
		weights = append(weights, w)
	}
	sort.Slice(weights, func(i, j int) bool { return weights[i] < weights[j] })
	for _, w := range weights {
		d := t.DetectAt[w]
		c := simStepCatch{Weight: w, Caught: len(d), P50: simulate.Quantile(d, 0.5), P90: simulate.Quantile(d, 0.9)}
		for i, s := range plan.Steps {
			if s == w {
				c.Step = i + 1
				break
			}
		}
		o.ByStep = append(o.ByStep, c)
	}
	if len(o.Reasons) == 0 {
		o.Reasons = nil
	}
	return o
}

func quantiles(xs []float64) *simQuantiles {
	if len(xs) == 0 {
		return nil
	}
	return &simQuantiles{P50: simulate.Quantile(xs, 0.5), P90: simulate.Quantile(xs, 0.9), P99: simulate.Quantile(xs, 0.99)}
}

// formatSimulation is simulate's text output for one policy.
func formatSimulation(r simReport) string {
	var b strings.Builder
	m := r.Model
	pf := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	pf("SplitPolicy %s: steps %s, %g req/s, scrape every %s, %d releases each (seed %d)", r.Policy, fmtSteps(m.Steps), m.RPS, m.ScrapeInterval, m.Runs, m.Seed)
	if m.Note != "" {
		pf("Note: %s.", m.Note)
	}
	pf("")
	h := r.Healthy
	pf("Healthy releases (both colors %s errors, %s slow):", pct(m.ErrorRate), slowText(m, 1))
	pf("  promoted %d, paused %d, rolled back %d, unfinished %d", h.Promoted, h.Paused, h.RolledBack, h.Unfinished)
	pf("  false rollbacks:             %s", fmtShare(h.RolledBackShare))
	pf("  paused for lack of evidence: %s", fmtShare(h.PausedShare))
	if q := h.Promotion; q != nil {
		pf("  time to promotion:           p50 %s, p90 %s, p99 %s (from the new revision to the promotion)", secs(q.P50), secs(q.P90), secs(q.P99))
	} else {
		pf("  time to promotion:           none promoted")
	}
	fmtReasons(&b, h.Reasons)
	if g := r.Regression; g != nil {
		pf("")
		pf("%gx regression (candidate %s errors, %s slow; live %s, %s):", m.Regression, pct(min(0.9, m.ErrorRate*m.Regression)), slowText(m, m.Regression), pct(m.ErrorRate), slowText(m, 1))
		pf("  rolled back %d, promoted %d, paused %d, unfinished %d", g.RolledBack, g.Promoted, g.Paused, g.Unfinished)
		pf("  detected (rolled back):      %s", fmtShare(g.RolledBackShare))
		if q := g.Detection; q != nil {
			pf("  time to detection:           p50 %s, p90 %s (from the candidate's first request to the rollback)", secs(q.P50), secs(q.P90))
		}
		for _, c := range g.ByStep {
			where := fmt.Sprintf("step %d (%d%%)", c.Step, c.Weight)
			if c.Step == 0 {
				where = fmt.Sprintf("at %d%%", c.Weight)
			}
			pf("    %-14s caught %d (%s of releases): p50 %s, p90 %s", where, c.Caught, pct(float64(c.Caught)/float64(g.Runs)), secs(c.P50), secs(c.P90))
		}
		fmtReasons(&b, g.Reasons)
	}
	pf("")
	pf("Model (assumptions): Poisson arrivals split by the policy's weights over %d pods a color; each request", m.PodsPerColor)
	pf("bad independently at its color's rate; a pod restarts every %s per color on average (counters back", strings.TrimSuffix(m.RestartEvery, "0s"))
	pf("to zero or a new series); %s of counter reads fail; weights reach the data plane %s after", pct(m.FailedReads), m.Propagation)
	pf("they are written; Prometheus scrapes each pod every %s; PromQL checks and hooks pass; nobody", m.ScrapeInterval)
	pf("approves a paused release. Rates are 95%% Wilson intervals over %d releases.", m.Runs)
	if m.Clump > 1 {
		pf("Clumps: bad requests come %d at a time (one failure counted %d times, as retries count it).", m.Clump, m.Clump)
	}
	if m.Drift > 0 {
		pf("Drift: both colors' rates times exp(X), X a shared Ornstein-Uhlenbeck log-rate with sd %g and a %s", m.Drift, strings.TrimSuffix(simDriftTime.String(), "0s"))
		pf("correlation time.")
	}
	if len(m.Callers) > 0 {
		shares := make([]string, len(m.Callers))
		for i, c := range m.Callers {
			shares[i] = pct(c)
		}
		pf("Callers: %s of the traffic; each pod exports a series per caller and response code from its first", strings.Join(shares, ", "))
		pf("response, and a latency histogram per label set, read as the controller reads Istio's.")
	}
	if l := m.Latency; l != nil {
		pf("Latency: lognormal with p50 %s and p99 %s; a latency SLO's slow share is the share over its threshold.", l.P50, l.P99)
	}
	return b.String()
}

// slowText is the latency SLOs' slow share, times worse (capped at 90%):
// one figure, or one per SLO with --latency-p99.
func slowText(m simModel, times float64) string {
	if m.Latency == nil || len(m.Latency.SlowBySLO) == 0 {
		return pct(min(0.9, m.SlowRate*times))
	}
	names := make([]string, 0, len(m.Latency.SlowBySLO))
	for n := range m.Latency.SlowBySLO {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, pct(min(0.9, m.Latency.SlowBySLO[n]*times))+" "+n)
	}
	return strings.Join(parts, ", ")
}

func fmtReasons(b *strings.Builder, reasons map[string]int) {
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if reasons[keys[i]] != reasons[keys[j]] {
			return reasons[keys[i]] > reasons[keys[j]]
		}
		return keys[i] < keys[j]
	})
	for i, k := range keys {
		if i == 3 {
			fmt.Fprintf(b, "  ... and %d other reasons\n", len(keys)-3)
			break
		}
		fmt.Fprintf(b, "  rollback reason (%d): %s\n", reasons[k], k)
	}
}

func fmtSteps(steps []int32) string {
	s := make([]string, len(steps))
	for i, w := range steps {
		s[i] = strconv.Itoa(int(w))
	}
	return strings.Join(s, "/") + "%"
}

func fmtShare(s simShare) string {
	return fmt.Sprintf("%s (95%% interval %s to %s)", pct(s.Share), pct(s.Low), pct(s.High))
}

func pct(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	if x > 0 && x < 0.0001 {
		return strconv.FormatFloat(100*x, 'g', 2, 64) + "%" // 0.0011%, not 0.00%
	}
	return strconv.FormatFloat(100*x, 'f', 2, 64) + "%"
}

func secs(s float64) string {
	if math.IsNaN(s) {
		return "-"
	}
	return (time.Duration(math.Round(s)) * time.Second).String()
}

// Lint's simulate: lintRuns healthy releases from a fixed seed, enough to
// flag a policy far off its budget in well under a second.
const (
	lintRuns = 200
	lintSeed = 1
)

// lintTraffic is the traffic lint simulates: badRate on both colors
// when given, else a fifth of the first availability and latency SLOs'
// budgets (lint's own default).
func lintTraffic(plan *policy.Plan, rps, badRate float64, scrape time.Duration) simulate.Traffic {
	tr := simulate.Traffic{RPS: rps, Scrape: scrape, ErrorRate: badRate, SlowRate: badRate}
	if badRate > 0 {
		return tr
	}
	for i := len(plan.SLOs) - 1; i >= 0; i-- {
		if s := plan.SLOs[i]; s.ThresholdMs > 0 {
			tr.SlowRate = s.Budget() / 5
		} else {
			tr.ErrorRate = s.Budget() / 5
		}
	}
	return tr
}

// lintWarnings simulates healthy releases of plan and warns when more
// than 1% roll back or fewer than 90% are promoted. Advice only: lint's
// exit code does not change.
func lintWarnings(plan *policy.Plan, tr simulate.Traffic) []string {
	if len(plan.SLOs) == 0 {
		return nil // nothing the simulation models: PromQL checks only
	}
	spec := simulate.NewSpec(plan, tr, 1)
	spec.StopAtEnd = true
	t := simulate.RunN(spec, lintRuns, lintSeed)
	var out []string
	about := fmt.Sprintf("of %d simulated healthy releases (%g req/s, %s errors, %s slow, scrape %s; splitter policy simulate tells more)",
		t.N, tr.RPS, pct(tr.ErrorRate), pct(tr.SlowRate), tr.Scrape)
	if rb := t.Outcomes["rolledback"]; float64(rb) > 0.01*float64(t.N) {
		out = append(out, fmt.Sprintf("warning: %d %s rolled back (%s), over 1%%", rb, about, pct(t.Share("rolledback"))))
	}
	if pr := t.Outcomes["promoted"]; float64(pr) < 0.9*float64(t.N) {
		out = append(out, fmt.Sprintf("warning: only %d %s promoted (%s); %d paused for lack of evidence", pr, about, pct(t.Share("promoted")), t.Outcomes["paused"]))
	}
	return out
}
