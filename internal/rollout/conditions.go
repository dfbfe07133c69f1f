package rollout

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Condition types: kstatus' three plus the domain ones.
const (
	ConditionReady          = "Ready"
	ConditionReconciling    = "Reconciling"
	ConditionStalled        = "Stalled"
	ConditionWeightsApplied = "WeightsApplied"
	ConditionSLOsMet        = "SLOsMet"
)

// setConditions derives the conditions from the status and observations.
// meta.SetStatusCondition moves lastTransitionTime only on a change of
// status, and takes "now" from the condition we pass.
func setConditions(s *splitterv1.SplitStatus, want Desired, o Observations) {
	now := metav1.NewTime(o.Now)
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{
			Type: t, Status: status, Reason: reason, Message: msg, LastTransitionTime: now, ObservedGeneration: s.ObservedGeneration,
		})
	}
	applied := want.Weights != nil && o.Routed != nil && *o.Routed == *want.Weights
	adopting := s.Phase == splitterv1.PhaseIdle && !applied

	switch s.Phase {
	case splitterv1.PhaseIdle, splitterv1.PhasePromoting:
		if adopting {
			set(ConditionReady, metav1.ConditionFalse, "Adopting", fmt.Sprintf("waiting for %s to be Ready and routed", s.Live))
		} else {
			set(ConditionReady, metav1.ConditionTrue, string(s.Phase), fmt.Sprintf("revision %s is live on %s", s.LiveRevision, s.Live))
		}
	case splitterv1.PhaseRolledBack:
		set(ConditionReady, metav1.ConditionFalse, string(s.Phase), rolledBackMessage(s))
	default:
		set(ConditionReady, metav1.ConditionFalse, string(s.Phase), fmt.Sprintf("releasing revision %s on %s", s.CandidateRevision, s.Candidate))
	}
	switch {
	case adopting:
		set(ConditionReconciling, metav1.ConditionTrue, "Adopting", "the colors are being set up")
	case s.Phase == splitterv1.PhaseIdle || s.Phase == splitterv1.PhasePromoting || s.Phase == splitterv1.PhaseRolledBack:
		set(ConditionReconciling, metav1.ConditionFalse, string(s.Phase), "no release in progress")
	default:
		set(ConditionReconciling, metav1.ConditionTrue, string(s.Phase), fmt.Sprintf("step %d, %s at %d%%", s.Step, s.Candidate, s.Weight))
	}
	set(ConditionStalled, metav1.ConditionFalse, "Progressing", "")
	switch {
	case applied:
		set(ConditionWeightsApplied, metav1.ConditionTrue, "Applied", want.Weights.String())
	case want.Weights == nil:
		set(ConditionWeightsApplied, metav1.ConditionUnknown, "Waiting", "no weights to apply yet")
	case o.Routed == nil:
		set(ConditionWeightsApplied, metav1.ConditionFalse, "Pending", "want "+want.Weights.String()+", the router has no routing yet")
	default:
		set(ConditionWeightsApplied, metav1.ConditionFalse, "Pending", "want "+want.Weights.String()+", the router reports "+o.Routed.String())
	}
	met, reason, msg := metav1.ConditionUnknown, "NoVerdicts", "no checks evaluated in this release"
	for _, c := range s.Checks {
		switch c.Verdict {
		case splitterv1.VerdictFail:
			met, reason, msg = metav1.ConditionFalse, "CheckFailed", fmt.Sprintf("%s = %s, bound %s", c.Name, c.Value, c.Bound)
		case splitterv1.VerdictPass:
			if met == metav1.ConditionUnknown && reason == "NoVerdicts" {
				met, reason, msg = metav1.ConditionTrue, "AllPassed", fmt.Sprintf("step %d: every check passed", c.Step)
			}
		default:
			if met != metav1.ConditionFalse {
				met, reason, msg = metav1.ConditionUnknown, string(c.Verdict), fmt.Sprintf("%s: %s", c.Name, c.Message)
			}
		}
	}
	set(ConditionSLOsMet, met, reason, msg)
}

func rolledBackMessage(s *splitterv1.SplitStatus) string {
	if len(s.History) > 0 {
		h := s.History[0]
		return fmt.Sprintf("revision %s rolled back (%s): %s", h.Revision, h.Reason, h.Message)
	}
	return "rolled back"
}
