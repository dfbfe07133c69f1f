package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

func TestCompileDefaults(t *testing.T) {
	p, errs := Compile(splitterv1.SplitPolicySpec{})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := p.Steps; len(got) != 5 || got[0] != 5 || got[4] != 100 {
		t.Errorf("steps %v, want the default [5 10 25 50 100]", got)
	}
	if p.StepDuration != time.Minute || p.Standby != 10*time.Minute || p.ProgressDeadline != 10*time.Minute {
		t.Errorf("durations %s %s %s", p.StepDuration, p.Standby, p.ProgressDeadline)
	}
	if p.Router != splitterv1.RouterIstio || p.SubsetLabel != "track" || p.MaxExtensions != 2 {
		t.Errorf("router %q label %q extensions %d", p.Router, p.SubsetLabel, p.MaxExtensions)
	}
	if p.Window() != "1m" {
		t.Errorf("window %q, want 1m", p.Window())
	}
}

func TestCompileKeepsGivenValues(t *testing.T) {
	p, errs := Compile(splitterv1.SplitPolicySpec{
		Steps:        []int32{20, 100},
		StepDuration: &metav1.Duration{Duration: 30 * time.Second},
		Standby:      &metav1.Duration{},
		Router:       splitterv1.RouterIstio,
		SubsetLabel:  "color",
		Approval:     &splitterv1.Approval{BeforePromotion: true},
		Checks: []splitterv1.Check{
			{Name: "sr", Builtin: splitterv1.BuiltinSuccessRate, Min: ptr.To("0.99")},
			{Name: "custom", Query: `sum(rate(x{pod=~"{{ .Candidate | regex }}-.*"}[{{ .Window }}]))`, Min: ptr.To("0"), Max: ptr.To("0.5")},
		},
	})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(p.Steps) != 2 || p.StepDuration != 30*time.Second || p.Standby != 0 || p.SubsetLabel != "color" ||
		!p.ApproveBeforePromotion || p.ApproveBeforeFirstStep || p.Router != splitterv1.RouterIstio {
		t.Errorf("plan %+v", p)
	}
	if len(p.Checks) != 2 || *p.Checks[0].Min != 0.99 || *p.Checks[1].Max != 0.5 || p.Checks[0].Bound() != ">= 0.99" {
		t.Errorf("checks %+v", p.Checks)
	}
}

// maxStepDuration is looks every stepDuration: the last at or before it.
func TestMaxStepDurationIsLooks(t *testing.T) {
	for _, tc := range []struct {
		step, max  time.Duration
		extensions int
	}{
		{30 * time.Second, 10 * time.Minute, 19},
		{30 * time.Second, 30 * time.Second, 0},
		{time.Minute, 150 * time.Second, 1},
	} {
		p, errs := Compile(splitterv1.SplitPolicySpec{Steps: []int32{20, 100}, StepDuration: &metav1.Duration{Duration: tc.step}, MaxStepDuration: &metav1.Duration{Duration: tc.max}})
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		if p.MaxExtensions != tc.extensions || p.MaxStepDuration != tc.max || p.Looks != 2*(1+tc.extensions) {
			t.Errorf("step %s, max %s: %d extensions, %d looks, want %d extensions", tc.step, tc.max, p.MaxExtensions, p.Looks, tc.extensions)
		}
	}
}

func TestServiceSelectorIsOneStep(t *testing.T) {
	p, errs := Compile(splitterv1.SplitPolicySpec{Router: splitterv1.RouterServiceSelector})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(p.Steps) != 1 || p.Steps[0] != 100 {
		t.Errorf("steps %v, want [100]", p.Steps)
	}
}

