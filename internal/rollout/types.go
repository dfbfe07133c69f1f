// Package rollout is the step engine: Next(plan, status, observations)
// returns the next status, the world it wants, a requeue time and the
// reason for any transition. It is pure and total: no I/O, no clock, no
// errors. It is level-triggered: the desired world is a function of the
// status (and what was observed), so after a crash between any two writes
// the next call asks for the same world again.
package rollout

import (
	"fmt"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
)

// Weights are the traffic shares of the two colors, in percent; they sum
// to 100.
type Weights struct {
	Blue, Green int32
}

// Of returns c's weight.
func (w Weights) Of(c splitterv1.Color) int32 {
	if c == splitterv1.Green {
		return w.Green
	}
	return w.Blue
}

func (w Weights) String() string { return fmt.Sprintf("blue=%d green=%d", w.Blue, w.Green) }

// split gives c the weight and the other color the rest.
func split(c splitterv1.Color, weight int32) Weights {
	if c == splitterv1.Green {
		return Weights{Blue: 100 - weight, Green: weight}
	}
	return Weights{Blue: weight, Green: 100 - weight}
}

// ColorState is what the controller read of one color Deployment.
type ColorState struct {
	// Revision is the template hash the Deployment runs (its pod
	// template's splitter.dev/revision annotation); empty if it is missing.
	Revision string
	// Replicas is the Deployment's desired replica count.
	Replicas int32
	// Ready counts Ready pods of the current template.
	Ready int32
	// RolledOut is true when every replica runs the current template and
	// the Deployment controller has seen the latest spec.
	RolledOut bool
}

// Observations are what the controller read this time.
type Observations struct {
	Now time.Time
	// Revision is the hash of the user's Deployment's pod template.
	Revision string
	// Replicas is how many replicas the workload should run.
	Replicas int32
	// Colors is the state of each color Deployment (zero value if missing).
	Colors map[splitterv1.Color]ColorState
	// Routed is what the router reports; nil when it has no routing for the
	// workload yet.
	Routed *Weights
	// Verdicts are the check results for the current step, evaluated by the
	// controller when ChecksDue said so; nil otherwise.
	Verdicts []analysis.Result
	// Counters are the cumulative request counters per color, SLO and
	// reporter as Prometheus last scraped them; nil when not read.
	Counters Counters
	// CountersErr says why the counters could not be read.
	CountersErr string
	// Approve and Abort are the Split's splitter.dev/approve and
	// splitter.dev/abort annotation values.
	Approve, Abort string
	// Pause, Retry and Promote are the Split's splitter.dev/pause,
	// splitter.dev/retry and splitter.dev/promote annotation values.
	Pause, Retry, Promote string
	// RequestedBy is the Split's splitter.dev/requested-by annotation:
	// who asked for the last action.
	RequestedBy string
	// Hooks are the finished hook calls, by token (HookCall.Token), that
	// status does not record yet; nil when none finished.
	Hooks map[string]splitterv1.HookResult
}

// HookCall is a hook the release waits on now. The controller calls it
// once per token (asynchronously) and reports the result in
// Observations.Hooks; the engine records it in status, so a recorded
// result is never asked for again.
type HookCall struct {
	// Token identifies the call: revision/attempt/point[/step]/name.
	Token string
	Hook  policy.Hook
	// Step is the step it runs at (step hooks), else 0.
	Step int32
}

// ColorSpec is what one color Deployment should run.
type ColorSpec struct {
	Replicas int32
	// Revision is the template hash it should run; "" means keep whatever
	// it has (an idle color scaled to zero).
	Revision string
}

// Desired is the world the engine wants. The controller converges to it,
// writing only what differs.
type Desired struct {
	// Weights to route; nil leaves routing alone (before the live color is
	// Ready on first adoption).
	Weights *Weights
	// Colors to run.
	Colors map[splitterv1.Color]ColorSpec
	// ScaleTemplateToZero says the user's Deployment may be scaled to zero:
	// the colors carry its traffic.
	ScaleTemplateToZero bool
	// Hooks are the hook calls the release waits on now.
	Hooks []HookCall
}

// Transition explains a change of phase or step, for an Event and the log.
type Transition struct {
	Reason  string
	Message string
	Warning bool
	// Stalled marks the controller's own "stalled" notice (not the
	// engine's): the configuration stops the release.
	Stalled bool
}

// Decision is the outcome of one Next call.
type Decision struct {
	Status  splitterv1.SplitStatus
	Desired Desired
	// Requeue is when to look again even if nothing changes; 0 means only
	// on a watch event.
	Requeue time.Duration
	// Transition is set when the phase or step changed.
	Transition *Transition
}

// WorkloadReplicas is how many replicas the workload should run: what the
// user's Deployment asks for while it is not scaled down (at opt-in, or
// after a `kubectl scale`), else the count remembered in status, else 1.
func WorkloadReplicas(userSpec, remembered *int32) int32 {
	switch {
	case userSpec != nil && *userSpec > 0:
		return *userSpec
	case remembered != nil:
		return *remembered
	}
	return 1
}
