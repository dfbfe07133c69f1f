package e2e

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"splitter.dev/splitter/test/testbed"
)

// A duration the controller could not decode is refused by the API server
// with the field's path: stored, it would break the controller's typed
// list of SplitPolicies, and with it every release in the namespace.
func TestSplitPolicyDurations(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "durations")
	for _, tc := range []struct {
		name, field, value string
		wantErr            string
	}{
		{"step duration", "stepDuration", "90s", ""},
		{"compound duration", "standby", "1h30m", ""},
		{"zero", "standby", "0", ""},
		{"fraction", "progressDeadline", "1.5m", ""},
		{"unknown unit", "stepDuration", "1x", "spec.stepDuration: Invalid value"},
		{"no unit", "standby", "10", "should match"},
		{"negative", "progressDeadline", "-1m", "should match"},
		{"words", "stepDuration", "soon", "should match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "splitter.dev/v1alpha1", "kind": "SplitPolicy",
				"metadata": map[string]any{"generateName": "d-", "namespace": ns},
				"spec":     map[string]any{"steps": []any{int64(50), int64(100)}, tc.field: tc.value},
			}}
			err := tb.Client.Create(context.Background(), u)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("%s: %q refused: %v", tc.field, tc.value, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("%s: %q: err = %v, want it to contain %q", tc.field, tc.value, err, tc.wantErr)
			}
		})
	}
	// A latency SLO's threshold too.
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "splitter.dev/v1alpha1", "kind": "SplitPolicy",
		"metadata": map[string]any{"generateName": "d-", "namespace": ns},
		"spec": map[string]any{"steps": []any{int64(100)}, "slos": []any{map[string]any{
			"name": "latency", "objective": "99", "threshold": "soon"}}},
	}}
	if err := tb.Client.Create(context.Background(), u); err == nil || !strings.Contains(err.Error(), "spec.slos[0].threshold") {
		t.Fatalf("threshold \"soon\": err = %v, want it refused naming spec.slos[0].threshold", err)
	}
}
