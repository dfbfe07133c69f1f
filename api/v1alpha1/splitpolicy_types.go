package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Router names how traffic is moved between the colors.
// +kubebuilder:validation:Enum=istio;service-selector
type Router string

const (
	// RouterIstio moves traffic by VirtualService weights between the
	// DestinationRule subsets "blue" and "green".
	RouterIstio Router = "istio"
	// RouterServiceSelector switches the Service's selector between the
	// colors in one patch (the blue-green pattern without a mesh).
	RouterServiceSelector Router = "service-selector"
)

// Builtin names a query shipped with splitter.
// +kubebuilder:validation:Enum=istio-success-rate;istio-latency-p99
type Builtin string

const (
	// BuiltinSuccessRate is the candidate's share of non-5xx responses (0..1).
	BuiltinSuccessRate Builtin = "istio-success-rate"
	// BuiltinLatencyP99 is the candidate's 99th percentile latency in milliseconds.
	BuiltinLatencyP99 Builtin = "istio-latency-p99"
)

// SplitPolicySpec is the release policy. Every field is optional: defaults
// live in one place, internal/policy, so that `splitter policy lint` and the
// controller agree on what an omitted field means.
//
// +kubebuilder:validation:XValidation:rule="!has(self.steps) || self.steps.size() == 0 || self.steps[self.steps.size()-1] == 100",message="steps must end at 100",fieldPath=".steps"
// +kubebuilder:validation:XValidation:rule="!(has(self.maxStepDuration) && has(self.maxExtensions))",message="set maxExtensions or maxStepDuration, not both",fieldPath=".maxStepDuration"
type SplitPolicySpec struct {
	// Steps are the candidate's traffic weights (percent) at each step,
	// strictly increasing and ending at 100. Default: [5, 10, 25, 50, 100].
	// With standbyWeight, the candidate gets at most 100 - standbyWeight
	// until standby ends (steps above merge into that one).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=100
	// +kubebuilder:validation:XValidation:rule="self.isSorted()",message="steps must be strictly increasing"
	Steps []int32 `json:"steps,omitempty"`

	// StepDuration is how long each step is held before its checks are
	// evaluated. Default: 1m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	StepDuration *metav1.Duration `json:"stepDuration,omitempty"`

	// Checks are evaluated at the end of every step; any failure snaps all
	// traffic back to the live color.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Checks []Check `json:"checks,omitempty"`

	// Standby is how long the old color is kept running (instant rollback)
	// after promotion. Default: 10m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	Standby *metav1.Duration `json:"standby,omitempty"`

	// StandbyWeight is the share of traffic (percent) the standby color
	// keeps during standby: a concurrent control the watchdog compares the
	// new live color with. A rate both colors share (an upstream's errors
	// drifting through the day) then cancels out, and a regression that
	// starts late in standby is still caught against it. 0 sends all
	// traffic to the new live color; the watchdog then holds it to the
	// live color's rate during the release, which a shared drift can
	// exceed. The steps stop at 100 - standbyWeight, so the candidate is
	// never judged without a control. Needs SLOs and the istio router.
	// Default: 0.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=50
	StandbyWeight int32 `json:"standbyWeight,omitempty"`

	// Warmup is a period after the candidate's first traffic whose
	// evidence is not held to compare.maxRatio: a candidate that starts
	// cold (empty caches, a JIT warming up) is slower or fails more for a
	// while, and that is not the release's verdict. During warmup the
	// watchdog still snaps back a candidate far worse than the live color
	// (more than 10 times its bad rate); the first step's evidence starts
	// when warmup ends. Needs SLOs. Default: 0.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	Warmup *metav1.Duration `json:"warmup,omitempty"`

	// ProgressDeadline bounds how long the candidate may take to become
	// Ready before the release is rolled back. Default: 10m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	ProgressDeadline *metav1.Duration `json:"progressDeadline,omitempty"`

	// Router selects how traffic is moved. Default: istio.
	// +optional
	Router Router `json:"router,omitempty"`

	// SubsetLabel is the pod label key whose value ("blue" or "green")
	// tells the colors apart. Default: track.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	SubsetLabel string `json:"subsetLabel,omitempty"`

	// Approval gates the release on a human decision.
	// +optional
	Approval *Approval `json:"approval,omitempty"`

	// KeepCandidateOnRollback leaves the failed candidate's pods running
	// (with no traffic) for debugging instead of scaling them to zero.
	// +optional
	KeepCandidateOnRollback bool `json:"keepCandidateOnRollback,omitempty"`

	// Prometheus overrides the controller's default Prometheus for this policy.
	// +optional
	Prometheus *PrometheusSource `json:"prometheus,omitempty"`

	// SLOs are judged on counts of good and bad requests per color: at
	// each step's end (against the live color, the objective and the
	// traffic share) and by the watchdog at every scrape, from the first
	// second of every step through standby.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=8
	SLOs []SLO `json:"slos,omitempty"`

	// Compare bounds how much worse than the live color the candidate may be.
	// +optional
	Compare *Compare `json:"compare,omitempty"`

	// Watchdog tunes the check run at every scrape.
	// +optional
	Watchdog *Watchdog `json:"watchdog,omitempty"`

	// Alpha is the release's false-rollback budget: the chance that a
	// release whose candidate is no worse than the live color (within
	// compare.maxRatio) is rolled back, over everything that can roll it
	// back, for the whole release including standby. Default "0.01".
	// +optional
	// +kubebuilder:validation:Pattern=`^0?\.[0-9]+$`
	Alpha string `json:"alpha,omitempty"`

	// OnInconclusive is what happens when a step's evidence is still thin
	// after MaxExtensions: pause (wait for approve or abort) or rollback.
	// Default: pause.
	// +optional
	// +kubebuilder:validation:Enum=pause;rollback
	OnInconclusive string `json:"onInconclusive,omitempty"`

	// OnError is what happens when a step's checks still fail to run (a
	// query error, or traffic not following the weights) after
	// MaxExtensions: pause or rollback. Default: rollback.
	// +optional
	// +kubebuilder:validation:Enum=pause;rollback
	OnError string `json:"onError,omitempty"`

	// MaxExtensions is how many times a step is held for another
	// stepDuration when its verdict is Inconclusive or Error. Default 2.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=20
	MaxExtensions *int32 `json:"maxExtensions,omitempty"`

	// MaxStepDuration lets each step end on its evidence: the step is
	// judged every stepDuration and ends at the first look whose checks
	// pass; Inconclusive or Error looks go on (quietly, without a
	// StepExtended Event) until maxStepDuration, then onInconclusive /
	// onError applies. With it, stepDuration is the shortest a step lasts
	// and how often it is judged, and maxExtensions must be left out. At
	// most 40 looks a step (maxStepDuration <= 40 x stepDuration).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	MaxStepDuration *metav1.Duration `json:"maxStepDuration,omitempty"`

	// Hooks are webhooks the release waits on: a smoke test before the
	// first step, a test at each step, before and after promotion.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Hooks []Hook `json:"hooks,omitempty"`

	// Notifications are the receivers told of every transition that
	// matters (started, step passed, paused, awaiting approval, rolled
	// back, promoted, stalled).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=8
	Notifications []Receiver `json:"notifications,omitempty"`
}

