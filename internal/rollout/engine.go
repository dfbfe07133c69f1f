package rollout

import (
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
)

// MaxHistory bounds the audit trail in status.
const MaxHistory = 10

// pollInterval is how soon to look again while waiting for the world to
// catch up with a write (watches usually wake the controller first).
const pollInterval = 2 * time.Second

// Gate names.
const (
	GateFirstStep = "first-step"
	GatePromotion = "promotion"
)

// Reasons for transitions, used in Events, history and conditions.
const (
	ReasonAdopted                  = "Adopted"
	ReasonReleaseStarted           = "ReleaseStarted"
	ReasonCandidateReady           = "CandidateReady"
	ReasonStepAdvanced             = "StepAdvanced"
	ReasonStepExtended             = "StepExtended"
	ReasonAwaitingApproval         = "AwaitingApproval"
	ReasonApproved                 = "Approved"
	ReasonPromoted                 = "Promoted"
	ReasonStandbyEnded             = "StandbyEnded"
	ReasonStandbyLost              = "StandbyLost"
	ReasonLiveLost                 = "LiveColorLost"
	ReasonCheckFailed              = "CheckFailed"
	ReasonInsufficientEvidence     = "InsufficientEvidence"
	ReasonCandidateUnavailable     = "CandidateUnavailable"
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
	ReasonAborted                  = "Aborted"
	ReasonSuperseded               = "Superseded"
	ReasonRolledBack               = "RolledBack"
	ReasonReverted                 = "Reverted"
	ReasonWatchdog                 = "WatchdogTripped"
	ReasonChecksErrored            = "ChecksErrored"
	ReasonPaused                   = "Paused"
)

// Next decides the next status and the world it wants. It is pure and
// total: same inputs, same decision.
func Next(p *policy.Plan, current splitterv1.SplitStatus, o Observations) Decision {
	e := &engine{p: p, o: o, s: *current.DeepCopy()}
	e.s.Replicas = &o.Replicas
	switch e.s.Phase {
	case "":
		e.adopt()
	case splitterv1.PhaseIdle:
		e.idle()
	case splitterv1.PhasePreparing:
		e.preparing()
	case splitterv1.PhaseShifting:
		e.shifting()
	case splitterv1.PhaseAwaitingApproval:
		e.awaitingApproval()
	case splitterv1.PhaseRollingBack:
		e.rollingBack()
	case splitterv1.PhaseRolledBack:
		e.rolledBack()
	case splitterv1.PhasePromoting:
		e.promoting()
	default:
		// An unknown phase (a newer controller wrote it, or a hand edit):
		// the safe state is all traffic on the live color.
		e.startRollback(ReasonRolledBack, fmt.Sprintf("unknown phase %q", e.s.Phase), splitterv1.OutcomeRolledBack)
	}
	e.checkpointDue()
	want := desired(p, e.s, o)
	want.Hooks = e.calls
	setConditions(&e.s, want, o)
	return Decision{Status: e.s, Desired: want, Requeue: e.requeue, Transition: e.transition}
}

type engine struct {
	p          *policy.Plan
	o          Observations
	s          splitterv1.SplitStatus
	requeue    time.Duration
	transition *Transition
	// calls are the hook calls the release waits on now.
	calls []HookCall
}

func (e *engine) now() *metav1.Time { t := metav1.NewTime(e.o.Now); return &t }

func (e *engine) wake(d time.Duration) {
	if d <= 0 {
		d = time.Millisecond
	}
	if e.requeue == 0 || d < e.requeue {
		e.requeue = d
	}
}

func (e *engine) transit(phase splitterv1.Phase, reason, msg string, warning bool) {
	if e.s.Phase != phase {
		e.s.PhaseStartedAt = e.now()
	}
	e.s.Phase = phase
	e.transition = &Transition{Reason: reason, Message: msg, Warning: warning}
}

func (e *engine) liveWeights() Weights { return split(e.s.Live, 100) }

func (e *engine) routedIs(w Weights) bool { return e.o.Routed != nil && *e.o.Routed == w }

// adopt takes over a workload seen for the first time: its template
// becomes the live revision on blue.
func (e *engine) adopt() {
	e.s.Live, e.s.LiveRevision = splitterv1.Blue, e.o.Revision
	e.transit(splitterv1.PhaseIdle, ReasonAdopted, fmt.Sprintf("revision %s adopted as the live color %s", e.o.Revision, splitterv1.Blue), false)
	e.wake(pollInterval)
}

