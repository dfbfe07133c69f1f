package plugin

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var now = time.Date(2026, 11, 27, 14, 30, 0, 0, time.UTC)

func at(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }

func atp(d time.Duration) *metav1.Time { t := at(d); return &t }

var standard = &splitterv1.SplitPolicySpec{
	Steps:        []int32{5, 10, 25, 50, 100},
	StepDuration: &metav1.Duration{Duration: time.Minute},
	Standby:      &metav1.Duration{Duration: 10 * time.Minute},
	SLOs:         []splitterv1.SLO{{Name: "availability", Objective: "99.5"}},
}

const sloBound = "fail: ratio > 2; pass: ratio <= 1.5 or at most 0.25% worse; bad <= 0.5%"

func base() *splitterv1.Split {
	return &splitterv1.Split{
		ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: "shop", CreationTimestamp: at(72 * time.Hour)},
		Spec:       splitterv1.SplitSpec{Workload: "checkout", Policy: "standard"},
		Status: splitterv1.SplitStatus{
			Phase: splitterv1.PhaseIdle, Live: splitterv1.Blue, LiveRevision: "5d8f9c7b",
			Policy: standard, Replicas: ptr.To(int32(3)),
		},
	}
}

// midRelease: step 2 of 5 at 10%, 34 s left, checks passing so far.
func midRelease() *splitterv1.Split {
	s := base()
	st := &s.Status
	st.Phase, st.Candidate, st.CandidateRevision, st.Attempt = splitterv1.PhaseShifting, splitterv1.Green, "7c6b5a4d", 1
	st.ReleaseID, st.ReleaseCount = "7c6b5a4d/4", 4
	st.Step, st.Weight = 2, 10
	st.ReleaseStartedAt, st.StepStartedAt = atp(3*time.Minute), atp(26*time.Second)
	st.Checks = []splitterv1.CheckResult{
		{Name: "availability", Verdict: splitterv1.VerdictPass, Value: "0.0021", Bound: sloBound, Step: 1, EvaluatedAt: at(30 * time.Second),
			Message: "checkout-green 7/3412 vs checkout-blue 61/30511: bad-request ratio at most 1.2 (max 1.5)"},
		{Name: "success-rate", Verdict: splitterv1.VerdictPass, Value: "0.998", Bound: ">= 0.99", Step: 1, EvaluatedAt: at(30 * time.Second)},
		{Name: "traffic-share", Verdict: splitterv1.VerdictPass, Value: "10.1", Bound: "10% ± 0.6", Step: 1, EvaluatedAt: at(30 * time.Second)},
	}
	st.Analysis = &splitterv1.AnalysisStatus{Step: []splitterv1.CountTotal{
		{Color: splitterv1.Green, SLO: "availability", Requests: 3412, Bad: 7},
		{Color: splitterv1.Blue, SLO: "availability", Requests: 30511, Bad: 61},
	}}
	st.History = []splitterv1.Release{{Revision: "5d8f9c7b", Color: splitterv1.Blue, StartedAt: at(26 * time.Hour), FinishedAt: at(25 * time.Hour),
		Outcome: splitterv1.OutcomePromoted, Reason: "Promoted", Message: "every step passed", Step: 5}}
	return s
}

func rolledBack() *splitterv1.Split {
	s := midRelease()
	st := &s.Status
	st.Phase, st.Weight, st.StepStartedAt = splitterv1.PhaseRolledBack, 0, nil
	st.Checks[0] = splitterv1.CheckResult{Name: "availability", Verdict: splitterv1.VerdictFail, Value: "0.021", Bound: sloBound, Step: 2, EvaluatedAt: at(2 * time.Minute),
		Message: "checkout-green 72/3412 vs checkout-blue 61/30511: bad-request ratio at least 10.5, above 2 (level 0.002)"}
	st.Analysis.Step[0].Bad = 72
	msg := "availability: bad-request ratio at least 10.5, above 2 (value 0.021; bound " + sloBound + ")"
	st.History = append([]splitterv1.Release{{Revision: "7c6b5a4d", Color: splitterv1.Green, StartedAt: at(5 * time.Minute), FinishedAt: at(2 * time.Minute),
		Outcome: splitterv1.OutcomeRolledBack, Reason: "CheckFailed", Message: msg, Step: 2}}, st.History...)
	return s
}

func paused() *splitterv1.Split {
	s := midRelease()
	s.Annotations = map[string]string{splitterv1.PauseAnnotation: "7c6b5a4d"}
	s.Status.PausedAt = atp(4 * time.Minute)
	s.Status.StepStartedAt = atp(5 * time.Minute)
	s.Status.Actions = []splitterv1.Action{{Verb: "pause", Revision: "7c6b5a4d", By: "alice@example.com", At: at(4 * time.Minute), Detail: "step 2 at 10%"}}
	return s
}

func awaiting() *splitterv1.Split {
	s := midRelease()
	st := &s.Status
	st.Phase, st.Step, st.Weight, st.Gate = splitterv1.PhaseAwaitingApproval, 4, 50, "7c6b5a4d/4/promotion"
	st.StepStartedAt = atp(90 * time.Second)
	for i := range st.Checks {
		st.Checks[i].Step = 4
	}
	return s
}