// HookPoint is where in a release a hook runs.
// +kubebuilder:validation:Enum=pre-rollout;step;pre-promotion;post-promotion
type HookPoint string

const (
	// HookPreRollout runs once the candidate is Ready, before any traffic
	// moves (a smoke test against the candidate's pods).
	HookPreRollout HookPoint = "pre-rollout"
	// HookStep runs at the end of each step, beside the checks.
	HookStep HookPoint = "step"
	// HookPrePromotion runs after the last step passed, before the
	// candidate becomes live.
	HookPrePromotion HookPoint = "pre-promotion"
	// HookPostPromotion runs once the candidate is live, during standby:
	// a failure snaps back to the standby color.
	HookPostPromotion HookPoint = "post-promotion"
)

// Hook is a webhook the release waits on: splitter POSTs the release's
// state (JSON) and a 2xx answer within the timeout passes.
//
// +kubebuilder:validation:XValidation:rule="has(self.url) != has(self.urlFrom)",message="exactly one of url and urlFrom must be set"
type Hook struct {
	// Name identifies the hook in status and Events.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// At is where in the release it runs.
	At HookPoint `json:"at"`
	// URL is the http(s) endpoint to POST to.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url,omitempty"`
	// URLFrom reads the URL from a Secret in the policy's namespace, for
	// URLs that carry a token.
	// +optional
	URLFrom *SecretKeyRef `json:"urlFrom,omitempty"`
	// Timeout bounds one call; a timeout fails the hook. Default 30s,
	// at most 10m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// OnFailure is what a failed hook does: rollback (snap back) or pause
	// (hold the weights until approved or aborted). Default: rollback.
	// +optional
	// +kubebuilder:validation:Enum=pause;rollback
	OnFailure string `json:"onFailure,omitempty"`
	// Metadata is passed to the hook in the request body.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	Metadata map[string]string `json:"metadata,omitempty"`
}

