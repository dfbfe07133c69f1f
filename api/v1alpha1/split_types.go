package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Annotations a user puts on a Deployment.
const (
	// PolicyAnnotation opts a Deployment in and names its SplitPolicy.
	PolicyAnnotation = "splitter.dev/policy"
	// ServiceAnnotation names the workload's Service when selector overlap is ambiguous.
	ServiceAnnotation = "splitter.dev/service"
	// ApproveAnnotation on a Split approves the gate named in status.gate.
	ApproveAnnotation = "splitter.dev/approve"
	// AbortAnnotation on a Split aborts the release it names
	// (status.releaseID): traffic snaps back to the live color.
	AbortAnnotation = "splitter.dev/abort"
	// RevisionAnnotation on a color Deployment's pod template records the
	// hash of the user's pod template it was copied from.
	RevisionAnnotation = "splitter.dev/revision"
	// RevisionLabel carries the same hash as a label of the color
	// Deployment's pod template, so that its ReplicaSets carry it too: the
	// controller tells a color's ReplicaSets apart by revision with it, and
	// leaves the pods of the color's other revisions out of its evidence (a
	// pod of the color's previous revision, still reached through stale
	// endpoints, is not the release's).
	RevisionLabel = "splitter.dev/revision"
	// VirtualServiceAnnotation names a user-owned VirtualService whose
	// route weights (and nothing else) splitter may change.
	VirtualServiceAnnotation = "splitter.dev/virtual-service"
	// RoutesAnnotation names, comma-separated, the HTTP routes of the
	// user's VirtualService whose weights splitter manages. Without it,
	// splitter manages every route that carries both color subsets.
	RoutesAnnotation = "splitter.dev/routes"
	// PinnedRoutesAnnotation says what happens to the routes of the user's
	// VirtualService that send to one color only. Absent: they are left
	// alone. PinnedRoutesFollowLive: they are moved to the live color in
	// the same write as the weights.
	PinnedRoutesAnnotation = "splitter.dev/pinned-routes"
	// PinnedRoutesFollowLive is PinnedRoutesAnnotation's one value.
	PinnedRoutesFollowLive = "follow-live"
)

// Annotations on a Split that act on its release (what `kubectl splitter`
// writes; each names what it acts on, so a stale one never matches).
const (
	// PauseAnnotation on a Split holds the release it names
	// (status.releaseID) where it is: no weight rises, no promotion; the
	// watchdog keeps running. Removing it resumes.
	PauseAnnotation = "splitter.dev/pause"
	// RetryAnnotation on a Split starts again the rolled-back release it
	// names (status.releaseID), as a new release of the same revision.
	RetryAnnotation = "splitter.dev/retry"
	// PromoteAnnotation on a Split skips the remaining steps of the
	// release it names (status.releaseID): the candidate gets 100% at once
	// (the previous live color stays up for standby, still watched).
	PromoteAnnotation = "splitter.dev/promote"
	// RequestedByAnnotation says who asked for the last action, for the
	// audit trail in status and Events; the plugin sets it with the user
	// the API server authenticated (SelfSubjectReview). It is what the
	// client says: the API server's audit log is the authority.
	RequestedByAnnotation = "splitter.dev/requested-by"
)

// Color is one of the two Deployments a workload runs as.
// +kubebuilder:validation:Enum=blue;green
type Color string

const (
	Blue  Color = "blue"
	Green Color = "green"
)

// Other returns the opposite color.
func (c Color) Other() Color {
	if c == Blue {
		return Green
	}
	return Blue
}

// Phase is where a Split is in its release.
// +kubebuilder:validation:Enum=Idle;Preparing;Shifting;AwaitingApproval;Promoting;RollingBack;RolledBack
type Phase string

const (
	PhaseIdle             Phase = "Idle"
	PhasePreparing        Phase = "Preparing"
	PhaseShifting         Phase = "Shifting"
	PhaseAwaitingApproval Phase = "AwaitingApproval"
	PhasePromoting        Phase = "Promoting"
	PhaseRollingBack      Phase = "RollingBack"
	PhaseRolledBack       Phase = "RolledBack"
)

// Verdict is the outcome of one check. Lack of evidence is never a Pass.
// +kubebuilder:validation:Enum=Pass;Fail;Inconclusive;Error
type Verdict string

const (
	VerdictPass         Verdict = "Pass"
	VerdictFail         Verdict = "Fail"
	VerdictInconclusive Verdict = "Inconclusive"
	VerdictError        Verdict = "Error"
)

// Outcome is how a release ended.
// +kubebuilder:validation:Enum=Promoted;RolledBack;Superseded;Aborted
type Outcome string

