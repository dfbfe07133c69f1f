package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"splitter.dev/splitter/internal/rollout"
)

// staleCache stands in for controller-runtime's cache a few milliseconds
// after a write: reads of a frozen object return it as it was when frozen
// (or NotFound if it did not exist), while writes go to the API server
// (here the fake client).
type staleCache struct {
	client.Client
	mu     sync.Mutex
	frozen map[staleKey]client.Object // nil: absent when frozen
	// patchErr, when set, is what every patch returns.
	patchErr error
}

type staleKey struct {
	typ reflect.Type
	key client.ObjectKey
}

func keyOf(obj client.Object, key client.ObjectKey) staleKey {
	return staleKey{reflect.TypeOf(obj), key}
}

// freeze makes reads of obj's key return what the API server has now.
func (c *staleCache) freeze(t *testing.T, obj client.Object, key client.ObjectKey) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen == nil {
		c.frozen = map[staleKey]client.Object{}
	}
	err := c.Client.Get(context.Background(), key, obj)
	switch {
	case apierrors.IsNotFound(err):
		c.frozen[keyOf(obj, key)] = nil
	case err != nil:
		t.Fatal(err)
	default:
		c.frozen[keyOf(obj, key)] = obj.DeepCopyObject().(client.Object)
	}
}

// thaw lets the cache catch up.
func (c *staleCache) thaw() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frozen = nil
}

func (c *staleCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.mu.Lock()
	f, ok := c.frozen[keyOf(obj, key)]
	c.mu.Unlock()
	if !ok {
		return c.Client.Get(ctx, key, obj, opts...)
	}
	if f == nil {
		return apierrors.NewNotFound(schema.GroupResource{}, key.Name)
	}
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(f.DeepCopyObject()).Elem())
	return nil
}

// Patch answers a JSON patch that does not apply as kube-apiserver does.
func (c *staleCache) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if c.patchErr != nil {
		return c.patchErr
	}
	err := c.Client.Patch(ctx, obj, patch, opts...)
	var st apierrors.APIStatus
	if err != nil && patch.Type() == types.JSONPatchType && !errors.As(err, &st) {
		return overTheWire(apiserverPatchError(err))
	}
	return err
}

// apiserverPatchError is kube-apiserver's answer to a JSON patch whose
// operations fail against the stored object (k8s.io/apiserver
// pkg/endpoints/handlers/patch.go, jsonPatcher.applyJSPatch).
func apiserverPatchError(err error) *apierrors.StatusError {
	return apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", err.Error(), 0, false)
}

// overTheWire is err as client-go decodes it from the response body.
func overTheWire(err *apierrors.StatusError) error {
	b, jerr := json.Marshal(err.ErrStatus)
	if jerr != nil {
		panic(jerr)
	}
	var st metav1.Status
	if jerr := json.Unmarshal(b, &st); jerr != nil {
		panic(jerr)
	}
	return &apierrors.StatusError{ErrStatus: st}
}

// writeLog records what a router reports to OnWrite, classified as the
// controller's metrics classify it.
// staleIstio is an Istio router with its memory, over a fake API server
// holding objs behind a cache that can be frozen, recording its writes.
func staleIstio(t *testing.T, objs ...client.Object) (*Istio, *staleCache, *writeLog) {
	t.Helper()
	cache := &staleCache{Client: fake.NewClientBuilder().WithScheme(fakeScheme(t)).WithObjects(objs...).Build()}
	r := NewIstio(cache)
	writes := &writeLog{}
	r.OnWrite = writes.record
	return r, cache, writes
}

type writeLog []string

func (l *writeLog) record(kind string, err error) {
	result := "ok"
	switch {
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		result = "conflict"
	case err != nil:
		result = "error"
	}
	*l = append(*l, kind+" "+result)
}

func fakeScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return scheme
}

func vsWeights(t *testing.T, c client.Client) *rollout.Weights {
	t.Helper()
	vs := &networkingv1.VirtualService{}
	err := c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "checkout"}, vs)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	refs, err := findWeights(vs, "checkout")
	if err != nil {
		t.Fatal(err)
	}
	w, _ := readWeights(vs, refs)
	return &w
}

