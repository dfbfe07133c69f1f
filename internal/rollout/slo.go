package rollout

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
)

// The engine asks internal/analysis for every count-based verdict: the
// statistics, their bounds and the false-rollback budget live there. This
// file only says when to look and what the release looks like.

// Counters are a release's counter series as Prometheus last scraped them.
type Counters = []splitterv1.SeriesReading

// Watched says whether a release's counters are read in its phase, and
// which color the evidence judges (green) against which (blue): the
// candidate against the live color while preparing, during steps and
// pauses, the new live color against the standby after promotion.
func Watched(s splitterv1.SplitStatus) (green, blue splitterv1.Color, ok bool) {
	switch s.Phase {
	case splitterv1.PhasePreparing, splitterv1.PhaseShifting, splitterv1.PhaseAwaitingApproval:
		return s.Candidate, s.Live, s.Candidate != ""
	case splitterv1.PhasePromoting:
		return s.Live, s.Standby, s.Standby != ""
	}
	return "", "", false
}

// ColorRevision is the revision a color runs in this release, by status.
func ColorRevision(s splitterv1.SplitStatus, c splitterv1.Color) string {
	switch c {
	case s.Candidate:
		return s.CandidateRevision
	case s.Live:
		return s.LiveRevision
	case s.Standby:
		return s.StandbyRevision
	}
	return ""
}

// stage is where the release stands for the evidence.
func stage(p *policy.Plan, s splitterv1.SplitStatus) analysis.Stage {
	green, blue, _ := Watched(s)
	w := s.Weight
	if s.Phase == splitterv1.PhasePromoting {
		w = 100 - p.StandbyWeight
	}
	return analysis.Stage{Green: green, Blue: blue, Weight: w}
}

// evidence is the release's count-based checks over the engine's status.
func (e *engine) evidence() (analysis.Evidence, bool) {
	if len(e.p.SLOs) == 0 || e.s.Analysis == nil {
		return analysis.Evidence{}, false
	}
	if _, _, ok := Watched(e.s); !ok {
		return analysis.Evidence{}, false
	}
	return analysis.Evidence{Policy: e.p.Policy, Stage: stage(e.p, e.s), Timing: e.p.Timing, State: e.s.Analysis}, true
}

func (e *engine) look() analysis.Look {
	return analysis.Look{At: e.o.Now, Readings: e.o.Counters, Err: e.o.CountersErr}
}

// watch takes this call's look: the watchdog judges everything up to it
// and the evidence is checkpointed when due. It reports a trip.
func (e *engine) watch() (analysis.Trip, bool) {
	ev, ok := e.evidence()
	if !ok {
		return analysis.Trip{}, false
	}
	trip, _ := ev.Observe(e.look())
	if a := e.s.Analysis; a != nil && a.TripPendingAt != nil {
		// The confirming look, a scrape on; and looks in between, which
		// trip at once when the counts bracketed by samples trip (once
		// every live-color target has been scraped past the fault).
		e.wake(analysis.PendingLookEvery(e.p.Timing))
	}
	return trip, trip.Tripped
}

// checkpointDue asks to be called again by the next checkpoint while the
// release's counters are watched (the sweep wakes it sooner on a trip), so
// the evidence is saved at least that often.
func (e *engine) checkpointDue() {
	if _, _, ok := Watched(e.s); ok && len(e.p.SLOs) > 0 {
		e.wake(e.p.Timing.CheckpointEvery())
	}
}

// unsettle folds the evidence up to now and marks the weights as moving,
// from the candidate's weight before to the weights given.
func (e *engine) unsettle(weights ...int32) {
	ev, ok := e.evidence()
	if !ok {
		return
	}
	ev.Fold(e.look())
	ev.Unsettle(weights...)
}

// confirmed records that the router reports the step's weights; the
// first step's are the candidate's first traffic, which starts its warmup.
func (e *engine) confirmed() {
	if ev, ok := e.evidence(); ok {
		var warmup time.Duration
		if e.s.Phase == splitterv1.PhaseShifting && e.s.Step == 1 {
			warmup = e.p.Warmup
		}
		ev.Confirmed(e.o.Now, e.p.Timing.Settle(), warmup)
	}
}

// holdStart is when the current step's hold began: with SLOs, when its
// evidence began (the weights confirmed and settled); without, when the
// weights were confirmed.
func holdStart(p *policy.Plan, s splitterv1.SplitStatus) *time.Time {
	if s.StepStartedAt == nil {
		return nil
	}
	if len(p.SLOs) > 0 {
		if s.Analysis == nil || s.Analysis.BaselineAt == nil {
			return nil
		}
		return &s.Analysis.BaselineAt.Time
	}
	return &s.StepStartedAt.Time
}

// gateResults judges the step on its evidence since the baseline.
func (e *engine) gateResults() []analysis.Result {
	ev, ok := e.evidence()
	if !ok {
		return nil
	}
	green, blue, ok := ev.StepCounts(e.look())
	if !ok {
		msg := "reading the counters: " + e.o.CountersErr
		if e.o.CountersErr == "" {
			msg = "no counter reading for this step yet"
		}
		var out []analysis.Result
		for _, s := range e.p.SLOs {
			out = append(out, analysis.Result{Name: s.Name, Verdict: splitterv1.VerdictError, Message: msg})
		}
		return out
	}
	return e.p.Gate(green, blue, ev.Reference(), e.s.Weight, string(e.s.Candidate), string(e.s.Live))
}

