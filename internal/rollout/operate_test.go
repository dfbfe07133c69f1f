package rollout

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Operator actions at the edges the golden transcripts do not reach.
func TestOperatorActions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ready := map[splitterv1.Color]ColorState{
		splitterv1.Blue:  {Revision: "v1", Replicas: 3, Ready: 3, RolledOut: true},
		splitterv1.Green: {Revision: "v2", Replicas: 3, Ready: 3, RolledOut: true},
	}
	notReady := map[splitterv1.Color]ColorState{
		splitterv1.Blue:  {Revision: "v1", Replicas: 3, Ready: 3, RolledOut: true},
		splitterv1.Green: {Revision: "v2", Replicas: 3, Ready: 1},
	}
	release := func(phase splitterv1.Phase, mutate func(*splitterv1.SplitStatus)) splitterv1.SplitStatus {
		s := splitterv1.SplitStatus{Phase: phase, Live: splitterv1.Blue, LiveRevision: "v1", Candidate: splitterv1.Green,
			CandidateRevision: "v2", Attempt: 1, ReleaseID: "v2/7", ReleaseCount: 7, Step: 4, Weight: 50, PhaseStartedAt: &metav1.Time{Time: t0}}
		if mutate != nil {
			mutate(&s)
		}
		return s
	}
	awaiting := func(s *splitterv1.SplitStatus) { s.Gate = "v2/7/promotion" }
	pausedAt := func(s *splitterv1.SplitStatus) { s.Gate, s.PausedAt = "v2/promotion", &metav1.Time{Time: t0} }
	for _, tc := range []struct {
		name       string
		status     splitterv1.SplitStatus
		obs        Observations
		wantPhase  splitterv1.Phase
		wantReason string // "" for no transition
		wantAction string // the newest action's verb, "" for none
		paused     bool
	}{
		{"pause holds an approval given meanwhile", release(splitterv1.PhaseAwaitingApproval, awaiting),
			Observations{Approve: "v2/7/promotion", Pause: "v2/7", Colors: ready}, splitterv1.PhaseAwaitingApproval, ReasonPausedByOperator, "pause", true},
		{"resume first, then the approval", release(splitterv1.PhaseAwaitingApproval, pausedAt),
			Observations{Approve: "v2/7/promotion", Colors: ready}, splitterv1.PhaseAwaitingApproval, ReasonResumed, "resume", false},
		{"approval acted on, with who", release(splitterv1.PhaseAwaitingApproval, awaiting),
			Observations{Approve: "v2/7/promotion", RequestedBy: "alice", Colors: ready}, splitterv1.PhaseShifting, ReasonApproved, "approve", false},
		{"a stale pause holds nothing", release(splitterv1.PhaseAwaitingApproval, awaiting),
			Observations{Approve: "v2/7/promotion", Pause: "v2", Colors: ready}, splitterv1.PhaseShifting, ReasonApproved, "approve", false},
		{"promote waits for a Ready candidate", release(splitterv1.PhasePreparing, func(s *splitterv1.SplitStatus) { s.Step, s.Weight = 0, 0 }),
			Observations{Promote: "v2/7", Colors: notReady}, splitterv1.PhasePreparing, "", "", false},
		{"promote from AwaitingApproval", release(splitterv1.PhaseAwaitingApproval, awaiting),
			Observations{Promote: "v2/7", Colors: ready}, splitterv1.PhasePromoting, ReasonPromotedByOperator, "promote", false},
		{"a stale promote is ignored", release(splitterv1.PhaseAwaitingApproval, awaiting),
			Observations{Promote: "v1/6", Colors: ready}, splitterv1.PhaseAwaitingApproval, "", "", false},
		{"retry of the release rolled back", release(splitterv1.PhaseRolledBack, nil),
			Observations{Retry: "v2/7", Colors: ready}, splitterv1.PhasePreparing, ReasonRetried, "retry", false},
		{"a retry of an earlier release of the revision is stale", release(splitterv1.PhaseRolledBack, nil),
			Observations{Retry: "v2/5", Colors: ready}, splitterv1.PhaseRolledBack, "", "", false},
		{"an abort of an earlier release of the revision is stale", release(splitterv1.PhaseShifting, nil),
			Observations{Abort: "v2/5", Colors: ready}, splitterv1.PhaseShifting, "", "", false},
		{"a bare revision names no release", release(splitterv1.PhaseShifting, nil),
			Observations{Abort: "v2", Colors: ready}, splitterv1.PhaseShifting, "", "", false},
		{"a status from before release ids: the revision names it", release(splitterv1.PhaseShifting, func(s *splitterv1.SplitStatus) { s.ReleaseID = "" }),
			Observations{Abort: "v2", Colors: ready}, splitterv1.PhaseRollingBack, ReasonAborted, "abort", false},
		{"no retry once the template moved on", release(splitterv1.PhaseRolledBack, nil),
			Observations{Retry: "v2/7", Revision: "v1", Colors: ready}, splitterv1.PhaseIdle, ReasonReverted, "", false},
		{"abort names who asked", release(splitterv1.PhaseShifting, nil),
			Observations{Abort: "v2/7", RequestedBy: "bob", Colors: ready}, splitterv1.PhaseRollingBack, ReasonAborted, "abort", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.obs
			o.Now, o.Replicas = t0.Add(time.Minute), 3
			if o.Revision == "" {
				o.Revision = "v2"
			}
			w := split(tc.status.Candidate, tc.status.Weight)
			o.Routed = &w
			d := Next(testPlan(), tc.status, o)
			if d.Status.Phase != tc.wantPhase {
				t.Errorf("phase %s, want %s", d.Status.Phase, tc.wantPhase)
			}
			switch {
			case tc.wantReason == "" && d.Transition != nil:
				t.Errorf("transition %+v, want none", *d.Transition)
			case tc.wantReason != "" && (d.Transition == nil || d.Transition.Reason != tc.wantReason):
				t.Errorf("transition %+v, want reason %s", d.Transition, tc.wantReason)
			}
			gotAction := ""
			if len(d.Status.Actions) > 0 {
				gotAction = d.Status.Actions[0].Verb
				if want := o.RequestedBy; want != "" && d.Status.Actions[0].By != want {
					t.Errorf("action by %q, want %q", d.Status.Actions[0].By, want)
				}
			}
			if gotAction != tc.wantAction {
				t.Errorf("action %q, want %q", gotAction, tc.wantAction)
			}
			if (d.Status.PausedAt != nil) != tc.paused {
				t.Errorf("pausedAt %v, want paused=%v", d.Status.PausedAt, tc.paused)
			}
		})
	}
}
