package backtest

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/rollout"
)

// growthOf is what each color's counters grew by between two readings
// (as the engine counts it), first SLO.
func growthOf(prev, now rollout.Counters) (n, x [2]float64) {
	c, _ := analysis.Growth(prev, now)
	for _, m := range c {
		for col, v := range m {
			n[index(col)] += v.N
			x[index(col)] += v.X
		}
	}
	return
}

// recordedGrowth is what the recording's Deployments grew by between two
// aligned instants, per Deployment, by the engine's counting rule
// (analysis.Growth).
func recordedGrowth(t *testing.T, rec *Recording, a, b time.Time) map[string]float64 {
	lag := rec.Scrape + max(500*time.Millisecond, rec.Scrape/10)
	ra, _ := rec.readAt(0, a, a.Add(lag))
	rb, _ := rec.readAt(0, b, b.Add(lag))
	readings := func(ss []analysis.Series) []splitterv1.SeriesReading {
		var out []splitterv1.SeriesReading
		for _, s := range ss {
			out = append(out, splitterv1.SeriesReading{Color: splitterv1.Blue, SLO: "a", Series: s.ID, Requests: int64(math.Round(s.Requests)), Bad: int64(math.Round(s.Bad))})
		}
		return out
	}
	out := map[string]float64{}
	for w, ss := range rb {
		c, _ := analysis.Growth(readings(ra[w]), readings(ss))
		out[w.Name] += c.Of("a", splitterv1.Blue).N
	}
	return out
}

// Regression tests for baseline mode's split (HEAD's source.go thinned
// each color independently: the colors did not add up to the recording
// and their difference had 1-2p(1-p) of the variance of two identical
// colors, so false rollbacks were undercounted).
//
// Baseline mode's comment says every recorded request goes to green with
// probability p and to blue otherwise. Measure, per reading, whether the
// two synthetic colors add up to the recording, and the variance of
// green/p - blue/(1-p) against Poisson's (which is what two independent
// colors of the same rate have).
func TestBaselineSplitIsAPartition(t *testing.T) {
	for _, scrape := range []time.Duration{time.Second} {
		rec := synthetic(recSpec{length: 30 * time.Minute, scrape: scrape, rps: 200, pods: 3, seed: 4,
			bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.01), splitterv1.Green: constant(0.01)}})
		for _, p := range []int32{10, 50} {
			src := newSource(rec, baselineMode, t0, rand.New(rand.NewPCG(1, 2)))
			src.Route(0, rollout.Weights{Blue: 100 - p, Green: p})
			prev, _ := src.Read(scrape + 2*time.Second)
			var readings int
			var sumD2, sumN float64
			for k := 3; k < int(29*time.Minute/scrape); k++ {
				now, _ := src.Read(time.Duration(k)*scrape + 2*time.Second)
				n, _ := growthOf(prev, now)
				prev = now
				total := n[0] + n[1]
				pp := float64(p) / 100
				d := n[1]/pp - n[0]/(1-pp)
				sumD2 += d * d
				sumN += total
				readings++
			}
			// Under independent Poisson colors: Var(d) = N/p + N/(1-p).
			pp := float64(p) / 100
			want := sumN * (1/pp + 1/(1-pp))
			t.Logf("scrape %s, p=%d%%: %d readings, var(green/p - blue/(1-p)) = %.0f, independent colors' %.0f: ratio %.2f (a partition gives 1, independent thinning 1-2p(1-p) = %.2f)",
				scrape, p, readings, sumD2, want, sumD2/want, 1-2*pp*(1-pp))
			if r := sumD2 / want; r < 0.85 {
				t.Errorf("BUG: the synthetic colors are %.0f%% less different than two identical colors: the split is not a partition", 100*(1-r))
			}
		}
	}
}

// Per reading, compare the colors' synthetic growth with the recording.
func TestBaselineConservesRequests(t *testing.T) {
	scrape := 15 * time.Second
	rec := synthetic(recSpec{length: 20 * time.Minute, scrape: scrape, rps: 200, pods: 3, seed: 4,
		bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.01), splitterv1.Green: constant(0.01)}})
	src := newSource(rec, baselineMode, t0, rand.New(rand.NewPCG(1, 2)))
	src.Route(0, rollout.Weights{Blue: 50, Green: 50})
	tAt := func(k int) time.Duration { return time.Duration(k)*scrape + 2*time.Second }
	prev, _ := src.Read(tAt(1))
	bad := 0
	for k := 2; k < 70; k++ {
		now, _ := src.Read(tAt(k))
		n, _ := growthOf(prev, now)
		prev = now
		r := recordedGrowth(t, rec, analysis.Align(t0.Add(tAt(k-1)), scrape), analysis.Align(t0.Add(tAt(k)), scrape))
		want := r["checkout-blue"] + r["checkout-green"] + r["checkout"]
		if n[0]+n[1] != want {
			bad++
			if bad <= 3 {
				t.Logf("reading %d: blue %g + green %g = %g, recorded %g", k, n[0], n[1], n[0]+n[1], want)
			}
		}
	}
	if bad > 0 {
		t.Errorf("BUG: %d of 68 readings: the two synthetic colors do not add up to the recorded requests", bad)
	}
}