func (e *engine) idle() {
	if !e.routedIs(e.liveWeights()) {
		// Still adopting. A template change waits for adoption to finish and
		// is then released like any other; only while the live color does
		// not exist yet does it simply take the newer template.
		if e.o.Revision != "" && e.o.Revision != e.s.LiveRevision && e.o.Colors[e.s.Live].Revision == "" {
			e.s.LiveRevision = e.o.Revision
		}
		e.wake(pollInterval)
		return
	}
	if e.o.Revision != "" && e.o.Revision != e.s.LiveRevision {
		e.startRelease()
	}
}

func (e *engine) startRelease() {
	e.s.Candidate, e.s.CandidateRevision = e.s.Live.Other(), e.o.Revision
	e.s.Standby, e.s.StandbyRevision = "", ""
	e.s.Step, e.s.Weight, e.s.Extensions, e.s.Gate = 0, 0, 0, ""
	e.s.StepStartedAt, e.s.Checks, e.s.Analysis = nil, nil, nil
	e.s.PausedAt, e.s.Hooks, e.s.Attempt = nil, nil, 1
	e.s.ReleaseCount++
	e.s.ReleaseID = fmt.Sprintf("%s/%d", e.s.CandidateRevision, e.s.ReleaseCount)
	if len(e.p.SLOs) > 0 {
		e.s.Analysis = analysis.Begin(e.o.Now)
	}
	e.s.ReleaseStartedAt = e.now()
	e.transit(splitterv1.PhasePreparing, ReasonReleaseStarted,
		fmt.Sprintf("revision %s is deploying to %s (live: %s, revision %s)", e.s.CandidateRevision, e.s.Candidate, e.s.Live, e.s.LiveRevision), false)
	e.wake(e.p.ProgressDeadline)
}

// interrupted handles what ends any active release: an abort naming it,
// or a newer template.
func (e *engine) interrupted() bool {
	if e.aborted() {
		return true
	}
	if e.o.Revision != "" && e.o.Revision != e.s.CandidateRevision {
		e.startRollback(ReasonSuperseded, fmt.Sprintf("revision %s supersedes %s", e.o.Revision, e.s.CandidateRevision), splitterv1.OutcomeSuperseded)
		return true
	}
	return false
}

func (e *engine) candidateReady() bool {
	c := e.o.Colors[e.s.Candidate]
	return c.Revision == e.s.CandidateRevision && c.RolledOut && c.Ready >= e.o.Replicas
}

func (e *engine) preparing() {
	if e.aborted() {
		return
	}
	if e.o.Revision != "" && e.o.Revision != e.s.CandidateRevision {
		// No traffic has moved: restart with the newer revision, or stand
		// down if the template went back to the live revision.
		e.record(splitterv1.OutcomeSuperseded, ReasonSuperseded, fmt.Sprintf("revision %s supersedes it before any traffic moved", e.o.Revision))
		if e.o.Revision == e.s.LiveRevision {
			e.toIdle(ReasonReverted, fmt.Sprintf("the template is back at the live revision %s", e.s.LiveRevision))
			return
		}
		e.startRelease()
		return
	}
	// The live color's counts while the candidate gets ready are the
	// first of its reference.
	e.watch()
	held, changed := e.paused()
	if changed {
		return
	}
	if e.candidateReady() {
		if e.promotedByOperator() || held || !e.preTrafficHooksPassed() {
			return
		}
		if e.p.ApproveBeforeFirstStep {
			e.awaitGate(GateFirstStep)
			return
		}
		e.enterStep(1)
		return
	}
	deadline := e.s.PhaseStartedAt.Add(e.p.ProgressDeadline)
	if !e.o.Now.Before(deadline) {
		c := e.o.Colors[e.s.Candidate]
		e.startRollback(ReasonProgressDeadlineExceeded,
			fmt.Sprintf("%s was not Ready within %s (%d/%d Ready)", e.s.Candidate, e.p.ProgressDeadline, c.Ready, e.o.Replicas),
			splitterv1.OutcomeRolledBack)
		return
	}
	e.wake(deadline.Sub(e.o.Now))
}

func (e *engine) awaitGate(gate string) {
	e.s.Gate = releaseID(e.s) + "/" + gate
	e.transit(splitterv1.PhaseAwaitingApproval, ReasonAwaitingApproval,
		fmt.Sprintf("waiting for approval %q: kubectl splitter approve <name> (or kubectl annotate split <name> %s=%s --overwrite)", e.s.Gate, splitterv1.ApproveAnnotation, e.s.Gate), false)
}

