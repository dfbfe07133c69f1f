package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const lintInput = `# A file as someone would lint it: policies among other kinds.
apiVersion: splitter.dev/v1alpha1
kind: SplitPolicy
metadata:
  name: good
  namespace: shop
spec:
  steps: [10, 50, 100]
  stepDuration: 30s
  checks:
  - name: success-rate
    builtin: istio-success-rate
    min: "0.99"
---
apiVersion: splitter.dev/v1alpha1
kind: SplitPolicy
metadata:
  name: bad-steps
  namespace: shop
spec:
  steps: [50, 10, 100]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
  namespace: shop
spec:
  steps: [1, 2, 3]      # nonsense for a Deployment, but not a policy: skipped
  selector:
    matchLabels: {app: checkout}
---
apiVersion: splitter.dev/v1alpha1
kind: SplitPolicy
metadata:
  name: typo
  namespace: shop
spec:
  stepz: [5, 100]
---
apiVersion: splitter.dev/v1
kind: SplitPolicy
metadata:
  name: old
  namespace: shop
spec:
  steps: [100]
`

func TestLintMultiDocument(t *testing.T) {
	checked, findings := Lint([]byte(lintInput))
	if checked != 4 {
		t.Errorf("checked %d policies, want 4 (the Deployment is skipped)", checked)
	}
	for _, f := range findings {
		t.Logf("finding: %s", f)
	}
	if len(findings) != 3 {
		t.Fatalf("%d findings, want 3: %v", len(findings), findings)
	}

	steps := findings[0]
	if steps.Document != 2 || steps.Policy != "shop/bad-steps" {
		t.Errorf("steps finding at document %d policy %q, want document 2 policy shop/bad-steps", steps.Document, steps.Policy)
	}
	if !strings.HasPrefix(steps.Message, "spec.steps[1]: ") || !strings.Contains(steps.Message, "10") ||
		!strings.Contains(steps.Message, "strictly increasing") {
		t.Errorf("steps finding %q, want it to name spec.steps[1] and the value 10", steps.Message)
	}
	if s := steps.String(); !strings.HasPrefix(s, "document 2 (SplitPolicy shop/bad-steps): spec.steps[1]") {
		t.Errorf("String() = %q", s)
	}

	typo := findings[1]
	if typo.Document != 4 || typo.Policy != "" || !strings.Contains(typo.Message, `unknown field "stepz"`) {
		// sigs.k8s.io/yaml's strict decode names the field without its path.
		t.Errorf("strict-decode finding %+v, want document 4 naming the unknown field stepz", typo)
	}

	old := findings[2]
	if old.Document != 5 || old.Policy != "" || old.Message != `apiVersion "splitter.dev/v1", want splitter.dev/v1alpha1` {
		t.Errorf("apiVersion finding %+v", old)
	}
	if s := old.String(); s != `document 5: apiVersion "splitter.dev/v1", want splitter.dev/v1alpha1` {
		t.Errorf("String() = %q", s)
	}
	for _, f := range findings {
		if f.Document == 1 || f.Document == 3 {
			t.Errorf("finding for a document that is fine: %s", f)
		}
	}
}

func TestLintEveryErrorOfAPolicy(t *testing.T) {
	_, findings := Lint([]byte(`apiVersion: splitter.dev/v1alpha1
kind: SplitPolicy
metadata: {name: many}
spec:
  steps: [0, 60, 50]
  stepDuration: 1s
  router: linkerd
`))
	want := []string{"spec.steps[0]", "spec.steps[2]", "spec.stepDuration", "spec.router"}
	for _, w := range want {
		found := false
		for _, f := range findings {
			found = found || strings.HasPrefix(f.Message, w+":")
			if f.Policy != "many" || f.Document != 1 {
				t.Errorf("finding %+v, want document 1 policy \"many\" (no namespace)", f)
			}
		}
		if !found {
			t.Errorf("no finding for %s in %v", w, findings)
		}
	}
}

func TestLintEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       string
		checked  int
		findings []string // substrings, in order
	}{
		{name: "empty", in: "", checked: 0},
		{name: "only other kinds", in: "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n", checked: 0},
		{name: "leading separator and defaults", in: "---\napiVersion: splitter.dev/v1alpha1\nkind: SplitPolicy\nmetadata: {name: d}\n", checked: 1},
		{name: "not YAML, then a policy", in: "kind: [unclosed\n---\napiVersion: splitter.dev/v1alpha1\nkind: SplitPolicy\nmetadata: {name: d}\nspec: {steps: [100, 100]}\n",
			checked: 1, findings: []string{"document 1: not YAML", "document 2 (SplitPolicy d): spec.steps[1]"}},
		{name: "wrong type", in: "apiVersion: splitter.dev/v1alpha1\nkind: SplitPolicy\nmetadata: {name: d}\nspec: {steps: fast}\n",
			checked: 1, findings: []string{"document 1: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checked, findings := Lint([]byte(tc.in))
			if checked != tc.checked {
				t.Errorf("checked %d, want %d", checked, tc.checked)
			}
			if len(findings) != len(tc.findings) {
				t.Fatalf("findings %v, want %d like %q", findings, len(tc.findings), tc.findings)
			}
			for i, f := range findings {
				if !strings.Contains(f.String(), tc.findings[i]) {
					t.Errorf("finding %d %q, want it to contain %q", i, f, tc.findings[i])
				}
			}
		})
	}
}

func TestLintSamples(t *testing.T) {
	files, err := filepath.Glob("../../config/samples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no samples in ../../config/samples")
	}
	total := 0
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		checked, findings := Lint(data)
		total += checked
		for _, f := range findings {
			t.Errorf("%s: %s", name, f)
		}
	}
	if total == 0 {
		t.Error("the samples hold no SplitPolicy: nothing was linted")
	}
}
