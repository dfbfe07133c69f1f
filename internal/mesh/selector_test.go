package mesh

import (
	"context"
	"errors"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"splitter.dev/splitter/internal/rollout"
)

func selectorFixture(t *testing.T, objs ...client.Object) (ServiceSelector, client.Client, Target) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	target, _ := testTarget()
	return ServiceSelector{Client: c}, c, target
}

func checkoutService(selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
}

func selectorOf(t *testing.T, c client.Client) map[string]string {
	t.Helper()
	svc := &corev1.Service{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "checkout"}, svc); err != nil {
		t.Fatal(err)
	}
	return svc.Spec.Selector
}

func TestServiceSelectorRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, c, target := selectorFixture(t, checkoutService(map[string]string{"app": "checkout"}))

	if w, err := r.Observe(ctx, target); err != nil || w != nil {
		t.Fatalf("Observe before any switch = %v, %v; want nil, nil", w, err)
	}
	for _, tc := range []struct {
		w        rollout.Weights
		selector map[string]string
	}{
		{rollout.Weights{Blue: 100}, map[string]string{"app": "checkout", "track": "blue"}},
		{rollout.Weights{Green: 100}, map[string]string{"app": "checkout", "track": "green"}},
		{rollout.Weights{Blue: 100}, map[string]string{"app": "checkout", "track": "blue"}},
	} {
		if err := r.SetWeights(ctx, target, tc.w); err != nil {
			t.Fatalf("SetWeights(%s): %v", tc.w, err)
		}
		if got := selectorOf(t, c); !reflect.DeepEqual(got, tc.selector) {
			t.Errorf("after SetWeights(%s) selector %v, want %v", tc.w, got, tc.selector)
		}
		if w, err := r.Observe(ctx, target); err != nil || w == nil || *w != tc.w {
			t.Errorf("Observe after SetWeights(%s) = %v, %v", tc.w, w, err)
		}
	}

	// A split cannot be expressed by a selector.
	err := r.SetWeights(ctx, target, rollout.Weights{Blue: 90, Green: 10})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Object != "Service/checkout" {
		t.Errorf("SetWeights(90/10) = %v, want a ConfigError on Service/checkout", err)
	}
	if got := selectorOf(t, c); got["track"] != "blue" {
		t.Errorf("a refused split changed the selector to %v", got)
	}

	if err := r.Release(ctx, target); err != nil {
		t.Fatal(err)
	}
	if got := selectorOf(t, c); !reflect.DeepEqual(got, map[string]string{"app": "checkout"}) {
		t.Errorf("after Release selector %v, want only the app label", got)
	}
	if w, err := r.Observe(ctx, target); err != nil || w != nil {
		t.Errorf("Observe after Release = %v, %v; want nil, nil", w, err)
	}
}

func TestServiceSelectorMissingService(t *testing.T) {
	ctx := context.Background()
	r, _, target := selectorFixture(t)
	if _, err := r.Observe(ctx, target); !apierrors.IsNotFound(err) {
		t.Errorf("Observe without the Service: %v, want NotFound", err)
	}
	if err := r.Release(ctx, target); err != nil {
		t.Errorf("Release without the Service: %v, want nil", err)
	}
	if err := r.SetWeights(ctx, target, rollout.Weights{Green: 100}); err != nil {
		t.Errorf("SetWeights without the Service: %v, want nil (nothing to switch)", err)
	}
}
