package rollout

import (
	"fmt"
	"strings"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
)

// Operator actions and hooks. Every action arrives as an annotation on the
// Split that names what it acts on (the release's id, or a gate that starts
// with it), so a stale one never matches; acting on one is a transition,
// recorded once in status.actions (the status write is the commit point).

// Reasons of operator actions and hooks.
const (
	ReasonPausedByOperator   = "PausedByOperator"
	ReasonResumed            = "Resumed"
	ReasonRetried            = "Retried"
	ReasonPromotedByOperator = "PromotedByOperator"
	ReasonHookFailed         = "HookFailed"
)

// MaxActions bounds status.actions.
const MaxActions = 20

// MaxHookResults bounds status.hooks.
const MaxHookResults = 64

// hookPoll is how often a release waiting on a hook looks again (the
// controller wakes it when a call finishes; this is the fallback).
const hookPoll = 5 * time.Second

// by names who asked for the current action, for messages.
func (e *engine) by() string {
	if e.o.RequestedBy == "" {
		return "unknown"
	}
	return e.o.RequestedBy
}

// act records an operator action.
func (e *engine) act(verb, detail string) {
	a := splitterv1.Action{Verb: verb, Revision: e.s.CandidateRevision, By: e.by(), At: *e.now(), Detail: detail}
	e.s.Actions = append([]splitterv1.Action{a}, e.s.Actions...)
	if len(e.s.Actions) > MaxActions {
		e.s.Actions = e.s.Actions[:MaxActions]
	}
}

// aborted handles splitter.dev/abort naming the release in progress.
func (e *engine) aborted() bool {
	if e.o.Abort == "" || e.o.Abort != releaseID(e.s) {
		return false
	}
	e.act("abort", fmt.Sprintf("step %d", e.s.Step))
	e.startRollback(ReasonAborted, fmt.Sprintf("aborted by %s (%s)", e.by(), splitterv1.AbortAnnotation), splitterv1.OutcomeAborted)
	return true
}

// promotedByOperator handles splitter.dev/promote naming the release in
// progress: every remaining step, approval and pre-promotion hook is
// skipped. The watchdog and post-promotion hooks still run in standby.
func (e *engine) promotedByOperator() bool {
	if e.o.Promote == "" || e.o.Promote != releaseID(e.s) || !e.candidateReady() {
		return false
	}
	from := fmt.Sprintf("step %d/%d", e.s.Step, len(e.p.Steps))
	e.act("promote", "skipped from "+from)
	e.promoteWith(ReasonPromotedByOperator, fmt.Sprintf("promoted by %s at %s, remaining steps skipped (%s)", e.by(), from, splitterv1.PromoteAnnotation))
	return true
}

// paused says the release in progress is held (splitter.dev/pause names
// it), and records pausing and resuming; changed says this call paused or
// resumed. While paused no weight rises and nothing is promoted; the
// watchdog, the step's judgement (a Fail still rolls back), hooks, an
// abort and a newer template still act.
func (e *engine) paused() (held, changed bool) {
	on := e.o.Pause != "" && e.o.Pause == releaseID(e.s)
	switch {
	case on && e.s.PausedAt == nil:
		e.s.PausedAt = e.now()
		detail := fmt.Sprintf("step %d at %d%%", e.s.Step, e.s.Weight)
		e.act("pause", detail)
		e.transition = &Transition{Reason: ReasonPausedByOperator, Warning: true, Message: fmt.Sprintf(
			"paused by %s at %s: weights held, the watchdog keeps watching; remove %s to resume", e.by(), detail, splitterv1.PauseAnnotation)}
		return true, true
	case !on && e.s.PausedAt != nil:
		held := e.o.Now.Sub(e.s.PausedAt.Time).Round(time.Second)
		e.s.PausedAt = nil
		e.act("resume", fmt.Sprintf("after %s", held))
		e.transition = &Transition{Reason: ReasonResumed, Message: fmt.Sprintf("resumed by %s after %s paused", e.by(), held)}
		e.wake(time.Millisecond)
		return false, true
	}
	return on, false
}

