package analysis

import (
	"fmt"
	"math"
)

// WatchdogRatios are the alternatives of the relative watchdog's mixture:
// green's error rate 1.5, 2, 3, 5 or 10 times blue's, equally weighted.
var WatchdogRatios = []float64{1.5, 2, 3, 5, 10}

// WatchdogState is everything the watchdog remembers: a few numbers that
// live in the Split's status and survive restarts.
type WatchdogState struct {
	// LogLR is the relative test's log likelihood ratio per ratio in
	// WatchdogRatios, accumulated tick by tick.
	LogLR []float64
	// Burn is the fast-burn SPRT's log likelihood ratio.
	Burn float64
}

// WatchdogConfig is the watchdog's policy.
type WatchdogConfig struct {
	// Alpha bounds the relative test's false-rollback probability over the
	// whole release, however often it is evaluated (Ville's inequality).
	Alpha float64
	// BurnAlpha is the fast-burn SPRT's level.
	BurnAlpha float64
	// Budget is the SLO's error budget 1 - objective; the fast burn tests
	// a rate of 1x budget against 14.4x budget (a page-level burn).
	Budget float64
	// GrossMin is how many requests with nothing but errors in one tick
	// snap back without any statistics.
	GrossMin float64
}

// BurnFactor is the SRE Workbook's page-level burn rate: 2% of a 30-day
// budget in an hour.
const BurnFactor = 14.4

// Trip is the watchdog's decision after a tick.
type Trip struct {
	Tripped bool
	Reason  string // RelativeRegression, FastBurn or AllErrors
	Message string
}

// Update folds one tick's counts (increments since the last tick) into the
// state and says whether to snap back. It is pure: the caller persists the
// returned state.
func (cfg WatchdogConfig) Update(s WatchdogState, g, b Count) (WatchdogState, Trip) {
	if len(s.LogLR) != len(WatchdogRatios) {
		s.LogLR = make([]float64, len(WatchdogRatios))
	} else {
		s.LogLR = append([]float64(nil), s.LogLR...)
	}
	// W3: no statistics needed for a green that only fails.
	if g.N >= cfg.GrossMin && g.X >= g.N {
		return s, Trip{Tripped: true, Reason: "AllErrors", Message: fmt.Sprintf("all %.0f requests to green failed in one tick", g.N)}
	}
	// W1: relative, conditional on this tick's errors.
	if g.N > 0 && b.N > 0 && g.X+b.X > 0 {
		theta0 := g.N / (g.N + b.N)
		for i, rho := range WatchdogRatios {
			th := thetaOf(rho, theta0)
			s.LogLR[i] += g.X*math.Log(th/theta0) + b.X*math.Log((1-th)/(1-theta0))
		}
	}
	if m := mixture(s.LogLR); m >= math.Log(1/cfg.Alpha) {
		return s, Trip{Tripped: true, Reason: "RelativeRegression", Message: fmt.Sprintf(
			"green's errors are a multiple of blue's: likelihood ratio %.3g reached %.3g (alpha %.3g)", math.Exp(m), 1/cfg.Alpha, cfg.Alpha)}
	}
	// W2: absolute fast burn on green alone. The statistic is floored at
	// ln(BurnAlpha) so a long healthy stretch cannot hide a later burn.
	if cfg.Budget > 0 && g.N > 0 {
		p0, p1 := cfg.Budget, math.Min(BurnFactor*cfg.Budget, 0.999)
		s.Burn += g.X*math.Log(p1/p0) + (g.N-g.X)*math.Log((1-p1)/(1-p0))
		s.Burn = math.Max(s.Burn, math.Log(cfg.BurnAlpha))
		if s.Burn >= math.Log(1/cfg.BurnAlpha) {
			return s, Trip{Tripped: true, Reason: "FastBurn", Message: fmt.Sprintf(
				"green burns its error budget at %.3gx or more (SPRT at alpha %.3g)", BurnFactor, cfg.BurnAlpha)}
		}
	}
	return s, Trip{}
}

// Mixture is the relative test's evidence: the mean likelihood ratio over
// WatchdogRatios, as a log.
func (s WatchdogState) Mixture() float64 { return mixture(s.LogLR) }

func mixture(logLR []float64) float64 {
	if len(logLR) == 0 {
		return 0
	}
	m := math.Inf(-1)
	for _, l := range logLR {
		m = math.Max(m, l)
	}
	sum := 0.0
	for _, l := range logLR {
		sum += math.Exp(l - m)
	}
	return m + math.Log(sum/float64(len(logLR)))
}
