package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Issue 18: an approval made with `kubectl annotate` was recorded as
// "approved by unknown". The field manager that wrote the action
// annotation is named instead; the plugin's requested-by wins.
func TestRequestedBy(t *testing.T) {
	at := func(s int) *metav1.Time { t := metav1.NewTime(time.Unix(int64(s), 0)); return &t }
	entry := func(manager string, when int, fields string) metav1.ManagedFieldsEntry {
		return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate, Time: at(when),
			FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(fields)}}
	}
	approve := `{"f:metadata":{"f:annotations":{".":{},"f:splitter.dev/approve":{}}}}`
	status := `{"f:status":{"f:phase":{}}}`
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		fields      []metav1.ManagedFieldsEntry
		want        string
	}{
		{"the plugin's annotation", map[string]string{splitterv1.RequestedByAnnotation: "alice"},
			[]metav1.ManagedFieldsEntry{entry("kubectl-annotate", 5, approve)}, "alice"},
		{"kubectl annotate", nil,
			[]metav1.ManagedFieldsEntry{entry("splitter", 9, status), entry("kubectl-annotate", 5, approve)},
			"field manager kubectl-annotate (no splitter.dev/requested-by annotation)"},
		{"the latest writer of an action", nil,
			[]metav1.ManagedFieldsEntry{entry("kubectl-annotate", 5, approve), entry("argocd", 7, `{"f:metadata":{"f:annotations":{"f:splitter.dev/abort":{}}}}`)},
			"field manager argocd (no splitter.dev/requested-by annotation)"},
		{"no action annotation owned", nil, []metav1.ManagedFieldsEntry{entry("splitter", 9, status)}, ""},
		{"unparsable fields", nil, []metav1.ManagedFieldsEntry{entry("x", 1, `not json`)}, ""},
	} {
		s := &splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Annotations: tc.annotations, ManagedFields: tc.fields}}
		if got := requestedBy(s); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