// enterStep moves to step i (1-based): the weights are set, and the hold
// starts once the router reports them applied.
func (e *engine) enterStep(i int32) {
	e.unsettle(e.s.Weight, e.p.Steps[i-1])
	e.s.Step, e.s.Weight = i, e.p.Steps[i-1]
	e.s.StepStartedAt, e.s.Extensions, e.s.Gate = nil, 0, ""
	e.transit(splitterv1.PhaseShifting, ReasonStepAdvanced,
		fmt.Sprintf("step %d/%d: %s gets %d%%", i, len(e.p.Steps), e.s.Candidate, e.s.Weight), false)
	e.wake(pollInterval)
}

// ChecksDue reports whether the current step's checks should be evaluated
// now: the step's weights were confirmed (and, with SLOs, have settled)
// and it has been held long enough.
func ChecksDue(p *policy.Plan, s splitterv1.SplitStatus, now time.Time) bool {
	if s.Phase != splitterv1.PhaseShifting || holdStart(p, s) == nil {
		return false
	}
	return !now.Before(stepEnd(p, s))
}

func stepEnd(p *policy.Plan, s splitterv1.SplitStatus) time.Time {
	start := *holdStart(p, s)
	if p.MaxStepDuration == 0 {
		return start.Add(p.StepDuration * time.Duration(1+s.Extensions))
	}
	// A step that ends on evidence is judged every stepDuration after its
	// last look. Counted from the hold's start, a look that restarted the
	// evidence (an incident both colors share, a Fail to confirm: the hold
	// starts again there) would put the next one k+2 stepDurations away at
	// the k-th look (a review). The looks stay capped by their number.
	last := start
	if l := s.LookedAt; l != nil && s.StepStartedAt != nil && !l.Before(s.StepStartedAt) && l.After(last) {
		last = l.Time // a look of this step (an older one is a step before's)
	}
	return last.Add(p.StepDuration)
}