const (
	OutcomePromoted   Outcome = "Promoted"
	OutcomeRolledBack Outcome = "RolledBack"
	OutcomeSuperseded Outcome = "Superseded"
	OutcomeAborted    Outcome = "Aborted"
)

// SplitSpec records what the workload's annotations asked for. The
// controller writes it from the Deployment; users act on a Split through
// its annotations (approve, abort) or the kubectl plugin.
type SplitSpec struct {
	// Workload is the name of the user's Deployment (the template).
	// +kubebuilder:validation:MinLength=1
	Workload string `json:"workload"`

	// Policy is the name of the SplitPolicy in the same namespace.
	// +kubebuilder:validation:MinLength=1
	Policy string `json:"policy"`

	// Service is the Service that selects the workload's pods, when the
	// user named it; otherwise the controller finds it by selector overlap.
	// +optional
	Service string `json:"service,omitempty"`

	// VirtualService is a user-owned VirtualService whose route weights
	// splitter changes; empty means splitter owns one named after the Service.
	// +optional
	VirtualService string `json:"virtualService,omitempty"`

	// Routes is the splitter.dev/routes annotation: the comma-separated
	// names of the routes splitter manages; empty means every route that
	// carries both color subsets.
	// +optional
	Routes string `json:"routes,omitempty"`

	// PinnedRoutes is the splitter.dev/pinned-routes annotation: empty
	// leaves routes to one color alone; "follow-live" moves them to the
	// live color.
	// +optional
	PinnedRoutes string `json:"pinnedRoutes,omitempty"`
}

// PinnedRoute is a route of the VirtualService that sends to one color
// subset only (a debug header route, say): splitter leaves it alone unless
// the Deployment asks for splitter.dev/pinned-routes: follow-live.
type PinnedRoute struct {
	// Route is the route, e.g. "http[1] (name: debug)".
	Route string `json:"route"`
	// Color is the subset it sends to.
	Color Color `json:"color"`
}

// CheckResult is the latest verdict of one check.
type CheckResult struct {
	Name    string  `json:"name"`
	Verdict Verdict `json:"verdict"`
	// Value is the measured value, as a decimal string; empty without data.
	// +optional
	Value string `json:"value,omitempty"`
	// Bound is the bound it was held against, e.g. ">= 0.99".
	// +optional
	Bound string `json:"bound,omitempty"`
	// Message explains an Error or Inconclusive verdict.
	// +optional
	Message string `json:"message,omitempty"`
	// Step is the step (1-based) the verdict was taken at.
	// +optional
	Step int32 `json:"step,omitempty"`
	// EvaluatedAt is when the verdict was taken.
	EvaluatedAt metav1.Time `json:"evaluatedAt"`
}

// Release is one entry of the audit trail.
type Release struct {
	// Revision is the pod-template hash that was released.
	Revision string `json:"revision"`
	// Color the candidate ran as.
	Color Color `json:"color"`
	// StartedAt is when the release began.
	StartedAt metav1.Time `json:"startedAt"`
	// FinishedAt is when it ended.
	FinishedAt metav1.Time `json:"finishedAt"`
	// Outcome is how it ended.
	Outcome Outcome `json:"outcome"`
	// Reason is a CamelCase cause, e.g. CheckFailed.
	Reason string `json:"reason"`
	// Message says why, e.g. the failing check, its value and bound.
	// +optional
	Message string `json:"message,omitempty"`
	// Step is the last step reached (1-based).
	// +optional
	Step int32 `json:"step,omitempty"`
	// Attempt is which release of Revision this was (retries count up).
	// +optional
	Attempt int32 `json:"attempt,omitempty"`
	// ID is the release's status.releaseID.
	// +optional
	ID string `json:"id,omitempty"`
}

// Action is one operator action the controller acted on.
type Action struct {
	// Verb is approve, abort, pause, resume, retry or promote.
	Verb string `json:"verb"`
	// Revision is the candidate revision it acted on.
	Revision string `json:"revision"`
	// By is who asked (splitter.dev/requested-by), or "unknown".
	By string `json:"by"`
	// At is when the controller acted on it.
	At metav1.Time `json:"at"`
	// Detail is the gate approved, or the step paused at.
	// +optional
	Detail string `json:"detail,omitempty"`
}

// HookResult is the outcome of one call of a policy hook.
type HookResult struct {
	// Token identifies the call: revision, attempt, hook point, step and name.
	Token string `json:"token"`
	// Name is the hook's name in the policy.
	Name string `json:"name"`
	// Verdict is Pass (2xx in time) or Fail.
	Verdict Verdict `json:"verdict"`
	// Message is the status code and the response body's first lines, or
	// the error.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
	// At is when the result was recorded.
	At metav1.Time `json:"at"`
}

