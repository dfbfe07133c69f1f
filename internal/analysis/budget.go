package analysis

import (
	"math"
	"time"
)

// SLO is a compiled objective.
type SLO struct {
	Name      string  // availability or latency
	Objective float64 // e.g. 0.999
	// ThresholdMs is the latency bucket boundary above which a request is bad.
	ThresholdMs float64
	// GRPCErrorCodes make a request bad for availability.
	GRPCErrorCodes []int32
}

// Budget is the share of bad requests the objective allows.
func (s SLO) Budget() float64 { return 1 - s.Objective }

// Policy is what the count-based checks need of a SplitPolicy.
type Policy struct {
	SLOs []SLO
	// Alpha is the release's false-rollback budget (see Budget).
	Alpha float64
	// MaxRatio: the candidate's bad rate up to this multiple of the live
	// color's is acceptable (the null hypothesis every rollback tests).
	MaxRatio float64
	// FailRatio: a step gate fails when the ratio is surely above it.
	FailRatio float64
	// Margin, a share of the error budget: a step passes when green surely
	// spends at most Margin x budget more than blue.
	Margin float64
	// Looks is how many times a release's gates can judge: steps x (1 +
	// maxExtensions). Bonferroni divides the gates' share by it.
	Looks int
	// WatchdogOn runs the watchdog.
	WatchdogOn bool
}

// PassAlpha is the one-sided level of a step's Pass: a step passes when
// the candidate is within the margin (or maxRatio) with 95% confidence. A
// wrong Pass is not a rollback: the watchdog still watches every later
// step and the standby.
const PassAlpha = 0.05

// The release's false-rollback budget alpha is split here and nowhere
// else. Each share bounds one way a release whose candidate is no worse
// than the live color (ratio at most maxRatio) can be rolled back; the
// union bound adds them up to alpha, for the whole release including a
// standby of any length.
const (
	// ShareWatchdog: the relative watchdog. The per-SLO mixtures of
	// likelihood ratios (null: ratio = maxRatio, which by monotonicity
	// covers every ratio below it) are averaged over SLOs; an average of
	// test supermartingales is one, so Ville's inequality bounds the
	// chance it ever reaches 1/(share x alpha), however often it looks.
	ShareWatchdog = 0.6
	// ShareReference: once the candidate has all the traffic there is no
	// blue to compare with; the live color's rate earlier in the release
	// stands in. Its Clopper-Pearson upper bound (Bonferroni over SLOs)
	// is wrong with at most this chance.
	ShareReference = 0.05
	// ShareAbsolute: the absolute watchdog at 100% and during standby,
	// the candidate alone against maxRatio x that upper bound (or the
	// bound plus the margin): a mixture SPRT averaged over SLOs, Ville.
	ShareAbsolute = 0.1
	// ShareGates: the step gates' Fail (the relative test's lower bound
	// above failRatio), Bonferroni over every SLO of every look.
	ShareGates = 0.25
)

// ShareTraffic is the traffic-share test's level, Bonferroni over every
// look. It is not part of the budget: a mismatch makes the step wait
// (and pause), it never rolls back.
const ShareTraffic = 0.05

// WatchdogAlpha is the relative watchdog's level.
func (p Policy) WatchdogAlpha() float64 { return ShareWatchdog * p.Alpha }

// ReferenceAlpha is the level of each SLO's reference upper bound.
func (p Policy) ReferenceAlpha() float64 {
	return ShareReference * p.Alpha / float64(max(1, len(p.SLOs)))
}

// AbsoluteAlpha is the absolute watchdog's level.
func (p Policy) AbsoluteAlpha() float64 { return ShareAbsolute * p.Alpha }

// GateFailAlpha is the level of one SLO's Fail test at one look.
func (p Policy) GateFailAlpha() float64 {
	return ShareGates * p.Alpha / float64(max(1, p.Looks)*max(1, len(p.SLOs)))
}

// TrafficAlpha is the level of the traffic-share test at one look.
func (p Policy) TrafficAlpha() float64 { return ShareTraffic * p.Alpha / float64(max(1, p.Looks)) }

// BudgetRow documents one share of the budget.
type BudgetRow struct {
	Component string
	Share     float64
	Bound     string
}

// BudgetTable is the split, for the README and `policy lint`.
var BudgetTable = []BudgetRow{
	{"watchdog, relative (every look, every step)", ShareWatchdog, "Ville's inequality: averaged mixture likelihood ratio, null ratio = maxRatio"},
	{"reference rate for 100% and standby", ShareReference, "Clopper-Pearson upper bound, Bonferroni over SLOs"},
	{"watchdog, absolute (100% and standby)", ShareAbsolute, "Ville's inequality: averaged mixture SPRT, null rate = the reference bound"},
	{"step gates' Fail", ShareGates, "Bonferroni over SLOs x steps x (1 + maxExtensions); each Fail is confirmed on fresh evidence before it rolls back"},
}

// Timing is what the controller knows about its Prometheus.
type Timing struct {
	// Scrape is Prometheus' scrape interval: a sample describes the
	// traffic up to its scrape, and a reading returns the last sample.
	Scrape time.Duration
	// NoGross turns the gross check off (see Evidence.Gross): for a
	// Prometheus whose sample timestamps do not say when the proxies'
	// counts were read.
	NoGross bool
}

// Settle is how long after the router reports new weights every reading
// surely describes traffic under them: one scrape for the sample to be
// taken after the change, one more for propagation to the proxies and
// ingestion (the reference's "initial delay of two scrape intervals").
func (t Timing) Settle() time.Duration { return 2 * t.scrape() }

func (t Timing) scrape() time.Duration {
	if t.Scrape <= 0 {
		return 15 * time.Second
	}
	return t.Scrape
}

// RequestsToPass is about how many candidate requests a step needs to pass
// with probability 0.9 when green and blue both have bad rate p and blue
// has (1-w)/w times green's requests: the margin test's sample size,
// (z_a + z_0.9)^2 p (1 - p) (1 + w/(1-w)) / d^2, and never fewer than a
// clean run needs (the Wilson bound at zero errors, z_a^2 / d).
func (p Policy) RequestsToPass(s SLO, rate float64, weight int32) float64 {
	d := p.Margin * s.Budget()
	if d <= 0 {
		return math.Inf(1)
	}
	w := float64(weight) / 100
	ratio := 1.0
	if w < 1 {
		ratio = 1 + w/(1-w)
	}
	za, zb := z(1-PassAlpha), z(0.9)
	n := (za + zb) * (za + zb) * rate * (1 - rate) * ratio / (d * d)
	return math.Ceil(math.Max(n, za*za/d))
}