func (e *engine) shifting() {
	if e.interrupted() {
		return
	}
	if c := e.o.Colors[e.s.Candidate]; c.Ready == 0 {
		e.startRollback(ReasonCandidateUnavailable, fmt.Sprintf("%s has no Ready pod", e.s.Candidate), splitterv1.OutcomeRolledBack)
		return
	}
	if e.liveLost() {
		return
	}
	// The watchdog runs from the first second of the step, before its
	// weights are confirmed: it judges a chunk that mixes two weights
	// conservatively.
	if e.watchdogTripped() || e.promotedByOperator() {
		return
	}
	// Paused, the step is still judged, but only a Fail acts (a pause
	// never holds back a rollback); a resume is this call's transition.
	held, changed := e.paused()
	if changed && !held && !slices.ContainsFunc(e.o.Verdicts, func(v analysis.Result) bool { return v.Verdict == splitterv1.VerdictFail }) {
		return
	}
	// A resume that comes with a due Fail is judged now: the rollback is
	// this call's transition (the random sequences found a Fail left for
	// the next call).
	want := split(e.s.Candidate, e.s.Weight)
	if !e.routedIs(want) {
		// Not applied yet, or changed behind our back: evidence gathered
		// under other weights is not evidence for this step.
		if e.o.Routed != nil {
			if e.s.StepStartedAt != nil {
				e.unsettle(e.o.Routed.Of(e.s.Candidate), e.s.Weight)
			} else if a := e.s.Analysis; a != nil && a.MixedWeight < e.o.Routed.Of(e.s.Candidate) {
				a.MixedWeight = e.o.Routed.Of(e.s.Candidate)
			}
		}
		e.s.StepStartedAt = nil
		e.wake(pollInterval)
		return
	}
	if e.s.StepStartedAt == nil {
		e.s.StepStartedAt = e.now()
		e.confirmed()
	}
	// The step's hooks run from when its weights are confirmed; a failed
	// one acts at once.
	hooks := e.stepHooks()
	if len(hooks.failed) > 0 {
		e.hookFailed(hooks.failed)
		return
	}
	if holdStart(e.p, e.s) == nil {
		// Waiting for the weights to reach the counters.
		wait := pollInterval
		if a := e.s.Analysis; a != nil && a.SettleAt != nil && a.SettleAt.Sub(e.o.Now) > 0 {
			wait = a.SettleAt.Sub(e.o.Now)
		}
		e.wake(wait)
		return
	}
	if !ChecksDue(e.p, e.s, e.o.Now) {
		e.wake(stepEnd(e.p, e.s).Sub(e.o.Now))
		return
	}
	if a := e.s.Analysis; a != nil && a.TripPendingAt != nil {
		// The watchdog's trip awaits its confirming look: judge the step
		// after it, on evidence that look has settled.
		e.wake(pollInterval)
		return
	}
	if len(e.p.SLOs) > 0 && e.o.CountersErr != "" && e.o.Now.Sub(stepEnd(e.p, e.s)) < e.p.StepDuration {
		// A failed read is Error for this look only: look again soon
		// rather than extend the step; a read failing for a whole
		// stepDuration past the step's end is judged (Error).
		e.wake(pollInterval)
		return
	}
	if len(e.p.Checks) > 0 && len(e.o.Verdicts) == 0 {
		e.wake(time.Millisecond) // the controller evaluates the checks and calls again
		return
	}
	gates := e.gateResults()
	verdicts := append(append([]analysis.Result(nil), e.o.Verdicts...), gates...)
	verdicts = append(verdicts, hookVerdicts(hooks.results)...)
	var failed, unsure, errored []analysis.Result
	for _, v := range verdicts {
		switch v.Verdict {
		case splitterv1.VerdictFail:
			failed = append(failed, v)
		case splitterv1.VerdictPass:
		case splitterv1.VerdictError:
			errored = append(errored, v)
		default:
			unsure = append(unsure, v)
		}
	}
	if len(failed) == 0 && hooks.pending {
		return // judged once the step's hooks answer (hooksAt set the wake-up); a Fail does not wait
	}
	if len(failed) == 0 && held {
		return // goes on when resumed, judged then on all the evidence gathered meanwhile
	}
	e.recordVerdicts(verdicts)
	pending := append(append([]analysis.Result(nil), errored...), unsure...)
	switch {
	case len(failed) > 0 && e.failNeedsConfirming(gates, failed):
		// The step's evidence starts and ends at instants, and a scrape's
		// growth is spread over its interval: an incident both colors
		// share, within a scrape of either end, can leave more of itself
		// in one color's counts. A gate's Fail rolls back only if fresh
		// evidence, gathered for another stepDuration, fails again (the
		// watchdog keeps watching meanwhile).
		ev, _ := e.evidence()
		ev.Restart(e.look())
		e.s.Analysis.FailPending = true
		// A Fail in status is final: the candidate's weight never rises
		// after one. A Fail still to be confirmed is shown as what it is.
		for i := range e.s.Checks {
			if c := &e.s.Checks[i]; c.Verdict == splitterv1.VerdictFail {
				c.Verdict, c.Message = splitterv1.VerdictInconclusive, "failed once, to be confirmed on fresh evidence: "+c.Message
			}
		}
		e.transition = &Transition{Reason: ReasonStepExtended, Warning: true, Message: fmt.Sprintf(
			"step %d held for another %s to confirm on fresh evidence: %s", e.s.Step, e.p.StepDuration, describe(failed))}
		e.wake(stepEnd(e.p, e.s).Sub(e.o.Now))
	case len(failed) > 0:
		e.startRollback(ReasonCheckFailed, describe(failed), splitterv1.OutcomeRolledBack)
	case len(pending) > 0 && int(e.s.Extensions) < e.p.MaxExtensions:
		e.s.Extensions++
		if incident(pending) {
			// The extension judges what follows the incident (its hold
			// starts again with the evidence).
			if ev, ok := e.evidence(); ok {
				ev.Restart(e.look())
			}
		}
		if e.p.MaxStepDuration == 0 {
			e.transition = &Transition{Reason: ReasonStepExtended, Message: fmt.Sprintf("step %d held for another %s (%d/%d): %s",
				e.s.Step, e.p.StepDuration, e.s.Extensions, e.p.MaxExtensions, describe(pending)), Warning: true}
		}
		// With maxStepDuration a look without a verdict is the routine of a
		// step that ends on evidence: status records it (the checks say how
		// many more requests they need), no Event does.
		e.wake(stepEnd(e.p, e.s).Sub(e.o.Now))
	case len(errored) > 0:
		e.exhausted(e.p.OnError, ReasonChecksErrored, fmt.Sprintf("checks still failing to run after %s: %s", e.held(), describe(errored)))
	case len(unsure) > 0:
		e.exhausted(e.p.OnInconclusive, ReasonInsufficientEvidence, fmt.Sprintf("no verdict after %s: %s", e.held(), describe(unsure)))
	case int(e.s.Step) == len(e.p.Steps):
		e.promote()
	case int(e.s.Step)+1 == len(e.p.Steps) && e.p.ApproveBeforePromotion:
		e.awaitGate(GatePromotion)
	default:
		e.enterStep(e.s.Step + 1)
	}
}

