// Package controller is the reconciler: it reads the world, asks the engine
// (internal/rollout) for the next decision, persists the decision in the
// Split's status, then makes the world match it. The status write comes
// first: it is the commit point, so a crash after it repeats the same
// actions and a crash before it repeats the same decision.
package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/mesh"
	"splitter.dev/splitter/internal/policy"
	"splitter.dev/splitter/internal/rollout"
)

// Finalizer lets splitter hand traffic back to the user's Deployment before
// a Split (and the color Deployments it owns) goes away.
const Finalizer = "splitter.dev/finalizer"

// SplitReconciler runs releases. One Split per opted-in Deployment, with
// the same name: the request key names both.
type SplitReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Checks   CheckRunner
	// Counters reads request counters for SLOs; nil turns them off.
	Counters CounterReader
	// WatchdogInterval is how often an active release with SLOs is looked
	// at (the watchdog runs at every look). Default: ScrapeInterval.
	WatchdogInterval time.Duration
	// GrossInterval is the longest time between the sweep's gross check
	// looks (analysis.Evidence.Gross) between its full looks; it also
	// looks when a scrape is due to have landed. 0 turns the gross check
	// off, in the full looks and the reconciles too.
	GrossInterval time.Duration
	// ScrapeInterval is Prometheus' scrape interval: a step's evidence
	// starts two scrapes after its weights are confirmed. Default 15s.
	ScrapeInterval time.Duration
	Metrics        *Metrics
	// Now is the clock; tests may replace it.
	Now func() time.Time

	// The routers remember their last writes, so a reconcile that reads
	// a stale cache does not send the same write again.
	istio    *mesh.Istio
	selector *mesh.ServiceSelector
	// hooks calls policy hooks asynchronously (hooks.go).
	hooks *hookRunner
	// ownWrites remembers, per Split, the resourceVersion this replica's
	// last status write replaced (see cacheBehindOwnWrite).
	ownWrites sync.Map
	// specWrites remembers, per Deployment, the UID and generation this
	// replica's last spec write replaced (see patchSpec).
	specWrites sync.Map
	// held keeps, per Split, evidence newer than its status holds (see
	// patchStatus and heldStatus).
	held sync.Map
}

// +kubebuilder:rbac:groups=splitter.dev,resources=splits,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=splitter.dev,resources=splits/status;splits/finalizers,verbs=get;update;patch
// +kubebuilder:rbac:groups=splitter.dev,resources=splitpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=networking.istio.io,resources=virtualservices;destinationrules,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// (The leader-election Lease is granted by a Role in the controller's own
// namespace, deploy/rbac/leader_election_role.yaml, not cluster-wide.)

// Reconcile runs one pass. A write that lost a race (a conflict with a
// newer resourceVersion, or an object the cache had not seen yet) is not an
// error: the next pass reads the newer state and decides again.
func (r *SplitReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx).WithValues("split", req.NamespacedName.String())
	ctx = log.IntoContext(ctx, logger)
	res, err := r.reconcile(ctx, req)
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
		logger.V(1).Info("Write raced with another; retrying", "error", err.Error())
		return ctrl.Result{RequeueAfter: 50 * time.Millisecond}, nil
	}
	return res, err
}

// reconcile reads top to bottom: get, handle opt-in and opt-out, handle
// deletion, then run the release.
func (r *SplitReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)

	user := &appsv1.Deployment{}
	if err := r.Client.Get(ctx, req.NamespacedName, user); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	} else if err != nil {
		user = nil
	}
	optedIn := user != nil && user.DeletionTimestamp == nil && user.Annotations[splitterv1.PolicyAnnotation] != ""

	split := &splitterv1.Split{}
	if err := r.Client.Get(ctx, req.NamespacedName, split); apierrors.IsNotFound(err) {
		r.held.Delete(req.NamespacedName) // finalized elsewhere, or its finalizer removed
		if !optedIn {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, r.createSplit(ctx, user)
	} else if err != nil {
		return ctrl.Result{}, err
	}

	if r.cacheBehindOwnWrite(req.NamespacedName, split.ResourceVersion) {
		// The watch event of that write will bring this Split back soon;
		// the requeue is a fallback.
		logger.V(1).Info("The cache has not seen our last status write yet; waiting for it")
		return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	if !split.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, split, user)
	}
	if !optedIn {
		logger.Info("Opting out: the policy annotation is gone")
		// With preconditions: a replica that lost the Lease, reading a
		// stale cache, must not delete a Split opted in again since.
		return ctrl.Result{}, client.IgnoreNotFound(r.Client.Delete(ctx, split, client.Preconditions{UID: &split.UID, ResourceVersion: &split.ResourceVersion}))
	}
	if want := specFor(user); split.Spec != want {
		split.Spec = want
		err := r.Client.Update(ctx, split)
		r.Metrics.wroteResult("Split", err)
		return ctrl.Result{}, err
	}
	return r.release(ctx, split, user)
}