// retried handles splitter.dev/retry in RolledBack: the same revision is
// released again, as the next attempt.
func (e *engine) retried() bool {
	if e.o.Retry == "" || e.o.Retry != releaseID(e.s) || (e.o.Revision != "" && e.o.Revision != e.s.CandidateRevision) {
		return false
	}
	e.act("retry", "attempt "+fmt.Sprint(e.s.Attempt+1))
	attempt := e.s.Attempt + 1
	e.startRelease()
	e.s.Attempt = attempt
	e.transition.Reason = ReasonRetried
	e.transition.Message = fmt.Sprintf("attempt %d of revision %s, retried by %s: %s", attempt, e.s.CandidateRevision, e.by(), e.transition.Message)
	return true
}

// releaseID names the release in s: what actions name, and what gates and
// hook tokens start with. A status written before release ids (none set)
// names it by its revision, as actions did then.
func releaseID(s splitterv1.SplitStatus) string {
	if s.ReleaseID != "" {
		return s.ReleaseID
	}
	return s.CandidateRevision
}

// ReleaseID is releaseID for the plugin: the value abort, pause, promote
// and retry (of a rolled-back release) carry.
func ReleaseID(s splitterv1.SplitStatus) string { return releaseID(s) }

// hookToken identifies one call of a hook: the release (unique for the
// Split, so a later release of the same revision calls its hooks anew),
// the point, the step and the hook's name.
func (e *engine) hookToken(point splitterv1.HookPoint, step int32, name string) string {
	return fmt.Sprintf("%s/%s/%d/%s", releaseID(e.s), point, step, name)
}

// hookGatePrefix starts the gate of a failed hook that paused the release;
// the rest is the call's token without the release.
const hookGatePrefix = "hook/"

// hookApproved handles the approval of a failed hook's gate: a person
// overrides that one call (recorded as passed, with who), and the release
// goes back to where the hook failed, to be judged there as before (the
// step's hold, its checks, its other hooks, the gates that follow).
func (e *engine) hookApproved(gate string) bool {
	rest, ok := strings.CutPrefix(gate, releaseID(e.s)+"/"+hookGatePrefix)
	if !ok {
		return false
	}
	token := releaseID(e.s) + "/" + rest
	for i := range e.s.Hooks {
		if h := &e.s.Hooks[i]; h.Token == token {
			h.Verdict = splitterv1.VerdictPass
			h.Message = fmt.Sprintf("failed, approved by %s: %s", e.by(), h.Message)
			h.At = *e.now()
			e.upsertCheck(hookCheck(*h, e.s.Step))
		}
	}
	e.s.Gate = ""
	phase := splitterv1.PhaseShifting
	if e.s.Step == 0 {
		phase = splitterv1.PhasePreparing
	}
	e.transit(phase, ReasonApproved, fmt.Sprintf("%q approved by %s: the failed hook call counts as passed; the release goes on from %s",
		gate, e.by(), where(e.s.Step)), false)
	e.wake(time.Millisecond)
	return true
}

func where(step int32) string {
	if step == 0 {
		return "before the first step"
	}
	return fmt.Sprintf("step %d", step)
}

// hookStatus is where the hooks at a point stand.
type hookStatus struct {
	pending bool
	failed  []splitterv1.HookResult
	results []splitterv1.HookResult
}

// hooksAt asks for the policy's hooks at point (and step) and records the
// results that came back.
func (e *engine) hooksAt(point splitterv1.HookPoint, step int32) hookStatus {
	var st hookStatus
	for _, h := range e.p.HooksAt(point) {
		token := e.hookToken(point, step, h.Name)
		r, ok := e.hookResult(token)
		if !ok {
			st.pending = true
			e.calls = append(e.calls, HookCall{Token: token, Hook: h, Step: step})
			continue
		}
		st.results = append(st.results, r)
		if r.Verdict != splitterv1.VerdictPass {
			st.failed = append(st.failed, r)
		}
	}
	if st.pending {
		e.wake(hookPoll)
	}
	return st
}