func weightsString(w *rollout.Weights) string {
	if w == nil {
		return "nil"
	}
	return w.String()
}

// TestIstioStaleCache: a pass that reads the VirtualService from a cache
// that has not seen our last write yet.
func TestIstioStaleCache(t *testing.T) {
	var (
		blue100 = rollout.Weights{Blue: 100}
		green5  = rollout.Weights{Blue: 95, Green: 5}
		even    = rollout.Weights{Blue: 50, Green: 50}
	)
	for _, tc := range []struct {
		name      string
		existing  *rollout.Weights // the VirtualService before the first write; nil: none
		zeroValue bool             // Istio{Client: c}: no memory of writes
		first     rollout.Weights  // written while the cache is fresh, then the cache stops
		other     *rollout.Weights // someone else's write after ours
		caughtUp  bool             // the cache shows our first write before the second
		second    rollout.Weights

		wantObserve  rollout.Weights // what Observe reports before the second write
		wantConflict bool
		wantWrites   []string
		wantServer   rollout.Weights
	}{
		{
			name: "same weights again: skipped", existing: &blue100, first: green5, second: green5,
			wantObserve: green5, wantWrites: []string{"VirtualService ok"}, wantServer: green5,
		},
		{
			name: "other weights: written from our last write's resourceVersion", existing: &blue100, first: green5, second: blue100,
			wantObserve: green5, wantWrites: []string{"VirtualService ok", "VirtualService ok"}, wantServer: blue100,
		},
		{
			name: "no memory: the repeated write is refused as a conflict", existing: &blue100, zeroValue: true, first: green5, second: green5,
			wantObserve: blue100, wantConflict: true, wantWrites: []string{"VirtualService ok", "VirtualService conflict"}, wantServer: green5,
		},
		{
			name: "someone else wrote after us: a conflict, their weights stand", existing: &blue100, first: green5, other: &even, second: blue100,
			wantObserve: green5, wantConflict: true, wantWrites: []string{"VirtualService ok", "VirtualService conflict"}, wantServer: even,
		},
		{
			name: "the cache caught up: written as usual", existing: &blue100, first: green5, caughtUp: true, second: blue100,
			wantObserve: green5, wantWrites: []string{"VirtualService ok", "VirtualService ok"}, wantServer: blue100,
		},
		{
			name: "create, same weights again: not created twice", first: blue100, second: blue100,
			wantObserve: blue100, wantWrites: []string{"DestinationRule ok", "VirtualService ok"}, wantServer: blue100,
		},
		{
			name: "create, then other weights: a patch of what we created", first: blue100, second: green5,
			wantObserve: blue100, wantWrites: []string{"DestinationRule ok", "VirtualService ok", "VirtualService ok"}, wantServer: green5,
		},
		{
			name: "no memory, create again: AlreadyExists is a conflict", zeroValue: true, first: blue100, second: blue100,
			wantConflict: true, wantWrites: []string{"DestinationRule ok", "VirtualService ok", "DestinationRule conflict"}, wantServer: blue100,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			target, _ := testTarget()
			var objs []client.Object
			if tc.existing != nil {
				vs := OwnedVirtualService(target, *tc.existing)
				vs.ResourceVersion = ""
				objs = append(objs, vs, OwnedDestinationRule(target))
			}
			api := fake.NewClientBuilder().WithScheme(fakeScheme(t)).WithObjects(objs...).Build()
			cache := &staleCache{Client: api}
			r := NewIstio(cache)
			if tc.zeroValue {
				r = &Istio{Client: cache}
			}
			var writes writeLog
			r.OnWrite = writes.record

			key := client.ObjectKey{Namespace: "shop", Name: "checkout"}
			cache.freeze(t, &networkingv1.VirtualService{}, key)
			cache.freeze(t, &networkingv1.DestinationRule{}, key)
			if err := r.SetWeights(ctx, target, tc.first); err != nil {
				t.Fatalf("first SetWeights(%s): %v", tc.first, err)
			}
			if tc.other != nil {
				vs := &networkingv1.VirtualService{}
				if err := api.Get(ctx, key, vs); err != nil {
					t.Fatal(err)
				}
				vs.Spec.Http[0].Route[0].Weight, vs.Spec.Http[0].Route[1].Weight = tc.other.Blue, tc.other.Green
				if err := api.Update(ctx, vs); err != nil {
					t.Fatal(err)
				}
			}
			if tc.caughtUp {
				cache.thaw()
			}

			if tc.existing != nil || !tc.zeroValue {
				got, err := r.Observe(ctx, target)
				if err != nil || got == nil || *got != tc.wantObserve {
					t.Errorf("Observe = %s, %v; want %s", weightsString(got), err, tc.wantObserve)
				}
			}
			err := r.SetWeights(ctx, target, tc.second)
			switch {
			case tc.wantConflict && !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err):
				t.Errorf("second SetWeights(%s) = %v, want a conflict", tc.second, err)
			case !tc.wantConflict && err != nil:
				t.Errorf("second SetWeights(%s) = %v, want nil", tc.second, err)
			}
			if !reflect.DeepEqual([]string(writes), tc.wantWrites) {
				t.Errorf("writes %q, want %q", writes, tc.wantWrites)
			}
			if got := vsWeights(t, api); got == nil || *got != tc.wantServer {
				t.Errorf("the API server has %s, want %s", weightsString(got), tc.wantServer)
			}
		})
	}
}