func promoting() *splitterv1.Split {
	s := midRelease()
	st := &s.Status
	st.Phase, st.Live, st.LiveRevision, st.Standby, st.StandbyRevision = splitterv1.PhasePromoting, splitterv1.Green, "7c6b5a4d", splitterv1.Blue, "5d8f9c7b"
	st.Candidate, st.CandidateRevision, st.Step, st.Weight, st.StepStartedAt = "", "", 0, 0, nil
	st.History = append([]splitterv1.Release{{Revision: "7c6b5a4d", Color: splitterv1.Green, StartedAt: at(6 * time.Minute), FinishedAt: at(time.Minute),
		Outcome: splitterv1.OutcomePromoted, Reason: "Promoted", Message: "every step passed", Step: 5}}, st.History...)
	st.Actions = []splitterv1.Action{{Verb: "approve", Revision: "7c6b5a4d", By: "bob", At: at(90 * time.Second), Detail: "7c6b5a4d/promotion"}}
	return s
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
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
		t.Fatalf("%v (run go test ./internal/plugin -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test ./internal/plugin -update rewrites it):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	splits := map[string]func() *splitterv1.Split{
		"idle": base, "mid-release": midRelease, "rolled-back": rolledBack, "paused": paused,
		"awaiting-approval": awaiting, "promoting": promoting,
	}
	for name, mk := range splits {
		for _, width := range []int{80, 40} {
			v := View{Now: now, Width: width}
			t.Run(name, func(t *testing.T) {
				s := mk()
				got := RenderSplit(s, v) + "\n--- explain\n" + Explain(s, v) + "\n--- history\n" + RenderHistory(s, v) +
					"\n--- watch line\n" + WatchLine(s, now) + "\n"
				golden(t, name+"-"+strconv.Itoa(width), got)
				for i, l := range strings.Split(RenderSplit(s, v)+Explain(s, v), "\n") {
					if n := visible(l); n > width {
						t.Errorf("line %d is %d columns wide, more than %d: %q", i+1, n, width, l)
					}
				}
			})
		}
	}
}

// Colour codes only when asked for (the caller decides: a terminal and no
// NO_COLOR).
func TestRenderColor(t *testing.T) {
	s := rolledBack()
	plain := RenderSplit(s, View{Now: now, Width: 80})
	if strings.Contains(plain, "\x1b[") {
		t.Error("escape codes without colour")
	}
	colored := RenderSplit(s, View{Now: now, Width: 80, Color: true})
	if !strings.Contains(colored, ansiRed+"Fail"+ansiReset) {
		t.Error("a Fail verdict is not red with colour on")
	}
	golden(t, "rolled-back-color", colored)
}

func TestRenderList(t *testing.T) {
	a, b, c := midRelease(), rolledBack(), paused()
	b.Name, c.Name, c.Namespace = "cart", "search", "web"
	v := View{Now: now, Width: 80}
	golden(t, "list", RenderList([]splitterv1.Split{*a, *b}, false, v)+"\n--- -A\n"+RenderList([]splitterv1.Split{*a, *b, *c}, true, v))
}

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		text  string
		width int
		want  []string
	}{
		{"a b c", 10, []string{"> a b c"}},
		{"alpha beta gamma", 12, []string{"> alpha beta", "  gamma"}},
		{"abcdefghijklmnop", 8, []string{"> abcdef", "  ghijkl", "  mnop"}},
		{"", 10, []string{"> "}},
	} {
		got := wrap(tc.text, tc.width, "> ", "  ")
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.text, tc.width, got, tc.want)
		}
		for _, l := range got {
			if len(l) > tc.width {
				t.Errorf("wrap(%q, %d): %q is too wide", tc.text, tc.width, l)
			}
		}
	}
}

func TestShortAndThousands(t *testing.T) {
	for d, want := range map[time.Duration]string{34 * time.Second: "34s", 4*time.Minute + 12*time.Second: "4m12s", time.Hour + 3*time.Minute: "1h3m", 2 * time.Minute: "2m", 72 * time.Hour: "3d"} {
		if got := short(d); got != want {
			t.Errorf("short(%s) = %s, want %s", d, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 3412: "3,412", 30511: "30,511", 1234567: "1,234,567"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestOptInOutGolden(t *testing.T) {
	d := func(ann map[string]string) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: "shop", Annotations: ann},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(4))}}
	}
	var b strings.Builder
	section := func(title string, lines []string) {
		b.WriteString("--- " + title + "\n")
		for _, l := range lines {
			b.WriteString(strings.Join(wrap(l, 80, "  - ", "    "), "\n") + "\n")
		}
	}
	section("opt-in", OptInPlan(d(nil), "standard", nil))
	section("opt-in, the policy missing", OptInPlan(d(nil), "standard", errors.New("there is no SplitPolicy standard in namespace shop")))
	section("opt-in, the user's VirtualService", OptInPlan(d(map[string]string{splitterv1.VirtualServiceAnnotation: "checkout", splitterv1.RoutesAnnotation: "primary"}), "standard", nil))
	section("opt-in, another policy", OptInPlan(d(map[string]string{splitterv1.PolicyAnnotation: "fast"}), "standard", nil))
	section("opt-out", OptOutPlan(d(map[string]string{splitterv1.PolicyAnnotation: "standard"}), base()))
	section("opt-out mid-release", OptOutPlan(d(map[string]string{splitterv1.PolicyAnnotation: "standard"}), midRelease()))
	section("opt-out, the user's VirtualService", OptOutPlan(d(map[string]string{splitterv1.PolicyAnnotation: "standard", splitterv1.VirtualServiceAnnotation: "checkout"}), nil))
	golden(t, "opt-in-out", b.String())
}
