package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
)

// Finding is one problem found by Lint.
type Finding struct {
	Document int    // 1-based position in the file
	Policy   string // namespace/name, when known
	Message  string
}

func (f Finding) String() string {
	if f.Policy != "" {
		return fmt.Sprintf("document %d (SplitPolicy %s): %s", f.Document, f.Policy, f.Message)
	}
	return fmt.Sprintf("document %d: %s", f.Document, f.Message)
}

// Lint checks every SplitPolicy in multi-document YAML exactly as the
// controller would, without a cluster. Other kinds are skipped. It returns
// the number of policies checked and every problem found.
func Lint(data []byte) (int, []Finding) {
	n, findings, _ := LintPlans(data)
	return n, findings
}

// NamedPlan is a compiled policy with its name.
type NamedPlan struct {
	Name string
	Plan *Plan
}

// LintPlans is Lint that also returns the policies that compiled.
func LintPlans(data []byte) (int, []Finding, []NamedPlan) {
	var plans []NamedPlan
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var findings []Finding
	checked := 0
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return checked, findings, plans
		}
		if err != nil {
			return checked, append(findings, Finding{Document: doc, Message: "not YAML: " + err.Error()}), plans
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := decode(raw, &meta, lenient); err != nil {
			findings = append(findings, Finding{Document: doc, Message: "not YAML: " + err.Error()})
			continue
		}
		if meta.Kind != "SplitPolicy" {
			continue
		}
		checked++
		if meta.APIVersion != splitterv1.GroupVersion.String() {
			findings = append(findings, Finding{Document: doc, Message: fmt.Sprintf("apiVersion %q, want %s", meta.APIVersion, splitterv1.GroupVersion)})
			continue
		}
		var pol splitterv1.SplitPolicy
		if err := decode(raw, &pol, strict); err != nil {
			findings = append(findings, Finding{Document: doc, Message: err.Error()})
			continue
		}
		name := pol.Name
		if pol.Namespace != "" {
			name = pol.Namespace + "/" + pol.Name
		}
		plan, errs := Compile(pol.Spec)
		for _, e := range errs {
			findings = append(findings, Finding{Document: doc, Policy: name, Message: e.Error()})
		}
		if plan != nil {
			plans = append(plans, NamedPlan{Name: name, Plan: plan})
		}
	}
}

// Traffic is what Explain assumes of a workload.
type Traffic struct {
	RPS float64
	// Scrape is Prometheus' scrape interval.
	Scrape time.Duration
	// BadRate is both colors' current bad-request rate per SLO; zero
	// assumes a fifth of the SLO's budget.
	BadRate float64
}

