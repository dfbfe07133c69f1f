package analysis

import (
	"math"
	"testing"

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

func TestWilsonHandValues(t *testing.T) {
	// 0 of n: the upper bound is z^2/(n + z^2).
	_, hi := Wilson(0, 1000, 0.05)
	k := 1.6448536269514722
	if want := k * k / (1000 + k*k); math.Abs(hi-want) > 1e-12 {
		t.Errorf("Wilson upper(0/1000) = %v, want %v", hi, want)
	}
	// 10 of 100, one-sided 95% (z = 1.645): centre (0.1 + z^2/200)/(1 +
	// z^2/100) = 0.1105, half-width 0.0498 by hand: (0.0607, 0.1604).
	lo, hi := Wilson(10, 100, 0.05)
	if math.Abs(lo-0.0607) > 0.0005 || math.Abs(hi-0.1604) > 0.0005 {
		t.Errorf("Wilson(10/100) = %.4f, %.4f", lo, hi)
	}
}

func TestDiffUpper(t *testing.T) {
	// Equal rates: the bound shrinks with n and stays above the true 0.
	prev := math.Inf(1)
	for _, n := range []float64{1000, 10000, 100000} {
		u := DiffUpper(Count{N: n, X: n / 1000}, Count{N: 9 * n, X: 9 * n / 1000}, 0.05)
		if u <= 0 || u >= prev {
			t.Errorf("n=%v: DiffUpper %v (previous %v): want positive and shrinking", n, u, prev)
		}
		prev = u
	}
	if u := DiffUpper(Count{}, Count{N: 10}, 0.05); !math.IsInf(u, 1) {
		t.Errorf("no green requests: %v, want +Inf", u)
	}
}

// Finding 10: blue with no bad request and green with some used to give a
// NaN ratio that passed. Now the ratio is unknown (upper bound +Inf) and
// only the margin can pass the step.
func TestRatioWithBlueClean(t *testing.T) {
	g, b := Count{N: 1000, X: 5}, Count{N: 9000}
	lo, hi := RatioBounds(g, b, 0.05)
	if !math.IsInf(hi, 1) || !(lo > 0) {
		t.Errorf("RatioBounds(5/1000, 0/9000) = %v, %v: want a positive lower bound and no upper bound", lo, hi)
	}
	p := Policy{SLOs: []SLO{{Name: "availability", Objective: 0.999}}, Alpha: 0.01, MaxRatio: 1.5, FailRatio: 2, Margin: 0.5, Looks: 6}
	rs := p.Gate(map[string]Count{"availability": g}, map[string]Count{"availability": b}, nil, 10, "green", "blue")
	if rs[0].Verdict == splitterv1.VerdictPass {
		t.Errorf("green 5/1000 vs blue 0/9000 under a 99.9%% objective passed: %s", rs[0].Message)
	}
}

func TestRatioBoundsCoverTheTruth(t *testing.T) {
	// The bounds on rho map back to the binomial bounds on green's share of errors.
	g, b := Count{N: 1000, X: 10}, Count{N: 9000, X: 30}
	lo, hi := RatioBounds(g, b, 0.05)
	if !(lo < 3 && hi > 3) {
		t.Errorf("ratio 3 (10/1000 vs 30/9000) outside (%v, %v)", lo, hi)
	}
	thLo, _ := ClopperPearson(10, 40, 0.05)
	if want := rhoOf(thLo, 0.1); math.Abs(lo-want) > 1e-12 {
		t.Errorf("lower %v, want %v", lo, want)
	}
}

func TestShareTest(t *testing.T) {
	for _, tc := range []struct {
		name     string
		g, b     float64
		weight   int32
		mismatch bool
	}{
		{"exact", 1000, 9000, 10, false},
		{"within the slack (pod churn loses a few)", 1080, 8920, 10, false},
		{"twice the weight", 2000, 8000, 10, true},
		{"nothing to green", 0, 5000, 25, true},
		{"few requests, far off but not surely", 3, 7, 10, false},
		{"finding 9: 5->10% at 15 s scrapes, 1,000 req/s, pure chunks", 11900, 107000, 10, false},
	} {
		m, _, _ := ShareTest(Count{N: tc.g}, Count{N: tc.b}, tc.weight, 1e-4)
		if m != tc.mismatch {
			t.Errorf("%s: mismatch %v, want %v", tc.name, m, tc.mismatch)
		}
	}
}

// Finding 5: the gates' Bonferroni split counts every Fail test of every
// look, and the shares add up to the whole budget.
func TestBudgetSplit(t *testing.T) {
	sum := 0.0
	for _, r := range BudgetTable {
		sum += r.Share
	}
	if math.Abs(sum-1) > 1e-12 {
		t.Errorf("budget shares sum to %v, want 1", sum)
	}
	p := Policy{SLOs: []SLO{{Name: "availability"}, {Name: "latency"}}, Alpha: 0.01, Looks: 9}
	if got, want := p.GateFailAlpha(), ShareGates*0.01/(9*2); math.Abs(got-want) > 1e-15 {
		t.Errorf("GateFailAlpha = %v, want %v (gates' share over looks x SLOs)", got, want)
	}
	if got, want := p.TrafficAlpha(), ShareTraffic*0.01/9; math.Abs(got-want) > 1e-15 {
		t.Errorf("TrafficAlpha = %v, want %v", got, want)
	}
	// Worst case over a release: every test at its level, the watchdog and
	// the reference at theirs: the union bound is alpha. (The traffic
	// share never rolls back.)
	total := p.WatchdogAlpha() + p.AbsoluteAlpha() + p.ReferenceAlpha()*2 + p.GateFailAlpha()*9*2
	if math.Abs(total-0.01) > 1e-12 {
		t.Errorf("union bound %v, want the budget 0.01", total)
	}
}

func TestRequestsToPassGrowsWithRareErrors(t *testing.T) {
	p := Policy{Margin: 0.5}
	s := SLO{Objective: 0.995}
	at10 := p.RequestsToPass(s, 0.001, 10)
	at50 := p.RequestsToPass(s, 0.001, 50)
	if !(at10 > 1000 && at10 < at50) {
		t.Errorf("RequestsToPass 10%%: %v, 50%%: %v; want over 1,000 and fewer at 10%% (more blue to compare with)", at10, at50)
	}
	if zero := p.RequestsToPass(s, 0, 10); zero < 1000 {
		t.Errorf("a clean run still needs z^2/d requests: got %v", zero)
	}
}
