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
	"sigs.k8s.io/yaml"

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
		if err := yaml.Unmarshal(raw, &meta); err != nil {
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
		if err := yaml.UnmarshalStrict(raw, &pol); err != nil {
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

// Explain says, for a request rate, how long each step needs before its
// count-based gate can pass: with no bad request at all, the absolute
// check needs ln(alpha)/ln(1-budget) candidate requests, and the
// candidate gets only its step's weight of the traffic.
func Explain(p *Plan, rps float64) []string {
	if len(p.SLOs) == 0 {
		return []string{"no slos: nothing is judged on counts (threshold checks only)"}
	}
	hold := p.StepDuration * time.Duration(1+p.MaxExtensions)
	var out []string
	for _, s := range p.SLOs {
		need := analysis.RequestsForPass(s.Budget(), p.Alpha)
		line := fmt.Sprintf("%s %.4g%%: a step passes after at least %.0f candidate requests with none bad (alpha %g); at %g req/s:",
			s.Name, 100*s.Objective, need, p.Alpha, rps)
		var short []string
		for _, w := range p.Steps {
			secs := need / (rps * float64(w) / 100)
			d := time.Duration(secs * float64(time.Second)).Round(time.Second)
			line += fmt.Sprintf(" %d%% %s,", w, d)
			if d > hold {
				short = append(short, fmt.Sprintf("%d%%", w))
			}
		}
		out = append(out, strings.TrimSuffix(line, ","))
		if len(short) > 0 {
			out = append(out, fmt.Sprintf("  steps %s need longer than stepDuration x (1 + maxExtensions) = %s: they will end Inconclusive and %s",
				strings.Join(short, ", "), hold, p.OnInconclusive))
		}
	}
	if p.WatchdogOn {
		out = append(out, fmt.Sprintf("watchdog: every scrape; false snap-backs at most %g per release; 30%% errors are caught within seconds", p.Watchdog.Alpha))
	}
	return out
}
