package rollout

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/gonum/stat/distuv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/policy"
)

// simulate runs one release of v2 through the engine against random
// traffic and returns how it ended: the first history entry's outcome and
// reason, or the phase it was left in.
func simulate(rng *rand.Rand, plan *policy.Plan, rps, pBlue, pGreen float64, until time.Duration) (splitterv1.Phase, []splitterv1.Release) {
	w := newFakeWorld("v1")
	w.rps, w.random = rps, rng
	w.errRate = map[string]float64{"v1": pBlue, "v2": pGreen}
	w.readyDelay = time.Second
	sc := scenario{plan: plan, world: w, tick: time.Second, until: until,
		events: map[time.Duration]func(*fakeWorld){5 * time.Second: release("v2")}}
	sc.run()
	return sc.status.Phase, sc.status.History
}

// mcPlan: availability 99.5%, the steps 5 to 100, 30 s each.
func mcPlan() *policy.Plan {
	p := sloPlan()
	p.Steps = []int32{5, 10, 25, 50, 100}
	p.StepDuration = 30 * time.Second
	p.Standby = 0
	return p
}

// With green equal to blue (0.2% errors at 100 req/s), the whole engine
// (step gates and watchdog) rolls back fewer than 1% of 2,000 releases.
func TestFalseRollbackRateThroughEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("Monte-Carlo")
	}
	rng := rand.New(rand.NewPCG(11, 12))
	const releases = 2000
	rolledBack, promoted := 0, 0
	reasons := map[string]int{}
	for range releases {
		_, h := simulate(rng, mcPlan(), 100, 0.002, 0.002, 10*time.Minute)
		switch {
		case len(h) == 0:
		case h[0].Outcome == splitterv1.OutcomeRolledBack:
			rolledBack++
			reasons[h[0].Reason+": "+h[0].Message[:40]]++
		case h[0].Outcome == splitterv1.OutcomePromoted:
			promoted++
		}
	}
	t.Logf("%d releases: %d promoted, %d rolled back (%.2f%%): %v", releases, promoted, rolledBack, 100*float64(rolledBack)/releases, reasons)
	if float64(rolledBack)/releases > 0.01 {
		t.Errorf("false rollback rate %.2f%%, want at most 1%%", 100*float64(rolledBack)/releases)
	}
	// The rest pause: at 5% of 100 req/s a 30 s step cannot gather the
	// 600 clean requests a 99.5% objective needs (see policy lint --rps).
}

// With 1 req/s, no release is ever promoted: the evidence never suffices,
// whatever the error rates.
func TestNoPromotionWithoutEvidence(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for i := range 200 {
		pg := rng.Float64() * 0.004
		phase, h := simulate(rng, mcPlan(), 1, 0.002, pg, 15*time.Minute)
		for _, r := range h {
			if r.Outcome == splitterv1.OutcomePromoted {
				t.Fatalf("run %d (green errors %.3f%%): promoted with 1 req/s: %+v", i, 100*pg, r)
			}
		}
		if phase == splitterv1.PhasePromoting || (phase == splitterv1.PhaseIdle && len(h) > 0) {
			t.Fatalf("run %d: ended %s", i, phase)
		}
	}
}

// BenchmarkFalseRollbackRate reports the share of healthy releases (green
// equal to blue, 0.2% errors, 100 req/s, steps 5 to 100 of 30 s) rolled
// back by splitter's count-based gates and watchdog, beside threshold
// checks on the same traffic (success rate >= 0.99 over each step, as
// Flagger and Argo Rollouts judge).
func BenchmarkFalseRollbackRate(b *testing.B) {
	const releases = 2000
	rng := rand.New(rand.NewPCG(21, 22))
	counted := 0
	for range releases {
		if _, h := simulate(rng, mcPlan(), 100, 0.002, 0.002, 10*time.Minute); len(h) > 0 && h[0].Outcome == splitterv1.OutcomeRolledBack {
			counted++
		}
	}
	b.ReportMetric(100*float64(counted)/releases, "splitter-false-rollback-%")
	threshold := 0
	for range releases {
	steps:
		for _, w := range []float64{5, 10, 25, 50, 100} {
			n := distuv.Poisson{Lambda: 100 * w / 100 * 30, Src: randSource{rng}}.Rand()
			x := 0.0
			if n > 0 {
				x = distuv.Binomial{N: n, P: 0.002, Src: randSource{rng}}.Rand()
			}
			if n > 0 && 1-x/n < 0.99 {
				threshold++
				break steps
			}
		}
	}
	b.ReportMetric(100*float64(threshold)/releases, "threshold-false-rollback-%")
}

// BenchmarkNextWithWatchdog measures one engine call during a step with
// counters (the watchdog's work per look): the controller makes one per
// Split per watchdog interval.
func BenchmarkNextWithWatchdog(b *testing.B) {
	w := newFakeWorld("v1")
	w.rps, w.errRate = 100, map[string]float64{"v1": 0.002, "v2": 0.002}
	p := mcPlan()
	p.StepDuration = time.Hour
	sc := scenario{plan: p, world: w, until: 60 * time.Second,
		events: map[time.Duration]func(*fakeWorld){15 * time.Second: release("v2")}}
	sc.run()
	if sc.status.Phase != splitterv1.PhaseShifting || sc.status.Analysis == nil {
		b.Fatalf("not shifting with analysis: %s\n%s", sc.status.Phase, strings.Join(sc.lines, "\n"))
	}
	w.now = w.now.Add(10 * time.Second)
	o := w.observe()
	b.ResetTimer()
	for range b.N {
		Next(p, sc.status, o)
	}
}