// TestIstioObserveStaleCache: Observe reports our last write while the
// cache shows a version it replaced, and the cache once it shows anything
// else.
func TestIstioObserveStaleCache(t *testing.T) {
	ctx := context.Background()
	target, _ := testTarget()
	key := client.ObjectKey{Namespace: "shop", Name: "checkout"}
	vs := OwnedVirtualService(target, rollout.Weights{Blue: 100})
	r, cache, _ := staleIstio(t, vs, OwnedDestinationRule(target))

	observe := func(want rollout.Weights) {
		t.Helper()
		if got, err := r.Observe(ctx, target); err != nil || got == nil || *got != want {
			t.Errorf("Observe = %s, %v; want %s", weightsString(got), err, want)
		}
	}
	cache.freeze(t, &networkingv1.VirtualService{}, key)
	observe(rollout.Weights{Blue: 100})
	// Two writes the cache has not seen: the chain of replaced versions.
	for _, w := range []rollout.Weights{{Blue: 95, Green: 5}, {Blue: 90, Green: 10}} {
		if err := r.SetWeights(ctx, target, w); err != nil {
			t.Fatal(err)
		}
		observe(w)
	}
	// The cache shows the first write only: still older than ours.
	cache.thaw()
	api2 := &networkingv1.VirtualService{}
	if err := cache.Client.Get(ctx, key, api2); err != nil {
		t.Fatal(err)
	}
	first := api2.DeepCopy()
	first.ResourceVersion = r.last.objs[writeKey{KindVirtualService, key}].replaced[1]
	first.Spec.Http[0].Route[0].Weight, first.Spec.Http[0].Route[1].Weight = 95, 5
	cache.mu.Lock()
	cache.frozen = map[staleKey]client.Object{keyOf(&networkingv1.VirtualService{}, key): first}
	cache.mu.Unlock()
	observe(rollout.Weights{Blue: 90, Green: 10})

	// Someone else's write, which the cache shows: it is what is routed,
	// and our memory of the object is dropped.
	api2.Spec.Http[0].Route[0].Weight, api2.Spec.Http[0].Route[1].Weight = 50, 50
	if err := cache.Client.Update(ctx, api2); err != nil {
		t.Fatal(err)
	}
	cache.thaw()
	observe(rollout.Weights{Blue: 50, Green: 50})
	if len(r.last.objs) != 0 {
		t.Errorf("memory after the cache moved on: %v, want none", r.last.objs)
	}
}

