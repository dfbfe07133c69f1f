package controller

import (
	"encoding/json"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// actionAnnotations are the annotations that ask the engine for an action.
var actionAnnotations = []string{splitterv1.ApproveAnnotation, splitterv1.AbortAnnotation, splitterv1.PauseAnnotation,
	splitterv1.RetryAnnotation, splitterv1.PromoteAnnotation}

// requestedBy names who asked for the Split's pending action: its
// splitter.dev/requested-by annotation (the kubectl plugin sets it to the
// user), else the field manager that last wrote an action annotation, as
// the API server recorded it in managedFields ("kubectl-annotate" for
// `kubectl annotate`). The API server keeps no user on the object, so a
// bare annotation names its tool, not its author: the message says so.
func requestedBy(obj metav1.Object) string {
	if by := obj.GetAnnotations()[splitterv1.RequestedByAnnotation]; by != "" {
		return by
	}
	type owned struct {
		manager string
		at      metav1.Time
	}
	var owners []owned
	for _, e := range obj.GetManagedFields() {
		if e.FieldsV1 == nil || !ownsAction(e.FieldsV1.Raw) {
			continue
		}
		o := owned{manager: e.Manager}
		if e.Time != nil {
			o.at = *e.Time
		}
		owners = append(owners, o)
	}
	if len(owners) == 0 {
		return ""
	}
	sort.SliceStable(owners, func(i, j int) bool { return owners[j].at.Before(&owners[i].at) })
	if owners[0].manager == "" {
		return ""
	}
	return "field manager " + owners[0].manager + " (no " + splitterv1.RequestedByAnnotation + " annotation)"
}

// ownsAction says whether a managedFields entry's fields hold an action
// annotation: {"f:metadata":{"f:annotations":{"f:splitter.dev/approve":{}}}}.
func ownsAction(raw []byte) bool {
	var fields struct {
		Metadata struct {
			Annotations map[string]json.RawMessage `json:"f:annotations"`
		} `json:"f:metadata"`
	}
	if json.Unmarshal(raw, &fields) != nil {
		return false
	}
	for _, a := range actionAnnotations {
		if _, ok := fields.Metadata.Annotations["f:"+a]; ok {
			return true
		}
	}
	return false
}
