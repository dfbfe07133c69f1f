package mesh

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// ServiceSelector is the seed article's blue-green without a mesh: the
// Service's selector gains the subset label, and the cutover switches its
// value in one patch. It cannot split traffic, so its plans have the single
// step 100 (policy enforces it).
type ServiceSelector struct {
	Client client.Client
	// OnWrite, when set, is told of every write the router sends (kind
	// KindService) and its outcome, as Istio.OnWrite.
	OnWrite func(kind string, err error)

	last *lastWrites
}

// NewServiceSelector returns a ServiceSelector router that remembers its
// writes, as NewIstio. The zero value with a Client works, without that
// memory.
func NewServiceSelector(c client.Client) *ServiceSelector {
	return &ServiceSelector{Client: c, last: newLastWrites()}
}

var (
	_ Router = ServiceSelector{}
	_ Router = (*ServiceSelector)(nil)
)

// get reads the Service, or our last write's result when the cache shows a
// version that write replaced. A missing Service is NotFound.
func (r ServiceSelector) get(ctx context.Context, t Target) (*corev1.Service, error) {
	key := client.ObjectKey{Namespace: t.Namespace, Name: t.Service}
	cur, err := readThrough(ctx, r.Client, r.last, KindService, key, &corev1.Service{})
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, apierrors.NewNotFound(corev1.Resource("services"), t.Service)
	}
	return cur.(*corev1.Service), nil
}

// Ensure has nothing to create: the Service is the user's.
func (r ServiceSelector) Ensure(context.Context, Target) error { return nil }

// Observe reads the color the selector picks.
func (r ServiceSelector) Observe(ctx context.Context, t Target) (*rollout.Weights, error) {
	svc, err := r.get(ctx, t)
	if err != nil {
		return nil, err
	}
	switch splitterv1.Color(svc.Spec.Selector[t.SubsetLabel]) {
	case splitterv1.Blue:
		return &rollout.Weights{Blue: 100}, nil
	case splitterv1.Green:
		return &rollout.Weights{Green: 100}, nil
	}
	return nil, nil
}

// SetWeights points the selector at the color with 100%.
func (r ServiceSelector) SetWeights(ctx context.Context, t Target, w rollout.Weights) error {
	var c splitterv1.Color
	switch {
	case w.Blue == 100:
		c = splitterv1.Blue
	case w.Green == 100:
		c = splitterv1.Green
	default:
		return &ConfigError{Object: "Service/" + t.Service, Msg: fmt.Sprintf("the service-selector router cannot split traffic (%s)", w)}
	}
	return r.patchSelector(ctx, t, string(c))
}

// Release removes the subset label from the selector: the Service selects
// every pod of the workload again.
func (r ServiceSelector) Release(ctx context.Context, t Target) error {
	return r.patchSelector(ctx, t, "")
}

// patchSelector sets the selector's subset label to value ("" removes it)
// with a resourceVersion precondition, unless it already has that value.
func (r ServiceSelector) patchSelector(ctx context.Context, t Target, value string) error {
	svc, err := r.get(ctx, t)
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	if have, ok := svc.Spec.Selector[t.SubsetLabel]; have == value && ok == (value != "") {
		// Already so, typically by our own last write that the cache has
		// not shown yet: writing it again could only be refused.
		return nil
	}
	var v any // null removes the label (JSON merge patch)
	if value != "" {
		v = value
	}
	from := svc.ResourceVersion
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": from},
		"spec":     map[string]any{"selector": map[string]any{t.SubsetLabel: v}},
	})
	if err != nil {
		return err
	}
	// A resourceVersion that is no longer current is refused with 409
	// Conflict: a lost race, retried quietly by the reconciler.
	err = r.Client.Patch(ctx, svc, client.RawPatch(types.MergePatchType, patch))
	if r.OnWrite != nil {
		r.OnWrite(KindService, err)
	}
	if err != nil {
		return err
	}
	r.last.remember(KindService, client.ObjectKeyFromObject(svc), from, svc)
	return nil
}