// TestIstioCreatedObjectAbsentFromCache: an object we created that the cache
// does not show is taken to exist for absentGrace, then to be deleted.
func TestIstioCreatedObjectAbsentFromCache(t *testing.T) {
	ctx := context.Background()
	target, _ := testTarget()
	key := client.ObjectKey{Namespace: "shop", Name: "checkout"}
	r, cache, writes := staleIstio(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.last.now = func() time.Time { return now }

	cache.freeze(t, &networkingv1.VirtualService{}, key)
	cache.freeze(t, &networkingv1.DestinationRule{}, key)
	if err := r.SetWeights(ctx, target, rollout.Weights{Blue: 100}); err != nil {
		t.Fatal(err)
	}
	if err := r.Ensure(ctx, target); err != nil {
		t.Errorf("Ensure right after creating the DestinationRule: %v", err)
	}
	if got, err := r.Observe(ctx, target); err != nil || got == nil || *got != (rollout.Weights{Blue: 100}) {
		t.Errorf("Observe right after the create = %s, %v; want blue=100 green=0", weightsString(got), err)
	}
	if want := []string{"DestinationRule ok", "VirtualService ok"}; !reflect.DeepEqual([]string(*writes), want) {
		t.Errorf("writes %q, want %q", writes, want)
	}

	now = now.Add(absentGrace + time.Second)
	if got, err := r.Observe(ctx, target); err != nil || got != nil {
		t.Errorf("Observe long after the create, still absent from the cache = %s, %v; want nil (deleted)", weightsString(got), err)
	}
}

// TestIstioReleaseStaleCache: Release deletes what we created even when the
// cache does not show it yet, and does not delete again what the cache still
// shows after our delete.
func TestIstioReleaseStaleCache(t *testing.T) {
	for _, tc := range []struct {
		name        string
		freezeAfter bool // freeze the cache after the create (else before it)
		releases    int
		wantWrites  []string
	}{
		{"created, the cache does not show it yet", false, 1,
			[]string{"DestinationRule ok", "VirtualService ok", "VirtualService ok", "DestinationRule ok"}},
		{"deleted, the cache still shows it", true, 2,
			[]string{"DestinationRule ok", "VirtualService ok", "VirtualService ok", "DestinationRule ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			target, _ := testTarget()
			key := client.ObjectKey{Namespace: "shop", Name: "checkout"}
			r, cache, writes := staleIstio(t)
			freeze := func() {
				cache.freeze(t, &networkingv1.VirtualService{}, key)
				cache.freeze(t, &networkingv1.DestinationRule{}, key)
			}
			if !tc.freezeAfter {
				freeze()
			}
			if err := r.SetWeights(ctx, target, rollout.Weights{Blue: 100}); err != nil {
				t.Fatal(err)
			}
			if tc.freezeAfter {
				freeze()
			}
			for range tc.releases {
				if err := r.Release(ctx, target); err != nil {
					t.Fatal(err)
				}
			}
			for _, obj := range []client.Object{&networkingv1.VirtualService{}, &networkingv1.DestinationRule{}} {
				if err := cache.Client.Get(ctx, key, obj); !apierrors.IsNotFound(err) {
					t.Errorf("%T after Release: %v, want NotFound", obj, err)
				}
			}
			if !reflect.DeepEqual([]string(*writes), tc.wantWrites) {
				t.Errorf("writes %q, want %q", writes, tc.wantWrites)
			}
			if got, err := r.Observe(ctx, target); err != nil || got != nil {
				t.Errorf("Observe after Release = %s, %v; want nil", weightsString(got), err)
			}
		})
	}
}

// TestPatchNotApplied: which errors are a failed JSON-patch precondition.
func TestPatchNotApplied(t *testing.T) {
	vsKind := schema.GroupKind{Group: "networking.istio.io", Kind: "VirtualService"}
	testFailed := "testing value /metadata/resourceVersion failed: test failed"
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"kube-apiserver's answer to a failed test op", apiserverPatchError(errors.New(testFailed)), true},
		{"the same as client-go decodes it", overTheWire(apiserverPatchError(errors.New(testFailed))), true},
		{"the same, wrapped", fmt.Errorf("patching: %w", overTheWire(apiserverPatchError(errors.New(testFailed)))), true},
		{"the patched object fails validation", apierrors.NewInvalid(vsKind, "checkout",
			field.ErrorList{field.Invalid(field.NewPath("spec", "http").Index(0).Child("route").Index(0).Child("weight"), -5, "must be at least 0")}), false},
		{"invalid without causes", apierrors.NewInvalid(vsKind, "checkout", nil), false},
		{"a 422 client-go could not decode", apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, http.MethodPatch,
			schema.GroupResource{Group: "networking.istio.io", Resource: "virtualservices"}, "checkout", "<html>", 0, true), false},
		{"a conflict", apierrors.NewConflict(schema.GroupResource{Resource: "services"}, "checkout", errors.New("changed")), false},
		{"a bad request", apierrors.NewBadRequest("cannot decode the patch"), false},
		{"not an API error", errors.New(testFailed), false},
		{"nil", nil, false},
	} {
		if got := PatchNotApplied(tc.err); got != tc.want {
			t.Errorf("%s: PatchNotApplied(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestIstioPatchErrors: how SetWeights reports a refused patch.
func TestIstioPatchErrors(t *testing.T) {
	invalid := apierrors.NewInvalid(schema.GroupKind{Group: "networking.istio.io", Kind: "VirtualService"}, "checkout",
		field.ErrorList{field.Invalid(field.NewPath("spec", "http"), "", "bad")})
	for _, tc := range []struct {
		name         string
		patchErr     error
		wantConflict bool
		wantWrites   []string
	}{
		{"precondition failed", overTheWire(apiserverPatchError(errors.New("testing value /metadata/resourceVersion failed: test failed"))), true, []string{"VirtualService conflict"}},
		{"invalid object", invalid, false, []string{"VirtualService error"}},
		{"server error", apierrors.NewInternalError(errors.New("etcd")), false, []string{"VirtualService error"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, _ := testTarget()
			api := fake.NewClientBuilder().WithScheme(fakeScheme(t)).WithObjects(OwnedVirtualService(target, rollout.Weights{Blue: 100}), OwnedDestinationRule(target)).Build()
			r := NewIstio(&staleCache{Client: api, patchErr: tc.patchErr})
			var writes writeLog
			r.OnWrite = writes.record
			err := r.SetWeights(context.Background(), target, rollout.Weights{Blue: 95, Green: 5})
			if err == nil {
				t.Fatal("SetWeights = nil, want an error")
			}
			if got := apierrors.IsConflict(err); got != tc.wantConflict {
				t.Errorf("IsConflict(%v) = %v, want %v", err, got, tc.wantConflict)
			}
			if !tc.wantConflict && !errors.Is(err, tc.patchErr) {
				t.Errorf("SetWeights = %v, want %v as it is", err, tc.patchErr)
			}
			if !reflect.DeepEqual([]string(writes), tc.wantWrites) {
				t.Errorf("writes %q, want %q", writes, tc.wantWrites)
			}
			if len(r.last.objs) != 0 {
				t.Errorf("a refused write was remembered: %v", r.last.objs)
			}
		})
	}
}

// TestServiceSelectorStaleCache: the selector router against a cache that
// has not seen its last patch.
func TestServiceSelectorStaleCache(t *testing.T) {
	blue, green := rollout.Weights{Blue: 100}, rollout.Weights{Green: 100}
	for _, tc := range []struct {
		name      string
		zeroValue bool
		second    func(ctx context.Context, r Router, t Target) error

		wantConflict bool
		wantWrites   []string
		wantSelector map[string]string
	}{
		{
			name:       "same color again: skipped",
			second:     func(ctx context.Context, r Router, t Target) error { return r.SetWeights(ctx, t, green) },
			wantWrites: []string{"Service ok"}, wantSelector: map[string]string{"app": "checkout", "track": "green"},
		},
		{
			name:       "back to blue: written from our last write's resourceVersion",
			second:     func(ctx context.Context, r Router, t Target) error { return r.SetWeights(ctx, t, blue) },
			wantWrites: []string{"Service ok", "Service ok"}, wantSelector: map[string]string{"app": "checkout", "track": "blue"},
		},
		{
			name:       "release: written from our last write's resourceVersion",
			second:     func(ctx context.Context, r Router, t Target) error { return r.Release(ctx, t) },
			wantWrites: []string{"Service ok", "Service ok"}, wantSelector: map[string]string{"app": "checkout"},
		},
		{
			name: "no memory: the repeated patch is refused as a conflict", zeroValue: true,
			second:       func(ctx context.Context, r Router, t Target) error { return r.SetWeights(ctx, t, green) },
			wantConflict: true, wantWrites: []string{"Service ok", "Service conflict"}, wantSelector: map[string]string{"app": "checkout", "track": "green"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			target, _ := testTarget()
			svc := checkoutService(map[string]string{"app": "checkout", "track": "blue"})
			api := fake.NewClientBuilder().WithScheme(fakeScheme(t)).WithObjects(svc).Build()
			cache := &staleCache{Client: api}
			var writes writeLog
			var r Router
			if tc.zeroValue {
				r = ServiceSelector{Client: cache, OnWrite: writes.record}
			} else {
				s := NewServiceSelector(cache)
				s.OnWrite = writes.record
				r = s
			}
			cache.freeze(t, &corev1.Service{}, client.ObjectKey{Namespace: "shop", Name: "checkout"})
			if err := r.SetWeights(ctx, target, green); err != nil {
				t.Fatal(err)
			}
			wantObserve := green
			if tc.zeroValue {
				wantObserve = blue
			}
			if got, err := r.Observe(ctx, target); err != nil || got == nil || *got != wantObserve {
				t.Errorf("Observe = %s, %v; want %s", weightsString(got), err, wantObserve)
			}
			err := tc.second(ctx, r, target)
			switch {
			case tc.wantConflict && !apierrors.IsConflict(err):
				t.Errorf("second write = %v, want a conflict", err)
			case !tc.wantConflict && err != nil:
				t.Errorf("second write = %v, want nil", err)
			}
			if !reflect.DeepEqual([]string(writes), tc.wantWrites) {
				t.Errorf("writes %q, want %q", writes, tc.wantWrites)
			}
			if got := selectorOf(t, api); !reflect.DeepEqual(got, tc.wantSelector) {
				t.Errorf("selector %v, want %v", got, tc.wantSelector)
			}
		})
	}
}

// TestLastWritesChain: the replaced versions form a bounded chain, and a
// write from anything but our last result starts a new one.
func TestLastWritesChain(t *testing.T) {
	l := newLastWrites()
	key := types.NamespacedName{Namespace: "shop", Name: "checkout"}
	obj := func(rv string) client.Object {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: "shop", ResourceVersion: rv}}
	}
	replaced := func() []string { return l.objs[writeKey{KindService, key}].replaced }

	l.remember(KindService, key, "1", obj("2"))
	for i := 2; i < 2+maxReplaced+3; i++ {
		l.remember(KindService, key, fmt.Sprint(i), obj(fmt.Sprint(i+1)))
	}
	if got := replaced(); len(got) != maxReplaced || got[len(got)-1] != fmt.Sprint(1+maxReplaced+3) {
		t.Errorf("replaced %v, want the last %d versions", got, maxReplaced)
	}
	// Someone else's version in between: a new chain.
	l.remember(KindService, key, "100", obj("101"))
	if got := replaced(); !reflect.DeepEqual(got, []string{"100"}) {
		t.Errorf("replaced %v, want [100]", got)
	}
	// A write that changed nothing keeps its version current.
	l.remember(KindService, key, "101", obj("101"))
	if got := l.current(KindService, key, obj("101")); got.GetResourceVersion() != "101" {
		t.Errorf("current = %s", got.GetResourceVersion())
	}
	// A nil memory remembers nothing.
	var none *lastWrites
	none.remember(KindService, key, "1", obj("2"))
	if got := none.current(KindService, key, obj("1")); got.GetResourceVersion() != "1" {
		t.Errorf("a nil memory substituted %s", got.GetResourceVersion())
	}
}

// TestLastWritesConcurrent: one router serves every reconcile worker (run
// with -race).
func TestLastWritesConcurrent(t *testing.T) {
	l := newLastWrites()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := types.NamespacedName{Namespace: "shop", Name: fmt.Sprint("svc-", i%2)}
			for j := range 200 {
				svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace, ResourceVersion: fmt.Sprint(j + 1)}}
				l.remember(KindService, key, fmt.Sprint(j), svc)
				if got := l.current(KindService, key, &corev1.Service{ObjectMeta: metav1.ObjectMeta{ResourceVersion: fmt.Sprint(j)}}); got == nil {
					t.Error("current = nil")
				}
			}
		}()
	}
	wg.Wait()
}