func specFor(user *appsv1.Deployment) splitterv1.SplitSpec {
	return splitterv1.SplitSpec{
		Workload:       user.Name,
		Policy:         user.Annotations[splitterv1.PolicyAnnotation],
		Service:        user.Annotations[splitterv1.ServiceAnnotation],
		VirtualService: user.Annotations[splitterv1.VirtualServiceAnnotation],
		Routes:         user.Annotations[splitterv1.RoutesAnnotation],
		PinnedRoutes:   user.Annotations[splitterv1.PinnedRoutesAnnotation],
	}
}

// createSplit opts a Deployment in. The Split is owned by the Deployment
// (deleting the Deployment deletes it) and carries the finalizer.
func (r *SplitReconciler) createSplit(ctx context.Context, user *appsv1.Deployment) error {
	split := &splitterv1.Split{
		ObjectMeta: metav1.ObjectMeta{
			Name: user.Name, Namespace: user.Namespace, Finalizers: []string{Finalizer},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: user.Name, UID: user.UID,
			}},
		},
		Spec: specFor(user),
	}
	log.FromContext(ctx).Info("Opting in", "policy", split.Spec.Policy)
	err := r.Client.Create(ctx, split)
	r.Metrics.wroteResult("Split", err)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	r.event(split, corev1.EventTypeNormal, "OptedIn", "Deployment %s opted in with policy %s", user.Name, split.Spec.Policy)
	return nil
}

// release runs one step of the release loop.
func (r *SplitReconciler) release(ctx context.Context, split *splitterv1.Split, user *appsv1.Deployment) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	now := r.Now()

	plan, spec, err := r.plan(ctx, split)
	if err != nil {
		return r.stalled(ctx, split, user, nil, err)
	}
	svc, err := r.service(ctx, split, user, plan.SubsetLabel)
	if err != nil {
		return r.stalled(ctx, split, user, plan, err)
	}
	if err := checkAnnotations(split); err != nil {
		return r.stalled(ctx, split, user, plan, err)
	}
	router := r.router(plan)
	target := routeTarget(split, svc, plan.SubsetLabel, split.Status)

	if err := router.Ensure(ctx, target); err != nil {
		var cerr *mesh.ConfigError
		if errors.As(err, &cerr) {
			return r.stalled(ctx, split, user, plan, err)
		}
		return ctrl.Result{}, fmt.Errorf("ensuring routing objects: %w", err)
	}
	obs, colors, routing, err := r.observe(ctx, split, user, router, target, now)
	if err != nil {
		return r.stalled(ctx, split, user, plan, err)
	}
	// The pass decides on the evidence this replica holds (see
	// patchStatus): when a step's checks are due depends on when its
	// evidence settled, which may not be written yet (the engine would
	// wait for verdicts the pass, reading the written status, never
	// asked for). split.Status stays the status as written.
	st := r.heldStatus(split)
	if rollout.ChecksDue(plan, st, now) && len(plan.Checks) > 0 {
		vars := analysis.Vars{
			Namespace: split.Namespace, Workload: user.Name, Service: svc, Window: plan.Window(),
			Candidate: ColorName(user.Name, split.Status.Candidate), Live: ColorName(user.Name, split.Status.Live),
		}
		obs.Verdicts = r.Checks.Run(ctx, plan.PrometheusAddress, plan.Checks, vars, now)
		for _, v := range obs.Verdicts {
			logger.Info("Check evaluated", "step", split.Status.Step, "check", v.Name, "value", v.ValueString(),
				"bound", v.Bound, "verdict", v.Verdict, "message", v.Message)
			if r.Metrics != nil {
				r.Metrics.Verdicts.WithLabelValues(split.Namespace, split.Name, v.Name, string(v.Verdict)).Inc()
			}
		}
	}

	if _, _, watched := rollout.Watched(st); watched && len(plan.SLOs) > 0 {
		r.readCounters(ctx, plan, split, user, &obs)
	}

	obs.Hooks = r.hookResults(split)

	d := rollout.Next(plan, st, obs)
	d.Status.ObservedGeneration = split.Generation
	// Kept for a stall: the watchdog judges with the last valid plan and
	// snaps back through the last resolved Service.
	d.Status.Policy, d.Status.Service = spec, svc
	d.Status.Routes, d.Status.PinnedRoutes = nil, nil
	if routing != nil {
		d.Status.Routes, d.Status.PinnedRoutes = routing.Managed, routing.Pinned
	}
	// Writes go with where pinned routes belong after this decision.
	target = routeTarget(split, svc, plan.SubsetLabel, d.Status)

	// Routes pinned to a color that just stopped being live (patchStatus
	// below replaces split.Status).
	pinned := ""
	if split.Spec.PinnedRoutes != splitterv1.PinnedRoutesFollowLive {
		pinned = mesh.PinnedNotLive(split.Status, d.Status)
	}

	// Notifications go out with the decision: the outbox is in status.
	r.queueNotification(split, plan, &d.Status, d.Transition, now)

	// Commit the decision, then act on it.
	if err := r.patchStatus(ctx, split, d.Status); err != nil {
		return ctrl.Result{}, err
	}
	r.startHooks(ctx, split, svc, d.Status, d.Desired.Hooks)
	if t := d.Transition; t != nil {
		kind := corev1.EventTypeNormal
		if t.Warning {
			kind = corev1.EventTypeWarning
		}
		r.event(split, kind, t.Reason, "%s", t.Message)
		logger.Info("Transition", "phase", d.Status.Phase, "step", d.Status.Step, "weight", d.Status.Weight, "reason", t.Reason, "message", t.Message)
		if d.Status.Phase == splitterv1.PhaseRollingBack && r.Metrics != nil {
			r.Metrics.SnapBacks.WithLabelValues(split.Namespace, split.Name, t.Reason).Inc()
		}
	} else if d.Status.Extensions > split.Status.Extensions && d.Status.Step == split.Status.Step {
		// A look without a verdict that is no transition (a step that ends
		// on evidence, maxStepDuration): no Event, but a line an operator
		// can follow, with what the gate still lacks.
		logger.V(1).Info("Step judged without a verdict", "step", d.Status.Step, "looks", d.Status.Extensions+1, "checks", describeChecks(d.Status.Checks))
	}
	r.Metrics.observe(split)
	if pinned != "" {
		r.event(split, corev1.EventTypeWarning, "PinnedRouteNotLive", "%s", pinned)
	}

	if w := d.Desired.Weights; w != nil && (obs.Routed == nil || *obs.Routed != *w || routing.PinsToMove(target)) {
		if err := router.SetWeights(ctx, target, *w); err != nil {
			var cerr *mesh.ConfigError
			if errors.As(err, &cerr) {
				return r.stalled(ctx, split, user, plan, err)
			}
			return ctrl.Result{}, fmt.Errorf("setting weights %s: %w", w, err)
		}
		logger.Info("Weights set", "weight", w.String(), "phase", d.Status.Phase, "step", d.Status.Step)
	}
	if err := r.applyColors(ctx, split, user, plan, obs.Revision, colors, d.Desired.Colors); err != nil {
		return ctrl.Result{}, err
	}
	if d.Desired.ScaleTemplateToZero && (user.Spec.Replicas == nil || *user.Spec.Replicas != 0) {
		if err := r.scale(ctx, user, 0); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: d.Requeue}, nil
}

