package dashboard

import (
	"sort"
	"time"

	eventsv1 "k8s.io/api/events/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/policy"
	"splitter.dev/splitter/internal/rollout"
)

// Summary is one Split as the overview shows it.
type Summary struct {
	Namespace         string                   `json:"namespace"`
	Name              string                   `json:"name"`
	Workload          string                   `json:"workload"`
	Policy            string                   `json:"policy"`
	Phase             splitterv1.Phase         `json:"phase"`
	Live              splitterv1.Color         `json:"live,omitempty"`
	Candidate         splitterv1.Color         `json:"candidate,omitempty"`
	LiveRevision      string                   `json:"liveRevision,omitempty"`
	CandidateRevision string                   `json:"candidateRevision,omitempty"`
	ReleaseID         string                   `json:"releaseID,omitempty"`
	Step              int32                    `json:"step"`
	Steps             []int32                  `json:"steps"`
	Weights           map[string]int32         `json:"weights"`
	Gate              string                   `json:"gate,omitempty"`
	PausedAt          *time.Time               `json:"pausedAt,omitempty"`
	ReleaseStartedAt  *time.Time               `json:"releaseStartedAt,omitempty"`
	StepStartedAt     *time.Time               `json:"stepStartedAt,omitempty"`
	Checks            []splitterv1.CheckResult `json:"checks"`
	Last              *splitterv1.Release      `json:"last,omitempty"`
	// RecentRollback: the last release was rolled back or aborted less
	// than RecentFor ago (or is being rolled back now).
	RecentRollback  bool   `json:"recentRollback"`
	ResourceVersion string `json:"resourceVersion"`
	// Actions are the buttons: each verb with "" if the plugin would do
	// it now, or why it would refuse.
	Actions map[string]string `json:"actions"`
}

// RecentFor is how long a rollback stays at the top of the overview.
const RecentFor = 24 * time.Hour

// Verbs are the actions the page offers, in the plugin's words.
var Verbs = []string{"approve", "pause", "resume", "abort", "retry"}

// Decide says, for one verb, whether the plugin would act on s now: ""
// if so, else its refusal. The plugin provides it (its own functions).
type Decide func(s *splitterv1.Split, verb string) string

func inProgress(p splitterv1.Phase) bool {
	switch p {
	case splitterv1.PhasePreparing, splitterv1.PhaseShifting, splitterv1.PhaseAwaitingApproval:
		return true
	}
	return false
}

// Weights are each colour's share now: the candidate's status.weight
// while a release is under way, the live colour's the rest.
func Weights(st splitterv1.SplitStatus) map[string]int32 {
	w := map[string]int32{string(splitterv1.Blue): 0, string(splitterv1.Green): 0}
	live := st.Live
	if live == "" {
		live = splitterv1.Blue
	}
	cand := int32(0)
	if st.Candidate != "" && (inProgress(st.Phase) || st.Phase == splitterv1.PhaseRollingBack) {
		cand = min(max(st.Weight, 0), 100)
		w[string(st.Candidate)] = cand
	}
	w[string(live)] += 100 - cand
	return w
}

// Summarize is the overview's row of a Split at now.
func Summarize(s *splitterv1.Split, now time.Time, decide Decide) Summary {
	st := s.Status
	steps := policy.DefaultSteps
	if st.Policy != nil && len(st.Policy.Steps) > 0 {
		steps = st.Policy.Steps
	}
	out := Summary{
		Namespace: s.Namespace, Name: s.Name, Workload: s.Spec.Workload, Policy: s.Spec.Policy,
		Phase: st.Phase, Live: st.Live, Candidate: st.Candidate, LiveRevision: st.LiveRevision, CandidateRevision: st.CandidateRevision,
		ReleaseID: rollout.ReleaseID(st), Step: st.Step, Steps: steps, Weights: Weights(st), Gate: st.Gate,
		Checks: st.Checks, ResourceVersion: s.ResourceVersion, Actions: map[string]string{},
	}
	if out.Checks == nil {
		out.Checks = []splitterv1.CheckResult{}
	}
	if st.PausedAt != nil {
		t := st.PausedAt.Time
		out.PausedAt = &t
	}
	if st.ReleaseStartedAt != nil {
		t := st.ReleaseStartedAt.Time
		out.ReleaseStartedAt = &t
	}
	if st.StepStartedAt != nil {
		t := st.StepStartedAt.Time
		out.StepStartedAt = &t
	}
	if len(st.History) > 0 {
		h := st.History[0]
		out.Last = &h
	}
	out.RecentRollback = st.Phase == splitterv1.PhaseRollingBack || rolledBackSince(st, now.Add(-RecentFor))
	if decide != nil {
		for _, v := range Verbs {
			out.Actions[v] = decide(s, v)
		}
	}
	return out
}

