package rollout

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
)

// invariants are checked after every decision, in the golden scenarios and
// the random sequences below.
func invariants(before splitterv1.SplitStatus, o Observations, d Decision) error {
	w := d.Desired.Weights
	if w != nil {
		if w.Blue < 0 || w.Green < 0 || w.Blue+w.Green != 100 {
			return fmt.Errorf("weights %s do not sum to 100", w)
		}
		for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
			var routed int32
			if o.Routed != nil {
				routed = o.Routed.Of(c)
			}
			if o.Colors[c].Ready == 0 && w.Of(c) > routed {
				return fmt.Errorf("%s has no Ready pod but its weight rises %d -> %d", c, routed, w.Of(c))
			}
		}
	}
	// An operator's promote overrides the step's checks (the watchdog
	// still judges in standby).
	byOperator := len(d.Status.History) > 0 && d.Status.History[0].Reason == ReasonPromotedByOperator && d.Status.Phase == splitterv1.PhasePromoting
	for _, v := range o.Verdicts {
		if v.Verdict != splitterv1.VerdictFail || before.Candidate == "" || w == nil || byOperator {
			continue
		}
		// The snap-back takes all of the candidate's traffic, unless the
		// live color has no Ready pod to take it: then nothing moves.
		if o.Colors[before.Live].Ready > 0 && w.Of(before.Candidate) > 0 {
			return fmt.Errorf("after a failed verdict %s still gets %d%%", before.Candidate, w.Of(before.Candidate))
		}
		if o.Routed != nil && w.Of(before.Candidate) > o.Routed.Of(before.Candidate) {
			return fmt.Errorf("after a failed verdict %s's weight rises to %d%%", before.Candidate, w.Of(before.Candidate))
		}
	}
	after := d.Status
	// Paused: no weight of the release in progress rises, nothing is
	// promoted (an operator's promote and snap-backs excepted).
	if before.PausedAt != nil && after.PausedAt != nil && after.Weight > before.Weight {
		return fmt.Errorf("paused at %d%% but the weight rises to %d%%", before.Weight, after.Weight)
	}
	if before.PausedAt != nil && after.Phase == splitterv1.PhasePromoting && before.Phase != splitterv1.PhasePromoting &&
		(len(after.History) == 0 || after.History[0].Reason != ReasonPromotedByOperator) {
		return fmt.Errorf("promoted while paused")
	}
	// A hook failing never lets the candidate's weight rise (a person may
	// approve past it later).
	for _, h := range after.Hooks[min(len(before.Hooks), len(after.Hooks)):] {
		if h.Verdict != splitterv1.VerdictPass && after.CandidateRevision == before.CandidateRevision && after.Weight > before.Weight {
			return fmt.Errorf("hook %s failed but the weight rises %d -> %d", h.Name, before.Weight, after.Weight)
		}
	}
	// Approving a failed hook goes back to where it failed: no weight rises.
	if strings.Contains(before.Gate, "/"+hookGatePrefix) && after.Phase != splitterv1.PhasePromoting && after.Weight > before.Weight {
		return fmt.Errorf("leaving the hook gate %s raised the weight %d -> %d", before.Gate, before.Weight, after.Weight)
	}
	if after.CandidateRevision == before.CandidateRevision && after.Step > before.Step {
		if after.Step > before.Step+1 {
			return fmt.Errorf("step jumped %d -> %d", before.Step, after.Step)
		}
		if before.Step > 0 && !stepWasHeld(before, o) {
			return fmt.Errorf("step %d -> %d without the hold (started %v, now %v, routed %v)", before.Step, after.Step, before.StepStartedAt, o.Now, o.Routed)
		}
	}
	return nil
}

// stepWasHeld says the step before an advance was held for its duration
// under its own weights. Without approval gates, an advance needs it.
func stepWasHeld(before splitterv1.SplitStatus, o Observations) bool {
	if before.Phase == splitterv1.PhaseAwaitingApproval {
		return true
	}
	p := testPlan()
	want := split(before.Candidate, before.Weight)
	return before.StepStartedAt != nil && !o.Now.Before(before.StepStartedAt.Add(p.StepDuration)) && o.Routed != nil && *o.Routed == want
}