// readCounters fills the observations with the colors' request counters;
// a failure is recorded for the engine, never returned.
func (r *SplitReconciler) readCounters(ctx context.Context, plan *policy.Plan, split *splitterv1.Split, user *appsv1.Deployment, obs *rollout.Observations) {
	if r.Counters == nil {
		obs.CountersErr = "the controller has no counter reader"
		return
	}
	specs := analysis.Specs(plan.SLOs)
	workloads := map[splitterv1.Color]string{
		splitterv1.Blue: ColorName(user.Name, splitterv1.Blue), splitterv1.Green: ColorName(user.Name, splitterv1.Green),
	}
	revision := r.revisions(ctx, split.Namespace, user.Name, split.Status, splitterv1.Blue, splitterv1.Green)
	counters, err := r.Counters.Counters(ctx, plan.PrometheusAddress, split.Namespace, workloads, revision, specs, obs.Now)
	if err != nil {
		obs.CountersErr = err.Error()
		log.FromContext(ctx).Info("Reading the counters failed", "error", err.Error())
		return
	}
	if counters == nil {
		counters = rollout.Counters{}
	}
	obs.Counters = counters
}

// plan compiles the Split's policy; errors carry field paths. It returns
// the spec that compiled too, to be kept in status.
func (r *SplitReconciler) plan(ctx context.Context, split *splitterv1.Split) (*policy.Plan, *splitterv1.SplitPolicySpec, error) {
	pol := &splitterv1.SplitPolicy{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: split.Namespace, Name: split.Spec.Policy}, pol); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, &stallError{reason: "PolicyNotFound", msg: fmt.Sprintf("SplitPolicy %q not found in namespace %s", split.Spec.Policy, split.Namespace)}
		}
		return nil, nil, err
	}
	plan, errs := r.compile(pol.Spec)
	if len(errs) > 0 {
		return nil, nil, &stallError{reason: "PolicyInvalid", msg: fmt.Sprintf("SplitPolicy %s: %s", pol.Name, errs.ToAggregate().Error())}
	}
	return plan, pol.Spec.DeepCopy(), nil
}

// compile compiles a policy spec with the controller's timing (its
// --scrape-interval), which the plan needs but the policy does not say.
func (r *SplitReconciler) compile(spec splitterv1.SplitPolicySpec) (*policy.Plan, field.ErrorList) {
	plan, errs := policy.Compile(spec)
	if len(errs) > 0 {
		return nil, errs
	}
	plan.Timing = analysis.Timing{Scrape: r.ScrapeInterval, NoGross: r.GrossInterval <= 0}
	return plan, nil
}

