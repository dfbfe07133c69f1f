package simulate

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/rollout"
)

// world is the cluster as the engine sees it, reduced to what a
// simulated release needs: color Deployments become Ready a fixed delay
// after their spec changes, the router takes weights at once (the data
// plane's delay is the simulation's), hooks and PromQL checks pass.
type world struct {
	now, start time.Time
	revision   string
	replicas   int32
	readyDelay time.Duration
	colors     map[splitterv1.Color]*worldColor
	routed     *rollout.Weights
	// hooks are the hook calls asked for, answered Pass at the next look.
	hooks map[string]rollout.HookCall
}

type worldColor struct {
	spec    rollout.ColorSpec
	readyAt time.Time
}

func newWorld(rev string, t0 time.Time, readyDelay time.Duration) *world {
	return &world{
		now: t0, start: t0, revision: rev, replicas: 3, readyDelay: readyDelay,
		colors: map[splitterv1.Color]*worldColor{splitterv1.Blue: {}, splitterv1.Green: {}},
	}
}

func (w *world) observe() rollout.Observations {
	o := rollout.Observations{Now: w.now, Revision: w.revision, Replicas: w.replicas, Colors: map[splitterv1.Color]rollout.ColorState{}}
	for c, wc := range w.colors {
		st := rollout.ColorState{Revision: wc.spec.Revision, Replicas: wc.spec.Replicas, RolledOut: !w.now.Before(wc.readyAt)}
		if st.RolledOut {
			st.Ready = wc.spec.Replicas
		}
		o.Colors[c] = st
	}
	if w.routed != nil {
		r := *w.routed
		o.Routed = &r
	}
	for token, c := range w.hooks {
		if o.Hooks == nil {
			o.Hooks = map[string]splitterv1.HookResult{}
		}
		o.Hooks[token] = splitterv1.HookResult{Token: token, Name: c.Hook.Name, Verdict: splitterv1.VerdictPass, At: metav1.NewTime(w.now)}
	}
	return o
}

// passChecks are the policy's PromQL checks, all passing: the simulation
// models the SLOs' counters only.
func passChecks(checks []analysis.Check) []analysis.Result {
	var out []analysis.Result
	for _, c := range checks {
		out = append(out, analysis.Result{Name: c.Name, Verdict: splitterv1.VerdictPass})
	}
	return out
}

// apply converges the world to d.
func (w *world) apply(d rollout.Desired) {
	if d.Weights != nil && (w.routed == nil || *w.routed != *d.Weights) {
		r := *d.Weights
		w.routed = &r
	}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		want, ok := d.Colors[c]
		if !ok {
			continue
		}
		wc := w.colors[c]
		if want.Revision == "" {
			want.Revision = wc.spec.Revision
		}
		if wc.spec != want {
			wc.spec, wc.readyAt = want, w.now.Add(w.readyDelay)
		}
	}
	w.hooks = nil
	for _, c := range d.Hooks {
		if w.hooks == nil {
			w.hooks = map[string]rollout.HookCall{}
		}
		w.hooks[c.Token] = c
	}
}

// readyTimes is when each color Deployment becomes (or became) Ready.
func (w *world) readyTimes() map[splitterv1.Color]time.Time {
	return map[splitterv1.Color]time.Time{splitterv1.Blue: w.colors[splitterv1.Blue].readyAt, splitterv1.Green: w.colors[splitterv1.Green].readyAt}
}