// held says how long a step was held without a verdict, as the policy
// puts it.
func (e *engine) held() string {
	if e.p.MaxStepDuration > 0 {
		return fmt.Sprintf("%d looks in %s (maxStepDuration)", 1+e.p.MaxExtensions, e.p.StepDuration*time.Duration(1+e.p.MaxExtensions))
	}
	return fmt.Sprintf("%d extensions", e.p.MaxExtensions)
}

// exhausted applies onInconclusive or onError: pause (wait for a human to
// approve or abort, weights unchanged) or roll back.
func (e *engine) exhausted(action, reason, msg string) {
	if action == "pause" {
		e.awaitGate(fmt.Sprintf("paused-step-%d", e.s.Step))
		e.transition = &Transition{Reason: ReasonPaused, Warning: true, Message: fmt.Sprintf(
			"%s (%s); weights unchanged until approved or aborted: kubectl splitter approve <name> (or kubectl annotate split <name> %s=%s --overwrite)", msg, reason, splitterv1.ApproveAnnotation, e.s.Gate)}
		return
	}
	e.startRollback(reason, msg, splitterv1.OutcomeRolledBack)
}

// watchdogTripped takes this call's look; a trip snaps back at once (to
// the standby color, still running, after promotion).
func (e *engine) watchdogTripped() bool {
	trip, tripped := e.watch()
	if !tripped {
		return false
	}
	if e.s.Phase == splitterv1.PhasePromoting {
		e.snapBackToStandby(ReasonWatchdog, fmt.Sprintf("during standby, watchdog (%s): %s", trip.Reason, trip.Message))
		return true
	}
	e.startRollback(ReasonWatchdog, fmt.Sprintf("watchdog (%s): %s", trip.Reason, trip.Message), splitterv1.OutcomeRolledBack)
	return true
}

// failNeedsConfirming says a Fail comes from the count-based gates alone
// and has not been confirmed on fresh evidence yet (threshold checks
// roll back at once, as they always did).
func (e *engine) failNeedsConfirming(gates, failed []analysis.Result) bool {
	if a := e.s.Analysis; a == nil || a.FailPending || a.BaselineAt == nil {
		return false
	}
	counted := map[string]bool{}
	for _, g := range gates {
		counted[g.Name] = true
	}
	for _, f := range failed {
		if !counted[f.Name] {
			return false
		}
	}
	return true
}

func incident(rs []analysis.Result) bool {
	for _, r := range rs {
		if r.Incident {
			return true
		}
	}
	return false
}

func describe(rs []analysis.Result) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		part := fmt.Sprintf("%s %s", r.Name, r.Verdict)
		if r.HasValue {
			part += fmt.Sprintf(" (value %s, bound %s)", r.ValueString(), r.Bound)
		}
		if r.Message != "" && r.Verdict != splitterv1.VerdictFail {
			part += ": " + r.Message
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, "; ")
}

func (e *engine) recordVerdicts(verdicts []analysis.Result) {
	e.s.LookedAt = e.now()
	e.s.Checks = e.s.Checks[:0:0]
	for _, v := range verdicts {
		e.s.Checks = append(e.s.Checks, splitterv1.CheckResult{
			Name: v.Name, Verdict: v.Verdict, Value: v.ValueString(), Bound: v.Bound,
			Message: v.Message, Step: e.s.Step, EvaluatedAt: *e.now(),
		})
	}
}

