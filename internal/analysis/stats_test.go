package analysis

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"gonum.org/v1/gonum/stat/distuv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

func TestClopperPearsonHandValues(t *testing.T) {
	// With x = 0 the upper bound is 1 - alpha^(1/n) exactly.
	for _, n := range []float64{10, 100, 2995} {
		_, hi := ClopperPearson(0, n, 0.05)
		want := 1 - math.Pow(0.05, 1/n)
		if math.Abs(hi-want) > 1e-9 {
			t.Errorf("upper(0/%v) = %v, want %v", n, hi, want)
		}
	}
	// With x = n the lower bound is alpha^(1/n).
	lo, hi := ClopperPearson(20, 20, 0.05)
	if math.Abs(lo-math.Pow(0.05, 1.0/20)) > 1e-9 || hi != 1 {
		t.Errorf("bounds(20/20) = %v, %v", lo, hi)
	}
	// 5 of 100 at alpha 0.05 (one-sided): the textbook interval is about (0.0197, 0.1024).
	lo, hi = ClopperPearson(5, 100, 0.05)
	if math.Abs(lo-0.0197) > 0.0005 || math.Abs(hi-0.1024) > 0.0005 {
		t.Errorf("bounds(5/100) = %.4f, %.4f, want about 0.0197, 0.1024", lo, hi)
	}
}

func TestAbsoluteNeedsEnoughRequests(t *testing.T) {
	// Zero errors in 2,995 requests passes L = 0.1% at alpha 0.05; 2,994 does not.
	if j := Absolute(Count{N: 2995}, 0.001, 0.05); j.Verdict != splitterv1.VerdictPass {
		t.Errorf("0/2995: %s (%s), want Pass", j.Verdict, j.Message)
	}
	if j := Absolute(Count{N: 2994}, 0.001, 0.05); j.Verdict != splitterv1.VerdictInconclusive {
		t.Errorf("0/2994: %s (%s), want Inconclusive", j.Verdict, j.Message)
	}
	if got := RequestsForPass(0.001, 0.05); got != 2995 {
		t.Errorf("RequestsForPass(0.1%%, 0.05) = %v, want 2995", got)
	}
	for _, tc := range []struct {
		c    Count
		want splitterv1.Verdict
	}{
		{Count{N: 0}, splitterv1.VerdictInconclusive},
		{Count{N: 100, X: 30}, splitterv1.VerdictFail},       // 30% errors, limit 0.1%
		{Count{N: 20, X: 0}, splitterv1.VerdictInconclusive}, // passes by luck under thresholds; not here
		{Count{N: 100000, X: 20}, splitterv1.VerdictPass},    // 0.02%
	} {
		if j := Absolute(tc.c, 0.001, 0.05); j.Verdict != tc.want {
			t.Errorf("%v: %s (%s), want %s", tc.c, j.Verdict, j.Message, tc.want)
		}
	}
}

func TestRelative(t *testing.T) {
	for _, tc := range []struct {
		name string
		g, b Count
		want splitterv1.Verdict
	}{
		{"equal rates, plenty of data", Count{N: 50000, X: 100}, Count{N: 450000, X: 900}, splitterv1.VerdictPass},
		{"5x worse", Count{N: 5000, X: 50}, Count{N: 45000, X: 90}, splitterv1.VerdictFail},
		{"too little data", Count{N: 100, X: 1}, Count{N: 900, X: 2}, splitterv1.VerdictInconclusive},
		{"both near zero", Count{N: 200000, X: 0}, Count{N: 200000, X: 0}, splitterv1.VerdictPass},
		{"no green traffic", Count{}, Count{N: 1000, X: 1}, splitterv1.VerdictInconclusive},
	} {
		j := Relative(tc.g, tc.b, 1.5, 2, 1e-4, 0.05)
		if j.Verdict != tc.want {
			t.Errorf("%s: %s (%s), want %s", tc.name, j.Verdict, j.Message, tc.want)
		}
	}
	// The bounds on rho map back to the binomial bounds on green's share of errors.
	g, b := Count{N: 1000, X: 10}, Count{N: 9000, X: 30}
	j := Relative(g, b, 1.5, 2, 0, 0.05)
	theta0 := 0.1
	lo, _ := ClopperPearson(10, 40, 0.05)
	if want := lo * (1 - theta0) / (theta0 * (1 - lo)); math.Abs(j.Lower-want) > 1e-9 {
		t.Errorf("lower bound on rho %v, want %v", j.Lower, want)
	}
}

func TestSampleRatio(t *testing.T) {
	if j := SampleRatio(Count{N: 1000}, Count{N: 9000}, 10, 0.001); j.Verdict != splitterv1.VerdictPass {
		t.Errorf("10%% of 10,000 at weight 10: %s", j.Verdict)
	}
	if j := SampleRatio(Count{N: 2000}, Count{N: 8000}, 10, 0.001); j.Verdict != splitterv1.VerdictError {
		t.Errorf("20%% of 10,000 at weight 10: %s, want Error", j.Verdict)
	}
	if j := SampleRatio(Count{N: 0}, Count{N: 5000}, 25, 0.001); j.Verdict != splitterv1.VerdictError {
		t.Errorf("no green traffic at weight 25: %s, want Error", j.Verdict)
	}
}

