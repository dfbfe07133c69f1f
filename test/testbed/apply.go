package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ReadObjects decodes every object in multi-document YAML.
func ReadObjects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// ApplyFiles server-side-applies every object in the files, in order, into
// namespace (where the object names none).
func ApplyFiles(ctx context.Context, c client.Client, namespace string, files ...string) error {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		objs, err := ReadObjects(data)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		for _, u := range objs {
			if u.GetNamespace() == "" && namespace != "" {
				u.SetNamespace(namespace)
			}
			if err := Apply(ctx, c, u); err != nil {
				return fmt.Errorf("%s: %s %s: %w", f, u.GetKind(), u.GetName(), err)
			}
		}
	}
	return nil
}

// Apply server-side-applies one object as the field manager "testbed".
func Apply(ctx context.Context, c client.Client, u *unstructured.Unstructured) error {
	return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("testbed"), client.ForceOwnership)
}

// WaitDeploymentsReady waits until each named Deployment in namespace has
// all its replicas updated and Ready.
func WaitDeploymentsReady(ctx context.Context, c client.Client, namespace string, names ...string) error {
	return waitFor(ctx, nil, fmt.Sprintf("Deployments %v Ready", names), func(ctx context.Context) error {
		for _, name := range names {
			var d appsv1.Deployment
			if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &d); err != nil {
				return err
			}
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != want ||
				d.Status.ReadyReplicas != want || d.Status.Replicas != want {
				return fmt.Errorf("%s: %d/%d ready, %d updated, %d total", name, d.Status.ReadyReplicas, want, d.Status.UpdatedReplicas, d.Status.Replicas)
			}
		}
		return nil
	})
}
