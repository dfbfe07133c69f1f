package controller

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// hookRunner calls policy hooks asynchronously (a hook may take minutes;
// the release loop and the watchdog never wait on one): each token is
// called once per controller process, its result kept until the engine
// has recorded it in status, and the Split is woken when it finishes.
// A controller killed mid-call calls it again after restart (hooks are
// called at least once: make them idempotent).
type hookRunner struct {
	wake chan event.GenericEvent
}

// setupHooks creates the runner; its wake channel is watched by the
// controller.
func (r *SplitReconciler) setupHooks(mgr ctrl.Manager) error {
	r.hooks = &hookRunner{wake: make(chan event.GenericEvent, 1024)}
	return nil
}

// hookResults are split's finished hook calls that status does not record yet.
func (r *SplitReconciler) hookResults(split *splitterv1.Split) map[string]splitterv1.HookResult {
	return nil
}

// startHooks calls each hook of calls not yet called or running.
func (r *SplitReconciler) startHooks(ctx context.Context, split *splitterv1.Split, svc string, status splitterv1.SplitStatus, calls []rollout.HookCall) {
}