// lastPlan is the plan kept in status: the last one that compiled.
func (r *SplitReconciler) lastPlan(split *splitterv1.Split) *policy.Plan {
	if split.Status.Policy == nil {
		return nil
	}
	plan, _ := r.compile(*split.Status.Policy)
	return plan
}

// service finds the workload's Service: named by annotation, or the one
// Service whose selector picks the workload's pods.
func (r *SplitReconciler) service(ctx context.Context, split *splitterv1.Split, user *appsv1.Deployment, subsetLabel string) (string, error) {
	if name := split.Spec.Service; name != "" {
		svc := &corev1.Service{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: split.Namespace, Name: name}, svc); err != nil {
			if apierrors.IsNotFound(err) {
				return "", &stallError{reason: "ServiceNotFound", msg: fmt.Sprintf("Service %q (named by %s) not found", name, splitterv1.ServiceAnnotation)}
			}
			return "", err
		}
		if err := checkNamedService(svc, user, subsetLabel); err != nil {
			return "", err
		}
		return name, nil
	}
	var list corev1.ServiceList
	// Read-only use of the cached objects: no copy of every Service on
	// every look (a hundred releases look every second).
	if err := r.Client.List(ctx, &list, client.InNamespace(split.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return "", err
	}
	var found []string
	for i := range list.Items {
		if selectsWorkload(&list.Items[i], user, subsetLabel) {
			found = append(found, list.Items[i].Name)
		}
	}
	slices.Sort(found) // one message for one cause, whatever the cache's order
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", &stallError{reason: "ServiceNotFound", msg: fmt.Sprintf("no Service selects the pods of %s: create one, or name it with %s", user.Name, splitterv1.ServiceAnnotation)}
	}
	return "", &stallError{reason: "ServiceAmbiguous", msg: fmt.Sprintf("Services %s all select the pods of %s: name one with %s", strings.Join(found, ", "), user.Name, splitterv1.ServiceAnnotation)}
}

func (r *SplitReconciler) router(p *policy.Plan) mesh.Router {
	if p.Router == splitterv1.RouterServiceSelector {
		if r.selector != nil {
			return r.selector
		}
		return mesh.ServiceSelector{Client: r.Client}
	}
	if r.istio != nil {
		return r.istio
	}
	return mesh.Istio{Client: r.Client}
}

// observe reads what the engine needs.
// routing is the router's report of the routes, when it makes one.
func (r *SplitReconciler) observe(ctx context.Context, split *splitterv1.Split, user *appsv1.Deployment, router mesh.Router, t mesh.Target, now time.Time) (rollout.Observations, map[splitterv1.Color]*appsv1.Deployment, *mesh.Routing, error) {
	o := rollout.Observations{
		Now:         now,
		Revision:    TemplateRevision(&user.Spec.Template),
		Colors:      map[splitterv1.Color]rollout.ColorState{},
		Approve:     split.Annotations[splitterv1.ApproveAnnotation],
		Abort:       split.Annotations[splitterv1.AbortAnnotation],
		Pause:       split.Annotations[splitterv1.PauseAnnotation],
		Retry:       split.Annotations[splitterv1.RetryAnnotation],
		Promote:     split.Annotations[splitterv1.PromoteAnnotation],
		RequestedBy: requestedBy(split),
		Replicas:    rollout.WorkloadReplicas(user.Spec.Replicas, split.Status.Replicas),
	}
	colors := map[splitterv1.Color]*appsv1.Deployment{}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		d := &appsv1.Deployment{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: split.Namespace, Name: ColorName(user.Name, c)}, d)
		if client.IgnoreNotFound(err) != nil {
			return o, nil, nil, err
		}
		if err == nil {
			if !metav1.IsControlledBy(d, split) {
				return o, nil, nil, &stallError{reason: "NameConflict", msg: fmt.Sprintf("Deployment %s exists and is not splitter's: rename it", d.Name)}
			}
			colors[c] = d
		}
		o.Colors[c] = colorState(colors[c])
	}
	if in, ok := router.(mesh.Inspector); ok {
		routing, err := in.Inspect(ctx, t)
		if err != nil {
			return o, nil, nil, err
		}
		o.Routed = routing.Weights
		return o, colors, routing, nil
	}
	routed, err := router.Observe(ctx, t)
	if err != nil {
		return o, nil, nil, err
	}
	o.Routed = routed
	return o, colors, nil, nil
}

