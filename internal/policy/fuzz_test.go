package policy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
)

// What "has a field path" means, from how errors are built today: a
// compile error is a field.Error, whose text starts with its path
// ("spec.steps[2]: Invalid value: ..."), under spec; a decode error
// starts with the path, in the document, of the value that failed
// ("spec.stepDuration: ... unknown unit", "spec.foo: unknown field"), or
// says which apiVersion is wrong. Some errors have no field to name and
// say where they are otherwise: a duplicate key names its line, and a
// document that is not YAML, or not a mapping, is wrong as a whole: its
// path is the document (Finding.Document).
var fieldPath = regexp.MustCompile(`^spec(\.[A-Za-z]+|\[\d+\])*: `)

var yamlLine = regexp.MustCompile(`\bline \d+\b`)

// controllerDecoder decodes a SplitPolicy as the controller's client does
// what the API server returns (JSON, or YAML here), by the scheme.
var controllerDecoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	if err := splitterv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(s).UniversalDeserializer()
}()

// documents splits data as LintPlans does.
func documents(data []byte) [][]byte {
	var out [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) || err != nil {
			return out
		}
		out = append(out, raw)
	}
}

// FuzzDecodePolicy: arbitrary bytes, read as `policy lint` reads a file
// and as the controller decodes a SplitPolicy, never panic; every error
// carries a field path (see fieldPath); every plan that compiles is whole.
func FuzzDecodePolicy(f *testing.F) {
	samples, err := filepath.Glob("../../config/samples/*.yaml")
	if err != nil || len(samples) == 0 {
		f.Fatalf("no samples: %v", err)
	}
	for _, s := range samples {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs := documents(data)
		_, findings, plans := LintPlans(data)
		for _, fd := range findings {
			msg := strings.TrimPrefix(fd.Message, "not YAML: ")
			switch {
			case fd.Document < 1:
				t.Fatalf("finding without a document: %+v", fd)
			case fieldPath.MatchString(msg): // compiling
			case strings.HasPrefix(msg, "apiVersion "), yamlLine.MatchString(msg):
			case fd.Document > len(docs) || !isMapping(docs[fd.Document-1]):
			case pathIn(docs[fd.Document-1], msg):
			default:
				t.Fatalf("finding without a field path: %s\ninput %q", fd, data)
			}
		}
		for _, p := range plans {
			checkPlan(t, p.Plan)
		}
		for _, doc := range docs {
			obj, _, err := controllerDecoder.Decode(doc, nil, nil)
			pol, ok := obj.(*splitterv1.SplitPolicy)
			if err != nil || !ok {
				continue
			}
			plan, errs := Compile(pol.Spec)
			for _, e := range errs {
				if !strings.HasPrefix(e.Field, "spec") || !fieldPath.MatchString(e.Error()) {
					t.Fatalf("compile error without a field path: %q\ninput %q", e.Error(), doc)
				}
			}
			if len(errs) == 0 {
				checkPlan(t, plan)
			} else if plan != nil {
				t.Fatalf("a plan despite %d errors", len(errs))
			}
		}
	})
}

// pathIn says whether msg starts with the path of a value in doc.
func pathIn(doc []byte, msg string) bool {
	var tree any
	if yaml.Unmarshal(doc, &tree) != nil {
		return false
	}
	var walk func(node any, path []any) bool
	walk = func(node any, path []any) bool {
		if len(path) > 0 && strings.HasPrefix(msg, render(path)+": ") {
			return true
		}
		switch n := node.(type) {
		case map[string]any:
			for k, v := range n {
				if walk(v, append(path[:len(path):len(path)], k)) {
					return true
				}
			}
		case []any:
			for i, v := range n {
				if walk(v, append(path[:len(path):len(path)], i)) {
					return true
				}
			}
		}
		return false
	}
	return walk(tree, nil)
}

// isMapping says whether a document is YAML and a mapping (or empty).
func isMapping(doc []byte) bool {
	var v any
	if err := yaml.Unmarshal(doc, &v); err != nil {
		return false
	}
	_, ok := v.(map[string]any)
	return ok || v == nil
}

