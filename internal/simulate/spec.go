package simulate

import (
	"math"
	"time"

	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
)

// Traffic is the service a policy is simulated for: both colors at the
// same rates unless the candidate regresses.
type Traffic struct {
	RPS float64
	// ErrorRate is the share of requests bad for an availability SLO,
	// SlowRate for a latency SLO (one with a threshold).
	ErrorRate, SlowRate float64
	// SlowBySLO, when set, is each latency SLO's slow share (by name),
	// in place of SlowRate: see Lognormal.
	SlowBySLO map[string]float64
	// Scrape is Prometheus' scrape interval.
	Scrape time.Duration
	// Callers, when set, are the callers' shares of the traffic: the pods
	// then export what Istio exports (see Spec.Callers).
	Callers []float64
	// Clump, when above 1, makes bad requests come in clumps of that many
	// (see Spec.Clump); Drift makes both colors' rates wander together
	// (see Spec.Drift).
	Clump int
	Drift Drift
}

// The model's fixed assumptions (the README's Monte-Carlo figures use
// them): pods per color, each color's mean time between pod restarts,
// the share of counter readings that fail, the data plane's delay in
// applying new weights.
const (
	Pods        = 3
	Restarts    = 10 * time.Minute
	ReadFail    = 0.01
	Propagation = 2 * time.Second
)

// NewSpec is the Spec of a release under plan (its Timing set to the
// scrape interval) whose candidate is times as bad as the live revision
// (1: a healthy release), rates capped at 90%. Each release runs long
// enough for every step to use all its extensions, and its standby.
func NewSpec(plan *policy.Plan, tr Traffic, times float64) Spec {
	p := *plan
	p.Timing = analysis.Timing{Scrape: tr.Scrape}
	bad := func(times float64) map[string]float64 {
		m := map[string]float64{}
		for _, slo := range p.SLOs {
			r := tr.ErrorRate
			if slo.ThresholdMs > 0 {
				r = tr.SlowRate
				if x, ok := tr.SlowBySLO[slo.Name]; ok {
					r = x
				}
			}
			m[slo.Name] = min(0.9, r*times)
		}
		return m
	}
	steps := time.Duration(len(p.Steps)*(1+p.MaxExtensions)) * p.StepDuration
	return Spec{Plan: &p, RPS: tr.RPS, Scrape: tr.Scrape, Callers: tr.Callers, Clump: tr.Clump, Drift: tr.Drift, Pods: Pods, Restarts: Restarts, ReadFail: ReadFail,
		Propagation: Propagation, Until: max(20*time.Minute, steps+2*time.Minute) + p.Standby,
		Bad: map[string]map[string]float64{LiveRevision: bad(1), CandidateRevision: bad(times)}}
}

// Latency is a service's latency distribution, lognormal, given by two
// quantiles: what `policy simulate --latency-p99` models when only
// percentiles are known.
type Latency struct{ P50, P99 time.Duration }

// z99 is the standard normal's 99th percentile.
const z99 = 2.3263478740408408

// SlowShare is the share of requests slower than threshold.
func (l Latency) SlowShare(threshold time.Duration) float64 {
	mu := math.Log(l.P50.Seconds())
	sigma := (math.Log(l.P99.Seconds()) - mu) / z99
	if sigma <= 0 {
		if threshold < l.P50 {
			return 1
		}
		return 0
	}
	return 0.5 * math.Erfc((math.Log(threshold.Seconds())-mu)/(sigma*math.Sqrt2))
}

// SlowBySLO is each latency SLO's slow share under l.
func (l Latency) SlowBySLO(slos []analysis.SLO) map[string]float64 {
	out := map[string]float64{}
	for _, s := range slos {
		if s.ThresholdMs > 0 {
			out[s.Name] = l.SlowShare(time.Duration(s.ThresholdMs * float64(time.Millisecond)))
		}
	}
	return out
}
