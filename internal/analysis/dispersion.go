package analysis

import (
	"math"
	"strconv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Bad requests are not independent in real traffic: Istio's default route
// retries a failed attempt up to twice, and the destination proxies count
// every attempt, so one failure can be three bad requests; a pod's
// in-flight requests fail together when it is evicted. The watchdog's
// tests assume independent bad requests, and clumps of k make a healthy
// release's evidence k times too loud (simulated before this: 1.3% of
// healthy releases rolled back with clumps of 3, 3.0% with clumps of 5,
// against a 0.6% share of alpha).
//
// The dispersion is measured from the data, on both colors: pair each
// folded chunk with the one before it, per color and SLO. If the color's
// bad rate held across the pair (a minute at most: a rate that drifts
// over tens of minutes barely moves, and a rate both colors share moves
// both alike), then given the pair's bad requests T, the second chunk's
// are Binomial(T, p) with p its share of the pair's requests, and
// (x - T p)^2 / (T p (1 - p)) has mean exactly 1; with clumps of k it has
// mean k. The mean over pairs estimates the clump size, and the tests
// count clumps instead of requests: each chunk's log likelihood ratio is
// divided by it (a likelihood ratio raised to 1/k is the ratio of the
// clumps, each one Bernoulli draw, so the tests stay supermartingales
// when the clumps are k; for mixed sizes this is the usual
// quasi-likelihood approximation).
//
// One pair's statistic is capped: an outage that starts between two
// chunks is a change of rate, not a clump, and would otherwise make the
// watchdog deaf for the rest of the release. A prior of dispersionPrior
// pairs at 1 steadies the estimate while it has few pairs.
const (
	dispersionCap   = 25
	dispersionPrior = 4
)

// pairPearson is the Pearson statistic of the second chunk's bad requests
// given the pair's; ok is false when the pair says nothing.
func pairPearson(prev, cur Count) (float64, bool) {
	t := prev.X + cur.X
	if prev.N <= 0 || cur.N <= 0 || t <= 0 {
		return 0, false
	}
	p := cur.N / (prev.N + cur.N)
	d := cur.X - t*p
	return math.Min(dispersionCap, d*d/(t*p*(1-p))), true
}

// Dispersion is an SLO's estimated clump size (at least 1): the mean of
// its pairs' statistics, with a prior of dispersionPrior pairs at the
// mean over every SLO's pairs (what clumps bad requests, retries above
// all, clumps them for every SLO, and the SLO with the most bad requests
// measures it first).
func Dispersion(w splitterv1.WatchdogStatus, all []splitterv1.WatchdogStatus) float64 {
	var sumAll, pairsAll float64
	for _, o := range all {
		x, _ := strconv.ParseFloat(o.Dispersion, 64)
		sumAll += x
		pairsAll += float64(o.Pairs)
	}
	prior := math.Max(1, (sumAll+dispersionPrior)/(pairsAll+dispersionPrior))
	sum, _ := strconv.ParseFloat(w.Dispersion, 64)
	return math.Max(1, (sum+dispersionPrior*prior)/(float64(w.Pairs)+dispersionPrior))
}

// measureDispersion adds the chunk's pairs with the last one to w.
func measureDispersion(w *splitterv1.WatchdogStatus, last []splitterv1.CountTotal, chunk Chunk, colors ...splitterv1.Color) {
	sum, _ := strconv.ParseFloat(w.Dispersion, 64)
	for _, c := range colors {
		if x, ok := pairPearson(total(last, w.SLO, c), chunk.Of(w.SLO, c)); ok {
			sum += x
			w.Pairs++
		}
	}
	w.Dispersion = strconv.FormatFloat(sum, 'g', 10, 64)
}

// lastChunk is the chunk's counts, to pair the next chunk with.
func lastChunk(slos []SLO, chunk Chunk, colors ...splitterv1.Color) []splitterv1.CountTotal {
	var out []splitterv1.CountTotal
	for _, s := range slos {
		for _, c := range colors {
			if n := chunk.Of(s.Name, c); n.N > 0 {
				out = append(out, splitterv1.CountTotal{SLO: s.Name, Color: c, Requests: int64(n.N), Bad: int64(n.X)})
			}
		}
	}
	return out
}
