package controller

import (
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/policy"
	"splitter.dev/splitter/internal/rollout"
)

// queueNotification adds a transition that matters to the outbox in
// status, for each of the policy's receivers: it is committed in the same
// status write as the transition itself. plan may be nil (a stall): the
// last plan kept in status names the receivers then.
func (r *SplitReconciler) queueNotification(split *splitterv1.Split, plan *policy.Plan, status *splitterv1.SplitStatus, t *rollout.Transition, now time.Time) {
}

// setupNotifier adds the deliverer (leader only) to the manager.
func (r *SplitReconciler) setupNotifier(mgr ctrl.Manager) error {
	return nil
}