// Explain says, for a request rate, how long each step takes to reach a
// Pass with probability 0.9 when the candidate is as good as the live
// color, and recommends a stepDuration. Each step first waits for its
// weights to settle (two scrapes), then holds stepDuration; the counts
// it judges cover that hold give or take one scrape (both readings lag
// their scrapes), so the estimate takes one scrape off each hold.
func Explain(p *Plan, t Traffic) []string {
	if len(p.SLOs) == 0 {
		return []string{"no slos: nothing is judged on counts (threshold checks only)"}
	}
	timing := analysis.Timing{Scrape: t.Scrape}
	scrape := timing.Settle() / 2
	var out []string
	recommend := time.Duration(0)
	longest := p.StepDuration * time.Duration(1+p.MaxExtensions) // a step's last look
	holds := make([]time.Duration, len(p.Steps))                 // per step, the longest over SLOs
	for _, s := range p.SLOs {
		rate := t.BadRate
		if rate <= 0 {
			rate = s.Budget() / 5
		}
		line := fmt.Sprintf("%s %.4g%% (both colors at %.3g%% bad, margin %.3g%% of requests): candidate requests a step needs, and the hold that gathers them at %g req/s:",
			s.Name, 100*s.Objective, 100*rate, 100*p.Margin*s.Budget(), t.RPS)
		var short []string
		for i, w := range p.Steps {
			need := p.RequestsToPass(s, rate, w)
			hold := time.Duration((need/(t.RPS*float64(w)/100))*float64(time.Second)) + scrape
			hold = hold.Round(time.Second)
			line += fmt.Sprintf(" %d%% %.0f in %s,", w, need, hold)
			recommend = max(recommend, hold)
			holds[i] = max(holds[i], hold)
			if hold > longest {
				short = append(short, fmt.Sprintf("%d%%", w))
			}
		}
		out = append(out, strings.TrimSuffix(line, ","))
		switch {
		case len(short) > 0 && p.MaxStepDuration > 0:
			out = append(out, fmt.Sprintf("  steps %s need longer than their last look at %s (maxStepDuration %s): they will end Inconclusive and %s",
				strings.Join(short, ", "), longest, p.MaxStepDuration, p.OnInconclusive))
		case len(short) > 0:
			out = append(out, fmt.Sprintf("  steps %s need longer than stepDuration x (1 + maxExtensions) = %s: they will end Inconclusive and %s",
				strings.Join(short, ", "), longest, p.OnInconclusive))
		}
	}
	recommend = recommend.Round(10 * time.Second)
	if p.MaxStepDuration > 0 {
		// Steps end on evidence: each at its first look past its hold.
		total := p.Warmup
		for _, h := range holds {
			looks := max(1, min(int((h+p.StepDuration-1)/p.StepDuration), 1+p.MaxExtensions))
			total += time.Duration(looks)*p.StepDuration + timing.Settle()
		}
		switch {
		case recommend > MaxLooksPerStep*p.StepDuration:
			const unit = 10 * time.Second // rounded up, so 40 of them cover recommend
			step := (recommend/MaxLooksPerStep + unit - 1) / unit * unit
			out = append(out, fmt.Sprintf("recommended maxStepDuration: %s or more, with stepDuration %s or more (at most %d looks a step; today %s and %s: steps will pause)",
				recommend, step, MaxLooksPerStep, p.MaxStepDuration, p.StepDuration))
		case recommend > longest:
			out = append(out, fmt.Sprintf("recommended maxStepDuration: %s or more (today %s: steps will pause)", recommend, p.MaxStepDuration))
		default:
			out = append(out, fmt.Sprintf("steps end on evidence, judged every %s up to %s; each also waits %s for its weights to settle", p.StepDuration, p.MaxStepDuration, timing.Settle()))
		}
		out = append(out, fmt.Sprintf("a healthy release takes about %s plus standby %s", total, p.Standby))
		return append(out, lintTail(p)...)
	}
	switch {
	case recommend > p.StepDuration:
		out = append(out, fmt.Sprintf("recommended stepDuration: %s or more (today %s: steps will be extended, and may pause)", recommend, p.StepDuration))
	default:
		out = append(out, fmt.Sprintf("stepDuration %s suffices (%s would do); each step also waits %s for its weights to settle", p.StepDuration, max(recommend, MinStepDuration), timing.Settle()))
	}
	total := time.Duration(len(p.Steps))*(p.StepDuration+timing.Settle()) + p.Warmup
	out = append(out, fmt.Sprintf("a healthy release takes about %s plus standby %s", total, p.Standby))
	return append(out, lintTail(p)...)
}

// lintTail is what Explain says of warmup, the budget and standby.
func lintTail(p *Plan) []string {
	var out []string
	if p.Warmup > 0 {
		out = append(out, fmt.Sprintf("warmup: for %s after the candidate's first traffic only a gross fault (more than %g times the live color's bad rate) snaps it back; the first step's evidence starts after it", p.Warmup, analysis.WarmupMaxRatio))
	}
	if p.WatchdogOn {
		out = append(out, fmt.Sprintf("false rollbacks: at most %g per release, split %s", p.Alpha, budgetSplit(p)))
	}
	switch {
	case p.Standby > 0 && p.StandbyWeight > 0:
		out = append(out, fmt.Sprintf("standby: the old color keeps %d%% for %s as the watchdog's control; a regression starting late in standby is judged against it", p.StandbyWeight, p.Standby))
	case p.Standby > 0 && p.Router == splitterv1.RouterIstio:
		out = append(out, fmt.Sprintf("standby: no control (standbyWeight 0): for %s the new live color is held to the old one's rate during the release; a rate both share that drifts up can roll it back, and a regression starting late is caught slowly (standbyWeight: 10 keeps a control)", p.Standby))
	}
	return out
}

func budgetSplit(p *Plan) string {
	parts := make([]string, 0, len(analysis.BudgetTable))
	for _, r := range analysis.BudgetTable {
		parts = append(parts, fmt.Sprintf("%s %.2g", r.Component, r.Share*p.Alpha))
	}
	return strings.Join(parts, ", ")
}