func (e *engine) awaitingApproval() {
	if e.interrupted() || e.liveLost() {
		return
	}
	if e.watchdogTripped() || e.promotedByOperator() {
		return
	}
	if held, changed := e.paused(); held || changed {
		return
	}
	if e.o.Approve == "" || e.o.Approve != e.s.Gate {
		return
	}
	gate := e.s.Gate
	e.act("approve", gate)
	if e.hookApproved(gate) {
		return
	}
	switch {
	case strings.HasSuffix(e.s.Gate, "/"+GateFirstStep):
		e.enterStep(1)
	case int(e.s.Step) == len(e.p.Steps):
		e.promote()
	default:
		e.enterStep(e.s.Step + 1)
	}
	e.transition.Reason = ReasonApproved
	e.transition.Message = fmt.Sprintf("%q approved by %s: %s", gate, e.by(), e.transition.Message)
}

func (e *engine) promote() {
	e.promoteWith(ReasonPromoted, fmt.Sprintf("all %d steps passed", len(e.p.Steps)))
}

// promoteWith makes the candidate live; the old live color stands by.
func (e *engine) promoteWith(reason, why string) {
	e.record(splitterv1.OutcomePromoted, reason, why)
	e.s.PausedAt = nil
	e.s.Standby, e.s.StandbyRevision = e.s.Live, e.s.LiveRevision
	e.s.Live, e.s.LiveRevision = e.s.Candidate, e.s.CandidateRevision
	e.s.Candidate, e.s.CandidateRevision = "", ""
	e.s.Step, e.s.Weight, e.s.Extensions, e.s.Gate, e.s.StepStartedAt = 0, 0, 0, "", nil
	msg := fmt.Sprintf("%s (revision %s) is live; %s stays up for %s", e.s.Live, e.s.LiveRevision, e.s.Standby, e.p.Standby)
	if reason != ReasonPromoted {
		msg = why + ": " + msg
	}
	if w := e.p.StandbyWeight; w > 0 && e.p.Standby > 0 {
		msg += fmt.Sprintf(" with %d%% of the traffic as the watchdog's control", w)
	}
	e.transit(splitterv1.PhasePromoting, reason, msg, reason != ReasonPromoted)
	if want := e.standbyWeights(); !e.routedIs(want) {
		// The weights move (from 100%, or from the step a person promoted
		// from): the evidence mixes them until they have settled.
		from := int32(100)
		if e.o.Routed != nil {
			from = e.o.Routed.Of(e.s.Live)
		}
		e.unsettle(from, want.Of(e.s.Live))
	}
	e.wake(e.p.Standby)
}

func (e *engine) standbyEnd() time.Time { return e.s.PhaseStartedAt.Add(e.p.Standby) }

// missing says a color's Deployment is gone (deleted behind splitter's
// back: a person, or a GitOps tool pruning what it does not know).
func (e *engine) missing(c splitterv1.Color) bool {
	st, ok := e.o.Colors[c]
	return e.o.Colors != nil && (!ok || (st.Revision == "" && st.Ready == 0))
}

// liveLost handles the live color's Deployment deleted mid-release. It
// cannot be recreated: its template is no longer the workload's (the
// candidate's is). Its share of the traffic fails meanwhile, so a Ready
// candidate takes all of it at once, unverified, and the release ends
// there, said loudly; a candidate not Ready yet is waited for (the
// router never raises a color without Ready pods).
func (e *engine) liveLost() bool {
	if !e.missing(e.s.Live) || e.o.Colors[e.s.Candidate].Ready == 0 {
		return false
	}
	lost := e.s.Live
	e.record(splitterv1.OutcomePromoted, ReasonLiveLost, fmt.Sprintf("%s's Deployment was deleted during the release", lost))
	e.s.PausedAt, e.s.Standby, e.s.StandbyRevision = nil, "", ""
	e.s.Live, e.s.LiveRevision = e.s.Candidate, e.s.CandidateRevision
	e.s.Candidate, e.s.CandidateRevision = "", ""
	e.s.Step, e.s.Weight, e.s.Extensions, e.s.Gate, e.s.StepStartedAt = 0, 0, 0, "", nil
	e.transit(splitterv1.PhaseIdle, ReasonLiveLost, fmt.Sprintf(
		"%s's Deployment was deleted during the release and cannot be recreated (its template is no longer the workload's): %s (revision %s) takes all traffic before its checks finished; watch it, and roll back by reverting the workload's template if needed",
		lost, e.s.Live, e.s.LiveRevision), true)
	return true
}

// standbyLost ends standby early when the standby color's Deployment is
// gone: nothing to snap back to, and its control share would fail.
func (e *engine) standbyLost() bool {
	if !e.missing(e.s.Standby) {
		return false
	}
	standby := e.s.Standby
	e.s.Standby, e.s.StandbyRevision = "", ""
	e.transit(splitterv1.PhaseIdle, ReasonStandbyLost, fmt.Sprintf("standby over early: %s's Deployment was deleted; %s has all traffic and no snap-back is left", standby, e.s.Live), true)
	return true
}

