package analysis

import (
	"fmt"
	"math"
	"time"
)

// RatioAlternatives are the relative watchdog's alternatives, as multiples
// of maxRatio (3 to 45 times blue's rate at the default 1.5), equally
// weighted. The spread costs ln(6) of evidence and covers everything from
// a 3x regression to a total failure; simulated (make bench), this set
// detected a 5x regression at 10% weight sooner than {1.5..30}, {2..100}
// or {2.5..30}.
var RatioAlternatives = []float64{2, 3, 4, 6, 10, 30}

// RateAlternatives are the absolute watchdog's alternatives, as multiples
// of its null rate p0 (capped below 1).
var RateAlternatives = []float64{2, 4, 8, 16, 64}

// relativeStep adds one chunk's evidence to an SLO's relative test.
// share is green's share of the requests in the chunk: its realized share
// while the weights held still (conditional on the requests, each bad
// request is green's with probability theta(rho, share)), or an upper
// bound on it while they changed. The null is rho = maxRatio: the
// likelihood ratio of a Bernoulli step, theta t1/t0 + (1-theta)(1-t1)/(1-t0),
// is linear and increasing in theta, so it is at most 1 for every ratio up
// to maxRatio and the product is a test supermartingale under the whole
// null (reference, corrections 1).
//
// clump is the dispersion (see dispersion.go): the chunk's evidence is
// divided by it, counting clumps of bad requests rather than requests.
func relativeStep(logLR []float64, g, b Count, share, maxRatio, clump float64) {
	if share <= 0 || share >= 1 || g.X+b.X <= 0 {
		return
	}
	t0 := thetaOf(maxRatio, share)
	for i, m := range RatioAlternatives {
		t1 := thetaOf(m*maxRatio, share)
		logLR[i] += (g.X*math.Log(t1/t0) + b.X*math.Log((1-t1)/(1-t0))) / clump
	}
}

// grossAlternatives are a warming-up candidate's alternatives, as
// multiples of its null rate, one per relative alternative: the null is
// already high (tens of percent), so a gross fault is a small multiple.
var grossAlternatives = []float64{1.1, 1.25, 1.5, 2, 3, 4}

// grossStep adds one chunk of a warming-up candidate's requests to its
// relative accumulator: its bad rate against the null p0, alternative i
// at grossAlternatives[i] times p0 (capped below 1).
//
// A chunk whose null is the cap (warmupGross: the live color's rate is not
// known well enough yet) adds nothing: its evidence against a rate the
// candidate is far below would only sink the test.
func grossStep(logLR []float64, g Count, p0, clump float64) {
	if g.N <= 0 || p0 <= 0 || p0 >= warmupGross {
		return
	}
	for i, m := range grossAlternatives {
		p1 := math.Min(m*p0, 0.999)
		if p1 <= p0 {
			continue
		}
		logLR[i] += (g.X*math.Log(p1/p0) + (g.N-g.X)*math.Log((1-p1)/(1-p0))) / clump
	}
}

// absoluteStep adds one chunk of green's requests to an SLO's absolute
// test against the null rate p0: x ln(p1/p0) + (n - x) ln((1-p1)/(1-p0))
// per alternative p1 > p0, a likelihood ratio whose expectation is at most
// 1 for every rate up to p0 (same monotonicity argument).
func absoluteStep(logLR []float64, g Count, p0, clump float64) {
	if g.N <= 0 || p0 <= 0 || p0 >= 1 {
		return
	}
	for i, m := range RateAlternatives {
		p1 := math.Min(m*p0, 0.999)
		if p1 <= p0 {
			continue
		}
		logLR[i] += (g.X*math.Log(p1/p0) + (g.N-g.X)*math.Log((1-p1)/(1-p0))) / clump
	}
}

// The relative watchdog is a mixture over onset times, so that a
// regression that starts late (an hour into standby, after a healthy
// stretch has driven the release-long likelihood ratio far below 1) is
// caught as surely as one present from the start. Each onset's test is
// 1 until it starts and a test supermartingale after; weighted by prior
// masses that sum to 1, their sum is one too, and Ville's bound holds
// for the whole release however long. OnsetInitial of the mass starts
// with the release (its cost is ln 2 of evidence for a regression
// present from the start); the rest starts every OnsetEvery, by
// onsetPrior (a late onset costs the log of its mass: 3.4 nats 5 min
// into a 10 min standby after a 12 min release, 4.5 nats 40 min in, 6.4
// nats 3 h in). The masses follow a fixed grid of the release's clock, not
// the checkpoints, so the mixture does not depend on when the controller
// looked; the mass of the grid points a chunk covers starts with that
// chunk (at its checkpoint, a time fixed before the chunk is seen, which
// is all the supermartingale needs).
const (
	OnsetInitial = 0.5
	// onsetScale is the prior's median onset after the release's start.
	onsetScale = 30 * time.Minute
	// OnsetEvery is the onset grid's spacing. Fixed, not derived from the
	// scrape interval: a grid that changed mid-release (a new
	// --scrape-interval) could hand out the same mass twice.
	OnsetEvery = 5 * time.Minute
)

