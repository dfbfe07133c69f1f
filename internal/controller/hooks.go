package controller

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/hooks"
	"splitter.dev/splitter/internal/policy"
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
	run  *hooks.Runner
	// secrets reads URLs from Secrets uncached: the controller neither
	// watches nor keeps Secrets in memory.
	secrets client.Reader
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get

// setupHooks creates the runner; its wake channel is watched by the
// controller.
func (r *SplitReconciler) setupHooks(mgr ctrl.Manager) error {
	r.hooks = &hookRunner{
		wake:    make(chan event.GenericEvent, 1024),
		run:     hooks.NewRunner(hooks.DefaultConcurrency, mgr.GetLogger().WithName("hooks")),
		secrets: mgr.GetAPIReader(),
	}
	if r.Now != nil {
		r.hooks.run.Now = r.Now
	}
	// Leader only, like the reconciler: stopping cancels the calls in
	// flight, which the next leader makes again.
	return mgr.Add(manager.RunnableFunc(r.hooks.run.Run))
}

// hookResults are split's finished hook calls that status does not record yet.
func (r *SplitReconciler) hookResults(split *splitterv1.Split) map[string]splitterv1.HookResult {
	if r.hooks == nil || r.hooks.run == nil {
		return nil
	}
	recorded := map[string]bool{}
	for _, h := range split.Status.Hooks {
		recorded[h.Token] = true
	}
	return r.hooks.run.Results(client.ObjectKeyFromObject(split), func(token string) bool { return recorded[token] })
}

// startHooks calls each hook of calls not yet called or running.
func (r *SplitReconciler) startHooks(ctx context.Context, split *splitterv1.Split, svc string, status splitterv1.SplitStatus, calls []rollout.HookCall) {
	if r.hooks == nil || r.hooks.run == nil || len(calls) == 0 {
		return
	}
	recorded := map[string]bool{}
	for _, h := range status.Hooks {
		recorded[h.Token] = true
	}
	label := policy.DefaultSubsetLabel
	if status.Policy != nil && status.Policy.SubsetLabel != "" {
		label = status.Policy.SubsetLabel
	}
	key := client.ObjectKeyFromObject(split)
	// Only what an Event and a wake need: status is the engine's.
	obj := &splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Name: split.Name, Namespace: split.Namespace, UID: split.UID}}
	for _, c := range calls {
		if recorded[c.Token] {
			continue
		}
		started := r.hooks.run.Start(hooks.Job{
			Split: key, Token: c.Token, Name: c.Hook.Name, Timeout: c.Hook.Timeout,
			Payload: hooks.NewPayload(split, svc, label, status, hooks.Call{Token: c.Token, Hook: c.Hook, Step: c.Step}),
			URL:     func(ctx context.Context) (string, error) { return r.hookURL(ctx, key.Namespace, c.Hook) },
			Done: func(ctx context.Context, res splitterv1.HookResult) {
				if r.Metrics != nil {
					r.Metrics.Verdicts.WithLabelValues(key.Namespace, key.Name, "hook/"+res.Name, string(res.Verdict)).Inc()
				}
				// A failure's Event is the engine's transition (HookFailed:
				// rolled back or paused), with the same message.
				if res.Verdict == splitterv1.VerdictPass {
					r.event(obj, corev1.EventTypeNormal, "HookPassed", "Hook %s (%s) passed: %s", res.Name, c.Hook.At, res.Message)
				}
				select {
				case r.hooks.wake <- event.GenericEvent{Object: obj}:
				case <-ctx.Done():
				}
			},
		})
		if started {
			log.FromContext(ctx).Info("Hook started", "hook", c.Hook.Name, "at", c.Hook.At, "step", c.Step, "token", c.Token)
		}
	}
}

// hookURL is the hook's URL: in clear in the policy, or read now from its
// Secret. Errors name the Secret and key, never the value.
func (r *SplitReconciler) hookURL(ctx context.Context, ns string, h policy.Hook) (string, error) {
	if h.URLFrom == nil {
		return h.URL, nil
	}
	key := h.URLFrom.Key
	if key == "" {
		key = policy.DefaultSecretKey
	}
	sec := &corev1.Secret{}
	if err := r.hooks.secrets.Get(ctx, client.ObjectKey{Namespace: ns, Name: h.URLFrom.Name}, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("reading the hook's URL: Secret %s/%s not found", ns, h.URLFrom.Name)
		}
		if apierrors.IsForbidden(err) {
			return "", fmt.Errorf("reading the hook's URL: the controller may not read Secret %s/%s (RBAC)", ns, h.URLFrom.Name)
		}
		return "", fmt.Errorf("reading the hook's URL from Secret %s/%s: %s", ns, h.URLFrom.Name, apiReason(err))
	}
	v, ok := sec.Data[key]
	if !ok {
		return "", fmt.Errorf("reading the hook's URL: Secret %s/%s has no key %q", ns, h.URLFrom.Name, key)
	}
	// A file made with echo ends in a newline.
	u := strings.TrimSpace(string(v))
	if msg := hooks.CheckURL(u); msg != "" {
		return "", fmt.Errorf("the URL in Secret %s/%s key %q %s", ns, h.URLFrom.Name, key, msg)
	}
	return u, nil
}

// apiReason is an API error's reason, or a generic word for a transport
// error (whose text names the API server's URL, which is harmless, but
// keep messages short).
func apiReason(err error) string {
	if s, ok := err.(apierrors.APIStatus); ok {
		return string(s.Status().Reason)
	}
	return "the API server did not answer"
}
