package plugin

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Explain says in sentences, with the numbers, where the release stands
// and why the last decision was taken: from status.history[0],
// status.checks, the step's counts and status.actions.
func Explain(s *splitterv1.Split, v View) string {
	st := s.Status
	p := planFor(st.Policy)
	var paras []string
	say := func(format string, args ...any) { paras = append(paras, fmt.Sprintf(format, args...)) }

	switch st.Phase {
	case splitterv1.PhasePreparing:
		say("Revision %s is deploying to %s (attempt %d), started %s ago; no traffic has moved yet: the release waits for %s's pods to be Ready.",
			rev(st.CandidateRevision), st.Candidate, max(st.Attempt, 1), agoPtr(v, st.ReleaseStartedAt), st.Candidate)
	case splitterv1.PhaseShifting:
		what := fmt.Sprintf("%s gets %d%% of the traffic at step %d of %d", st.Candidate, st.Weight, st.Step, len(p.steps))
		switch left, ok := timeLeft(s, p, v.Now); {
		case st.PausedAt != nil:
			say("%s, held there by a pause for %s: no weight rises and nothing is promoted until it is resumed (kubectl splitter resume %s); the watchdog keeps watching.",
				what, ago(v.Now, st.PausedAt.Time), s.Name)
		case !ok:
			say("%s; the weights are being applied.", what)
		case left > 0:
			say("%s; its checks are judged in about %s (the step is held %s%s, and evidence only counts once the weights have settled).",
				what, short(left), short(p.stepDuration), extended(st.Extensions))
		default:
			say("%s; the step's hold ended %s ago and its verdict is due%s.", what, short(left), extended(st.Extensions))
		}
	case splitterv1.PhaseAwaitingApproval:
		why := "the policy asks for a person's approval here"
		if strings.Contains(st.Gate, "paused-step-") {
			why = fmt.Sprintf("the step's evidence stayed thin after %d extension(s), and the policy pauses rather than promote without evidence", st.Extensions)
		}
		say("The release of %s waits at gate %s with %s at %d%% (step %d of %d): %s. Approve with kubectl splitter approve %s, or snap back with kubectl splitter abort %s.",
			rev(st.CandidateRevision), st.Gate, st.Candidate, st.Weight, st.Step, len(p.steps), why, s.Name, s.Name)
	case splitterv1.PhaseRollingBack:
		say("All traffic is going back to %s; %s is being scaled down.", st.Live, st.Candidate)
	case splitterv1.PhasePromoting:
		if w := p.standbyWeight; w > 0 {
			say("%s is live with revision %s at %d%%; %s (revision %s) keeps %d%% for %s of standby as the watchdog's control, still watched, for an instant rollback.",
				st.Live, rev(st.LiveRevision), 100-w, st.Standby, rev(st.StandbyRevision), w, short(p.standby))
			break
		}
		say("%s is live with revision %s at 100%%; %s (revision %s) is kept running for %s of standby, still watched, for an instant rollback.",
			st.Live, rev(st.LiveRevision), st.Standby, rev(st.StandbyRevision), short(p.standby))
	case splitterv1.PhaseIdle:
		say("%s serves revision %s at 100%%; no release is in progress.", st.Live, rev(st.LiveRevision))
	case splitterv1.PhaseRolledBack:
		say("%s serves revision %s at 100%%; revision %s was rolled back (kubectl splitter retry %s releases it again).", st.Live, rev(st.LiveRevision), rev(st.CandidateRevision), s.Name)
	default:
		say("The controller has not reported on this Split yet.")
	}

	if InProgress(st.Phase) {
		if t := checkSentences(s, st.Step, false); t != "" {
			paras = append(paras, "So far: "+t)
		}
	}

	if len(st.History) > 0 {
		h := st.History[0]
		at := fmt.Sprintf("at step %d", h.Step)
		if h.Step > 0 && int(h.Step) <= len(p.steps) {
			at = fmt.Sprintf("at step %d (%d%%)", h.Step, p.steps[h.Step-1])
		}
		took := ""
		if !h.StartedAt.IsZero() && !h.FinishedAt.IsZero() {
			took = ", " + short(h.FinishedAt.Sub(h.StartedAt.Time)) + " after it started"
		}
		verb := map[splitterv1.Outcome]string{
			splitterv1.OutcomePromoted: "promoted", splitterv1.OutcomeRolledBack: "rolled back",
			splitterv1.OutcomeAborted: "aborted", splitterv1.OutcomeSuperseded: "superseded",
		}[h.Outcome]
		if verb == "" {
			verb = strings.ToLower(string(h.Outcome))
		}
		text := fmt.Sprintf("The last decision: revision %s was %s %s, %s ago%s (%s): %s.", rev(h.Revision), verb, at, ago(v.Now, h.FinishedAt.Time), took, h.Reason, strings.TrimSuffix(h.Message, "."))
		paras = append(paras, text)
		// The checks in status are that release's while its revision is
		// still the candidate.
		if h.Revision == st.CandidateRevision && !InProgress(st.Phase) && h.Outcome != splitterv1.OutcomePromoted {
			if t := checkSentences(s, h.Step, true); t != "" {
				paras = append(paras, "At that step: "+t)
			}
		}
		for _, a := range st.Actions {
			if a.Revision == h.Revision {
				paras = append(paras, fmt.Sprintf("Asked by %s: %s%s, %s ago.", a.By, a.Verb, detail(a.Detail), ago(v.Now, a.At.Time)))
				break
			}
		}
	} else if !InProgress(st.Phase) {
		paras = append(paras, "No release has finished yet.")
	}
	if InProgress(st.Phase) && len(st.Actions) > 0 && st.Actions[0].Revision == st.CandidateRevision {
		a := st.Actions[0]
		paras = append(paras, fmt.Sprintf("The last action on this release: %s%s by %s, %s ago.", a.Verb, detail(a.Detail), a.By, ago(v.Now, a.At.Time)))
	}

	var out []string
	for i, para := range paras {
		if i > 0 {
			out = append(out, "")
		}
		out = append(out, wrap(capital(para), v.width(), "", "")...)
	}
	return strings.Join(out, "\n") + "\n"
}