// Notification is a transition waiting to be delivered to the policy's
// receivers: committed in the same status write as the transition, so a
// controller killed at any instant loses none.
type Notification struct {
	// Seq numbers the Split's notifications, from 1.
	Seq int64 `json:"seq"`
	// Event is what happened: ReleaseStarted, StepPassed, Paused,
	// AwaitingApproval, RolledBack, Promoted, Stalled, ...
	Event string `json:"event"`
	// Reason is the transition's reason.
	Reason string `json:"reason"`
	// Message says what happened, with the numbers.
	Message string `json:"message"`
	// Warning marks bad news (a rollback, a stall, a pause).
	// +optional
	Warning bool `json:"warning,omitempty"`
	// Phase, Revision, Step and Weight are the release's state after it.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// +optional
	Revision string `json:"revision,omitempty"`
	// +optional
	Step int32 `json:"step,omitempty"`
	// +optional
	Weight int32 `json:"weight,omitempty"`
	// At is when it happened.
	At metav1.Time `json:"at"`
	// Pending are the receivers it has not been delivered to yet.
	// +optional
	Pending []string `json:"pending,omitempty"`
}

// SeriesReading is one counter series' cumulative reading: the requests
// and bad requests one proxy counted under one label set, for one color
// and one SLO. Growth is taken per series (a restarted proxy's counters
// start again at zero) and then summed.
type SeriesReading struct {
	Color Color  `json:"color"`
	SLO   string `json:"slo"`
	// Series identifies the label set (a hash of it).
	Series   string `json:"series"`
	Requests int64  `json:"requests"`
	Bad      int64  `json:"bad"`
	// Bracket is the series' last samples, for the watchdog's looks
	// that do not depend on when each target was scraped (the bracketed
	// trip, the gross check). In memory only: a look's, never stored.
	Bracket Bracket `json:"-"`
}

// Bracket is a series' last two samples before the reading: its counts
// at LastAt and at PrevAt (milliseconds since the epoch). LastAt 0: the
// reader had no samples to give; PrevAt math.MinInt64: the series had no
// earlier sample (it did not exist yet, its counts were zero). Partial:
// the workload has series the reading left out (born after its instant),
// so the brackets of its series do not hold all its counts.
type Bracket struct {
	PrevAt, LastAt                               int64
	PrevRequests, PrevBad, LastRequests, LastBad int64
	Partial                                      bool
	// Earlier are the samples before Prev that the read holds, oldest
	// first.
	Earlier []Sample
	// Born: the series has no sample at its scrape target's earliest
	// scrape in the read (Istio creates a response code's series at that
	// code's first response), so its counts were zero before its first
	// sample; BornAfter is the target's last scrape before it, where the
	// series was absent (its counts zero there; math.MinInt64 when not
	// known).
	Born      bool
	BornAfter int64
	// Inexact: a sum whose parts were not all sampled at its instants
	// (a part without an earlier sample was taken as zero there).
	Inexact bool
	// Unread: a series of a proxy the reading's instant precedes (a new
	// pod), carried for the gross check's look at its samples only: no
	// other part of the watchdog or the gates counts it (its past is not
	// known to be the release's), and no checkpoint keeps it.
	Unread bool
}

// Sample is one raw sample of a series: its counts at At (milliseconds
// since the epoch).
type Sample struct {
	At, Requests, Bad int64
}

// CountTotal is evidence: requests and bad requests of one color for one SLO.
type CountTotal struct {
	Color    Color  `json:"color"`
	SLO      string `json:"slo"`
	Requests int64  `json:"requests"`
	Bad      int64  `json:"bad"`
}

// WatchdogStatus is the watchdog's evidence for one SLO. Floats are kept
// as decimal strings (exact round trip).
type WatchdogStatus struct {
	SLO string `json:"slo"`
	// LogLR is the relative test's evidence per alternative ratio: the log
	// of its mixture over onset times (the likelihood ratio since each
	// onset, weighted by that onset's prior mass, summed over the onsets
	// started so far).
	// +optional
	LogLR []string `json:"logLR,omitempty"`
	// AbsLogLR is the absolute test's (candidate alone at 100%, against the
	// live color's rate earlier in the release) log likelihood ratio per
	// alternative rate.
	// +optional
	AbsLogLR []string `json:"absLogLR,omitempty"`
	// Dispersion is the sum, over pairs of consecutive chunks of one
	// color, of each pair's Pearson statistic (capped), and Pairs their
	// number: how much more the bad requests vary than independent ones
	// would (clumps: one failure retried and counted several times).
	// +optional
	Dispersion string `json:"dispersion,omitempty"`
	// +optional
	Pairs int32 `json:"pairs,omitempty"`
}

