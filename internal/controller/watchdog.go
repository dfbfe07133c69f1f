package controller

import (
	"context"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
	"splitter.dev/splitter/internal/rollout"
)

// watchdogSweep looks at every active release once per interval with the
// watchdog alone (counters read once for all, the engine's pure check), and
// wakes a release's full reconcile only when its watchdog trips. A hundred
// releases cost a hundred cheap looks a second, not a hundred reconciles.
type watchdogSweep struct {
	r        *SplitReconciler
	interval time.Duration
	// gross, when shorter than interval, is how often the sweep takes the
	// gross check's look alone between its full ones (0: never).
	gross time.Duration
	wake  chan event.GenericEvent

	mu    sync.Mutex
	plans map[string]cachedPlan // namespace/name -> compiled policy
}

type cachedPlan struct {
	resourceVersion string
	plan            *policy.Plan
}

// NeedLeaderElection: only the leader acts.
func (w *watchdogSweep) NeedLeaderElection() bool { return true }

// Timing of the gross check's looks between the full ones: at least every
// gross, and as soon as a scrape is due to have landed (each series' last
// sample plus a scrape, and landingLag for the scrape to be stored), but
// no more often than grossGap. A fault's samples are then judged within a
// fraction of a second of their landing, at about the cost of one look a
// second (issue 18: the snap-back within a scrape and a second).
const (
	landingTick = 100 * time.Millisecond
	landingLag  = 200 * time.Millisecond
	grossGap    = 250 * time.Millisecond
)

// GrossCounterTTL bounds how long a counter reading serves while the
// gross check looks between the full looks: less than grossGap, so a look
// at a scrape's landing reads it.
const GrossCounterTTL = 200 * time.Millisecond

// Start runs the sweep until ctx ends: a full look every interval and,
// between them, the gross check's looks.
func (w *watchdogSweep) Start(ctx context.Context) error {
	step := w.interval
	if w.gross > 0 {
		step = min(step, landingTick)
	}
	tick := time.NewTicker(step)
	defer tick.Stop()
	var lastFull, lastGross, landing time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			switch {
			case now.Sub(lastFull) >= w.interval-step/2:
				lastFull, lastGross = now, now
				landing = w.sweep(ctx, true)
			case w.gross > 0 && (now.Sub(lastGross) >= w.gross-step/2 ||
				!landing.IsZero() && !now.Before(landing) && now.Sub(lastGross) >= grossGap):
				lastGross = now
				landing = w.sweep(ctx, false)
			}
		}
	}
}

// nextLanding is when the next scrape of any series read is due to have
// landed in Prometheus: each one's last sample plus whole scrapes, the
// first after now, plus landingLag. Zero when none has samples.
func nextLanding(counters []splitterv1.SeriesReading, scrape time.Duration, now time.Time) time.Time {
	var next time.Time
	for _, c := range counters {
		if c.Bracket.LastAt <= 0 || scrape <= 0 {
			continue
		}
		last := time.UnixMilli(c.Bracket.LastAt)
		due := last.Add(scrape * time.Duration(now.Sub(last)/scrape+1)).Add(landingLag)
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	return next
}

// sweep looks at every watched release: the watchdog's full look, or the
// gross check's alone. It returns when the next scrape of what it read is
// due (see nextLanding).
func (w *watchdogSweep) sweep(ctx context.Context, full bool) (landing time.Time) {
	start := time.Now()
	var list splitterv1.SplitList
	if err := w.r.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		if full {
			log.FromContext(ctx).Info("Watchdog sweep cannot list Splits", "error", err.Error())
		}
		return time.Time{}
	}
	// Timed and counted as swept only once the Splits could be listed; the
	// list also refreshes every Split's gauges.
	if full {
		defer w.r.Metrics.swept(start, list.Items)
	}
	now := w.r.Now()
	for i := range list.Items {
		s := &list.Items[i]
		green, blue, watched := rollout.Watched(s.Status)
		if !watched {
			continue
		}
		if !full && s.Status.Analysis == nil {
			continue
		}
		plan := w.plan(ctx, s)
		if plan == nil {
			// An invalid or deleted policy stops nothing while traffic is
			// on a candidate: judge with the last valid plan.
			plan = w.r.lastPlan(s)
		}
		if plan == nil || len(plan.SLOs) == 0 || w.r.Counters == nil {
			continue
		}
		counters, err := w.r.Counters.Counters(ctx, plan.PrometheusAddress, s.Namespace, map[splitterv1.Color]string{
			green: ColorName(s.Spec.Workload, green), blue: ColorName(s.Spec.Workload, blue),
		}, w.r.revisions(ctx, s.Namespace, s.Spec.Workload, s.Status, green, blue), analysis.Specs(plan.SLOs), now)
		if err != nil {
			continue // the reconcile reports it
		}
		if l := nextLanding(counters, plan.Timing.Scrape, now); !l.IsZero() && (landing.IsZero() || l.Before(landing)) {
			landing = l
		}
		look := rollout.SweepLook
		if !full {
			look = rollout.GrossLook
		}
		if _, wake := look(plan, w.r.heldStatus(s), counters, now); wake {
			select {
			case w.wake <- event.GenericEvent{Object: s.DeepCopy()}:
			default: // already queued
			}
		}
	}
	return landing
}

// plan compiles a Split's policy, once per policy version.
func (w *watchdogSweep) plan(ctx context.Context, s *splitterv1.Split) *policy.Plan {
	var pol splitterv1.SplitPolicy
	if err := w.r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Spec.Policy}, &pol); err != nil {
		return nil
	}
	key := s.Namespace + "/" + s.Spec.Policy
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.plans[key]; ok && c.resourceVersion == pol.ResourceVersion {
		return c.plan
	}
	plan, _ := w.r.compile(pol.Spec)
	if w.plans == nil {
		w.plans = map[string]cachedPlan{}
	}
	w.plans[key] = cachedPlan{resourceVersion: pol.ResourceVersion, plan: plan}
	return plan
}