// simRelease runs the watchdog over one simulated release: 1 s ticks, the
// weights stepping through steps (each held stepSeconds), rps requests per
// second split by weight, errors binomial. It returns the second at which
// the watchdog tripped, or -1.
func simRelease(rng *rand.Rand, cfg WatchdogConfig, rps, pBlue, pGreen float64, steps []int, stepSeconds int) int {
	var s WatchdogState
	second := 0
	for _, w := range steps {
		for range stepSeconds {
			ng := float64(poisson(rng, rps*float64(w)/100))
			nb := float64(poisson(rng, rps*float64(100-w)/100))
			g := Count{N: ng, X: float64(binomial(rng, int(ng), pGreen))}
			b := Count{N: nb, X: float64(binomial(rng, int(nb), pBlue))}
			var trip Trip
			s, trip = cfg.Update(s, g, b)
			if trip.Tripped {
				return second
			}
			second++
		}
	}
	return -1
}

func poisson(rng *rand.Rand, mean float64) int {
	return int(distuv.Poisson{Lambda: mean, Src: rngSource{rng}}.Rand())
}

func binomial(rng *rand.Rand, n int, p float64) int {
	if n == 0 || p == 0 {
		return 0
	}
	return int(distuv.Binomial{N: float64(n), P: p, Src: rngSource{rng}}.Rand())
}

// rngSource adapts math/rand/v2 to gonum's rand.Source.
type rngSource struct{ r *rand.Rand }

func (s rngSource) Uint64() uint64 { return s.r.Uint64() }

var testWatchdog = WatchdogConfig{Alpha: 0.01, BurnAlpha: 0.001, Budget: 0.005, GrossMin: 20}

// Green equal to blue (0.2% errors, 100 req/s, weights 5 to 100): the
// watchdog's false rollbacks stay under its alpha (1%).
func TestWatchdogFalseRollbackRate(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const releases = 2000
	false_ := 0
	for range releases {
		if simRelease(rng, testWatchdog, 100, 0.002, 0.002, []int{5, 10, 25, 50, 100}, 60) >= 0 {
			false_++
		}
	}
	rate := float64(false_) / releases
	t.Logf("false rollbacks: %d of %d (%.2f%%)", false_, releases, 100*rate)
	if rate > testWatchdog.Alpha {
		t.Errorf("false rollback rate %.2f%% above alpha %.0f%%", 100*rate, 100*testWatchdog.Alpha)
	}
}

// A 5x regression (0.2% -> 1%) at 10% weight and 100 req/s is caught with
// a median under 90 s.
func TestWatchdogCatchesRegression(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var times []int
	for range 400 {
		at := simRelease(rng, testWatchdog, 100, 0.002, 0.01, []int{10}, 600)
		if at < 0 {
			at = 600
		}
		times = append(times, at)
	}
	sort.Ints(times)
	median := times[len(times)/2]
	t.Logf("5x regression caught after %d s median, %d s at the 90th percentile", median, times[len(times)*9/10])
	if median >= 90 {
		t.Errorf("median detection %d s, want under 90 s", median)
	}
	// A gross fault (30% errors) trips within seconds.
	at := simRelease(rng, testWatchdog, 100, 0.002, 0.3, []int{10}, 60)
	if at < 0 || at > 10 {
		t.Errorf("30%% errors caught after %d s, want within 10 s", at)
	}
}

func TestWatchdogAllErrorsGuard(t *testing.T) {
	_, trip := testWatchdog.Update(WatchdogState{}, Count{N: 25, X: 25}, Count{N: 100})
	if !trip.Tripped || trip.Reason != "AllErrors" {
		t.Errorf("25/25 errors: %+v, want AllErrors", trip)
	}
	// Blue failing as badly keeps the relative test quiet, and no budget
	// turns the fast burn off: only the guard could trip, and 5 is too few.
	guardOnly := WatchdogConfig{Alpha: 0.01, GrossMin: 20}
	_, trip = guardOnly.Update(WatchdogState{}, Count{N: 5, X: 5}, Count{N: 100, X: 100})
	if trip.Tripped {
		t.Errorf("5/5 errors tripped %+v; the guard needs 20 requests", trip)
	}
}

// BenchmarkWatchdogDetection reports the simulated time to catch a 5x
// regression (0.2% -> 1%) at 100 req/s, by weight: 1,000 runs each,
// 1 s ticks, fixed seed. The test bed benchmark measures the same on real
// Prometheus with 5 runs, too few for a stable median.
func BenchmarkWatchdogDetection(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, w := range []int{10, 20, 50} {
		var times []int
		for range 1000 {
			at := simRelease(rng, testWatchdog, 100, 0.002, 0.01, []int{w}, 600)
			if at < 0 {
				at = 600
			}
			times = append(times, at)
		}
		sort.Ints(times)
		b.ReportMetric(float64(times[500]), fmt.Sprintf("5x-at-%d%%-median-s", w))
		b.ReportMetric(float64(times[900]), fmt.Sprintf("5x-at-%d%%-p90-s", w))
	}
}