// standbyWeights are the weights during standby: the standby color keeps
// the policy's control share (none with a zero standby).
func (e *engine) standbyWeights() Weights {
	if e.p.Standby > 0 && e.p.StandbyWeight > 0 && (e.o.Colors == nil || e.o.Colors[e.s.Standby].Ready > 0) {
		return split(e.s.Standby, e.p.StandbyWeight)
	}
	return e.liveWeights()
}

// standbyRouted follows the router during standby as shifting does during
// a step: evidence is pure once the weights are confirmed and settled.
func (e *engine) standbyRouted() {
	want := e.standbyWeights()
	switch {
	case e.routedIs(want):
		e.confirmed()
	case e.o.Routed != nil:
		if a := e.s.Analysis; a != nil && a.BaselineAt != nil {
			e.unsettle(e.o.Routed.Of(e.s.Live), want.Of(e.s.Live))
		} else if a != nil {
			a.MixedWeight = max(a.MixedWeight, e.o.Routed.Of(e.s.Live))
		}
		e.wake(pollInterval)
	}
}

func (e *engine) promoting() {
	if e.o.Revision != "" && e.o.Revision != e.s.LiveRevision {
		e.startRelease()
		return
	}
	if e.standbyLost() {
		return
	}
	if e.watchdogTripped() {
		return // instant rollback: the standby color is still up
	}
	if e.o.Now.Before(e.standbyEnd()) {
		e.standbyRouted()
	}
	hooks := e.hooksAt(splitterv1.HookPostPromotion, 0)
	if len(hooks.failed) > 0 {
		f := hooks.failed[0]
		e.snapBackToStandby(ReasonHookFailed, fmt.Sprintf("during standby, hook %s failed: %s", f.Name, f.Message))
		return
	}
	end := e.standbyEnd()
	if hooks.pending {
		return // standby lasts until the post-promotion hooks have answered
	}
	if !e.o.Now.Before(end) {
		if !e.routedIs(e.liveWeights()) {
			// The control's share moves to the live color first (desired
			// sends it there once standby is over); the standby color is
			// scaled to zero only once the router has no traffic for it.
			e.unsettle(e.standbyWeights().Of(e.s.Live), 100)
			e.wake(pollInterval)
			return
		}
		standby := e.s.Standby
		e.s.Standby, e.s.StandbyRevision = "", ""
		e.transit(splitterv1.PhaseIdle, ReasonStandbyEnded, fmt.Sprintf("standby over: %s scaled to zero", standby), false)
		return
	}
	e.wake(end.Sub(e.o.Now))
}

// snapBackToStandby undoes a promotion during standby: the standby color,
// still running, is live again and the promoted one is the candidate
// rolled back.
func (e *engine) snapBackToStandby(reason, msg string) {
	e.s.Candidate, e.s.CandidateRevision = e.s.Live, e.s.LiveRevision
	e.s.Live, e.s.LiveRevision = e.s.Standby, e.s.StandbyRevision
	e.s.Standby, e.s.StandbyRevision = "", ""
	e.startRollback(reason, msg, splitterv1.OutcomeRolledBack)
}

// startRollback is the snap-back: the next desired world has the live
// color at 100% (one router write).
func (e *engine) startRollback(reason, msg string, outcome splitterv1.Outcome) {
	e.record(outcome, reason, msg)
	e.s.Weight, e.s.StepStartedAt, e.s.Gate, e.s.Extensions, e.s.PausedAt = 0, nil, "", 0, nil
	e.transit(splitterv1.PhaseRollingBack, reason, fmt.Sprintf("all traffic back to %s: %s", e.s.Live, msg), outcome != splitterv1.OutcomeSuperseded)
	e.wake(pollInterval)
}

func (e *engine) rollingBack() {
	if !e.routedIs(e.liveWeights()) {
		e.wake(pollInterval)
		return
	}
	e.transit(splitterv1.PhaseRolledBack, ReasonRolledBack, fmt.Sprintf("%s has all traffic", e.s.Live), false)
	if e.o.Revision != e.s.CandidateRevision {
		e.wake(time.Millisecond) // a newer template waits: one transition per call
	}
}