// applyColors converges the color Deployments to the desired specs,
// writing only what differs.
func (r *SplitReconciler) applyColors(ctx context.Context, split *splitterv1.Split, user *appsv1.Deployment, plan *policy.Plan, revision string, have map[splitterv1.Color]*appsv1.Deployment, want map[splitterv1.Color]rollout.ColorSpec) error {
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		spec, ok := want[c]
		if !ok {
			continue
		}
		cur := have[c]
		wantRev := spec.Revision
		if wantRev == "" && cur != nil {
			wantRev = cur.Spec.Template.Annotations[splitterv1.RevisionAnnotation]
		}
		if cur == nil {
			if wantRev != "" && wantRev != revision {
				// The template for that revision is gone from the user's
				// Deployment; the engine moves on (progress deadline).
				continue
			}
			err := r.Client.Create(ctx, colorDeployment(split, user, c, plan.SubsetLabel, revision, spec.Replicas))
			r.Metrics.wroteResult("Deployment", err)
			if err != nil {
				return fmt.Errorf("creating %s: %w", ColorName(user.Name, c), err)
			}
			continue
		}
		curRev := cur.Spec.Template.Annotations[splitterv1.RevisionAnnotation]
		replicasOK := cur.Spec.Replicas != nil && *cur.Spec.Replicas == spec.Replicas
		if curRev == wantRev && replicasOK {
			continue
		}
		next := cur.DeepCopy()
		if curRev != wantRev && wantRev == revision {
			next.Spec = colorDeployment(split, user, c, plan.SubsetLabel, revision, spec.Replicas).Spec
			next.Spec.Selector = cur.Spec.Selector // immutable
		}
		next.Spec.Replicas = &spec.Replicas
		if equality.Semantic.DeepEqual(cur.Spec, next.Spec) {
			continue
		}
		if _, err := r.patchSpec(ctx, cur.DeepCopy(), "/spec", next.Spec); err != nil {
			return fmt.Errorf("updating %s: %w", cur.Name, err)
		}
	}
	return nil
}

func (r *SplitReconciler) scale(ctx context.Context, d *appsv1.Deployment, replicas int32) error {
	sent, err := r.patchSpec(ctx, d, "/spec/replicas", replicas)
	if err != nil {
		return fmt.Errorf("scaling %s to %d: %w", d.Name, replicas, err)
	}
	if sent {
		log.FromContext(ctx).Info("Scaled the user's Deployment", "replicas", replicas)
	}
	return nil
}

