package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/mesh"
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
// the template's revision recorded (an annotation, and a pod label that
// its ReplicaSets carry too: see RevisionLabel), owned by the Split.
func colorDeployment(split *splitterv1.Split, user *appsv1.Deployment, c splitterv1.Color, subsetLabel, revision string, replicas int32) *appsv1.Deployment {
	tmpl := user.Spec.Template.DeepCopy()
	tmpl.Labels = maps.Clone(tmpl.Labels)
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[subsetLabel] = string(c)
	tmpl.Labels[splitterv1.RevisionLabel] = revision
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

// patchSpec writes value at path of a Deployment's spec, on the condition
// that the spec is still the one the decision read: a JSON patch whose
// first operation tests metadata.generation. Not resourceVersion: the
// Deployment controller writes the status of a Deployment it rolls out
// every few seconds, and a resourceVersion precondition made 0-2 of a
// release's Deployment writes fail with 409 for a status no decision read
// (issue 18). A spec changed since (another replica that took over, a
// user, an autoscaler) still fails the test, and the write is refused;
// so does a Deployment deleted and created again (its UID is tested too:
// a new object starts at generation 1 again). The API server also moves
// a Deployment's generation when its annotations change (apps'
// deployment strategy: the Deployment controller's revision annotation
// after a template change, kubectl apply's last-applied configuration),
// so such a write can still be refused now and then: a conflict, retried.
//
// A failed test is reported as the conflict it is (see
// mesh.PatchNotApplied); the next reconcile decides again. While the
// cache still holds the object and generation this replica's last write
// to d replaced, nothing is sent, and patchSpec says so (false): that
// write's own watch event brings the pass that writes whatever is still
// needed (the test bed's release saw one such write refused before).
func (r *SplitReconciler) patchSpec(ctx context.Context, d *appsv1.Deployment, path string, value any) (bool, error) {
	// The version is the object's UID and generation: a Deployment deleted
	// and created again starts at generation 1 again, and its cache copy is
	// not behind a write to the one before (e2e: the skip held a re-created
	// color's new template back until the progress deadline).
	key, gen := client.ObjectKeyFromObject(d), strconv.FormatInt(d.Generation, 10)
	if r.behind(&r.specWrites, key, string(d.UID)+"/"+gen) {
		return false, nil
	}
	patch, err := SpecPatch(d, path, value)
	if err != nil {
		return false, err
	}
	err = r.Client.Patch(ctx, d, patch)
	if mesh.PatchNotApplied(err) {
		err = apierrors.NewConflict(appsv1.Resource("deployments"), d.Name,
			fmt.Errorf("its spec changed since generation %s was read: %w", gen, err))
	}
	r.Metrics.wroteResult("Deployment", err)
	if err == nil {
		r.specWrites.Store(key, ownWrite{replaced: string(d.UID) + "/" + gen, at: r.Now()})
	}
	return true, err
}

// SpecPatch is patchSpec's JSON patch: the UID and generation tests, then
// the replacement.
func SpecPatch(d *appsv1.Deployment, path string, value any) (client.Patch, error) {
	b, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/metadata/uid", "value": d.UID},
		{"op": "test", "path": "/metadata/generation", "value": d.Generation},
		{"op": "replace", "path": path, "value": value},
	})
	if err != nil {
		return nil, err
	}
	return client.RawPatch(types.JSONPatchType, b), nil
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

// ReplicaSetMetadata is a ReplicaSet's metadata: all the controller keeps
// of ReplicaSets (names, labels, owners), and only of those that carry
// RevisionLabel (cmd/splitter's cache options), so that its memory follows
// the color Deployments, not the cluster's ReplicaSets.
func ReplicaSetMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))
	return m
}

func replicaSetMeta() *metav1.PartialObjectMetadataList {
	l := &metav1.PartialObjectMetadataList{}
	l.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ReplicaSetList"))
	return l
}

// revisions are, for each color whose evidence is read, its color
// Deployment's ReplicaSets by revision: those running the color's revision
// in this release, and those running another (see analysis.Revisions). A
// ReplicaSet the cache does not hold (one made before RevisionLabel
// existed, one not seen yet) is in neither, and its pods count: this can
// drop a pod known to run another revision, never a pod of the release's.
func (r *SplitReconciler) revisions(ctx context.Context, namespace, workload string, s splitterv1.SplitStatus, colors ...splitterv1.Color) analysis.Revisions {
	list := replicaSetMeta()
	if err := r.Client.List(ctx, list, client.InNamespace(namespace), client.HasLabels{splitterv1.RevisionLabel}); err != nil {
		log.FromContext(ctx).Info("Listing the color Deployments' ReplicaSets failed: every pod counts", "error", err.Error())
		return nil
	}
	out := analysis.Revisions{}
	for _, c := range colors {
		if rev := rollout.ColorRevision(s, c); rev != "" {
			out[c] = byRevision(list.Items, ColorName(workload, c), rev)
		}
	}
	return out
}

// byRevision sorts the ReplicaSets a Deployment named owner controls into
// those that run revision (by RevisionLabel) and the others.
func byRevision(items []metav1.PartialObjectMetadata, owner, revision string) analysis.ReplicaSets {
	var rs analysis.ReplicaSets
	for i := range items {
		item := &items[i]
		ref := metav1.GetControllerOf(item)
		switch {
		case ref == nil || ref.Kind != "Deployment" || ref.Name != owner:
		case item.Labels[splitterv1.RevisionLabel] == revision:
			rs.Own = append(rs.Own, item.Name)
		default:
			rs.Other = append(rs.Other, item.Name)
		}
	}
	sort.Strings(rs.Own)
	sort.Strings(rs.Other)
	return rs
}