func extended(n int32) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(", extended %d time(s) for want of evidence", n)
}

func agoPtr(v View, t *metav1.Time) string {
	if t == nil {
		return "-"
	}
	return ago(v.Now, t.Time)
}

// checkSentences tells each check's verdict with its value, bound and the
// colours' counts; failing checks first, only those when failedOnly.
func checkSentences(s *splitterv1.Split, step int32, failedOnly bool) string {
	var bad, good []string
	for _, c := range s.Status.Checks {
		if step > 0 && c.Step > 0 && c.Step != step {
			continue
		}
		t := fmt.Sprintf("%s is %s", c.Name, c.Verdict)
		if c.Value != "" {
			t += " with value " + c.Value
		}
		if c.Bound != "" {
			t += " (bound " + c.Bound + ")"
		}
		var cs []string
		if ct, ok := counts(s, c.Name, s.Status.Candidate); ok {
			cs = append(cs, fmt.Sprintf("%s %s", s.Status.Candidate, countText(ct)))
		}
		if ct, ok := counts(s, c.Name, s.Status.Live); ok {
			cs = append(cs, fmt.Sprintf("%s %s", s.Status.Live, countText(ct)))
		}
		if len(cs) > 0 {
			t += "; " + strings.Join(cs, ", ")
		}
		if c.Message != "" {
			t += "; " + strings.TrimSuffix(c.Message, ".")
		}
		if c.Verdict == splitterv1.VerdictPass {
			good = append(good, t)
		} else {
			bad = append(bad, t)
		}
	}
	all := bad
	if !failedOnly {
		all = append(all, good...)
	}
	if len(all) == 0 {
		return ""
	}
	return strings.Join(all, ". ") + "."
}

func capital(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
