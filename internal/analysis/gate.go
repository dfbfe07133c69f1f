package analysis

import (
	"fmt"
	"math"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// TrafficShareCheck names the traffic-share check in status.
const TrafficShareCheck = "traffic-share"

// Gate judges one step at its end, on the step's evidence since its
// baseline: green's and blue's counts per SLO. ref is the live color's
// evidence over the release, which stands in for blue once green has all
// the traffic.
//
// Per SLO:
//   - Fail (rollback): green's bad rate is surely more than failRatio
//     times blue's (the conditional test's lower bound on the ratio, at
//     the gates' Bonferroni share of alpha). This is the only way a gate
//     rolls back.
//   - Pass: green surely spends at most margin x budget more than blue
//     (Newcombe's bound on the difference), or its ratio to blue is surely
//     at most maxRatio; and green does not surely breach the objective.
//   - Inconclusive otherwise: too little evidence, or green surely
//     breaches the objective while no worse than blue (a burn both colors
//     share is an incident, not the release's fault: the step waits, and
//     pauses after its extensions, rather than roll back or promote).
//
// And once per step, the traffic share: green's share of the requests
// must match the weight. When it surely does not, the mesh is not
// following the weights, or counts were lost (a pod replaced loses the
// requests before its first scrape): that is no evidence against the
// release, so the step waits (Inconclusive, then onInconclusive) and
// says so, rather than roll back.
func (p Policy) Gate(green, blue, ref map[string]Count, weight int32, greenName, blueName string) []Result {
	var out []Result
	for _, s := range p.SLOs {
		out = append(out, p.gateSLO(s, green[s.Name], blue[s.Name], ref[s.Name], weight, greenName, blueName))
	}
	if len(p.SLOs) > 0 && weight < 100 {
		out = append(out, p.trafficShare(green[p.SLOs[0].Name], blue[p.SLOs[0].Name], weight, greenName))
	}
	return out
}

func (p Policy) gateSLO(s SLO, g, b, ref Count, weight int32, greenName, blueName string) Result {
	d := p.Margin * s.Budget()
	r := Result{Name: s.Name, Bound: fmt.Sprintf("fail: ratio > %g; pass: ratio <= %g or at most %.3g%% worse; bad <= %.3g%%",
		p.FailRatio, p.MaxRatio, 100*d, 100*s.Budget())}
	if g.N > 0 {
		r.Value, r.HasValue = g.Rate(), true
	}
	if g.N <= 0 {
		r.Verdict, r.Message = splitterv1.VerdictInconclusive, fmt.Sprintf("%s got no requests since the step's baseline", greenName)
		return r
	}
	control, controlName := b, blueName
	if weight >= 100 || b.N <= 0 {
		control, controlName = ref, blueName+" (earlier in the release)"
	}
	if control.N <= 0 {
		r.Verdict, r.Message = splitterv1.VerdictInconclusive, fmt.Sprintf("no %s requests to compare %s with", blueName, greenName)
		return r
	}
	counts := fmt.Sprintf("%s %s vs %s %s", greenName, g, controlName, control)
	// Fail: only against concurrent traffic (a past rate is no control for
	// a test that rolls back).
	if b.N > 0 && weight < 100 {
		if lo, _ := RatioBounds(g, b, p.GateFailAlpha()); lo > p.FailRatio {
			r.Verdict = splitterv1.VerdictFail
			r.Message = fmt.Sprintf("%s: bad-request ratio at least %.3g, above %g (level %.2g)", counts, lo, p.FailRatio, p.GateFailAlpha())
			return r
		}
	}
	diffUp := DiffUpper(g, control, PassAlpha)
	_, ratioUp := RatioBounds(g, control, PassAlpha)
	breachLo, _ := ClopperPearson(g.X, g.N, PassAlpha)
	breach := breachLo > s.Budget()
	switch {
	case (diffUp <= d || ratioUp <= p.MaxRatio) && breach:
		r.Verdict, r.Incident = splitterv1.VerdictInconclusive, true
		r.Message = fmt.Sprintf("%s: %s breaches the objective (bad rate at least %.3g%%, budget %.3g%%) but is no worse than %s: an incident both colors share? the step waits",
			counts, greenName, 100*breachLo, 100*s.Budget(), controlName)
	case diffUp <= d:
		r.Verdict = splitterv1.VerdictPass
		r.Message = fmt.Sprintf("%s: at most %.3g%% worse (margin %.3g%%)", counts, 100*math.Max(0, diffUp), 100*d)
	case ratioUp <= p.MaxRatio:
		r.Verdict = splitterv1.VerdictPass
		r.Message = fmt.Sprintf("%s: bad-request ratio at most %.3g (max %g)", counts, ratioUp, p.MaxRatio)
	default:
		r.Verdict = splitterv1.VerdictInconclusive
		r.Message = fmt.Sprintf("%s: up to %.3g%% worse (margin %.3g%%): not enough evidence yet", counts, 100*diffUp, 100*d)
		if more := p.RequestsToPass(s, control.Rate(), weight) - g.N; more > 0 {
			r.Message += fmt.Sprintf(", about %.0f more %s requests needed", more, greenName)
		}
	}
	return r
}

func (p Policy) trafficShare(g, b Count, weight int32, greenName string) Result {
	alpha := p.TrafficAlpha()
	mismatch, share, tol := ShareTest(g, b, weight, alpha)
	r := Result{Name: TrafficShareCheck, Bound: fmt.Sprintf("%d%% ± %.2g", weight, 100*tol)}
	if !math.IsNaN(share) {
		r.Value, r.HasValue = 100*share, true
	}
	switch {
	case g.N+b.N <= 0:
		r.Verdict, r.Message = splitterv1.VerdictInconclusive, "no requests since the step's baseline"
	case mismatch:
		r.Verdict = splitterv1.VerdictInconclusive
		r.Message = fmt.Sprintf("%s got %.2f%% of %.0f requests with weight %d%% (tolerance ±%.2g%% at level %.2g): the mesh does not follow the weights",
			greenName, 100*share, g.N+b.N, weight, 100*tol, alpha)
	default:
		r.Verdict = splitterv1.VerdictPass
	}
	return r
}