// ReceiverType is the message format a receiver takes.
// +kubebuilder:validation:Enum=slack;teams;webhook
type ReceiverType string

const (
	// ReceiverSlack posts to a Slack-compatible incoming webhook.
	ReceiverSlack ReceiverType = "slack"
	// ReceiverTeams posts to a Microsoft Teams incoming webhook.
	ReceiverTeams ReceiverType = "teams"
	// ReceiverWebhook posts splitter's versioned JSON (schema
	// splitter.dev/notification/v1).
	ReceiverWebhook ReceiverType = "webhook"
)

// Receiver is where notifications go. Its URL is read from a Secret: it
// is a credential, never written in a CRD in clear and never logged.
type Receiver struct {
	// Name identifies the receiver in status and Events.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// Type is the message format.
	Type ReceiverType `json:"type"`
	// URLFrom is the Secret key holding the webhook URL.
	URLFrom SecretKeyRef `json:"urlFrom"`
}

// SecretKeyRef names a key of a Secret in the policy's namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key in the Secret's data. Default: url.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// SLO is one service level objective over the workload's Istio metrics.
//
// +kubebuilder:validation:XValidation:rule="self.name != 'latency' || has(self.threshold)",message="a latency SLO needs a threshold"
type SLO struct {
	// Name is availability (bad = 5xx) or latency (bad = slower than threshold).
	// +kubebuilder:validation:Enum=availability;latency
	Name string `json:"name"`
	// Objective is the percentage of good requests, e.g. "99.9".
	// +kubebuilder:validation:Pattern=`^[0-9]{1,2}(\.[0-9]+)?$`
	Objective string `json:"objective"`
	// Threshold is the latency above which a request is bad; it must be one
	// of Istio's histogram bucket boundaries (e.g. 100ms, 250ms, 500ms, 1s).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	Threshold *metav1.Duration `json:"threshold,omitempty"`
	// GRPCErrorCodes are the grpc-status codes that make a request bad for
	// availability (gRPC failures arrive as HTTP 200). Default: 2, 4, 8,
	// 13, 14, 15 (Unknown, DeadlineExceeded, ResourceExhausted, Internal,
	// Unavailable, DataLoss); an empty list counts none.
	// +optional
	// +listType=set
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=16
	GRPCErrorCodes []int32 `json:"grpcErrorCodes,omitempty"`
}

