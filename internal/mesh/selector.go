package mesh

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
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
}

var _ Router = ServiceSelector{}

func (r ServiceSelector) get(ctx context.Context, t Target) (*corev1.Service, error) {
	svc := &corev1.Service{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Service}, svc); err != nil {
		return nil, err
	}
	return svc, nil
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
	return r.patchSelector(ctx, t, nil)
}

func (r ServiceSelector) patchSelector(ctx context.Context, t Target, value any) error {
	svc, err := r.get(ctx, t)
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": svc.ResourceVersion},
		"spec":     map[string]any{"selector": map[string]any{t.SubsetLabel: value}},
	})
	if err != nil {
		return err
	}
	return r.Client.Patch(ctx, svc, client.RawPatch(types.MergePatchType, patch))
}
