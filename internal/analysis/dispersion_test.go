package analysis

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The pair statistic's mean is the clump size: 1 for independent bad
// requests, k for clumps of k, whatever the rate and the chunks' sizes.
func TestPairPearsonMeasuresClumps(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, k := range []float64{1, 3, 5} {
		sum, pairs := 0.0, 0
		for range 20000 {
			n1, n2 := 1500+poisson(rng, 500), 1500+poisson(rng, 500)
			rate := 0.002 * (1 + rng.Float64()) // differs pair to pair
			prev := Count{N: n1, X: k * poisson(rng, n1*rate/k)}
			cur := Count{N: n2, X: k * poisson(rng, n2*rate/k)}
			if x, ok := pairPearson(prev, cur); ok {
				sum += x
				pairs++
			}
		}
		mean := sum / float64(pairs)
		t.Logf("clumps of %g: mean pair statistic %.2f over %d pairs", k, mean, pairs)
		if mean < 0.85*k || mean > 1.1*k {
			t.Errorf("clumps of %g: mean pair statistic %.2f, want about %g", k, mean, k)
		}
	}
}

// Issue 18, finding 4: with bad requests in clumps (a failure retried and
// counted three or five times), a candidate as good as the live color is
// rolled back by the relative watchdog about as often as its share of
// alpha (0.6%) at most: after two minutes of blue alone (the candidate's
// pods starting), for an hour at a step's 20% or a standby's 90% against
// a 10% control. Without the dispersion (and without the two minutes),
// 16 and 106 of 200 tripped at 20%, 16 and 91 at 90%. With it but from
// the first second, no pair measured yet, clumps of 5 tripped 42 of 2,000
// at 20%: the first minutes are protected less.
func TestWatchdogUnderClumps(t *testing.T) {
	for _, tc := range []struct {
		weight int32
		clump  int
	}{{20, 3}, {20, 5}, {90, 3}, {90, 5}} {
		rng := rand.New(rand.NewPCG(uint64(tc.weight), uint64(tc.clump)))
		const runs = 200
		trips := 0
		for range runs {
			if at, _ := watchFrom(Begin(time.Unix(0, 0)), rng, twoSLOs, tc.weight, 100, func(int) map[string]float64 { return rates(0.001, 0.003) },
				rates(0.001, 0.003), 3720, 15, nil, tc.clump, 120); at >= 0 {
				trips++
			}
		}
		t.Logf("green = blue at %d%%, clumps of %d, 1 h: %d of %d tripped", tc.weight, tc.clump, trips, runs)
		if trips > 3 { // 0.6% of 200 is 1.2; 4 would be surely above it
			t.Errorf("green = blue at %d%%, clumps of %d: %d of %d tripped", tc.weight, tc.clump, trips, runs)
		}
	}
}