func (e *engine) rolledBack() {
	if e.retried() {
		return
	}
	switch {
	case e.o.Revision == "" || e.o.Revision == e.s.CandidateRevision:
	case e.o.Revision == e.s.LiveRevision:
		e.toIdle(ReasonReverted, fmt.Sprintf("the template is back at the live revision %s", e.s.LiveRevision))
	default:
		e.startRelease()
	}
}

func (e *engine) toIdle(reason, msg string) {
	e.s.Candidate, e.s.CandidateRevision = "", ""
	e.s.Step, e.s.Weight, e.s.Extensions, e.s.Gate, e.s.StepStartedAt, e.s.PausedAt = 0, 0, 0, "", nil, nil
	e.transit(splitterv1.PhaseIdle, reason, msg, false)
}

// record adds the current release to the history, newest first.
func (e *engine) record(outcome splitterv1.Outcome, reason, msg string) {
	started := e.now()
	if e.s.ReleaseStartedAt != nil {
		started = e.s.ReleaseStartedAt
	}
	entry := splitterv1.Release{
		Revision: e.s.CandidateRevision, Color: e.s.Candidate, StartedAt: *started, FinishedAt: *e.now(),
		Outcome: outcome, Reason: reason, Message: msg, Step: e.s.Step, Attempt: e.s.Attempt, ID: e.s.ReleaseID,
	}
	e.s.History = append([]splitterv1.Release{entry}, e.s.History...)
	if len(e.s.History) > MaxHistory {
		e.s.History = e.s.History[:MaxHistory]
	}
}

// desired derives the world from the status alone (and, on first
// adoption, the live color's readiness): this is what makes the engine
// level-triggered.
func desired(p *policy.Plan, s splitterv1.SplitStatus, o Observations) Desired {
	n := o.Replicas
	d := Desired{Colors: map[splitterv1.Color]ColorSpec{
		s.Live:         {Replicas: n, Revision: s.LiveRevision},
		s.Live.Other(): {Replicas: 0},
	}}
	w := split(s.Live, 100)
	switch s.Phase {
	case splitterv1.PhasePreparing, splitterv1.PhaseRollingBack:
		d.Colors[s.Candidate] = ColorSpec{Replicas: n, Revision: s.CandidateRevision}
	case splitterv1.PhaseShifting, splitterv1.PhaseAwaitingApproval:
		d.Colors[s.Candidate] = ColorSpec{Replicas: n, Revision: s.CandidateRevision}
		w = split(s.Candidate, s.Weight)
	case splitterv1.PhaseRolledBack:
		// Keep the pods when asked to, or when a newer template is about to
		// be released to the same color (no scale-down and up again).
		newer := o.Revision != "" && o.Revision != s.CandidateRevision && o.Revision != s.LiveRevision
		if p.KeepCandidateOnRollback || newer {
			d.Colors[s.Candidate] = ColorSpec{Replicas: n, Revision: s.CandidateRevision}
		}
	case splitterv1.PhasePromoting:
		d.Colors[s.Standby] = ColorSpec{Replicas: n, Revision: s.StandbyRevision}
		// The control share until standby is over; then it moves to the
		// live color before the standby color is scaled down.
		// A standby color without Ready pods (evicted, crashing) gives its
		// share back to the live color until it has some again.
		if p.Standby > 0 && p.StandbyWeight > 0 && (s.PhaseStartedAt == nil || o.Now.Before(s.PhaseStartedAt.Add(p.Standby))) &&
			(o.Colors == nil || o.Colors[s.Standby].Ready > 0) {
			w = split(s.Standby, p.StandbyWeight)
		}
	}
	live := o.Colors[s.Live]
	adopted := s.Phase != splitterv1.PhaseIdle || (o.Routed != nil && *o.Routed == w)
	if adopted || (live.Revision == s.LiveRevision && live.Ready > 0) {
		d.Weights = &w
	}
	// Never raise the weight of a color with no Ready pod: that turns
	// requests into 503s. Hold the routing until it has one (a Deployment
	// replaces lost pods), even on a snap-back.
	if d.Weights != nil && o.Routed != nil {
		for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
			if o.Colors[c].Ready == 0 && d.Weights.Of(c) > o.Routed.Of(c) {
				hold := *o.Routed
				d.Weights = &hold
				break
			}
		}
	}
	d.ScaleTemplateToZero = o.Routed != nil && d.Weights != nil && *o.Routed == *d.Weights
	return d
}