// StatusWriteDue says whether the controller must write next over the
// status it last wrote: always when anything but the evidence changed (a
// transition, a condition, an outbox entry: one write each), and for the
// evidence alone (checkpoints, a settled step, a trip awaiting its
// confirming look) once the written checkpoint is older than
// Timing.EvidenceWriteEvery. In between the controller keeps the newer
// evidence in memory and decides on it; a restart falls back to the
// written evidence (see EvidenceWriteEvery for what that costs).
func StatusWriteDue(t analysis.Timing, written, next splitterv1.SplitStatus, now time.Time) bool {
	if equality.Semantic.DeepEqual(written, next) {
		return false
	}
	w, n := written, next
	w.Analysis, n.Analysis = nil, nil
	if !equality.Semantic.DeepEqual(w, n) {
		return true
	}
	a, b := written.Analysis, next.Analysis
	if a == nil || b == nil || a.CheckpointAt == nil {
		return true
	}
	if w := b.WarmupUntil; w != nil && b.CheckpointAt != nil && !a.CheckpointAt.After(w.Time) && b.CheckpointAt.After(w.Time) {
		// The first checkpoint past the candidate's warmup: a restart
		// would otherwise judge the growth since the written checkpoint,
		// warmup and after, as warmup's (the lenient bound alone).
		return true
	}
	return now.Sub(a.CheckpointAt.Time) >= t.EvidenceWriteEvery()
}

// SweepLook runs the watchdog alone on fresh counters: a cheap look for a
// periodic sweep over every release, which wakes the full reconcile only
// when it trips (the reconcile then decides with the same evidence) or
// when new series appeared (so they count from their first reading).
func SweepLook(p *policy.Plan, s splitterv1.SplitStatus, counters Counters, now time.Time) (trip analysis.Trip, wake bool) {
	if len(p.SLOs) == 0 || s.Analysis == nil {
		return analysis.Trip{}, false
	}
	if _, _, ok := Watched(s); !ok {
		return analysis.Trip{}, false
	}
	ev := analysis.Evidence{Policy: p.Policy, Stage: stage(p, s), Timing: p.Timing, State: s.Analysis.DeepCopy()}
	trip, fresh := ev.Sweep(analysis.Look{At: now, Readings: counters})
	return trip, trip.Tripped || fresh
}

// GrossLook is the gross check alone (see analysis.Evidence.Gross): the
// sweep's look between its full ones, within a second of each scrape's
// landing. wake says the release's reconcile should run now.
func GrossLook(p *policy.Plan, s splitterv1.SplitStatus, counters Counters, now time.Time) (trip analysis.Trip, wake bool) {
	if len(p.SLOs) == 0 || s.Analysis == nil {
		return analysis.Trip{}, false
	}
	if _, _, ok := Watched(s); !ok {
		return analysis.Trip{}, false
	}
	ev := analysis.Evidence{Policy: p.Policy, Stage: stage(p, s), Timing: p.Timing, State: s.Analysis}
	trip = ev.Gross(analysis.Look{At: now, Readings: counters})
	return trip, trip.Tripped
}

// OnCandidate says whether any traffic is (or may be) on the release's
// candidate: then nothing may stop the watchdog.
func OnCandidate(s splitterv1.SplitStatus) bool {
	switch s.Phase {
	case splitterv1.PhaseShifting, splitterv1.PhaseAwaitingApproval:
		return s.Weight > 0 || s.Step > 0
	case splitterv1.PhasePromoting:
		return true
	}
	return false
}

// Guarded says whether a stalled release still needs Guard: traffic may be
// on its candidate, or its snap-back is not finished.
func Guarded(s splitterv1.SplitStatus) bool {
	return OnCandidate(s) || s.Phase == splitterv1.PhaseRollingBack
}

// Guard is the engine reduced to its safety part, for a release whose
// reconcile is stalled (an invalid or deleted policy, an ambiguous
// Service, a conflicting VirtualService): with the last valid plan, the
// watchdog still judges and checkpoints its evidence, and a trip still
// snaps back. ok says the decision must be committed: the evidence moved,
// or the weights must go back to the live color (a trip, a candidate
// without Ready pods, a snap-back not yet written).
func Guard(p *policy.Plan, current splitterv1.SplitStatus, o Observations) (d Decision, ok bool) {
	e := &engine{p: p, o: o, s: *current.DeepCopy()}
	e.s.Replicas = &o.Replicas
	switch {
	case !Guarded(current):
		return Decision{}, false
	case e.s.Phase == splitterv1.PhaseRollingBack:
		e.rollingBack() // RolledBack once the router reports the live color at 100%
	case e.s.Phase != splitterv1.PhasePromoting && o.Colors != nil && o.Colors[e.s.Candidate].Ready == 0:
		e.startRollback(ReasonCandidateUnavailable, fmt.Sprintf("%s has no Ready pod", e.s.Candidate), splitterv1.OutcomeRolledBack)
	case e.watchdogTripped():
	case equality.Semantic.DeepEqual(e.s.Analysis, current.Analysis):
		return Decision{}, false
	}
	e.checkpointDue()
	want := desired(p, e.s, o)
	setConditions(&e.s, want, o)
	// The stall goes on: keep its condition as it was (the reconciler
	// sets it), so its transition time still says when it began.
	if c := meta.FindStatusCondition(current.Conditions, ConditionStalled); c != nil {
		meta.SetStatusCondition(&e.s.Conditions, *c)
	}
	return Decision{Status: e.s, Desired: want, Requeue: e.requeue, Transition: e.transition}, true
}
