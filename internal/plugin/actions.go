package plugin

import (
	"encoding/json"
	"fmt"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// Change is what one verb writes: annotations to set (a nil value removes
// one), pinned to Target (the gate or revision it acts on). A Change is
// decided from a Split read; when the write meets a conflict, the Split is
// read again and decided again, and a different Target is refused.
type Change struct {
	Verb   string
	Target string
	Set    map[string]*string
	// Done says what was asked, for the user.
	Done string
	// Noop: the annotation already asks for it; nothing to write.
	Noop bool
}

// Refusal is a verb refused with its reason (exit code 1).
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return r.Reason }

func refuse(format string, args ...any) error { return &Refusal{Reason: fmt.Sprintf(format, args...)} }

func str(s string) *string { return &s }

func where(s *splitterv1.Split) string {
	st := s.Status
	switch {
	case st.Phase == "":
		return "the controller has not reported on it yet"
	case InProgress(st.Phase):
		return fmt.Sprintf("it is %s at step %d (%d%%)", st.Phase, st.Step, st.Weight)
	case st.Phase == splitterv1.PhaseIdle:
		return fmt.Sprintf("it is Idle: %s serves revision %s", st.Live, rev(st.LiveRevision))
	}
	return "it is " + string(st.Phase)
}

// set builds a Change that sets one annotation and who asked.
func set(verb, target, key, value, by, done string, s *splitterv1.Split) Change {
	c := Change{Verb: verb, Target: target, Done: done, Set: map[string]*string{key: str(value)}}
	if by != "" {
		c.Set[splitterv1.RequestedByAnnotation] = str(by)
	}
	if s.Annotations[key] == value {
		c.Noop = true
	}
	return c
}

// Approve approves the gate the release waits at now; expectGate, when
// given, must be it (a gate that passed is never approved by mistake).
func Approve(s *splitterv1.Split, expectGate, by string) (Change, error) {
	st := s.Status
	if st.Phase != splitterv1.PhaseAwaitingApproval || st.Gate == "" {
		return Change{}, refuse("nothing to approve on %s: %s, no gate waits", s.Name, where(s))
	}
	if expectGate != "" && expectGate != st.Gate {
		return Change{}, refuse("%s waits at gate %s, not %s: refusing a stale approval", s.Name, st.Gate, expectGate)
	}
	return set("approve", st.Gate, splitterv1.ApproveAnnotation, st.Gate, by,
		fmt.Sprintf("approved gate %s of %s", st.Gate, s.Name), s), nil
}

// Abort snaps the release in progress back.
func Abort(s *splitterv1.Split, by string) (Change, error) {
	st := s.Status
	if !InProgress(st.Phase) || st.CandidateRevision == "" {
		return Change{}, refuse("no release in progress on %s to abort: %s", s.Name, where(s))
	}
	id := rollout.ReleaseID(st)
	return set("abort", id, splitterv1.AbortAnnotation, id, by,
		fmt.Sprintf("asked to abort the release of revision %s on %s: all traffic goes back to %s", st.CandidateRevision, s.Name, st.Live), s), nil
}

// Pause holds the release in progress where it is.
func Pause(s *splitterv1.Split, by string) (Change, error) {
	st := s.Status
	if !InProgress(st.Phase) || st.CandidateRevision == "" {
		return Change{}, refuse("no release in progress on %s to pause: %s", s.Name, where(s))
	}
	id := rollout.ReleaseID(st)
	if st.PausedAt != nil || s.Annotations[splitterv1.PauseAnnotation] == id {
		return Change{}, refuse("%s is already paused (revision %s); kubectl splitter resume %s goes on", s.Name, st.CandidateRevision, s.Name)
	}
	return set("pause", id, splitterv1.PauseAnnotation, id, by,
		fmt.Sprintf("asked to pause the release of revision %s on %s at step %d (%d%%): weights stay, the watchdog keeps watching", st.CandidateRevision, s.Name, st.Step, st.Weight), s), nil
}

// Resume removes the pause.
func Resume(s *splitterv1.Split, by string) (Change, error) {
	st := s.Status
	if s.Annotations[splitterv1.PauseAnnotation] == "" && st.PausedAt == nil {
		return Change{}, refuse("%s is not paused: %s", s.Name, where(s))
	}
	c := Change{Verb: "resume", Target: rollout.ReleaseID(st), Set: map[string]*string{splitterv1.PauseAnnotation: nil},
		Done: fmt.Sprintf("asked to resume the release of revision %s on %s", rev(st.CandidateRevision), s.Name)}
	if by != "" {
		c.Set[splitterv1.RequestedByAnnotation] = str(by)
	}
	if s.Annotations[splitterv1.PauseAnnotation] == "" {
		// Paused in status but the annotation is gone: the controller
		// resumes on its next look.
		c.Noop = true
	}
	return c, nil
}

// Retry starts again a rolled-back release of the same revision; template
// is the user's Deployment's revision now, which must still be it.
func Retry(s *splitterv1.Split, template, by string) (Change, error) {
	st := s.Status
	if st.Phase != splitterv1.PhaseRolledBack || st.CandidateRevision == "" {
		return Change{}, refuse("nothing to retry on %s: %s (retry acts on a RolledBack release)", s.Name, where(s))
	}
	if template != "" && template != st.CandidateRevision {
		return Change{}, refuse("the Deployment %s's template is revision %s now, not the rolled-back %s: a template change starts its own release", s.Spec.Workload, template, st.CandidateRevision)
	}
	v := rollout.ReleaseID(st)
	c := set("retry", v, splitterv1.RetryAnnotation, v, by,
		fmt.Sprintf("asked to retry revision %s on %s (attempt %d)", st.CandidateRevision, s.Name, max(st.Attempt, 1)+1), s)
	// An abort, pause or promote of the release that ended names it, not
	// the retry, so it would not act again; cleared all the same, so the
	// Split's annotations say what is asked now.
	for _, key := range []string{splitterv1.AbortAnnotation, splitterv1.PauseAnnotation, splitterv1.PromoteAnnotation} {
		if s.Annotations[key] == v {
			c.Set[key] = nil
			c.Noop = false
		}
	}
	return c, nil
}

// Promote skips the remaining steps of the release in progress.
func Promote(s *splitterv1.Split, by string) (Change, error) {
	st := s.Status
	if !InProgress(st.Phase) || st.CandidateRevision == "" {
		return Change{}, refuse("no release in progress on %s to promote: %s", s.Name, where(s))
	}
	id := rollout.ReleaseID(st)
	return set("promote", id, splitterv1.PromoteAnnotation, id, by,
		fmt.Sprintf("asked to promote revision %s on %s now: %s goes to 100%%, skipping the remaining steps; %s stays up for standby", st.CandidateRevision, s.Name, st.Candidate, st.Live), s), nil
}

// MergePatch is the one write of a Change: the annotations and the
// resourceVersion read, so the API server refuses it (409) if the object
// changed since.
func MergePatch(resourceVersion string, set map[string]*string) []byte {
	ann := map[string]any{}
	for k, v := range set {
		if v == nil {
			ann[k] = nil
		} else {
			ann[k] = *v
		}
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": resourceVersion, "annotations": ann}}) // maps of strings always marshal
	return b
}
