package rollout

import (
	"fmt"
	"math"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
)

// CheckpointEvery bounds how often the watchdog's evidence is written to
// status while nothing else changes. Between checkpoints the evidence is
// recomputed from the counters' growth since the last one, which gives the
// same likelihood ratio while the weights stay put; a restart loses nothing.
const CheckpointEvery = 30 * time.Second

// TrafficShareCheck names the sample-ratio check in status.
const TrafficShareCheck = "traffic-share"

// Counters are cumulative counter readings, one per color, SLO and reporter.
type Counters = []splitterv1.CountSnapshot

type countKey struct {
	color    splitterv1.Color
	slo      string
	reporter string
}

// growth is each SLO's count per color since base, taking for each color
// the reporter that saw the worse rate (reporter=destination misses
// requests that never reached the pod; reporter=source misses retries). A
// counter that went down (a proxy restarted) gives no evidence.
func growth(now, base Counters) map[string]map[splitterv1.Color]analysis.Count {
	old := map[countKey]splitterv1.CountSnapshot{}
	for _, c := range base {
		old[countKey{c.Color, c.SLO, c.Reporter}] = c
	}
	type best struct {
		count    analysis.Count
		reporter string
	}
	worst := map[string]map[splitterv1.Color]best{}
	for _, c := range now {
		b := old[countKey{c.Color, c.SLO, c.Reporter}]
		dn, dx := float64(c.Requests-b.Requests), float64(c.Bad-b.Bad)
		if dn < 0 || dx < 0 || dx > dn {
			continue
		}
		cur := analysis.Count{N: dn, X: dx}
		if worst[c.SLO] == nil {
			worst[c.SLO] = map[splitterv1.Color]best{}
		}
		prev, seen := worst[c.SLO][c.Color]
		if !seen || worse(cur, prev.count) {
			worst[c.SLO][c.Color] = best{cur, c.Reporter}
		}
	}
	out := map[string]map[splitterv1.Color]analysis.Count{}
	for slo, byColor := range worst {
		out[slo] = map[splitterv1.Color]analysis.Count{}
		for color, b := range byColor {
			out[slo][color] = b.count
		}
	}
	return out
}

func worse(a, b analysis.Count) bool {
	if b.N == 0 {
		return a.N > 0
	}
	if a.N == 0 {
		return false
	}
	return a.X/a.N > b.X/b.N
}

// gateResults judges the step on counts since its hold began: per SLO the
// absolute and the relative checks, and the traffic share against the weight.
func gateResults(p *policy.Plan, s splitterv1.SplitStatus, o Observations) []analysis.Result {
	if len(p.SLOs) == 0 {
		return nil
	}
	var out []analysis.Result
	errorAll := func(msg string) []analysis.Result {
		for _, slo := range p.SLOs {
			out = append(out, analysis.Result{Name: slo.Name, Verdict: splitterv1.VerdictError, Message: msg})
		}
		return out
	}
	if o.CountersErr != "" {
		return errorAll("reading the counters: " + o.CountersErr)
	}
	if s.Analysis == nil || s.Analysis.StepBaselineAt == nil {
		return errorAll("no counter baseline for this step (Prometheus was unreachable when it began)")
	}
	d := growth(o.Counters, s.Analysis.StepBaseline)
	// A release looks at its counts up to steps x (1 + maxExtensions)
	// times; a rollback decision (Fail, or Error for the traffic share)
	// takes its level divided by that number (Bonferroni), so the gates'
	// false rollbacks stay within alpha over the whole release. The
	// watchdog covers fast regressions with its own anytime-valid bound.
	looks := float64(len(p.Steps) * (1 + p.MaxExtensions))
	failAlpha := p.Alpha / looks
	for _, slo := range p.SLOs {
		g, b := d[slo.Name][s.Candidate], d[slo.Name][s.Live]
		abs := analysis.Absolute(g, slo.Budget(), p.Alpha)
		if abs.Verdict == splitterv1.VerdictFail {
			abs = analysis.Absolute(g, slo.Budget(), failAlpha)
		}
		rel := analysis.Relative(g, b, p.MaxRatio, p.FailRatio, slo.Slack(), p.Alpha)
		if rel.Verdict == splitterv1.VerdictFail {
			rel = analysis.Relative(g, b, p.MaxRatio, p.FailRatio, slo.Slack(), failAlpha)
		}
		r := analysis.Result{
			Name:  slo.Name,
			Bound: fmt.Sprintf("bad <= %.4g%%, ratio <= %g", 100*slo.Budget(), p.MaxRatio),
		}
		if g.N > 0 {
			r.Value, r.HasValue = g.Rate(), true
		}
		// Proving "at most maxRatio times blue" takes far more requests than
		// a step sees at low error rates (see the README's sample sizes), so
		// the relative check blocks a step only when its estimate is above
		// maxRatio and fails it when the ratio is surely above failRatio;
		// the watchdog keeps comparing the colors at every scrape.
		relOK := rel.Verdict == splitterv1.VerdictPass || math.IsNaN(rel.Estimate) || rel.Estimate <= p.MaxRatio
		switch {
		case abs.Verdict == splitterv1.VerdictFail || rel.Verdict == splitterv1.VerdictFail:
			r.Verdict = splitterv1.VerdictFail
		case abs.Verdict == splitterv1.VerdictPass && relOK:
			r.Verdict = splitterv1.VerdictPass
		default:
			r.Verdict = splitterv1.VerdictInconclusive
		}
		r.Message = abs.Message + "; " + rel.Message
		out = append(out, r)
	}
	// The traffic share, from the first SLO's requests (the same requests
	// for every SLO).
	g, b := d[p.SLOs[0].Name][s.Candidate], d[p.SLOs[0].Name][s.Live]
	srm := analysis.SampleRatio(g, b, s.Weight, p.SampleRatioAlpha/looks)
	r := analysis.Result{Name: TrafficShareCheck, Verdict: srm.Verdict, Message: srm.Message,
		Bound: fmt.Sprintf("%d%% ± %.2g", s.Weight, 100*(srm.Upper-srm.Lower)/2)}
	if !math.IsNaN(srm.Estimate) {
		r.Value, r.HasValue = 100*srm.Estimate, true
	}
	if g.N == 0 && s.Weight > 0 {
		r.Verdict, r.Message = splitterv1.VerdictError, fmt.Sprintf("%s got no requests over the step at weight %d%%", s.Candidate, s.Weight)
	}
	return append(out, r)
}

