package plugin

import (
	"fmt"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// Waiter knows which release `get --watch` waits for: the one of
// Revision, the user's template when the watch began (so `kubectl set
// image ... && kubectl splitter get app --watch` waits for the release
// the image change starts, even before the controller has seen it).
type Waiter struct {
	Revision string
	// seen are the history entries there before the watch began: only a
	// newer entry of Revision is its outcome.
	seen map[string]bool
}

func historyKey(h splitterv1.Release) string {
	return fmt.Sprintf("%s|%s|%s|%s", h.Revision, h.StartedAt.UTC().Format("2006-01-02T15:04:05Z"), h.FinishedAt.UTC().Format("2006-01-02T15:04:05Z"), h.Outcome)
}

// NewWaiter picks the release to wait for: the template's revision when
// known, else the release in progress, else the live one.
func NewWaiter(s *splitterv1.Split, template string) *Waiter {
	w := &Waiter{Revision: template, seen: map[string]bool{}}
	if w.Revision == "" {
		w.Revision = s.Status.LiveRevision
		if InProgress(s.Status.Phase) || s.Status.Phase == splitterv1.PhaseRollingBack || s.Status.Phase == splitterv1.PhaseRolledBack {
			w.Revision = s.Status.CandidateRevision
		}
	}
	for _, h := range s.Status.History {
		w.seen[historyKey(h)] = true
	}
	return w
}

// Outcome says whether the release waited for has ended in s, with the
// exit code (0 promoted, 1 rolled back, aborted or superseded) and a
// sentence.
func (w *Waiter) Outcome(s *splitterv1.Split) (done bool, code int, summary string) {
	st := s.Status
	for _, h := range st.History {
		if h.Revision != w.Revision || w.seen[historyKey(h)] {
			continue
		}
		return true, exitFor(h.Outcome), finished(s, h)
	}
	switch {
	case InProgress(st.Phase) || st.Phase == splitterv1.PhaseRollingBack:
		return false, 0, ""
	case (st.Phase == splitterv1.PhaseIdle || st.Phase == splitterv1.PhasePromoting) && st.LiveRevision == w.Revision && w.Revision != "":
		return true, 0, fmt.Sprintf("revision %s is live on %s (no release in progress)", w.Revision, st.Live)
	case st.Phase == splitterv1.PhaseRolledBack && st.CandidateRevision == w.Revision &&
		s.Annotations[splitterv1.RetryAnnotation] != rollout.ReleaseID(st):
		msg := fmt.Sprintf("revision %s was rolled back", w.Revision)
		if len(st.History) > 0 && st.History[0].Revision == w.Revision {
			msg = finished(s, st.History[0])
		}
		return true, 1, msg
	}
	// Idle (or RolledBack) and the template differs: the release has not
	// started yet.
	return false, 0, ""
}

func exitFor(o splitterv1.Outcome) int {
	if o == splitterv1.OutcomePromoted {
		return 0
	}
	return 1
}

func finished(s *splitterv1.Split, h splitterv1.Release) string {
	switch h.Outcome {
	case splitterv1.OutcomePromoted:
		t := fmt.Sprintf("revision %s promoted: %s is live at 100%%", h.Revision, h.Color)
		if s.Status.Standby != "" && s.Status.LiveRevision == h.Revision {
			t += fmt.Sprintf(" (%s kept for standby, still watched)", s.Status.Standby)
		}
		return t
	}
	verb := map[splitterv1.Outcome]string{splitterv1.OutcomeRolledBack: "rolled back", splitterv1.OutcomeAborted: "aborted",
		splitterv1.OutcomeSuperseded: "superseded"}[h.Outcome]
	if verb == "" {
		verb = string(h.Outcome)
	}
	return fmt.Sprintf("revision %s %s at step %d (%s): %s", h.Revision, verb, h.Step, h.Reason, h.Message)
}