// patchStatus writes the status if it changed, with an optimistic lock: a
// conflict means someone else wrote first; the next reconcile decides again.
// split.Status must be the status as written (not heldStatus's). A change
// of the evidence alone is held in memory instead, until
// rollout.StatusWriteDue (a checkpoint every 30 s cost most of a release's
// writes): the next passes and sweeps decide on it (heldStatus), and any
// other write carries it.
func (r *SplitReconciler) patchStatus(ctx context.Context, split *splitterv1.Split, status splitterv1.SplitStatus) error {
	key := client.ObjectKeyFromObject(split)
	if !rollout.StatusWriteDue(analysis.Timing{Scrape: r.ScrapeInterval}, split.Status, status, r.Now()) {
		if equality.Semantic.DeepEqual(split.Status.Analysis, status.Analysis) {
			r.held.Delete(key)
		} else {
			r.held.Store(key, heldEvidence{uid: split.UID, written: split.Status.Analysis.DeepCopy(), held: status.Analysis.DeepCopy()})
		}
		// split.Status stays as written (it differs from status in the
		// evidence only): a later write in this pass patches over it.
		return nil
	}
	base := split.DeepCopy()
	split.Status = status
	err := r.Client.Status().Patch(ctx, split, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	r.Metrics.wroteResult("SplitStatus", err)
	if err == nil {
		r.ownWrites.Store(key, ownWrite{replaced: base.ResourceVersion, at: r.Now()})
		r.held.Delete(key)
	}
	return err
}

// heldEvidence is evidence a pass decided on but did not write: the
// evidence as written when it was held, and the newer evidence.
type heldEvidence struct {
	uid           types.UID
	written, held *splitterv1.AnalysisStatus
}

// heldStatus is the Split's status with the evidence this replica holds
// for it, if the status still carries the evidence it grew from (a write
// by anyone since, a new release, another replica's evidence: the status
// as written). The engine decides on it; patchStatus writes over the
// status as written.
func (r *SplitReconciler) heldStatus(split *splitterv1.Split) splitterv1.SplitStatus {
	st := split.Status
	v, ok := r.held.Load(client.ObjectKeyFromObject(split))
	if !ok {
		return st
	}
	h := v.(heldEvidence)
	if h.uid != split.UID || !equality.Semantic.DeepEqual(h.written, split.Status.Analysis) {
		return st
	}
	st.Analysis = h.held.DeepCopy()
	return st
}

// describeChecks is one line of checks: name, verdict and message.
func describeChecks(checks []splitterv1.CheckResult) string {
	parts := make([]string, 0, len(checks))
	for _, c := range checks {
		parts = append(parts, fmt.Sprintf("%s %s: %s", c.Name, c.Verdict, c.Message))
	}
	return strings.Join(parts, "; ")
}

// ownWrite is this replica's last status write of a Split: the
// resourceVersion it replaced, and when.
type ownWrite struct {
	replaced string
	at       time.Time
}

// ownWriteWait bounds how long a Split's passes wait for the cache to show
// this replica's write: a watch that fell behind must not keep the
// watchdog away (past it, the pass runs and a stale write is refused).
const ownWriteWait = 5 * time.Second

// cacheBehindOwnWrite says the cache still holds the Split as it was
// before this replica's last status write: a pass on it would decide on
// superseded state, and its own write would be refused (409) for the stale
// resourceVersion. A release used to see 1-4 such conflicts (issue 18).
// Only the exact version the write replaced counts as stale: any other
// (ours, or a newer one from someone else) is read as usual, and so is a
// stale one after ownWriteWait. Kept in memory only: after a restart the
// optimistic lock still guards the write.
func (r *SplitReconciler) cacheBehindOwnWrite(key client.ObjectKey, resourceVersion string) bool {
	return r.behind(&r.ownWrites, key, resourceVersion)
}

// behind says the cache still holds the version of key that this
// replica's last write (recorded in writes) replaced, within ownWriteWait.
func (r *SplitReconciler) behind(writes *sync.Map, key client.ObjectKey, version string) bool {
	v, ok := writes.Load(key)
	if !ok {
		return false
	}
	if w := v.(ownWrite); w.replaced == version && r.Now().Sub(w.at) < ownWriteWait {
		return true
	}
	writes.Delete(key)
	return false
}

// stallError is a problem only the user can fix: no retry, no traffic change.
type stallError struct{ reason, msg string }

func (e *stallError) Error() string { return e.msg }

// stalled reports a configuration problem: Stalled with the message (field
// paths included), an Event when it is new, no traffic change. Transient
// errors are returned for a retry with backoff instead. While any traffic
// is on a candidate, the watchdog still judges first (with plan, or the
// last valid plan kept in status) and a trip still snaps back.
func (r *SplitReconciler) stalled(ctx context.Context, split *splitterv1.Split, user *appsv1.Deployment, plan *policy.Plan, err error) (ctrl.Result, error) {
	var serr *stallError
	var cerr *mesh.ConfigError
	if !errors.As(err, &serr) && !errors.As(err, &cerr) {
		return ctrl.Result{}, err
	}
	if res, done, gerr := r.guard(ctx, split, user, plan, err); done || gerr != nil {
		return res, gerr
	}
	return r.markStalled(ctx, split, r.heldStatus(split), err)
}

// guard runs the engine's safety part for a stalled release: the
// watchdog, and the snap-back it decides, written through the last
// resolved Service. done says it acted.
func (r *SplitReconciler) guard(ctx context.Context, split *splitterv1.Split, user *appsv1.Deployment, plan *policy.Plan, cause error) (ctrl.Result, bool, error) {
	st := r.heldStatus(split)
	if !rollout.Guarded(st) {
		return ctrl.Result{}, false, nil
	}
	if plan == nil {
		if plan = r.lastPlan(split); plan == nil {
			return ctrl.Result{}, false, nil
		}
	}
	logger := log.FromContext(ctx)
	svc := st.Service
	if svc == "" || user == nil {
		return ctrl.Result{}, false, nil
	}
	router := r.router(plan)
	// Pinned routes stay where they are while stalled.
	target := routeTarget(split, svc, plan.SubsetLabel, splitterv1.SplitStatus{})
	obs, _, _, err := r.observe(ctx, split, user, router, target, r.Now())
	if err != nil {
		// Not even the colors or the routing can be read: judge on the
		// counters alone (a lost pod is not seen).
		obs = rollout.Observations{Now: r.Now(), Replicas: rollout.WorkloadReplicas(user.Spec.Replicas, st.Replicas)}
	}
	if len(plan.SLOs) > 0 {
		r.readCounters(ctx, plan, split, user, &obs)
	}
	d, act := rollout.Guard(plan, st, obs)
	if !act {
		return ctrl.Result{}, false, nil
	}
	// Commit the watchdog's evidence (and a snap-back) with the stall.
	d.Status.ObservedGeneration = split.Generation
	r.queueNotification(split, plan, &d.Status, d.Transition, obs.Now)
	res, err := r.markStalled(ctx, split, d.Status, cause)
	if err != nil {
		return res, true, err
	}
	if t := d.Transition; t != nil {
		r.event(split, corev1.EventTypeWarning, t.Reason, "%s (while stalled: %s)", t.Message, cause.Error())
		logger.Info("Transition while stalled", "phase", d.Status.Phase, "reason", t.Reason, "message", t.Message)
		if r.Metrics != nil && d.Status.Phase == splitterv1.PhaseRollingBack {
			r.Metrics.SnapBacks.WithLabelValues(split.Namespace, split.Name, t.Reason).Inc()
		}
	}
	if w := d.Desired.Weights; w != nil && (obs.Routed == nil || *obs.Routed != *w) {
		if err := router.SetWeights(ctx, target, *w); err != nil {
			logger.Info("Snap-back while stalled could not be written; retrying", "error", err.Error())
			return ctrl.Result{RequeueAfter: time.Second}, true, nil
		}
		logger.Info("Weights set while stalled", "weight", w.String(), "phase", d.Status.Phase)
	}
	return ctrl.Result{RequeueAfter: min(res.RequeueAfter, d.Requeue)}, true, nil
}

// markStalled writes status with Stalled set.
func (r *SplitReconciler) markStalled(ctx context.Context, split *splitterv1.Split, base splitterv1.SplitStatus, err error) (ctrl.Result, error) {
	reason := "RoutingConflict"
	var serr *stallError
	if errors.As(err, &serr) {
		reason = serr.reason
	}
	msg := err.Error()
	status := *base.DeepCopy()
	// A copy: SetStatusCondition below changes the slice in place.
	var prev *metav1.Condition
	if c := meta.FindStatusCondition(status.Conditions, rollout.ConditionStalled); c != nil {
		cp := *c
		prev = &cp
	}
	now := metav1.NewTime(r.Now())
	for _, c := range []metav1.Condition{
		{Type: rollout.ConditionStalled, Status: metav1.ConditionTrue, Reason: reason, Message: msg},
		{Type: rollout.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: msg},
		{Type: rollout.ConditionReconciling, Status: metav1.ConditionFalse, Reason: reason, Message: "waiting for the configuration to be fixed"},
	} {
		c.LastTransitionTime, c.ObservedGeneration = now, split.Generation
		meta.SetStatusCondition(&status.Conditions, c)
	}
	status.ObservedGeneration = split.Generation
	if prev == nil || prev.Status != metav1.ConditionTrue || prev.Message != msg {
		log.FromContext(ctx).Info("Stalled: traffic left as it is", "reason", reason, "message", msg)
		r.event(split, corev1.EventTypeWarning, reason, "%s", msg)
		if prev == nil || prev.Status != metav1.ConditionTrue {
			r.queueNotification(split, nil, &status, &rollout.Transition{Reason: reason, Message: msg, Warning: true, Stalled: true}, now.Time)
		}
	}
	// Fixing the cause triggers a watch; the periodic requeue also catches
	// causes outside the watched objects.
	return ctrl.Result{RequeueAfter: time.Minute}, r.patchStatus(ctx, split, status)
}

// finalize hands traffic back before the Split goes: the user's Deployment
// gets its replicas back and must be Ready, routing returns to it, then the
// color Deployments are deleted. Nothing the user created is deleted.
func (r *SplitReconciler) finalize(ctx context.Context, split *splitterv1.Split, user *appsv1.Deployment) (ctrl.Result, error) {
	r.held.Delete(client.ObjectKeyFromObject(split))
	if !controllerutil.ContainsFinalizer(split, Finalizer) {
		return ctrl.Result{}, nil
	}
	logger := log.FromContext(ctx)
	if user != nil && user.DeletionTimestamp.IsZero() {
		want := int32(1)
		if split.Status.Replicas != nil {
			want = *split.Status.Replicas
		}
		if user.Spec.Replicas != nil && *user.Spec.Replicas == 0 {
			if err := r.scale(ctx, user, want); err != nil {
				return ctrl.Result{}, err
			}
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		if user.Status.ReadyReplicas < *user.Spec.Replicas || user.Status.ObservedGeneration < user.Generation {
			logger.Info("Opt-out waits for the user's Deployment to be Ready", "ready", user.Status.ReadyReplicas, "want", *user.Spec.Replicas)
			return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
		}
	}
	subsetLabel, routerKind := policy.DefaultSubsetLabel, splitterv1.RouterIstio
	if plan, _, err := r.plan(ctx, split); err == nil {
		subsetLabel, routerKind = plan.SubsetLabel, plan.Router
	}
	if user != nil {
		if svc, err := r.service(ctx, split, user, subsetLabel); err == nil {
			target := routeTarget(split, svc, subsetLabel, splitterv1.SplitStatus{})
			if waiting := r.userRouteStillOnColors(ctx, split); waiting != "" {
				// Deleting the colors now would leave the user's route
				// pointing at subsets with no pods: wait for the user.
				logger.Info("Opt-out waits for the user's VirtualService", "message", waiting)
				r.event(split, corev1.EventTypeWarning, "OptOutBlocked", "%s", waiting)
				return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
			}
			if err := r.router(&policy.Plan{Router: routerKind}).Release(ctx, target); err != nil {
				return ctrl.Result{}, fmt.Errorf("handing routing back: %w", err)
			}
		}
	}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		d := &appsv1.Deployment{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: split.Namespace, Name: ColorName(split.Spec.Workload, c)}, d)
		if err == nil && metav1.IsControlledBy(d, split) {
			err := r.Client.Delete(ctx, d, client.Preconditions{UID: &d.UID})
			r.Metrics.wroteResult("Deployment", client.IgnoreNotFound(err))
			if client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, err
			}
		} else if client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	// With a resourceVersion precondition: a merge patch replaces the whole
	// finalizer list, so without it a replica that lost the Lease could
	// drop a finalizer someone added since it read the Split.
	base := split.DeepCopy()
	controllerutil.RemoveFinalizer(split, Finalizer)
	if err := r.Client.Patch(ctx, split, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}
	r.Metrics.forget(split.Namespace, split.Name)
	logger.Info("Opted out: traffic handed back to the user's Deployment")
	return ctrl.Result{}, nil
}

