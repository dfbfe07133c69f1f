package analysis

import (
	"fmt"
	"math"
	"sync"

	"gonum.org/v1/gonum/stat/distuv"
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

// Add sums two counts.
func (c Count) Add(d Count) Count { return Count{N: c.N + d.N, X: c.X + d.X} }

func (c Count) String() string { return fmt.Sprintf("%.0f/%.0f", c.X, c.N) }

// ClopperPearson is the exact (conservative) one-sided bounds on a
// binomial proportion: P(p < lower) <= alpha and P(p > upper) <= alpha.
func ClopperPearson(x, n, alpha float64) (lower, upper float64) {
	if n <= 0 {
		return 0, 1
	}
	x = math.Max(0, math.Min(x, n))
	lower = 0
	if x > 0 {
		lower = distuv.Beta{Alpha: x, Beta: n - x + 1}.Quantile(alpha)
	}
	return lower, clopperPearsonUpper(x, n, alpha)
}

// clopperPearsonUpper is ClopperPearson's upper bound alone (x in [0, n],
// n > 0), remembered: the watchdog asks for the same reference's bound at
// every look between two checkpoints, and the incomplete beta function is
// most of a look's cost.
func clopperPearsonUpper(x, n, alpha float64) float64 {
	if x >= n {
		return 1
	}
	k := cpKey{x, n, alpha}
	cpMu.Lock()
	u, ok := cpMemo[k]
	cpMu.Unlock()
	if ok {
		return u
	}
	u = distuv.Beta{Alpha: x + 1, Beta: n - x}.Quantile(1 - alpha)
	cpMu.Lock()
	if len(cpMemo) >= 4096 {
		clear(cpMemo) // bounded: a long-running controller's references differ
	}
	cpMemo[k] = u
	cpMu.Unlock()
	return u
}

type cpKey struct{ x, n, alpha float64 }

var (
	cpMu   sync.Mutex
	cpMemo = map[cpKey]float64{}
)

// z is the standard normal quantile.
func z(p float64) float64 { return math.Sqrt2 * math.Erfinv(2*p-1) }

// Wilson is the one-sided Wilson score bounds on a proportion at level
// alpha each side.
func Wilson(x, n, alpha float64) (lower, upper float64) {
	if n <= 0 {
		return 0, 1
	}
	k := z(1 - alpha)
	p := x / n
	den := 1 + k*k/n
	mid := (p + k*k/(2*n)) / den
	half := k / den * math.Sqrt(p*(1-p)/n+k*k/(4*n*n))
	return math.Max(0, mid-half), math.Min(1, mid+half)
}

// DiffUpper is Newcombe's hybrid score upper bound (his method 10) on
// p_g - p_b at one-sided level alpha: near nominal coverage even with a
// handful of errors, where the Wald bound is far too narrow and the
// Clopper-Pearson difference far too wide. It decides passes only; a pass
// that is wrong by bad luck is still watched by the watchdog.
func DiffUpper(g, b Count, alpha float64) float64 {
	if g.N <= 0 || b.N <= 0 {
		return math.Inf(1)
	}
	_, ug := Wilson(g.X, g.N, alpha)
	lb, _ := Wilson(b.X, b.N, alpha)
	pg, pb := g.Rate(), b.Rate()
	return pg - pb + math.Sqrt((ug-pg)*(ug-pg)+(pb-lb)*(pb-lb))
}

// thetaOf is green's share of errors if green's error rate is rho times
// blue's, given green's share theta0 of the requests.
func thetaOf(rho, share float64) float64 { return rho * share / (rho*share + 1 - share) }

// rhoOf inverts thetaOf.
func rhoOf(theta, share float64) float64 {
	if theta >= 1 {
		return math.Inf(1)
	}
	if theta <= 0 {
		return 0
	}
	return theta * (1 - share) / (share * (1 - theta))
}

// RatioBounds bounds rho, green's bad rate over blue's, by the exact test
// conditional on the total bad requests: each is green's with probability
// theta(rho) = rho s / (rho s + 1 - s), s green's share of the requests,
// so blue's own rate cancels out. Each bound holds at level alpha. With no
// bad requests at all, nothing is known: (0, +Inf).
func RatioBounds(g, b Count, alpha float64) (lower, upper float64) {
	if g.N <= 0 || b.N <= 0 {
		return 0, math.Inf(1)
	}
	share := g.N / (g.N + b.N)
	lo, hi := ClopperPearson(g.X, g.X+b.X, alpha)
	return rhoOf(lo, share), rhoOf(hi, share)
}

// ShareSlack is how far, relative to the smaller of the two weights,
// green's share may stray from its weight before the mesh is said not to
// follow the weights. Counting loses a little at pod churn (a new pod's
// series counts from its first scrape), so an exact share cannot be the
// null; a mesh that ignores the weights is off by far more.
const ShareSlack = 0.25

// ShareTest is the traffic-share test: does green's share of the requests
// lie within ShareSlack of the weight (percent)? mismatch when it surely
// does not (one-sided z test at alpha against the nearer edge of the
// band); tolerance is how far from the weight the share may be.
func ShareTest(g, b Count, weight int32, alpha float64) (mismatch bool, share, tolerance float64) {
	total := g.N + b.N
	w := float64(weight) / 100
	if total <= 0 {
		return false, math.NaN(), math.Inf(1)
	}
	share = g.N / total
	if w <= 0 || w >= 1 {
		return share != w, share, 0
	}
	band := ShareSlack * math.Min(w, 1-w)
	edge := w + band
	if share < w {
		edge = w - band
	}
	sd := math.Sqrt(edge * (1 - edge) / total)
	tolerance = band + z(1-alpha)*sd
	return math.Abs(share-w) > tolerance, share, tolerance
}

// IstioBuckets are Istio's default request-duration bucket boundaries (ms).
var IstioBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
