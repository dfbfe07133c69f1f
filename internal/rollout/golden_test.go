package rollout

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
)

var update = flag.Bool("update", false, "rewrite the golden transcripts in testdata/")

func testPlan(mutate ...func(*policy.Plan)) *policy.Plan {
	q, err := analysis.Builtin("istio-success-rate")
	if err != nil {
		panic(err)
	}
	p := &policy.Plan{
		Steps: []int32{5, 10, 25, 50, 100}, StepDuration: 30 * time.Second, Standby: 2 * time.Minute,
		ProgressDeadline: 2 * time.Minute, Router: splitterv1.RouterIstio, SubsetLabel: "track", MaxExtensions: 2,
		Checks: []analysis.Check{{Name: "success-rate", Query: q, Min: ptr.To(0.99)}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// sloPlan judges on counts: availability 99.5%, steps 10/50/100 held 60 s,
// and no threshold checks.
func sloPlan() *policy.Plan {
	return testPlan(func(p *policy.Plan) {
		p.Checks = nil
		p.Steps = []int32{10, 50, 100}
		p.StepDuration = time.Minute
		p.SLOs = []policy.SLO{{Name: "availability", Objective: 0.995}}
		p.Alpha, p.MaxRatio, p.FailRatio, p.Margin = 0.01, 1.5, 2, 0.5
		p.Looks = len(p.Steps) * (1 + p.MaxExtensions)
		p.WatchdogOn = true
		p.Timing = analysis.Timing{Scrape: time.Second}
		p.OnInconclusive, p.OnError = "pause", "rollback"
	})
}

// standbyControlPlan is sloPlan with a standby that keeps 10% on the
// standby color.
func standbyControlPlan(standby time.Duration) *policy.Plan {
	p := sloPlan()
	p.Standby, p.StandbyWeight = standby, 10
	p.Steps = policy.CapSteps(p.Steps, p.StandbyWeight) // as Compile does
	p.Looks = len(p.Steps) * (1 + p.MaxExtensions)
	return p
}

type traffic struct {
	rps     float64
	errRate map[string]float64
}

// release changes the user's template at the given offset.
func release(rev string) func(*fakeWorld) { return func(w *fakeWorld) { w.revision = rev } }

func failAtStep(step int32) verdictFunc {
	return func(s splitterv1.SplitStatus, w *fakeWorld) []analysis.Result {
		if s.Step == step {
			return results(splitterv1.VerdictFail, "success-rate")
		}
		return allPass(s, w)
	}
}

// inconclusiveAtStep1 is Inconclusive for step 1's first n looks, then
// every check passes.
func inconclusiveAtStep1(n int32) func(splitterv1.SplitStatus, *fakeWorld) []analysis.Result {
	return func(s splitterv1.SplitStatus, w *fakeWorld) []analysis.Result {
		if s.Step == 1 && s.Extensions < n {
			return results(splitterv1.VerdictInconclusive, "success-rate")
		}
		return allPass(s, w)
	}
}

func TestGoldenTranscripts(t *testing.T) {
	for _, tc := range []struct {
		name string
		sc   scenario
	}{
		{"healthy-release-promoted", scenario{
			plan: testPlan(), verdicts: allPass, until: 6 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		{"check-fails-snaps-back", scenario{
			plan: testPlan(), verdicts: failAtStep(3), until: 4 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		{"inconclusive-extended-then-passes", scenario{
			plan: testPlan(), until: 6 * time.Minute, verdicts: inconclusiveAtStep1(2),
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		// maxStepDuration: a step judged every stepDuration ends at the
		// first look that passes; looks without a verdict are quiet.
		{"step-ends-on-evidence", scenario{
			plan:     testPlan(func(p *policy.Plan) { p.MaxStepDuration, p.MaxExtensions = 150*time.Second, 4 }),
			verdicts: inconclusiveAtStep1(3), until: 6 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		{"step-without-evidence-ends-at-max", scenario{
			plan: testPlan(func(p *policy.Plan) { p.MaxStepDuration, p.MaxExtensions = 150*time.Second, 4 }), until: 4 * time.Minute,
			verdicts: func(s splitterv1.SplitStatus, w *fakeWorld) []analysis.Result {
				return results(splitterv1.VerdictInconclusive, "success-rate")
			},
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		{"inconclusive-exhausted-rolls-back", scenario{
			plan: testPlan(), until: 4 * time.Minute,
			verdicts: func(s splitterv1.SplitStatus, w *fakeWorld) []analysis.Result {
				return results(splitterv1.VerdictInconclusive, "success-rate")
			},
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		{"superseded-mid-release", scenario{
			plan: testPlan(), verdicts: allPass, until: 8 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2"), 90 * time.Second: release("v3")},
		}},
		{"approval-gates", scenario{
			plan:     testPlan(func(p *policy.Plan) { p.ApproveBeforeFirstStep, p.ApproveBeforePromotion = true, true }),
			verdicts: allPass, until: 6 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second:  release("v2"),
				30 * time.Second:  func(w *fakeWorld) { w.approve = "v1/promotion" }, // stale: matches no gate
				60 * time.Second:  func(w *fakeWorld) { w.approve = "v2/1/first-step" },
				240 * time.Second: func(w *fakeWorld) { w.approve = "v2/1/promotion" },
			},
		}},
		{"aborted-while-shifting", scenario{
			plan: testPlan(), verdicts: allPass, until: 3 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: release("v2"),
				80 * time.Second: func(w *fakeWorld) { w.abort = "v2/1" },
			},
		}},
		{"progress-deadline", scenario{
			plan: testPlan(), verdicts: allPass, until: 4 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: func(w *fakeWorld) {
				w.neverReady["v2"] = true
				w.revision = "v2"
			}},
		}},
		{"candidate-pods-lost", scenario{
			plan: testPlan(), verdicts: allPass, until: 3 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: release("v2"),
				70 * time.Second: func(w *fakeWorld) { w.colors[splitterv1.Green].lost = true },
			},
		}},
		{"weights-changed-behind-our-back", scenario{
			plan: testPlan(), verdicts: allPass, until: 3 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: release("v2"),
				45 * time.Second: func(w *fakeWorld) { w.routed = &Weights{Blue: 100} },
			},
		}},
		{"reverted-after-rollback", scenario{
			plan: testPlan(), verdicts: failAtStep(1), until: 3 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second:  release("v2"),
				120 * time.Second: release("v1"),
			},
		}},
		{"keep-candidate-on-rollback", scenario{
			plan: testPlan(func(p *policy.Plan) { p.KeepCandidateOnRollback = true }), verdicts: failAtStep(2), until: 3 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		{"template-change-during-adoption", scenario{
			plan: testPlan(), verdicts: allPass, until: 4 * time.Minute,
			// Before blue is Ready and routed: released after adoption, not absorbed.
			events: map[time.Duration]func(*fakeWorld){2 * time.Second: release("v2")},
		}},
		{"slo-healthy-promoted", scenario{
			plan: sloPlan(), until: 8 * time.Minute, traffic: &traffic{rps: 100, errRate: map[string]float64{"v1": 0.001, "v2": 0.001}},
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		{"slo-gross-fault-watchdog", scenario{
			plan: sloPlan(), until: 3 * time.Minute, traffic: &traffic{rps: 100, errRate: map[string]float64{"v1": 0.001, "v2": 0.3}},
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		{"slo-low-traffic-pauses", scenario{
			plan: sloPlan(), until: 8 * time.Minute, traffic: &traffic{rps: 1, errRate: map[string]float64{}},
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		{"slo-watchdog-in-standby", scenario{
			plan: sloPlan(), until: 8 * time.Minute, traffic: &traffic{rps: 100, errRate: map[string]float64{"v1": 0.001, "v2": 0.001}},
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: release("v2"),
				// After promotion, v2 starts failing while blue stands by.
				5*time.Minute + 10*time.Second: func(w *fakeWorld) { w.errRate["v2"] = 0.3 },
			},
		}},
		// Issue 18: the standby color keeps 10% as the watchdog's control
		// through standby, then the live color gets everything.
		{"slo-standby-control", scenario{
			plan: standbyControlPlan(3 * time.Minute), until: 12 * time.Minute, traffic: &traffic{rps: 100, errRate: map[string]float64{"v1": 0.001, "v2": 0.001}},
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: release("v2")},
		}},
		// A regression that starts late in standby is judged against the
		// control: the relative watchdog snaps back to the standby color.
		{"slo-standby-control-late-regression", scenario{
			plan: standbyControlPlan(30 * time.Minute), until: 20 * time.Minute, traffic: &traffic{rps: 100, errRate: map[string]float64{"v1": 0.001, "v2": 0.001}},
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: release("v2"),
				12 * time.Minute: func(w *fakeWorld) { w.errRate["v2"] = 0.01 },
			},
		}},
		// Issue 18: the live color's Deployment deleted mid-release (a
		// GitOps prune) left 50% of the requests failing until the step
		// ended. The Ready candidate takes all traffic at once, said loudly.
		{"live-deleted-mid-release", scenario{
			plan: testPlan(), verdicts: allPass, until: 5 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: release("v2"),
				80 * time.Second: func(w *fakeWorld) { w.colors[splitterv1.Blue].deleted = true },
			},
		}},
		// The standby color deleted during standby: its control share would
		// fail and there is nothing to snap back to; standby ends early.
		{"standby-deleted", scenario{
			plan: standbyControlPlan(10 * time.Minute), until: 9 * time.Minute, traffic: &traffic{rps: 100, errRate: map[string]float64{"v1": 0.001, "v2": 0.001}},
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: release("v2"),
				7 * time.Minute:  func(w *fakeWorld) { w.colors[splitterv1.Blue].deleted = true },
			},
		}},
		{"pause-and-resume", scenario{
			plan: testPlan(), verdicts: allPass, until: 6 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: release("v2"),
				40 * time.Second: func(w *fakeWorld) { w.pause, w.by = "v2", "alice" }, // stale: a revision, not the release
				60 * time.Second: func(w *fakeWorld) { w.pause, w.by = "v2/1", "alice" },
				// Held well past the step's end: no weight rises meanwhile.
				150 * time.Second: func(w *fakeWorld) { w.pause, w.by = "", "bob" },
			},
		}},
		{"retry-after-rollback", scenario{
			plan: testPlan(), until: 7 * time.Minute,
			verdicts: func(s splitterv1.SplitStatus, w *fakeWorld) []analysis.Result {
				if s.Attempt == 1 && s.Step == 2 {
					return results(splitterv1.VerdictFail, "success-rate")
				}
				return allPass(s, w)
			},
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second:  release("v2"),
				90 * time.Second:  func(w *fakeWorld) { w.retry, w.by = "v2/0", "alice" }, // names no release
				100 * time.Second: func(w *fakeWorld) { w.retry, w.by = "v2/1", "alice" },
			},
		}},
		{"promote-skipping-steps", scenario{
			plan: testPlan(), verdicts: allPass, until: 4 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: release("v2"),
				40 * time.Second: func(w *fakeWorld) { w.promote, w.by = "v2/1", "oncall" },
			},
		}},
		{"hooks-pass", scenario{
			plan: testPlan(withHooks("rollback")), verdicts: allPass, until: 6 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: func(w *fakeWorld) {
				w.revision = "v2"
				w.hook = answer(nil, 3*time.Second)
			}},
		}},
		{"step-hook-fails-snaps-back", scenario{
			plan: testPlan(withHooks("rollback")), verdicts: allPass, until: 3 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: func(w *fakeWorld) {
				w.revision = "v2"
				w.hook = answer(map[string]bool{"load/2": true}, 3*time.Second)
			}},
		}},
		{"smoke-hook-fails-pauses", scenario{
			plan: testPlan(withHooks("pause")), verdicts: allPass, until: 3 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: func(w *fakeWorld) {
					w.revision = "v2"
					w.hook = answer(map[string]bool{"smoke/0": true}, 3*time.Second)
				},
				60 * time.Second: func(w *fakeWorld) { w.approve, w.by = "v2/1/hook/pre-rollout/0/smoke", "alice" },
			},
		}},
		{"stale-approval-after-retry", scenario{
			plan:     testPlan(func(p *policy.Plan) { p.ApproveBeforeFirstStep = true }),
			verdicts: allPass, until: 3 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: release("v2"),
				40 * time.Second: func(w *fakeWorld) { w.approve, w.by = "v2/1/first-step", "alice" },
				60 * time.Second: func(w *fakeWorld) { w.abort, w.by = "v2/1", "bob" },
				// The approval and the abort stay on the Split: they name
				// release v2/1, not the retry (v2/2), which waits.
				80 * time.Second: func(w *fakeWorld) { w.retry, w.by = "v2/1", "bob" },
			},
		}},
		{"step-hook-paused-then-approved", scenario{
			plan: testPlan(withHooks("pause")), verdicts: allPass, until: 3 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: func(w *fakeWorld) {
					w.revision = "v2"
					w.hook = answer(map[string]bool{"load/2": true, "load/3": true}, 3*time.Second)
				},
				// Back to step 2, its hold and checks; the same hook failing
				// at step 3 waits for its own approval.
				70 * time.Second: func(w *fakeWorld) { w.approve, w.by = "v2/1/hook/step/2/load", "alice" },
			},
		}},
		{"revert-calls-hooks-anew", scenario{
			plan: testPlan(withHooks("rollback")), verdicts: allPass, until: 4 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){
				20 * time.Second: func(w *fakeWorld) {
					w.revision = "v2"
					w.hook = answer(nil, 3*time.Second)
				},
				50 * time.Second: release("v3"),
				70 * time.Second: release("v2"), // a new release of v2: new hook calls
			},
		}},
		{"post-promotion-hook-fails", scenario{
			plan: testPlan(withHooks("rollback")), verdicts: allPass, until: 6 * time.Minute,
			events: map[time.Duration]func(*fakeWorld){20 * time.Second: func(w *fakeWorld) {
				w.revision = "v2"
				w.hook = answer(map[string]bool{"verify/0": true}, 3*time.Second)
			}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := tc.sc
			sc.world = newFakeWorld("v1")
			if tr := sc.traffic; tr != nil {
				sc.world.rps, sc.world.errRate = tr.rps, tr.errRate
			}
			sc.checkInvariants = invariants
			got := sc.run()
			for _, v := range sc.violations {
				t.Error("invariant:", v)
			}
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/rollout -update)", err)
			}
			if string(want) != got {
				t.Errorf("transcript differs from %s (rerun with -update and review the diff):\n%s", path, got)
			}
		})
	}
}

// withHooks adds a smoke test before traffic moves, a load test at each
// step, a pre-promotion and a post-promotion check; onFailure applies to
// the first three.
func withHooks(onFailure string) func(*policy.Plan) {
	return func(p *policy.Plan) {
		h := func(name string, at splitterv1.HookPoint, onFailure string) policy.Hook {
			return policy.Hook{Name: name, At: at, URL: "http://hooks.test/" + name, Timeout: time.Minute, OnFailure: onFailure}
		}
		p.Hooks = []policy.Hook{
			h("smoke", splitterv1.HookPreRollout, onFailure), h("load", splitterv1.HookStep, onFailure),
			h("confirm", splitterv1.HookPrePromotion, onFailure), h("verify", splitterv1.HookPostPromotion, "rollback"),
		}
	}
}

// answer passes every hook call after took, except those whose
// "name/step" is in fail.
func answer(fail map[string]bool, took time.Duration) func(HookCall) (splitterv1.Verdict, string, time.Duration) {
	return func(c HookCall) (splitterv1.Verdict, string, time.Duration) {
		if fail[fmt.Sprintf("%s/%d", c.Hook.Name, c.Step)] {
			return splitterv1.VerdictFail, "HTTP 500: smoke test: 3 of 40 requests failed", took
		}
		return splitterv1.VerdictPass, "HTTP 200", took
	}
}