// checkPlan asserts what the controller relies on in every compiled plan.
func checkPlan(t *testing.T, p *Plan) {
	t.Helper()
	if p == nil {
		t.Fatal("no plan and no error")
	}
	n := len(p.Steps)
	if n == 0 || p.Steps[n-1] != 100-p.StandbyWeight {
		t.Fatalf("steps %v do not end at 100 - standbyWeight %d", p.Steps, p.StandbyWeight)
	}
	for i, w := range p.Steps {
		if w < 1 || w > 100 || (i > 0 && w <= p.Steps[i-1]) {
			t.Fatalf("steps %v: not strictly increasing in [1, 100]", p.Steps)
		}
	}
	if p.Router == splitterv1.RouterServiceSelector && n != 1 {
		t.Fatalf("service-selector with steps %v", p.Steps)
	}
	if p.Router != splitterv1.RouterIstio && p.Router != splitterv1.RouterServiceSelector {
		t.Fatalf("router %q", p.Router)
	}
	if p.StepDuration < MinStepDuration || p.Standby < 0 || p.ProgressDeadline < MinProgressDeadline {
		t.Fatalf("durations step %s standby %s deadline %s", p.StepDuration, p.Standby, p.ProgressDeadline)
	}
	if len(validation.IsQualifiedName(p.SubsetLabel)) > 0 {
		t.Fatalf("subset label %q", p.SubsetLabel)
	}
	if p.MaxExtensions < 0 || p.Looks != n*(1+p.MaxExtensions) {
		t.Fatalf("maxExtensions %d, looks %d", p.MaxExtensions, p.Looks)
	}
	for _, s := range []string{p.OnInconclusive, p.OnError} {
		if s != "pause" && s != "rollback" {
			t.Fatalf("on* %q", s)
		}
	}
	if !(p.Alpha > 0 && p.Alpha <= 0.5) || !(p.MaxRatio >= 1) || !(p.FailRatio >= p.MaxRatio) || !(p.Margin > 0 && p.Margin <= 1) ||
		math.IsInf(p.MaxRatio, 0) || math.IsInf(p.FailRatio, 0) {
		t.Fatalf("alpha %g maxRatio %g failRatio %g margin %g", p.Alpha, p.MaxRatio, p.FailRatio, p.Margin)
	}
	for _, s := range p.SLOs {
		if !(s.Objective > 0 && s.Objective < 1) || (s.Name == "latency") != (s.ThresholdMs > 0) || (s.ThresholdMs > 0 && !isBucket(s.ThresholdMs)) {
			t.Fatalf("SLO %+v", s)
		}
	}
	// Every check's query renders with the plan's window: the controller's
	// first look at a step must not fail on the policy.
	vars := analysis.Vars{Namespace: "ns", Workload: "w", Service: "s", Candidate: "w-green", Live: "w-blue", Window: p.Window()}
	for _, c := range p.Checks {
		if c.Query == nil || (c.Min == nil && c.Max == nil) {
			t.Fatalf("check %s: no query or no bound", c.Name)
		}
		if c.Min != nil && c.Max != nil && *c.Min > *c.Max {
			t.Fatalf("check %s: min %g > max %g", c.Name, *c.Min, *c.Max)
		}
		if _, err := c.Query.Render(vars); err != nil {
			t.Fatalf("check %s with window %s: %v", c.Name, p.Window(), err)
		}
	}
}

// TestDecodeNamesThePath: the decode errors FuzzDecodePolicy found
// without a path (unknown fields, a Duration's own error, type errors
// named by Go struct) now start with the path in the document.
func TestDecodeNamesThePath(t *testing.T) {
	const head = "apiVersion: splitter.dev/v1alpha1\nkind: SplitPolicy\nmetadata: {name: p}\n"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"unknown field", head + "spec: {foo: 1}\n", `spec.foo: `},
		{"unknown nested field", head + "spec: {checks: [{name: a}, {name: b, mni: \"1\"}]}\n", `spec.checks[1].mni: `},
		{"duration", head + "spec: {stepDuration: 1x}\n", `spec.stepDuration: `},
		{"duration in a list", head + "spec: {slos: [{name: availability, objective: \"99\"}, {name: latency, objective: \"99\", threshold: soon}]}\n", `spec.slos[1].threshold: `},
		{"type in a list", head + "spec: {steps: [5, a, 100]}\n", `spec.steps[1]: `},
		{"out of range", head + "spec: {maxExtensions: 99999999999}\n", `spec.maxExtensions: `},
		{"wrong shape", head + "spec: [1]\n", `spec: `},
		{"metadata", head[:len(head)-len("metadata: {name: p}\n")] + "metadata: {labels: [1]}\n", `metadata.labels: `},
		// Of two errors, the path is the one of the error reported.
		{"two errors", head + "spec: {stepDuration: 1m, steps: [a], aaa: 1}\n", `spec.aaa: error unmarshaling JSON: while decoding JSON: json: unknown field "aaa"`},
		{"two errors, other order", head + "spec: {steps: [a], zzz: 1}\n", `spec.steps[0]: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal string`},
		// encoding/json would match these; the API server drops them.
		{"case of a field", head + "spec: {stepDuration: 1m, StepDuration: 1m}\n", `spec.StepDuration: unknown field "spec.StepDuration" (field names are case-sensitive)`},
		{"case of spec", head + "speC: {steps: [5]}\n", `speC: unknown field "speC"`},
		{"duplicate key", head + "spec: {}\nspec: {}\n", "line 5"},
		{"kind of the wrong type", "kind: [1]\n", "not YAML: kind: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, findings := Lint([]byte(tc.in))
			if len(findings) != 1 || !strings.Contains(findings[0].Message, tc.want) {
				t.Fatalf("findings %q, want one with %q", findings, tc.want)
			}
			if !strings.Contains(tc.want, "line") && !strings.HasPrefix(findings[0].Message, tc.want) {
				t.Fatalf("finding %q does not start with %q", findings[0].Message, tc.want)
			}
		})
	}
}
