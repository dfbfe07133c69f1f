package controller

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/rand"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// Labels on what splitter creates.
const (
	WorkloadLabel = "splitter.dev/workload"
	ColorLabel    = "splitter.dev/color"
)

// TemplateRevision hashes a pod template: a release is a change of it.
func TemplateRevision(t *corev1.PodTemplateSpec) string {
	b, _ := json.Marshal(t) // a PodTemplateSpec always marshals
	h := fnv.New32a()
	_, _ = h.Write(b)
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// ColorName is the color Deployment's name.
func ColorName(workload string, c splitterv1.Color) string { return workload + "-" + string(c) }

// colorDeployment builds the color Deployment that runs the user's
// template: same spec, the subset label added to selector and pod labels,
// the template's revision recorded, owned by the Split.
func colorDeployment(split *splitterv1.Split, user *appsv1.Deployment, c splitterv1.Color, subsetLabel, revision string, replicas int32) *appsv1.Deployment {
	tmpl := user.Spec.Template.DeepCopy()
	tmpl.Labels = maps.Clone(tmpl.Labels)
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[subsetLabel] = string(c)
	tmpl.Annotations = maps.Clone(tmpl.Annotations)
	if tmpl.Annotations == nil {
		tmpl.Annotations = map[string]string{}
	}
	tmpl.Annotations[splitterv1.RevisionAnnotation] = revision

	sel := user.Spec.Selector.DeepCopy()
	sel.MatchLabels = maps.Clone(sel.MatchLabels)
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[subsetLabel] = string(c)

	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name:      ColorName(user.Name, c),
			Namespace: user.Namespace,
			Labels: map[string]string{
				WorkloadLabel: user.Name, ColorLabel: string(c), "app.kubernetes.io/managed-by": "splitter",
			},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(split, splitterv1.GroupVersion.WithKind("Split"))},
		},
		Spec: *user.Spec.DeepCopy(),
	}
	d.Spec.Replicas = &replicas
	d.Spec.Selector = sel
	d.Spec.Template = *tmpl
	d.Spec.Paused = false
	return d
}

// colorState reads what the engine needs of a color Deployment.
func colorState(d *appsv1.Deployment) rollout.ColorState {
	if d == nil {
		return rollout.ColorState{}
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return rollout.ColorState{
		Revision: d.Spec.Template.Annotations[splitterv1.RevisionAnnotation],
		Replicas: want,
		Ready:    s.ReadyReplicas,
		RolledOut: s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want &&
			s.Replicas == want && s.AvailableReplicas >= want,
	}
}

// selectsWorkload says whether a Service's selector picks the workload's
// pods, ignoring the subset label (which the service-selector router adds).
func selectsWorkload(svc *corev1.Service, user *appsv1.Deployment, subsetLabel string) bool {
	sel := maps.Clone(svc.Spec.Selector)
	delete(sel, subsetLabel)
	if len(sel) == 0 {
		return false
	}
	return labels.SelectorFromSet(sel).Matches(labels.Set(user.Spec.Template.Labels))
}