// AnalysisStatus is the state of the count-based checks: what the evidence
// covers and the evidence itself, so both survive a restart.
type AnalysisStatus struct {
	// StartedAt is when the release's evidence began: the clock of the
	// relative watchdog's mixture over onset times. Unset in a status an
	// older controller wrote: its watchdog then keeps the release-long
	// test alone.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// WarmupUntil is when the candidate's warmup ends (the policy's
	// warmup after its first traffic reached the counters): until then
	// the watchdog holds it to WarmupMaxRatio, not maxRatio, and the first
	// step's evidence waits.
	// +optional
	WarmupUntil *metav1.Time `json:"warmupUntil,omitempty"`
	// Checkpoint are the counter readings the evidence covers up to.
	// +optional
	Checkpoint []SeriesReading `json:"checkpoint,omitempty"`
	// CheckpointAt is when Checkpoint was read.
	// +optional
	CheckpointAt *metav1.Time `json:"checkpointAt,omitempty"`
	// MixedWeight is the highest weight the candidate may have had since
	// the checkpoint while the weights were changing (the evidence then
	// mixes two weights and the watchdog judges it conservatively).
	// +optional
	MixedWeight int32 `json:"mixedWeight,omitempty"`
	// SettleAt is when the current step's weights have surely reached the
	// counters (weights confirmed plus two scrape intervals): its evidence
	// starts at the first reading at or after it.
	// +optional
	SettleAt *metav1.Time `json:"settleAt,omitempty"`
	// BaselineAt is when the current step's evidence began; unset while
	// the weights settle.
	// +optional
	BaselineAt *metav1.Time `json:"baselineAt,omitempty"`
	// Step is the current step's evidence since BaselineAt, up to Checkpoint.
	// +optional
	Step []CountTotal `json:"step,omitempty"`
	// Reference is the live color's evidence during this release while it
	// carried traffic: what the candidate is held to once it has all of it.
	// +optional
	Reference []CountTotal `json:"reference,omitempty"`
	// LastChunk is the last folded chunk's counts per SLO and color: the
	// next chunk is paired with it to measure the dispersion.
	// +optional
	LastChunk []CountTotal `json:"lastChunk,omitempty"`
	// Watchdog is the evidence per SLO up to Checkpoint.
	// +optional
	Watchdog []WatchdogStatus `json:"watchdog,omitempty"`
	// TripPendingAt is when the watchdog tripped: the trip stands only if
	// a look at least one scrape later, when every target has been scraped
	// past what tripped it, still trips.
	// +optional
	TripPendingAt *metav1.Time `json:"tripPendingAt,omitempty"`
	// FailPending says the current step's gate failed once and is held for
	// another stepDuration on fresh evidence: a second Fail rolls back.
	// +optional
	FailPending bool `json:"failPending,omitempty"`
}