// hookResult finds a call's result in status, or records it from the
// observations.
func (e *engine) hookResult(token string) (splitterv1.HookResult, bool) {
	for _, r := range e.s.Hooks {
		if r.Token == token {
			return r, true
		}
	}
	r, ok := e.o.Hooks[token]
	if !ok {
		return r, false
	}
	r.Token = token
	e.s.Hooks = append(e.s.Hooks, r)
	if len(e.s.Hooks) > MaxHookResults {
		e.s.Hooks = e.s.Hooks[len(e.s.Hooks)-MaxHookResults:]
	}
	e.upsertCheck(hookCheck(r, e.s.Step))
	return r, true
}

func hookCheck(r splitterv1.HookResult, step int32) splitterv1.CheckResult {
	return splitterv1.CheckResult{Name: "hook/" + r.Name, Verdict: r.Verdict, Message: r.Message, Step: step, EvaluatedAt: r.At}
}

func (e *engine) upsertCheck(c splitterv1.CheckResult) {
	for i := range e.s.Checks {
		if e.s.Checks[i].Name == c.Name {
			e.s.Checks[i] = c
			return
		}
	}
	e.s.Checks = append(e.s.Checks, c)
}

// hookVerdicts are the results as check verdicts, to be judged and
// recorded with the step's other checks.
func hookVerdicts(rs []splitterv1.HookResult) []analysis.Result {
	out := make([]analysis.Result, 0, len(rs))
	for _, r := range rs {
		out = append(out, analysis.Result{Name: "hook/" + r.Name, Verdict: r.Verdict, Message: r.Message})
	}
	return out
}

// hookFailed acts on failed hooks: the first one's onFailure says pause
// (wait for approve or abort, weights unchanged) or roll back.
func (e *engine) hookFailed(failed []splitterv1.HookResult) {
	f := failed[0]
	action := "rollback"
	for _, h := range e.p.Hooks {
		if h.Name == f.Name {
			action = h.OnFailure
		}
	}
	msg := fmt.Sprintf("hook %s failed: %s", f.Name, f.Message)
	if action == "pause" {
		e.awaitGate(hookGatePrefix + strings.TrimPrefix(f.Token, releaseID(e.s)+"/"))
		e.transition = &Transition{Reason: ReasonHookFailed, Warning: true, Message: fmt.Sprintf(
			"%s; weights unchanged until approved or aborted: kubectl splitter approve <name>", msg)}
		return
	}
	e.startRollback(ReasonHookFailed, msg, splitterv1.OutcomeRolledBack)
}

// preTrafficHooksPassed runs the hooks due before any traffic moves: the
// pre-rollout hooks, and the pre-promotion ones when the first step is
// already 100%. False while one is pending or after one failed (acted on).
func (e *engine) preTrafficHooksPassed() bool {
	st := e.hooksAt(splitterv1.HookPreRollout, 0)
	if len(e.p.Steps) == 1 {
		pre := e.hooksAt(splitterv1.HookPrePromotion, 0)
		st.pending = st.pending || pre.pending
		st.failed = append(st.failed, pre.failed...)
	}
	if len(st.failed) > 0 {
		e.hookFailed(st.failed)
		return false
	}
	return !st.pending
}

// stepHooks runs the current step's hooks: the step hooks, and the
// pre-promotion ones during the step before the candidate gets 100%.
func (e *engine) stepHooks() hookStatus {
	st := e.hooksAt(splitterv1.HookStep, e.s.Step)
	if int(e.s.Step)+1 == len(e.p.Steps) {
		pre := e.hooksAt(splitterv1.HookPrePromotion, 0)
		st.pending = st.pending || pre.pending
		st.failed = append(st.failed, pre.failed...)
		st.results = append(st.results, pre.results...)
	}
	return st
}