// userRouteStillOnColors says, for a user-owned VirtualService, why opt-out
// must wait: its routes still send traffic to the color subsets.
func (r *SplitReconciler) userRouteStillOnColors(ctx context.Context, split *splitterv1.Split) string {
	if split.Spec.VirtualService == "" {
		return ""
	}
	vs := &networkingv1.VirtualService{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: split.Namespace, Name: split.Spec.VirtualService}, vs); err != nil {
		return ""
	}
	if sub := mesh.ColorSubsetRouted(vs); sub != "" {
		return fmt.Sprintf("VirtualService %s still routes to the subset %q: point it at the workload without the blue/green subsets; the color Deployments stay until then", vs.Name, sub)
	}
	return ""
}

func (r *SplitReconciler) event(split *splitterv1.Split, kind, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(split, nil, kind, reason, "Reconcile", format, args...)
	}
}

// SetupWithManager watches Splits and what they depend on: the user's and
// the color Deployments, the policies, Services and VirtualServices.
func (r *SplitReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	onWrite := func(kind string, err error) { r.Metrics.wroteResult(kind, err) }
	r.istio = mesh.NewIstio(r.Client)
	r.istio.OnWrite = onWrite
	r.selector = mesh.NewServiceSelector(r.Client)
	r.selector.OnWrite = onWrite
	if r.ScrapeInterval == 0 {
		r.ScrapeInterval = 15 * time.Second
	}
	if r.WatchdogInterval == 0 {
		r.WatchdogInterval = r.ScrapeInterval
	}
	sweep := &watchdogSweep{r: r, interval: r.WatchdogInterval, gross: r.GrossInterval, wake: make(chan event.GenericEvent, 1024)}
	if err := mgr.Add(sweep); err != nil {
		return err
	}
	if err := r.setupHooks(mgr); err != nil {
		return err
	}
	if err := r.setupNotifier(mgr); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&splitterv1.Split{}).
		WatchesRawSource(source.Channel(sweep.wake, &handler.EnqueueRequestForObject{})).
		WatchesRawSource(source.Channel(r.hooks.wake, &handler.EnqueueRequestForObject{})).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(mapDeployment),
			builder.WithPredicates(deploymentPredicate)).
		// ReplicaSets are watched for the cache only (revisions
		// reads it), so that the controller starts once it is synced, and
		// fails to start, saying why, without the RBAC to list them: a read
		// of an informer that cannot sync would hang the reconcile.
		WatchesMetadata(ReplicaSetMetadata(), &handler.EnqueueRequestForObject{},
			builder.WithPredicates(predicate.NewPredicateFuncs(func(client.Object) bool { return false }))).
		Watches(&splitterv1.SplitPolicy{}, handler.EnqueueRequestsFromMapFunc(r.splitsInNamespace(func(s *splitterv1.Split, name string) bool { return s.Spec.Policy == name }))).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.splitsInNamespace(func(*splitterv1.Split, string) bool { return true }))).
		Watches(&networkingv1.VirtualService{}, handler.EnqueueRequestsFromMapFunc(r.splitsInNamespace(func(s *splitterv1.Split, name string) bool {
			return s.Spec.VirtualService == name || s.Spec.VirtualService == "" && s.Status.Phase != ""
		}))).
		// Any Split in the namespace: a DestinationRule counts by its host,
		// whatever its name, and fixing one may un-stall an opt-in.
		Watches(&networkingv1.DestinationRule{}, handler.EnqueueRequestsFromMapFunc(r.splitsInNamespace(func(*splitterv1.Split, string) bool {
			return true
		}))).
		Complete(r)
}