func TestCompileErrorsHaveFieldPaths(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec splitterv1.SplitPolicySpec
		want []string // each must appear in the errors
	}{
		{"decreasing steps", splitterv1.SplitPolicySpec{Steps: []int32{50, 10, 100}}, []string{"spec.steps[1]", "strictly increasing"}},
		{"not ending at 100", splitterv1.SplitPolicySpec{Steps: []int32{10, 50}}, []string{"spec.steps[1]", "last step must be 100"}},
		{"zero step", splitterv1.SplitPolicySpec{Steps: []int32{0, 100}}, []string{"spec.steps[0]", "between 1 and 100"}},
		{"short step", splitterv1.SplitPolicySpec{StepDuration: &metav1.Duration{Duration: time.Second}}, []string{"spec.stepDuration", "at least 5s"}},
		{"selector with steps", splitterv1.SplitPolicySpec{Router: splitterv1.RouterServiceSelector, Steps: []int32{50, 100}}, []string{"spec.steps", "must be [100]"}},
		{"bad router", splitterv1.SplitPolicySpec{Router: "nginx"}, []string{"spec.router", "supported values"}},
		{"bad label", splitterv1.SplitPolicySpec{SubsetLabel: "not a label"}, []string{"spec.subsetLabel"}},
		{"bad prometheus", splitterv1.SplitPolicySpec{Prometheus: &splitterv1.PrometheusSource{Address: "prometheus:9090"}}, []string{"spec.prometheus.address"}},
		{"builtin and query", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{Name: "a", Builtin: splitterv1.BuiltinSuccessRate, Query: "up", Min: ptr.To("1")}}}, []string{"spec.checks[0]", "exactly one"}},
		{"no bound", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{Name: "a", Builtin: splitterv1.BuiltinSuccessRate}}}, []string{"spec.checks[0].min", "cannot fail"}},
		{"min above max", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{Name: "a", Query: "up", Min: ptr.To("2"), Max: ptr.To("1")}}}, []string{"spec.checks[0].max", "below min"}},
		{"bound not a number", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{Name: "a", Query: "up", Min: ptr.To("0.9x")}}}, []string{"spec.checks[0].min", "decimal number"}},
		{"unknown builtin", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{Name: "a", Builtin: "p50", Max: ptr.To("1")}}}, []string{"spec.checks[0].builtin"}},
		{"template field unknown", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{Name: "a", Query: "x{a=\"{{ .Pod }}\"}", Max: ptr.To("1")}}}, []string{"spec.checks[0].query", ".Candidate"}},
		{"template syntax", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{Name: "a", Query: "x{{", Max: ptr.To("1")}}}, []string{"spec.checks[0].query"}},
		{"warmup without slos", splitterv1.SplitPolicySpec{Warmup: &metav1.Duration{Duration: time.Minute}}, []string{"spec.warmup", "set slos"}},
		{"warmup too long", splitterv1.SplitPolicySpec{Warmup: &metav1.Duration{Duration: time.Hour}, SLOs: []splitterv1.SLO{{Name: "availability", Objective: "99.5"}}}, []string{"spec.warmup", "between 0 and 30m"}},
		{"standby control without slos", splitterv1.SplitPolicySpec{StandbyWeight: 10}, []string{"spec.standbyWeight", "set slos"}},
		{"standby control too large", splitterv1.SplitPolicySpec{StandbyWeight: 60, SLOs: []splitterv1.SLO{{Name: "availability", Objective: "99.5"}}}, []string{"spec.standbyWeight", "between 0 and 50"}},
		{"standby control with a selector", splitterv1.SplitPolicySpec{StandbyWeight: 10, Router: splitterv1.RouterServiceSelector, SLOs: []splitterv1.SLO{{Name: "availability", Objective: "99.5"}}}, []string{"spec.standbyWeight", "service-selector"}},
		{"maxStepDuration with maxExtensions", splitterv1.SplitPolicySpec{MaxStepDuration: &metav1.Duration{Duration: 10 * time.Minute}, MaxExtensions: ptr.To(int32(3))}, []string{"spec.maxStepDuration", "not both"}},
		{"maxStepDuration below stepDuration", splitterv1.SplitPolicySpec{MaxStepDuration: &metav1.Duration{Duration: 30 * time.Second}}, []string{"spec.maxStepDuration", "at least stepDuration (1m0s)"}},
		{"maxStepDuration over 40 looks", splitterv1.SplitPolicySpec{StepDuration: &metav1.Duration{Duration: 10 * time.Second}, MaxStepDuration: &metav1.Duration{Duration: 10 * time.Minute}}, []string{"spec.maxStepDuration", "at most 40 looks", "6m40s"}},
		{"duplicate names", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{
			{Name: "a", Query: "up", Max: ptr.To("1")}, {Name: "a", Query: "up", Max: ptr.To("1")},
		}}, []string{"spec.checks[1].name", "Duplicate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, errs := Compile(tc.spec)
			if len(errs) == 0 {
				t.Fatalf("compiled to %+v, want an error", p)
			}
			got := errs.ToAggregate().Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("errors %q do not mention %q", got, w)
				}
			}
		})
	}
}

