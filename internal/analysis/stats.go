package analysis

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Count is good/bad events of one color over a window: n requests, x of
// them bad (errors, or slow requests for a latency SLO).
type Count struct {
	N, X float64
}

// Rate is x/n, or NaN without requests.
func (c Count) Rate() float64 {
	if c.N <= 0 {
		return math.NaN()
	}
	return c.X / c.N
}

func (c Count) String() string { return fmt.Sprintf("%.0f/%.0f", c.X, c.N) }

// ClopperPearson is the exact (conservative) one-sided bounds on a
// binomial proportion: P(p < lower) <= alpha and P(p > upper) <= alpha.
func ClopperPearson(x, n, alpha float64) (lower, upper float64) {
	if n <= 0 {
		return 0, 1
	}
	x = math.Max(0, math.Min(x, n))
	lower, upper = 0, 1
	if x > 0 {
		lower = distuv.Beta{Alpha: x, Beta: n - x + 1}.Quantile(alpha)
	}
	if x < n {
		upper = distuv.Beta{Alpha: x + 1, Beta: n - x}.Quantile(1 - alpha)
	}
	return lower, upper
}

// Judgement is a verdict with the numbers behind it, for status and Events.
type Judgement struct {
	Verdict splitterv1.Verdict
	// Estimate and its bounds, in the check's unit (a rate, or a ratio).
	Estimate, Lower, Upper float64
	Message                string
}

// Absolute judges green alone against a limit L on its bad-event rate:
// Pass when the upper bound is at most L, Fail when the lower bound is
// above L, Inconclusive otherwise. With no errors, a Pass needs
// n >= ln(alpha)/ln(1-L) requests: 2,995 for L = 0.1% at alpha = 0.05.
func Absolute(g Count, limit, alpha float64) Judgement {
	if g.N <= 0 {
		return Judgement{Verdict: splitterv1.VerdictInconclusive, Estimate: math.NaN(), Lower: 0, Upper: 1, Message: "no requests to the candidate"}
	}
	lo, hi := ClopperPearson(g.X, g.N, alpha)
	j := Judgement{Estimate: g.Rate(), Lower: lo, Upper: hi}
	switch {
	case hi <= limit:
		j.Verdict = splitterv1.VerdictPass
		j.Message = fmt.Sprintf("%s bad: rate below %.4g%% with %.0f%% confidence (limit %.4g%%)", g, 100*hi, 100*(1-alpha), 100*limit)
	case lo > limit:
		j.Verdict = splitterv1.VerdictFail
		j.Message = fmt.Sprintf("%s bad: rate above %.4g%% with %.0f%% confidence (limit %.4g%%)", g, 100*lo, 100*(1-alpha), 100*limit)
	default:
		j.Verdict = splitterv1.VerdictInconclusive
		j.Message = fmt.Sprintf("%s bad: rate between %.4g%% and %.4g%%, limit %.4g%%: %.0f more requests needed at least",
			g, 100*lo, 100*hi, 100*limit, math.Max(0, RequestsForPass(limit, alpha)-g.N))
	}
	return j
}

// RequestsForPass is the fewest requests with no errors that pass the
// absolute check at limit L: ceil(ln(alpha)/ln(1-L)).
func RequestsForPass(limit, alpha float64) float64 {
	if limit <= 0 || limit >= 1 {
		return math.Inf(1)
	}
	return math.Ceil(math.Log(alpha) / math.Log1p(-limit))
}

// thetaOf is green's share of errors if green's error rate is rho times
// blue's, given green's share theta0 of the requests.
func thetaOf(rho, theta0 float64) float64 { return rho * theta0 / (rho*theta0 + 1 - theta0) }

// rhoOf inverts thetaOf.
func rhoOf(theta, theta0 float64) float64 {
	if theta >= 1 {
		return math.Inf(1)
	}
	return theta * (1 - theta0) / (theta0 * (1 - theta))
}

// Relative judges whether green is meaningfully worse than blue, by the
// exact test conditional on the total errors: each error is green's with
// probability theta(rho), so blue's own rate cancels out. Pass when the
// upper bound on the ratio rho is at most maxRatio, or the upper bound on
// green's rate minus blue's is at most slack (two near-zero rates); Fail
// when the lower bound on rho is above failRatio.
func Relative(g, b Count, maxRatio, failRatio, slack, alpha float64) Judgement {
	if g.N <= 0 || b.N <= 0 {
		return Judgement{Verdict: splitterv1.VerdictInconclusive, Estimate: math.NaN(), Upper: math.Inf(1), Message: "no requests to one of the colors"}
	}
	theta0 := g.N / (g.N + b.N)
	x := g.X + b.X
	lo, hi := ClopperPearson(g.X, x, alpha)
	j := Judgement{Lower: rhoOf(lo, theta0), Upper: rhoOf(hi, theta0), Estimate: math.NaN()}
	if b.X > 0 {
		j.Estimate = g.Rate() / b.Rate()
	}
	// The absolute difference, each side at alpha/2 (Bonferroni).
	_, gHi := ClopperPearson(g.X, g.N, alpha/2)
	bLo, _ := ClopperPearson(b.X, b.N, alpha/2)
	diffHi := gHi - bLo
	switch {
	case x > 0 && j.Lower > failRatio:
		j.Verdict = splitterv1.VerdictFail
		j.Message = fmt.Sprintf("green %s vs blue %s: error ratio at least %.3g (fail above %.3g)", g, b, j.Lower, failRatio)
	case x > 0 && j.Upper <= maxRatio:
		j.Verdict = splitterv1.VerdictPass
		j.Message = fmt.Sprintf("green %s vs blue %s: error ratio at most %.3g (max %.3g)", g, b, j.Upper, maxRatio)
	case diffHi <= slack:
		j.Verdict = splitterv1.VerdictPass
		j.Message = fmt.Sprintf("green %s vs blue %s: green at most %.3g%% worse (slack %.3g%%)", g, b, 100*diffHi, 100*slack)
	default:
		j.Verdict = splitterv1.VerdictInconclusive
		j.Message = fmt.Sprintf("green %s vs blue %s: error ratio between %.3g and %.3g", g, b, j.Lower, j.Upper)
	}
	return j
}

// SampleRatio checks that green's share of requests matches the weight set
// (percent): a mismatch at the strict level alpha (two-sided) means the
// data plane does not follow the weights, which is an Error.
func SampleRatio(g, b Count, weight int32, alpha float64) Judgement {
	total := g.N + b.N
	w := float64(weight) / 100
	j := Judgement{Estimate: math.NaN()}
	if total <= 0 {
		j.Verdict, j.Message = splitterv1.VerdictInconclusive, "no requests yet"
		return j
	}
	j.Estimate = g.N / total
	if w <= 0 || w >= 1 {
		j.Verdict = splitterv1.VerdictPass
		return j
	}
	z := (g.N - total*w) / math.Sqrt(total*w*(1-w))
	crit := math.Sqrt2 * math.Erfinv(1-alpha)
	j.Lower, j.Upper = w-crit*math.Sqrt(w*(1-w)/total), w+crit*math.Sqrt(w*(1-w)/total)
	if math.Abs(z) > crit {
		j.Verdict = splitterv1.VerdictError
		j.Message = fmt.Sprintf("green got %.2f%% of %.0f requests with weight %d%%: the mesh does not follow the weights", 100*j.Estimate, total, weight)
		return j
	}
	j.Verdict = splitterv1.VerdictPass
	return j
}

// IstioBuckets are Istio's default request-duration bucket boundaries (ms).
var IstioBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