// mapDeployment sends a color Deployment's events to its Split, and a
// user's Deployment's to the Split of the same name.
func mapDeployment(_ context.Context, obj client.Object) []reconcile.Request {
	name := obj.GetName()
	if w := obj.GetLabels()[WorkloadLabel]; w != "" {
		name = w
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}}}
}

// relevantDeployment keeps the events of opted-in and color Deployments.
func relevantDeployment(obj client.Object) bool {
	return obj.GetAnnotations()[splitterv1.PolicyAnnotation] != "" || obj.GetLabels()[WorkloadLabel] != ""
}

// deploymentPredicate lets an update through when either side is relevant,
// so removing the annotation (opt-out) is seen.
var deploymentPredicate = predicate.Funcs{
	CreateFunc:  func(e event.CreateEvent) bool { return relevantDeployment(e.Object) },
	DeleteFunc:  func(e event.DeleteEvent) bool { return relevantDeployment(e.Object) },
	GenericFunc: func(e event.GenericEvent) bool { return relevantDeployment(e.Object) },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return relevantDeployment(e.ObjectOld) || relevantDeployment(e.ObjectNew)
	},
}

func (r *SplitReconciler) splitsInNamespace(match func(*splitterv1.Split, string) bool) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		var list splitterv1.SplitList
		if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
			return nil
		}
		var out []reconcile.Request
		for i := range list.Items {
			if match(&list.Items[i], obj.GetName()) {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
			}
		}
		return out
	}
}