func TestCompileSLOs(t *testing.T) {
	p, errs := Compile(splitterv1.SplitPolicySpec{
		SLOs: []splitterv1.SLO{
			{Name: "availability", Objective: "99.9"},
			{Name: "latency", Objective: "99", Threshold: &metav1.Duration{Duration: 250 * time.Millisecond}},
		},
		Compare: &splitterv1.Compare{MaxRatio: "1.2"},
	})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(p.SLOs) != 2 || p.SLOs[0].Budget() < 0.00099 || p.SLOs[0].Budget() > 0.00101 || p.SLOs[1].ThresholdMs != 250 {
		t.Errorf("slos %+v", p.SLOs)
	}
	if p.MaxRatio != 1.2 || p.FailRatio != 2 || p.Alpha != 0.01 || !p.WatchdogOn || p.Margin != 0.5 ||
		p.OnInconclusive != "pause" || p.OnError != "rollback" || p.Looks != 5*3 {
		t.Errorf("plan %+v", p)
	}
	if got := p.SLOs[0].GRPCErrorCodes; len(got) != 6 || got[0] != 2 {
		t.Errorf("availability's default gRPC error codes %v", got)
	}
	if p.SLOs[1].GRPCErrorCodes != nil {
		t.Errorf("latency has gRPC codes %v", p.SLOs[1].GRPCErrorCodes)
	}
	for _, tc := range []struct {
		spec splitterv1.SplitPolicySpec
		want string
	}{
		{splitterv1.SplitPolicySpec{SLOs: []splitterv1.SLO{{Name: "latency", Objective: "99", Threshold: &metav1.Duration{Duration: 300 * time.Millisecond}}}}, "spec.slos[0].threshold"},
		{splitterv1.SplitPolicySpec{SLOs: []splitterv1.SLO{{Name: "latency", Objective: "99"}}}, "spec.slos[0].threshold: Required"},
		{splitterv1.SplitPolicySpec{SLOs: []splitterv1.SLO{{Name: "availability", Objective: "100"}}}, "spec.slos[0].objective"},
		{splitterv1.SplitPolicySpec{Compare: &splitterv1.Compare{MaxRatio: "3", FailRatio: "2"}}, "spec.compare.failRatio"},
		{splitterv1.SplitPolicySpec{Alpha: "0.9"}, "spec.alpha"},
		{splitterv1.SplitPolicySpec{OnInconclusive: "wait"}, "spec.onInconclusive"},
		{splitterv1.SplitPolicySpec{Compare: &splitterv1.Compare{Margin: "1.5"}}, "spec.compare.margin"},
		{splitterv1.SplitPolicySpec{Watchdog: &splitterv1.Watchdog{Alpha: "0.01"}}, "spec.watchdog.alpha: Invalid value: \"0.01\": no longer used"},
	} {
		_, errs := Compile(tc.spec)
		if !strings.Contains(errs.ToAggregate().Error(), tc.want) {
			t.Errorf("%+v: errors %v, want %s", tc.spec, errs, tc.want)
		}
	}
}

