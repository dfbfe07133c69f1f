package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
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
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var findings []Finding
	checked := 0
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return checked, findings
		}
		if err != nil {
			return checked, append(findings, Finding{Document: doc, Message: "not YAML: " + err.Error()})
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
		if _, errs := Compile(pol.Spec); len(errs) > 0 {
			for _, e := range errs {
				findings = append(findings, Finding{Document: doc, Policy: name, Message: e.Error()})
			}
		}
	}
}
