package backtest

import (
	"fmt"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Window names what was replayed: both reports start with it (its
// fields are the JSON's first, flat).
type Window struct {
	Policy    string    `json:"policy"`
	Namespace string    `json:"namespace"`
	Workload  string    `json:"workload"`
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	// ScrapeInterval is the recording's (and the replay's watchdog's).
	ScrapeInterval string `json:"scrapeInterval"`
	Seed           uint64 `json:"seed"`
}

func windowOf(rec *Recording, opt Options) Window {
	return Window{Policy: opt.Policy, Namespace: rec.Namespace, Workload: rec.Workload, From: rec.From, To: rec.To,
		ScrapeInterval: rec.Scrape.String(), Seed: opt.Seed}
}

// Report is what a policy would have done over a recorded release.
type Report struct {
	Window
	// Live and Candidate are the recorded Deployments: the replay's
	// engine runs the live one as blue and the candidate as green.
	Live      string `json:"live"`
	Candidate string `json:"candidate"`
	// CandidateFirst and CandidateLast are when the recorded candidate
	// had traffic: the recorded release. The replay's release begins a
	// scrape before CandidateFirst and its times are counted from it.
	CandidateFirst time.Time `json:"candidateFirst"`
	CandidateLast  time.Time `json:"candidateLast"`
	// RecordedWeights says where the recorded weights come from.
	RecordedWeights string `json:"recordedWeights"`
	Assumption      string `json:"assumption"`
	// Outcome is rolledback, promoted, paused or undecided.
	Outcome string `json:"outcome"`
	// Decided is the decision that ended the release (rollback or
	// promotion), if one did.
	Decided   *Decision  `json:"decided,omitempty"`
	Decisions []Decision `json:"decisions"`
	// Evidence is, per step, the share of the recorded requests the
	// replay kept (1: all of them; less where the policy sent the
	// candidate more than the recording did).
	Evidence []StepEvidence `json:"evidence,omitempty"`
	Notes    []string       `json:"notes,omitempty"`
	// Timeline is the recording over the window (pooled to at most a few
	// hundred points) with the policy's weight: the chart's data.
	Timeline []Point `json:"timeline"`
}

// Decision is one transition of the replayed release.
type Decision struct {
	At time.Time `json:"at"`
	// After is At counted from the recorded candidate's first traffic.
	After   Offset           `json:"after"`
	Phase   splitterv1.Phase `json:"phase"`
	Step    int32            `json:"step"`
	Weight  int32            `json:"weight"`
	Reason  string           `json:"reason"`
	Message string           `json:"message"`
	Checks  []Check          `json:"checks,omitempty"`
	// Counts are the step's requests and bad requests per SLO and color
	// (the Deployment's name) at its last checkpoint.
	Counts []Count `json:"counts,omitempty"`
}

// Count is one color's requests for one SLO.
type Count struct {
	SLO        string `json:"slo"`
	Deployment string `json:"deployment"`
	Requests   int64  `json:"requests"`
	Bad        int64  `json:"bad"`
}

// Check is one check's verdict at a decision.
type Check struct {
	Name    string             `json:"name"`
	Verdict splitterv1.Verdict `json:"verdict"`
	Value   string             `json:"value,omitempty"`
	Bound   string             `json:"bound,omitempty"`
	// Message holds the counts behind a count-based verdict.
	Message string `json:"message,omitempty"`
	Step    int32  `json:"step,omitempty"`
}

// StepEvidence is the share of the recording a step's replay kept.
type StepEvidence struct {
	Weight int32   `json:"weight"`
	Kept   float64 `json:"kept"`
}

// Point is the recording around one instant: what each color received and
// how much of it was bad per SLO, over the stretch ending At, and the
// weights.
type Point struct {
	At time.Time `json:"at"`
	// Seconds is the stretch's length.
	Seconds float64 `json:"seconds"`
	// Requests per color (blue = Live, green = Candidate; baseline: blue
	// is the workload).
	Requests map[splitterv1.Color]float64 `json:"requests"`
	// Bad per SLO and color.
	Bad map[string]map[splitterv1.Color]float64 `json:"bad"`
	// PolicyWeight is green's weight under the policy; RecordedWeight the
	// recorded candidate's (from splitter_split_weight, or its share of
	// the requests).
	PolicyWeight   float64 `json:"policyWeight"`
	RecordedWeight float64 `json:"recordedWeight"`
}

// Offset is a duration from the release's start, printed hh:mm:ss.
type Offset time.Duration

func (o Offset) String() string {
	d := time.Duration(o).Round(time.Second)
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	h := int(d / time.Hour)
	m := int(d % time.Hour / time.Minute)
	s := int(d % time.Minute / time.Second)
	return fmt.Sprintf("%s%02d:%02d:%02d", sign, h, m, s)
}

func (o Offset) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText reads [-]hh:mm:ss.
func (o *Offset) UnmarshalText(b []byte) error {
	s := string(b)
	sign := time.Duration(1)
	if len(s) > 0 && s[0] == '-' {
		sign, s = -1, s[1:]
	}
	var h, m, sec int
	if _, err := fmt.Sscanf(s, "%d:%d:%d", &h, &m, &sec); err != nil {
		return fmt.Errorf("offset %q: want hh:mm:ss", b)
	}
	*o = Offset(sign * (time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec)*time.Second))
	return nil
}

// BaselineReport is a policy's false-rollback rate over a window with no
// release: many replayed releases between two identical colors.
type BaselineReport struct {
	Window
	Assumption string `json:"assumption"`
	// Releases started Every apart; Length is their mean course (to the
	// end of standby, the rollback, or the end of the drive).
	Releases int    `json:"releases"`
	Every    string `json:"every"`
	Length   string `json:"length"`
	// Incidents are the rollbacks on the SLO itself (the watchdog's
	// AbsoluteRegression): the service breached it, both colors alike, as
	// any release would have been rolled back then.
	Incidents int `json:"incidents"`
	// Disjoint is how many releases of Length fit in the window without
	// overlapping: overlapping releases share traffic, so their outcomes
	// are not independent.
	Disjoint   int            `json:"disjoint"`
	Promoted   int            `json:"promoted"`
	Paused     int            `json:"paused"`
	RolledBack int            `json:"rolledBack"`
	Unfinished int            `json:"unfinished"`
	Reasons    map[string]int `json:"reasons,omitempty"`
	// FalseRollbacks is the rolled-back share of the finished releases,
	// with a 95% Wilson interval counted over the Disjoint releases (the
	// honest sample size).
	FalseRollbacks Share `json:"falseRollbacks"`
	PausedShare    Share `json:"pausedShare"`
	// PromotionSeconds are quantiles of the time from release to promotion.
	PromotionSeconds *Quantiles `json:"promotionSeconds,omitempty"`
	// Traffic is what the workload received over the window: what to give
	// `policy simulate` to compare.
	Traffic  Traffic  `json:"traffic"`
	Simulate string   `json:"simulate"`
	Notes    []string `json:"notes,omitempty"`
}

// Share is a share with a 95% interval.
type Share struct {
	Share float64 `json:"share"`
	Low   float64 `json:"low"`
	High  float64 `json:"high"`
}

// Quantiles of a distribution.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// Traffic is a workload's measured traffic.
type Traffic struct {
	RPS float64 `json:"rps"`
	// BadRate per SLO.
	BadRate map[string]float64 `json:"badRate"`
}