// Finding 13: lint's step lengths account for the scrape lag and the
// settling of the weights, and come from the pass rule the gates use.
func TestExplainAccountsForScrapes(t *testing.T) {
	p, errs := Compile(splitterv1.SplitPolicySpec{
		Steps:        []int32{10, 50, 100},
		StepDuration: &metav1.Duration{Duration: 30 * time.Second},
		SLOs:         []splitterv1.SLO{{Name: "availability", Objective: "99"}},
	})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	fast := Explain(p, Traffic{RPS: 100, Scrape: time.Second})
	slow := Explain(p, Traffic{RPS: 100, Scrape: 30 * time.Second})
	all := strings.Join(slow, "\n")
	if !strings.Contains(all, "recommended stepDuration") {
		t.Errorf("30 s steps at 10%% of 100 req/s and 30 s scrapes: no recommendation:\n%s", all)
	}
	if strings.Join(fast, "\n") == all {
		t.Errorf("the scrape interval changes nothing:\n%s", all)
	}
	// The hold lint names for 10% is what the pass rule needs plus a scrape.
	need := p.RequestsToPass(p.SLOs[0], p.SLOs[0].Budget()/5, 10)
	want := (time.Duration(need/10*float64(time.Second)) + 30*time.Second).Round(time.Second)
	if !strings.Contains(all, fmt.Sprintf("10%% %.0f in %s", need, want)) {
		t.Errorf("want %.0f requests in %s at 10%%:\n%s", need, want, all)
	}
}

// With maxStepDuration, lint recommends a maxStepDuration (not a
// stepDuration) when steps need longer than their last look, and a
// release's length follows the looks each step needs.
func TestExplainStepsOnEvidence(t *testing.T) {
	explain := func(maxStep time.Duration) string {
		p, errs := Compile(splitterv1.SplitPolicySpec{
			Steps:           []int32{10, 50, 100},
			StepDuration:    &metav1.Duration{Duration: 30 * time.Second},
			MaxStepDuration: &metav1.Duration{Duration: maxStep},
			SLOs:            []splitterv1.SLO{{Name: "availability", Objective: "99"}},
		})
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		return strings.Join(Explain(p, Traffic{RPS: 100, Scrape: 30 * time.Second}), "\n")
	}
	short, long := explain(time.Minute), explain(10*time.Minute)
	// Few looks allowed a step: lint asks for a longer stepDuration too.
	p, errs := Compile(splitterv1.SplitPolicySpec{
		Steps: []int32{1, 100}, StepDuration: &metav1.Duration{Duration: 5 * time.Second}, MaxStepDuration: &metav1.Duration{Duration: 100 * time.Second},
		SLOs: []splitterv1.SLO{{Name: "availability", Objective: "99.9"}},
	})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := strings.Join(Explain(p, Traffic{RPS: 1, Scrape: 15 * time.Second}), "\n"); !strings.Contains(got, "with stepDuration") {
		t.Errorf("1%% of 1 req/s needs more than 40 looks of 5 s:\n%s", got)
	}
	if !strings.Contains(short, "recommended maxStepDuration") || !strings.Contains(short, "their last look at 1m0s (maxStepDuration 1m0s)") {
		t.Errorf("a 1-minute maxStepDuration that 10%% of 100 req/s at 30 s scrapes outlasts:\n%s", short)
	}
	if strings.Contains(long, "recommended") || !strings.Contains(long, "steps end on evidence, judged every 30s up to 10m0s") {
		t.Errorf("10 minutes is enough:\n%s", long)
	}
}

// With a standby control the candidate never gets more than 100 -
// standbyWeight: the steps stop there, and steps above it merge into it.
func TestStandbyWeightCapsTheSteps(t *testing.T) {
	slos := []splitterv1.SLO{{Name: "availability", Objective: "99.5"}}
	for _, tc := range []struct {
		steps []int32
		sw    int32
		want  []int32
	}{
		{[]int32{20, 50, 100}, 0, []int32{20, 50, 100}},
		{[]int32{20, 50, 100}, 10, []int32{20, 50, 90}},
		{[]int32{50, 90, 95, 100}, 10, []int32{50, 90}},
		{[]int32{100}, 50, []int32{50}},
	} {
		p, errs := Compile(splitterv1.SplitPolicySpec{Steps: tc.steps, StandbyWeight: tc.sw, SLOs: slos})
		if len(errs) > 0 {
			t.Fatalf("%v, standbyWeight %d: %v", tc.steps, tc.sw, errs)
		}
		if !slices.Equal(p.Steps, tc.want) || p.Looks != len(tc.want)*(1+p.MaxExtensions) {
			t.Errorf("%v, standbyWeight %d: steps %v (looks %d), want %v", tc.steps, tc.sw, p.Steps, p.Looks, tc.want)
		}
	}
}