// SplitStatus is the live state of a workload's releases: everything the
// controller needs to resume after a restart.
type SplitStatus struct {
	// ObservedGeneration is the Split generation last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Phase is where the current release is.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// Live is the color serving production traffic.
	// +optional
	Live Color `json:"live,omitempty"`
	// Candidate is the color being released; empty when Idle.
	// +optional
	Candidate Color `json:"candidate,omitempty"`

	// LiveRevision is the pod-template hash the live color runs.
	// +optional
	LiveRevision string `json:"liveRevision,omitempty"`
	// CandidateRevision is the pod-template hash being released.
	// +optional
	CandidateRevision string `json:"candidateRevision,omitempty"`

	// Standby is the previous live color, kept running after a promotion
	// for instant rollback until the policy's standby period ends.
	// +optional
	Standby Color `json:"standby,omitempty"`
	// StandbyRevision is the pod-template hash the standby color runs.
	// +optional
	StandbyRevision string `json:"standbyRevision,omitempty"`

	// Step is the current step, 1-based; 0 before the first step.
	// +optional
	Step int32 `json:"step,omitempty"`
	// Weight is the candidate's desired share of traffic in percent.
	// +optional
	Weight int32 `json:"weight,omitempty"`

	// Extensions counts how many times the current step was held longer
	// because its checks were Inconclusive or Error (with the policy's
	// maxStepDuration: the step's looks so far, less one).
	// +optional
	Extensions int32 `json:"extensions,omitempty"`

	// Gate names the approval the release waits for in AwaitingApproval,
	// e.g. "5d8f9c7b/3/promotion". Approve by setting the Split's annotation
	// splitter.dev/approve to this value; a stale approval never matches.
	// +optional
	Gate string `json:"gate,omitempty"`

	// PausedAt is when an operator paused the release
	// (splitter.dev/pause); nil when not paused.
	// +optional
	PausedAt *metav1.Time `json:"pausedAt,omitempty"`

	// Attempt counts the releases of CandidateRevision: 1 for the first,
	// one more for each retry.
	// +optional
	Attempt int32 `json:"attempt,omitempty"`

	// ReleaseID names the current (or last) release, unique for the Split:
	// "<candidateRevision>/<n>", n counting every release it has started.
	// splitter.dev/abort, pause, promote and retry name it, gates and hook
	// calls start with it: an action meant for one release never acts on
	// another, even of the same revision.
	// +optional
	ReleaseID string `json:"releaseID,omitempty"`
	// ReleaseCount is how many releases the Split has started.
	// +optional
	ReleaseCount int32 `json:"releaseCount,omitempty"`

	// Hooks are the results of the current release's hook calls.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Hooks []HookResult `json:"hooks,omitempty"`

	// Actions are the operator actions acted on, newest first.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	Actions []Action `json:"actions,omitempty"`

	// Outbox are the notifications not yet delivered to every receiver,
	// oldest first.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Outbox []Notification `json:"outbox,omitempty"`
	// NotificationSeq is the Seq of the last notification queued.
	// +optional
	NotificationSeq int64 `json:"notificationSeq,omitempty"`

	// Replicas is the user's Deployment replica count, remembered when it
	// was scaled to zero, given to the live color and restored on opt-out.
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// PhaseStartedAt is when the current phase began.
	// +optional
	PhaseStartedAt *metav1.Time `json:"phaseStartedAt,omitempty"`
	// StepStartedAt is when the current step's weights were applied.
	// +optional
	StepStartedAt *metav1.Time `json:"stepStartedAt,omitempty"`
	// LookedAt is when a step's checks were last judged: with the
	// policy's maxStepDuration, the next look is a stepDuration after it.
	// +optional
	LookedAt *metav1.Time `json:"lookedAt,omitempty"`
	// ReleaseStartedAt is when the current release began.
	// +optional
	ReleaseStartedAt *metav1.Time `json:"releaseStartedAt,omitempty"`

	// Checks are the latest verdicts, one per check.
	// +optional
	// +listType=map
	// +listMapKey=name
	Checks []CheckResult `json:"checks,omitempty"`

	// Analysis is the count-based checks' state: counter baselines and the
	// watchdog's evidence, so both survive a restart.
	// +optional
	Analysis *AnalysisStatus `json:"analysis,omitempty"`

	// Policy is the last SplitPolicy spec that compiled: while any traffic
	// is on the candidate, the watchdog keeps judging with it even if the
	// policy becomes invalid or is deleted.
	// +optional
	Policy *SplitPolicySpec `json:"policy,omitempty"`

	// Service is the Service last resolved for the workload, kept so a
	// snap-back can still be written while its resolution is stalled.
	// +optional
	Service string `json:"service,omitempty"`

	// Routes are the HTTP routes whose weights splitter manages, e.g.
	// "http[0] (name: primary)", of the VirtualService spec.virtualService
	// (or splitter's own, named after the Service); every other route is
	// left as it is.
	// +optional
	Routes []string `json:"routes,omitempty"`

	// PinnedRoutes are the VirtualService's routes to one color only.
	// +optional
	PinnedRoutes []PinnedRoute `json:"pinnedRoutes,omitempty"`

	// History is the audit trail of the last releases, newest first.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	History []Release `json:"history,omitempty"`

	// Conditions: Ready, Reconciling, Stalled (kstatus) and WeightsApplied, SLOsMet.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Split is the per-workload record of releases, created by the controller
// for each Deployment annotated with splitter.dev/policy, with the same name.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=splitter
// +kubebuilder:printcolumn:name="Live",type=string,JSONPath=`.status.live`
// +kubebuilder:printcolumn:name="Candidate",type=string,JSONPath=`.status.candidate`
// +kubebuilder:printcolumn:name="Weight",type=integer,JSONPath=`.status.weight`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.spec.policy`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Split struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SplitSpec   `json:"spec,omitempty"`
	Status SplitStatus `json:"status,omitempty"`
}

// SplitList is a list of Split.
//
// +kubebuilder:object:root=true
type SplitList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Split `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Split{}, &SplitList{})
}