// startAnalysis sets the step's baseline when its hold begins, folding the
// evidence gathered since the last checkpoint into the watchdog first.
func (e *engine) startAnalysis() {
	if len(e.p.SLOs) == 0 {
		return
	}
	a := &splitterv1.AnalysisStatus{}
	if e.s.Analysis != nil {
		a = e.s.Analysis.DeepCopy()
	}
	if e.o.Counters == nil {
		// No baseline: this step's gate reports Error rather than judge
		// counts that span other weights.
		a.StepBaseline, a.StepBaselineAt = nil, nil
		e.s.Analysis = a
		return
	}
	if states, _, ok := e.watchdogStep(); ok {
		a.Watchdog = states
	}
	now := metav1.NewTime(e.o.Now)
	a.StepBaseline, a.StepBaselineAt, a.Checkpoint, a.CheckpointAt = e.o.Counters, &now, e.o.Counters, &now
	e.s.Analysis = a
}

// Watched says whether a release's counters are read in its phase, and
// which color the watchdog judges (green) against which (blue): the
// candidate against the live color during steps and pauses, the new live
// color against the standby after promotion.
func Watched(s splitterv1.SplitStatus) (green, blue splitterv1.Color, ok bool) {
	switch s.Phase {
	case splitterv1.PhaseShifting, splitterv1.PhaseAwaitingApproval:
		return s.Candidate, s.Live, true
	case splitterv1.PhasePromoting:
		return s.Live, s.Standby, true
	}
	return "", "", false
}

// watchdogStep folds the counters' growth since the checkpoint into the
// evidence, for the candidate (or the new live color during standby)
// against the other color. ok is false when there is nothing to judge.
func (e *engine) watchdogStep() (states []splitterv1.WatchdogStatus, trip analysis.Trip, ok bool) {
	a := e.s.Analysis
	if !e.p.WatchdogOn || e.o.Counters == nil || a == nil || a.CheckpointAt == nil {
		return nil, analysis.Trip{}, false
	}
	green, blue, _ := Watched(e.s)
	d := growth(e.o.Counters, a.Checkpoint)
	for _, slo := range e.p.SLOs {
		cfg := e.p.Watchdog
		cfg.Budget = slo.Budget()
		next, t := cfg.Update(decodeWatchdog(a.Watchdog, slo.Name), d[slo.Name][green], d[slo.Name][blue])
		if t.Tripped && !trip.Tripped {
			trip = t
			trip.Message = slo.Name + ": " + t.Message
		}
		states = append(states, encodeWatchdog(slo.Name, next))
	}
	return states, trip, true
}

// runWatchdog evaluates the watchdog and writes a checkpoint when due. It
// reports a trip.
func (e *engine) runWatchdog() (analysis.Trip, bool) {
	states, trip, ok := e.watchdogStep()
	if !ok {
		return trip, false
	}
	if trip.Tripped {
		return trip, true
	}
	if e.o.Now.Sub(e.s.Analysis.CheckpointAt.Time) >= CheckpointEvery {
		a := e.s.Analysis.DeepCopy()
		now := metav1.NewTime(e.o.Now)
		a.Watchdog, a.Checkpoint, a.CheckpointAt = states, e.o.Counters, &now
		e.s.Analysis = a
	}
	return trip, false
}

func decodeWatchdog(all []splitterv1.WatchdogStatus, slo string) analysis.WatchdogState {
	var st analysis.WatchdogState
	for _, w := range all {
		if w.SLO != slo {
			continue
		}
		for _, s := range w.LogLR {
			f, _ := strconv.ParseFloat(s, 64)
			st.LogLR = append(st.LogLR, f)
		}
		st.Burn, _ = strconv.ParseFloat(w.Burn, 64)
	}
	return st
}

func encodeWatchdog(slo string, st analysis.WatchdogState) splitterv1.WatchdogStatus {
	w := splitterv1.WatchdogStatus{SLO: slo, Burn: strconv.FormatFloat(st.Burn, 'g', -1, 64)}
	for _, l := range st.LogLR {
		w.LogLR = append(w.LogLR, strconv.FormatFloat(l, 'g', -1, 64))
	}
	return w
}

// WatchdogTrip runs the watchdog alone on fresh counters: a cheap look for
// a periodic sweep over every release, which wakes the full reconcile only
// when it trips (the reconcile then decides with the same evidence).
func WatchdogTrip(p *policy.Plan, s splitterv1.SplitStatus, counters Counters, now time.Time) (analysis.Trip, bool) {
	if _, _, ok := Watched(s); !ok {
		return analysis.Trip{}, false
	}
	e := &engine{p: p, s: s, o: Observations{Now: now, Counters: counters}}
	_, trip, ok := e.watchdogStep()
	return trip, ok && trip.Tripped
}
