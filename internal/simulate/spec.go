package simulate

import (
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
	// Scrape is Prometheus' scrape interval.
	Scrape time.Duration
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
			}
			m[slo.Name] = min(0.9, r*times)
		}
		return m
	}
	steps := time.Duration(len(p.Steps)*(1+p.MaxExtensions)) * p.StepDuration
	return Spec{Plan: &p, RPS: tr.RPS, Scrape: tr.Scrape, Pods: Pods, Restarts: Restarts, ReadFail: ReadFail,
		Propagation: Propagation, Until: max(20*time.Minute, steps+2*time.Minute) + p.Standby,
		Bad: map[string]map[string]float64{LiveRevision: bad(1), CandidateRevision: bad(times)}}
}