func snapBack(o splitterv1.Outcome) bool {
	return o == splitterv1.OutcomeRolledBack || o == splitterv1.OutcomeAborted
}

func rolledBackSince(st splitterv1.SplitStatus, since time.Time) bool {
	if len(st.History) == 0 {
		return false
	}
	h := st.History[0]
	return snapBack(h.Outcome) && h.FinishedAt.After(since)
}

// rank orders the overview: rollbacks first, then releases under way,
// then the rest.
func rank(s Summary) int {
	switch {
	case s.RecentRollback:
		return 0
	case inProgress(s.Phase) || s.Phase == splitterv1.PhasePromoting:
		return 1
	}
	return 2
}

// Sort orders summaries: recent rollbacks first (newest first), releases
// under way, then the others, each by namespace and name.
func Sort(ss []Summary) {
	sort.SliceStable(ss, func(i, j int) bool {
		a, b := ss[i], ss[j]
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra < rb
		}
		if rank(a) == 0 && a.Last != nil && b.Last != nil && !a.Last.FinishedAt.Equal(&b.Last.FinishedAt) {
			return a.Last.FinishedAt.After(b.Last.FinishedAt.Time)
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
}

// Detail is one release's page: its summary and what the overview leaves out.
type Detail struct {
	Summary
	Status splitterv1.SplitStatus `json:"status"`
	// Counts are the current step's requests and bad requests per SLO and colour.
	Counts []splitterv1.CountTotal `json:"counts"`
	// Events are the Split's Events (empty if they cannot be read).
	Events []Event `json:"events"`
}

// Event is one Kubernetes Event about a Split.
type Event struct {
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	Note    string    `json:"note"`
	At      time.Time `json:"at"`
	Count   int32     `json:"count,omitempty"`
	Warning bool      `json:"warning,omitempty"`
}

// EventsOf picks the Events about one Split, oldest first.
func EventsOf(evs []eventsv1.Event, name string) []Event {
	out := []Event{}
	for _, e := range evs {
		if e.Regarding.Kind != "Split" || e.Regarding.Name != name {
			continue
		}
		at := e.EventTime.Time
		if at.IsZero() {
			at = e.DeprecatedLastTimestamp.Time
		}
		if at.IsZero() {
			at = e.CreationTimestamp.Time
		}
		n := int32(1)
		if e.Series != nil {
			n = e.Series.Count
			if !e.Series.LastObservedTime.IsZero() {
				at = e.Series.LastObservedTime.Time
			}
		}
		out = append(out, Event{Type: e.Type, Reason: e.Reason, Note: e.Note, At: at, Count: n, Warning: e.Type == "Warning"})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// DetailOf is a Split's page at now.
func DetailOf(s *splitterv1.Split, evs []Event, now time.Time, decide Decide) Detail {
	d := Detail{Summary: Summarize(s, now, decide), Status: s.Status, Events: evs}
	if d.Events == nil {
		d.Events = []Event{}
	}
	d.Counts = []splitterv1.CountTotal{}
	if s.Status.Analysis != nil {
		d.Counts = append(d.Counts, s.Status.Analysis.Step...)
	}
	// The last policy spec is not the page's business (it may carry
	// receivers' names; secrets are never in status, but keep it short).
	d.Status.Policy = nil
	d.Status.Analysis = nil
	d.Status.Outbox = nil
	return d
}