// Compare bounds the candidate's error rate relative to the live color's.
type Compare struct {
	// MaxRatio: a step passes when the candidate's bad-request rate is at
	// most this multiple of the live color's (with confidence). Default "1.5".
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9]+(\.[0-9]+)?$`
	MaxRatio string `json:"maxRatio,omitempty"`
	// FailRatio: a step fails when the rate is surely above this multiple.
	// Default "2".
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9]+(\.[0-9]+)?$`
	FailRatio string `json:"failRatio,omitempty"`
	// Margin, a share of the error budget (1 - objective): a step also
	// passes when the candidate surely spends at most this share of the
	// budget more than the live color (green's bad rate minus blue's is
	// at most margin x budget). Rare errors cannot show a ratio; they can
	// show a difference. Default "0.5".
	// +optional
	// +kubebuilder:validation:Pattern=`^0?\.[0-9]+$|^1(\.0+)?$`
	Margin string `json:"margin,omitempty"`
}

// Watchdog tunes the check that runs at every scrape during a release and
// its standby, and snaps back without waiting for the step's end.
type Watchdog struct {
	// Alpha is no longer used: spec.alpha is the whole release's
	// false-rollback budget, and the watchdog takes a fixed share of it.
	// Setting it is an error that says so.
	// +optional
	// +kubebuilder:validation:Pattern=`^0?\.[0-9]+$`
	Alpha string `json:"alpha,omitempty"`
	// Disabled turns the watchdog off.
	// +optional
	Disabled bool `json:"disabled,omitempty"`
}

// Approval says where a release waits for a human.
type Approval struct {
	// BeforeFirstStep holds the release, candidate Ready, before any traffic moves.
	// +optional
	BeforeFirstStep bool `json:"beforeFirstStep,omitempty"`
	// BeforePromotion holds the release before the candidate gets 100%.
	// +optional
	BeforePromotion bool `json:"beforePromotion,omitempty"`
}

// PrometheusSource is where checks are queried.
type PrometheusSource struct {
	// Address is the Prometheus base URL, e.g. http://prometheus.monitoring:9090.
	// +kubebuilder:validation:Pattern=`^https?://`
	Address string `json:"address"`
}

// Check is one SLO query with a bound. Exactly one of builtin and query is
// set, and at least one of min and max.
//
// +kubebuilder:validation:XValidation:rule="has(self.builtin) != has(self.query)",message="exactly one of builtin and query must be set"
// +kubebuilder:validation:XValidation:rule="has(self.min) || has(self.max)",message="at least one of min and max must be set"
type Check struct {
	// Name identifies the check in status, Events and metrics.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// Builtin selects a query shipped with splitter.
	// +optional
	Builtin Builtin `json:"builtin,omitempty"`

	// Query is PromQL, a Go template over .Namespace, .Workload, .Service,
	// .Candidate and .Live; every value is escaped for a label matcher.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Query string `json:"query,omitempty"`

	// Min is the lowest passing value, a decimal number.
	// +optional
	// +kubebuilder:validation:Pattern=`^-?[0-9]+(\.[0-9]+)?$`
	Min *string `json:"min,omitempty"`

	// Max is the highest passing value, a decimal number.
	// +optional
	// +kubebuilder:validation:Pattern=`^-?[0-9]+(\.[0-9]+)?$`
	Max *string `json:"max,omitempty"`
}

// SplitPolicy is a release policy, tuned by SREs, named by workloads'
// splitter.dev/policy annotation.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=spol,categories=splitter
// +kubebuilder:printcolumn:name="Steps",type=string,JSONPath=`.spec.steps`
// +kubebuilder:printcolumn:name="Step Duration",type=string,JSONPath=`.spec.stepDuration`
// +kubebuilder:printcolumn:name="Router",type=string,JSONPath=`.spec.router`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SplitPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec SplitPolicySpec `json:"spec,omitempty"`
}

// SplitPolicyList is a list of SplitPolicy.
//
// +kubebuilder:object:root=true
type SplitPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SplitPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&SplitPolicy{}, &SplitPolicyList{})
}