// onsetPrior is the share of the later onsets started by d after the
// release's start: d / (d + onsetScale).
func onsetPrior(d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(d) / float64(d+onsetScale)
}

// startOnsets adds the mass of the onsets that start now to each
// alternative's started part (log scale).
func startOnsets(logS []float64, mass float64) {
	if mass <= 0 {
		return
	}
	for i := range logS {
		logS[i] = logAddExp(logS[i], math.Log(mass))
	}
}

func logAddExp(a, b float64) float64 {
	m := math.Max(a, b)
	if math.IsInf(m, -1) {
		return m
	}
	return m + math.Log(math.Exp(a-m)+math.Exp(b-m))
}

// meanLR is the log of the mean likelihood ratio of a mixture.
func meanLR(logLR []float64) float64 {
	if len(logLR) == 0 {
		return 0
	}
	m := math.Inf(-1)
	for _, l := range logLR {
		m = math.Max(m, l)
	}
	if math.IsInf(m, -1) {
		return m // every ratio 0
	}
	sum := 0.0
	for _, l := range logLR {
		sum += math.Exp(l - m)
	}
	return m + math.Log(sum/float64(len(logLR)))
}

// zeroMixture is a mixture whose every likelihood ratio is 0 (log -Inf).
func zeroMixture(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = math.Inf(-1)
	}
	return out
}

// averageOfMixtures is the log of the mean, over SLOs, of each SLO's mean
// likelihood ratio: one test martingale for all SLOs.
func averageOfMixtures(perSLO [][]float64) float64 {
	logs := make([]float64, len(perSLO))
	for i, l := range perSLO {
		logs[i] = meanLR(l)
	}
	return meanLR(logs)
}

// ReferenceRate is the null rate the absolute watchdog holds the candidate
// to for one SLO once it has all the traffic: maxRatio times the upper
// bound on the live color's rate during the release, or that bound plus
// the margin, whichever is higher (the margin keeps a near-zero reference
// from rolling back a candidate well within its SLO).
func (p Policy) ReferenceRate(s SLO, ref Count) (p0 float64, ok bool) {
	if ref.N <= 0 {
		return 1, false
	}
	up := clopperPearsonUpper(math.Max(0, math.Min(ref.X, ref.N)), ref.N, p.ReferenceAlpha())
	p0 = math.Max(p.MaxRatio*up, up+p.Margin*s.Budget())
	return p0, p0 < 1
}

// Trip is the watchdog's decision.
type Trip struct {
	Tripped bool
	Reason  string // RelativeRegression or AbsoluteRegression
	Message string
}

// onsetMixture is the log of the relative watchdog's test martingale: the
// mean over SLOs of each SLO's started onsets (mean over alternatives)
// plus the mass not started yet, which counts 1.
func onsetMixture(rel [][]float64, unstarted float64) float64 {
	if len(rel) == 0 {
		return 0
	}
	m := averageOfMixtures(rel)
	if unstarted <= 0 {
		return m
	}
	return logAddExp(m, math.Log(unstarted))
}

// watchdogTrip compares the evidence with the thresholds; unstarted is
// the relative mixture's mass whose onset is still to come.
func (p Policy) watchdogTrip(rel [][]float64, unstarted float64, abs [][]float64, names []string, green, blue string) Trip {
	if m := onsetMixture(rel, unstarted); m >= math.Log(1/p.WatchdogAlpha()) {
		return Trip{Tripped: true, Reason: "RelativeRegression", Message: fmt.Sprintf(
			"%s's bad requests are more than %g times %s's (%s): likelihood ratio %.3g reached %.3g (alpha %.2g)",
			green, p.MaxRatio, blue, worstSLO(rel, names), math.Exp(m), 1/p.WatchdogAlpha(), p.WatchdogAlpha())}
	}
	if m := averageOfMixtures(abs); m >= math.Log(1/p.AbsoluteAlpha()) {
		return Trip{Tripped: true, Reason: "AbsoluteRegression", Message: fmt.Sprintf(
			"%s, with all the traffic, is worse than %s was during the release (%s): likelihood ratio %.3g reached %.3g (alpha %.2g)",
			green, blue, worstSLO(abs, names), math.Exp(m), 1/p.AbsoluteAlpha(), p.AbsoluteAlpha())}
	}
	return Trip{}
}

func worstSLO(perSLO [][]float64, names []string) string {
	best, at := math.Inf(-1), 0
	for i, l := range perSLO {
		if m := meanLR(l); m > best {
			best, at = m, i
		}
	}
	if at < len(names) {
		return names[at]
	}
	return ""
}
