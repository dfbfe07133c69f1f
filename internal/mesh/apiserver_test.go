package mesh

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"splitter.dev/splitter/internal/rollout"
)

// TestAgainstAPIServer checks the routers' reading of refused writes against
// a real kube-apiserver and etcd (controller-runtime's envtest) with Istio's
// CRDs: what the API server answers to a weights patch whose resourceVersion
// is stale, to a create of an object that exists, and to a selector patch
// from a stale Service. Without the binaries (plain `go test`) it is
// skipped, or fails under SPLITTER_REQUIRE_TOOLS=1 (`make test`).
func TestAgainstAPIServer(t *testing.T) {
	for _, v := range []string{"TEST_ASSET_ETCD", "TEST_ASSET_KUBE_APISERVER"} {
		if os.Getenv(v) == "" {
			if os.Getenv("SPLITTER_REQUIRE_TOOLS") == "1" {
				t.Fatalf("%s unset: run through `make test`", v)
			}
			t.Skipf("%s unset: run through `make test`", v)
		}
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	if err != nil {
		t.Fatalf("locating istio.io/api: %v", err)
	}
	te := &envtest.Environment{CRDInstallOptions: envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml")},
		ErrorIfPathMissing: true,
	}}
	cfg, err := te.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := te.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	api, err := client.New(cfg, client.Options{Scheme: fakeScheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n := 0
	// Each subtest works in its own namespace.
	target := func(t *testing.T) Target {
		t.Helper()
		n++
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("shop-%d", n)}}
		if err := api.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
		tg, _ := testTarget()
		tg.Namespace = ns.Name
		return tg
	}
	createVS := func(t *testing.T, tg Target) *networkingv1.VirtualService {
		t.Helper()
		vs := OwnedVirtualService(tg, rollout.Weights{Blue: 100})
		if err := api.Create(ctx, vs); err != nil {
			t.Fatal(err)
		}
		return vs
	}
	patchWeights := func(vs *networkingv1.VirtualService, resourceVersion string, w rollout.Weights) error {
		refs, err := findWeights(vs, vs.Name)
		if err != nil {
			return err
		}
		patch, err := weightPatch(resourceVersion, refs, w)
		if err != nil {
			return err
		}
		return api.Patch(ctx, vs.DeepCopy(), client.RawPatch(types.JSONPatchType, patch))
	}

	t.Run("a weights patch from a stale resourceVersion is a failed precondition", func(t *testing.T) {
		vs := createVS(t, target(t))
		if err := patchWeights(vs, vs.ResourceVersion, rollout.Weights{Blue: 95, Green: 5}); err != nil {
			t.Fatal(err)
		}
		err := patchWeights(vs, vs.ResourceVersion, rollout.Weights{Blue: 95, Green: 5})
		var st apierrors.APIStatus
		if !apierrors.IsInvalid(err) || !PatchNotApplied(err) {
			t.Fatalf("the same patch again = %v, want 422 Invalid that PatchNotApplied recognizes", err)
		}
		if errors.As(err, &st) {
			t.Logf("the API server's answer: %+v", st.Status())
		}
	})

	t.Run("a weights patch that fails validation is not", func(t *testing.T) {
		vs := createVS(t, target(t))
		patch := fmt.Appendf(nil, `[{"op":"test","path":"/metadata/resourceVersion","value":%q},{"op":"add","path":"/spec/http/0/route/1/weight","value":"five"}]`, vs.ResourceVersion)
		err := api.Patch(ctx, vs.DeepCopy(), client.RawPatch(types.JSONPatchType, patch))
		if !apierrors.IsInvalid(err) || PatchNotApplied(err) {
			t.Fatalf("a string weight = %v, want 422 Invalid that PatchNotApplied does not take for a failed precondition", err)
		}
	})

	t.Run("the Istio router through a stale cache", func(t *testing.T) {
		tg := target(t)
		key := client.ObjectKey{Namespace: tg.Namespace, Name: tg.Service}
		createVS(t, tg)
		if err := api.Create(ctx, OwnedDestinationRule(tg)); err != nil {
			t.Fatal(err)
		}
		cache := &staleCache{Client: api}
		cache.freeze(t, &networkingv1.VirtualService{}, key)
		var writes writeLog
		plain := Istio{Client: cache, OnWrite: writes.record}
		remembering := NewIstio(cache)
		remembering.OnWrite = writes.record

		green5 := rollout.Weights{Blue: 95, Green: 5}
		if err := remembering.SetWeights(ctx, tg, green5); err != nil {
			t.Fatal(err)
		}
		if err := remembering.SetWeights(ctx, tg, green5); err != nil {
			t.Errorf("the same weights again: %v", err)
		}
		if err := plain.SetWeights(ctx, tg, green5); !apierrors.IsConflict(err) {
			t.Errorf("the same weights again, without memory: %v, want a conflict", err)
		}
		if err := remembering.SetWeights(ctx, tg, rollout.Weights{Blue: 100}); err != nil {
			t.Errorf("new weights: %v", err)
		}
		if want := []string{"VirtualService ok", "VirtualService conflict", "VirtualService ok"}; !reflect.DeepEqual([]string(writes), want) {
			t.Errorf("writes %q, want %q", writes, want)
		}
		if got := vsWeightsAt(t, api, key); got != (rollout.Weights{Blue: 100}) {
			t.Errorf("the API server has %s, want blue=100 green=0", got)
		}
	})

	t.Run("creating what exists is AlreadyExists", func(t *testing.T) {
		tg := target(t)
		key := client.ObjectKey{Namespace: tg.Namespace, Name: tg.Service}
		cache := &staleCache{Client: api}
		cache.freeze(t, &networkingv1.VirtualService{}, key)
		cache.freeze(t, &networkingv1.DestinationRule{}, key)
		var writes writeLog
		remembering := NewIstio(cache)
		remembering.OnWrite = writes.record
		if err := remembering.SetWeights(ctx, tg, rollout.Weights{Blue: 100}); err != nil {
			t.Fatal(err)
		}
		if err := remembering.SetWeights(ctx, tg, rollout.Weights{Blue: 100}); err != nil {
			t.Errorf("the same weights again: %v", err)
		}
		plain := Istio{Client: cache, OnWrite: writes.record}
		if err := plain.SetWeights(ctx, tg, rollout.Weights{Blue: 100}); !apierrors.IsAlreadyExists(err) {
			t.Errorf("creating again, without memory: %v, want AlreadyExists", err)
		}
		if want := []string{"DestinationRule ok", "VirtualService ok", "DestinationRule conflict"}; !reflect.DeepEqual([]string(writes), want) {
			t.Errorf("writes %q, want %q", writes, want)
		}
	})

	t.Run("a selector patch from a stale Service is a conflict", func(t *testing.T) {
		tg := target(t)
		svc := checkoutService(map[string]string{"app": "checkout", "track": "blue"})
		svc.Namespace = tg.Namespace
		if err := api.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
		cache := &staleCache{Client: api}
		cache.freeze(t, &corev1.Service{}, client.ObjectKeyFromObject(svc))
		var writes writeLog
		remembering := NewServiceSelector(cache)
		remembering.OnWrite = writes.record
		green := rollout.Weights{Green: 100}
		if err := remembering.SetWeights(ctx, tg, green); err != nil {
			t.Fatal(err)
		}
		if err := remembering.SetWeights(ctx, tg, green); err != nil {
			t.Errorf("the same color again: %v", err)
		}
		plain := ServiceSelector{Client: cache, OnWrite: writes.record}
		if err := plain.SetWeights(ctx, tg, green); !apierrors.IsConflict(err) {
			t.Errorf("the same color again, without memory: %v, want a conflict", err)
		}
		if want := []string{"Service ok", "Service conflict"}; !reflect.DeepEqual([]string(writes), want) {
			t.Errorf("writes %q, want %q", writes, want)
		}
	})
}

func vsWeightsAt(t *testing.T, c client.Client, key client.ObjectKey) rollout.Weights {
	t.Helper()
	vs := &networkingv1.VirtualService{}
	if err := c.Get(context.Background(), key, vs); err != nil {
		t.Fatal(err)
	}
	refs, err := findWeights(vs, key.Name)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := readWeights(vs, refs)
	return w
}