// TestInvariantsUnderRandomSequences drives the engine with random
// observations: time jumps (also backwards, as a stale or reordered
// observation), repeated observations, pods lost, weights changed behind its
// back, random verdicts, template changes, aborts and approvals.
func TestInvariantsUnderRandomSequences(t *testing.T) {
	verdicts := []splitterv1.Verdict{splitterv1.VerdictPass, splitterv1.VerdictPass, splitterv1.VerdictPass,
		splitterv1.VerdictFail, splitterv1.VerdictInconclusive, splitterv1.VerdictError}
	for seed := uint64(1); seed <= 600; seed++ {
		rng := rand.New(rand.NewPCG(seed, 42))
		p := testPlan()
		if seed > 300 {
			// Steps that end on evidence: judged every stepDuration after
			// the last look, up to maxStepDuration.
			p.MaxStepDuration, p.MaxExtensions = 5*p.StepDuration, 4
		}
		p.ApproveBeforePromotion = rng.IntN(2) == 0
		if rng.IntN(2) == 0 {
			withHooks([]string{"pause", "rollback"}[rng.IntN(2)])(p)
		}
		w := newFakeWorld("v1")
		w.hook = func(c HookCall) (splitterv1.Verdict, string, time.Duration) {
			// Deterministic per call: a tenth fail, answers take 0-20 s.
			h := fnv.New32a()
			h.Write([]byte(c.Token))
			n := h.Sum32()
			if n%10 == 0 {
				return splitterv1.VerdictFail, "HTTP 500", time.Duration(n%20) * time.Second
			}
			return splitterv1.VerdictPass, "HTTP 200", time.Duration(n%20) * time.Second
		}
		var s splitterv1.SplitStatus
		failedRelease := ""
		var candWeightAfterFail int32
		revs := 1
		for step := 0; step < 400; step++ {
			switch r := rng.IntN(100); {
			case r < 60:
				w.now = w.now.Add(time.Duration(rng.IntN(15)) * time.Second)
			case r < 65:
				revs++
				w.revision = fmt.Sprintf("v%d", revs)
			case r < 68:
				c := []splitterv1.Color{splitterv1.Blue, splitterv1.Green}[rng.IntN(2)]
				w.colors[c].lost = true
			case r < 71:
				b := int32(rng.IntN(101))
				w.routed = &Weights{Blue: b, Green: 100 - b}
			case r < 73:
				w.abort = releaseID(s)
			case r < 76:
				w.approve = s.Gate
			case r < 79:
				w.pause = releaseID(s)
			case r < 82:
				w.pause = ""
			case r < 83:
				w.promote = releaseID(s)
			case r < 85:
				w.retry = releaseID(s)
			}
			o := w.observe()
			if rng.IntN(10) == 0 {
				o.Now = o.Now.Add(-time.Duration(rng.IntN(60)) * time.Second) // stale observation
			}
			if ChecksDue(p, s, o.Now) {
				o.Verdicts = []analysis.Result{{Name: "success-rate", Verdict: verdicts[rng.IntN(len(verdicts))]}}
			}
			repeat := 1 + rng.IntN(2)
			for range repeat {
				before := s
				d := Next(p, s, o)
				if err := invariants(before, o, d); err != nil {
					t.Fatalf("seed %d, call %d: %v\nbefore: %+v\nafter:  %+v", seed, step, err, before, d.Status)
				}
				for _, v := range o.Verdicts {
					if v.Verdict == splitterv1.VerdictFail && before.CandidateRevision != "" && d.Desired.Weights != nil && d.Status.Phase != splitterv1.PhasePromoting {
						failedRelease, candWeightAfterFail = releaseID(before), d.Desired.Weights.Of(before.Candidate)
					}
				}
				// Across the rest of a failed release, the candidate's weight never rises.
				if failedRelease != "" && releaseID(d.Status) == failedRelease && d.Desired.Weights != nil && d.Status.Candidate != "" {
					got := d.Desired.Weights.Of(d.Status.Candidate)
					// (Someone else may move traffic; the engine only ever holds it.)
					if got > candWeightAfterFail && (o.Routed == nil || got > o.Routed.Of(d.Status.Candidate)) {
						t.Fatalf("seed %d, call %d: weight of failed release %s rose %d -> %d", seed, step, failedRelease, candWeightAfterFail, got)
					}
					candWeightAfterFail = got
				}
				s = d.Status
				w.apply(d.Desired)
				w.callHooks(d.Desired.Hooks)
				o = w.observe()
				o.Verdicts = nil
			}
		}
	}
}

// A crash between any two writes is harmless: restarting from the last
// persisted status with the same world gives the same desired world.
func TestDecisionIsDeterministic(t *testing.T) {
	w := newFakeWorld("v1")
	p := testPlan()
	var s splitterv1.SplitStatus
	for i := 0; i < 200; i++ {
		w.now = w.now.Add(3 * time.Second)
		if i == 10 {
			w.revision = "v2"
		}
		o := w.observe()
		if ChecksDue(p, s, o.Now) {
			o.Verdicts = allPass(s, w)
		}
		d1, d2 := Next(p, s, o), Next(p, *s.DeepCopy(), o)
		if !reflect.DeepEqual(d1, d2) {
			t.Fatalf("call %d: two decisions from the same input differ:\n%+v\n%+v", i, d1, d2)
		}
		s = d1.Status
		w.apply(d1.Desired)
	}
}
