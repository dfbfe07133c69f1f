package mesh

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

func TestHostMatches(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"checkout", true},
		{"checkout.shop", true},
		{"checkout.shop.svc", true},
		{"checkout.shop.svc.cluster.local", true},
		// Another namespace.
		{"checkout.other", false},
		{"checkout.other.svc", false},
		{"checkout.other.svc.cluster.local", false},
		// Another service.
		{"cart", false},
		{"cart.shop", false},
		{"cart.shop.svc.cluster.local", false},
		{"checkout-v2.shop.svc.cluster.local", false},
		// Near misses.
		{"", false},
		{"checkout.shop.svc.cluster", false},
		{"*.shop.svc.cluster.local", false},
		{"shop", false},
	} {
		if got := HostMatches(tc.host, "checkout", "shop"); got != tc.want {
			t.Errorf("HostMatches(%q, checkout, shop) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

// dest is a weighted destination for the test VirtualServices.
func dest(host, subset string, weight int32) *networkingapi.HTTPRouteDestination {
	return &networkingapi.HTTPRouteDestination{Destination: &networkingapi.Destination{Host: host, Subset: subset}, Weight: weight}
}

func vsWith(routes ...*networkingapi.HTTPRoute) *networkingv1.VirtualService {
	return &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "checkout-vs", Namespace: "shop", ResourceVersion: "7"},
		Spec:       networkingapi.VirtualService{Hosts: []string{"checkout"}, Http: routes},
	}
}

func route(dests ...*networkingapi.HTTPRouteDestination) *networkingapi.HTTPRoute {
	return &networkingapi.HTTPRoute{Route: dests}
}

func named(name string, r *networkingapi.HTTPRoute) *networkingapi.HTTPRoute {
	r.Name = name
	return r
}

func TestFindRoutes(t *testing.T) {
	pinned := func(route string, c splitterv1.Color) splitterv1.PinnedRoute {
		return splitterv1.PinnedRoute{Route: route, Color: c}
	}
	for _, tc := range []struct {
		name        string
		vs          *networkingv1.VirtualService
		names       []string // splitter.dev/routes
		want        []weightRef
		wantManaged []int
		wantPinned  []splitterv1.PinnedRoute
		wantField   string // non-empty: a *ConfigError with this Field
		wantMsg     string // substring of the error message
	}{
		{
			name:        "one route blue/green",
			vs:          vsWith(route(dest("checkout", "blue", 90), dest("checkout", "green", 10))),
			want:        []weightRef{{0, 0, splitterv1.Blue}, {0, 1, splitterv1.Green}},
			wantManaged: []int{0},
		},
		{
			name: "two routes to the service and one to another host",
			vs: vsWith(
				route(dest("checkout", "blue", 90), dest("checkout.shop.svc.cluster.local", "green", 10)),
				route(dest("checkout.shop", "green", 10), dest("checkout.shop.svc", "blue", 90)),
				route(dest("cart", "blue", 50), dest("cart", "green", 50)),
			),
			want: []weightRef{
				{0, 0, splitterv1.Blue}, {0, 1, splitterv1.Green},
				{1, 0, splitterv1.Green}, {1, 1, splitterv1.Blue},
			},
			wantManaged: []int{0, 1},
		},
		{
			name: "other-host route first, service route second",
			vs: vsWith(
				route(dest("cart", "", 100)),
				route(dest("checkout", "blue", 0), dest("checkout", "green", 100)),
			),
			want:        []weightRef{{1, 0, splitterv1.Blue}, {1, 1, splitterv1.Green}},
			wantManaged: []int{1},
		},
		{
			name: "nil routes and destinations are skipped",
			vs: vsWith(
				nil,
				route(dest("checkout", "blue", 100), dest("checkout", "green", 0)),
			),
			want:        []weightRef{{1, 0, splitterv1.Blue}, {1, 1, splitterv1.Green}},
			wantManaged: []int{1},
		},
		{
			// Issue 8, 3b: a debug header route pinned to blue beside the
			// weighted route stalled the opt-in. It is the user's: left alone.
			name: "a header route pinned to blue beside the weighted route",
			vs: vsWith(
				named("debug", route(dest("checkout", "blue", 100))),
				named("primary", route(dest("checkout", "blue", 90), dest("checkout", "green", 10))),
			),
			want:        []weightRef{{1, 0, splitterv1.Blue}, {1, 1, splitterv1.Green}},
			wantManaged: []int{1},
			wantPinned:  []splitterv1.PinnedRoute{pinned("http[0] (name: debug)", splitterv1.Blue)},
		},
		{
			name: "pinned to green after the managed route, and the same color twice",
			vs: vsWith(
				route(dest("checkout", "blue", 100), dest("checkout", "green", 0)),
				route(dest("checkout", "green", 100)),
				route(dest("checkout", "blue", 50), dest("checkout.shop", "blue", 50)),
			),
			want:        []weightRef{{0, 0, splitterv1.Blue}, {0, 1, splitterv1.Green}},
			wantManaged: []int{0},
			wantPinned:  []splitterv1.PinnedRoute{pinned("http[1]", splitterv1.Green), pinned("http[2]", splitterv1.Blue)},
		},
		{
			name: "routes to another subset, no subset, or another host are left alone",
			vs: vsWith(
				route(dest("checkout", "canary", 100)),
				route(dest("checkout", "", 100)),
				route(dest("checkout", "blue", 50), dest("checkout", "green", 50)),
				route(dest("checkout.other.svc.cluster.local", "blue", 100)),
			),
			want:        []weightRef{{2, 0, splitterv1.Blue}, {2, 1, splitterv1.Green}},
			wantManaged: []int{2},
		},
		{
			name:      "only a route pinned to one color",
			vs:        vsWith(named("debug", route(dest("checkout", "blue", 100)))),
			wantField: "spec.http",
			wantMsg:   "routes to one color only (http[0] (name: debug) -> blue) are left alone",
		},
		{
			name:      "both colors and the same color again",
			vs:        vsWith(route(dest("checkout", "blue", 50), dest("checkout", "green", 25), dest("checkout", "blue", 25))),
			wantField: "spec.http[0].route",
			wantMsg:   "exactly two destinations",
		},
		{
			name:      "blue/green plus a third destination on another host",
			vs:        vsWith(named("main", route(dest("checkout", "blue", 80), dest("checkout", "green", 10), dest("cart", "", 10)))),
			wantField: "spec.http[0].route",
			wantMsg:   "route http[0] (name: main) carries both color subsets",
		},
		{
			name:      "blue/green plus another subset",
			vs:        vsWith(route(dest("checkout", "blue", 80), dest("checkout", "green", 10), dest("checkout", "canary", 10))),
			wantField: "spec.http[0].route",
		},
		{
			name:      "no route to the service",
			vs:        vsWith(route(dest("cart", "blue", 50), dest("cart", "green", 50))),
			wantField: "spec.http",
			wantMsg:   "no HTTP route sends traffic to checkout",
		},
		{
			name:      "no HTTP routes at all",
			vs:        vsWith(),
			wantField: "spec.http",
		},
		{
			name:      "service in another namespace is not the service",
			vs:        vsWith(route(dest("checkout.other.svc.cluster.local", "blue", 50), dest("checkout.other", "green", 50))),
			wantField: "spec.http",
		},
		{
			name: "named routes: exactly those, others with both colors left alone",
			vs: vsWith(
				named("mirror-test", route(dest("checkout", "blue", 50), dest("checkout", "green", 40), dest("cart", "", 10))),
				named("primary", route(dest("checkout", "blue", 90), dest("checkout", "green", 10))),
				named("debug", route(dest("checkout", "green", 100))),
				named("secondary", route(dest("checkout", "green", 10), dest("checkout", "blue", 90))),
			),
			names:       []string{"primary", "secondary"},
			want:        []weightRef{{1, 0, splitterv1.Blue}, {1, 1, splitterv1.Green}, {3, 0, splitterv1.Green}, {3, 1, splitterv1.Blue}},
			wantManaged: []int{1, 3},
			wantPinned:  []splitterv1.PinnedRoute{pinned("http[2] (name: debug)", splitterv1.Green)},
		},
		{
			name:      "a named route that does not exist",
			vs:        vsWith(named("primary", route(dest("checkout", "blue", 90), dest("checkout", "green", 10)))),
			names:     []string{"primary", "typo"},
			wantField: "spec.http",
			wantMsg:   `no HTTP route named "typo" (named by the splitter.dev/routes annotation`,
		},
		{
			name:      "a named route pinned to one color",
			vs:        vsWith(named("debug", route(dest("checkout", "blue", 100)))),
			names:     []string{"debug"},
			wantField: "spec.http[0].route",
			wantMsg:   "is named by the splitter.dev/routes annotation",
		},
		{
			name: "hosts without the service, bound to the mesh",
			vs: func() *networkingv1.VirtualService {
				vs := vsWith(route(dest("checkout", "blue", 100), dest("checkout", "green", 0)))
				vs.Spec.Hosts = []string{"cart"}
				return vs
			}(),
			wantField: "spec.hosts",
			wantMsg:   "add checkout to spec.hosts",
		},
		{
			name: "hosts without the service, bound to a gateway only: edge routing",
			vs: func() *networkingv1.VirtualService {
				vs := vsWith(route(dest("checkout", "blue", 100), dest("checkout", "green", 0)))
				vs.Spec.Hosts, vs.Spec.Gateways = []string{"shop.example.com"}, []string{"shop/public"}
				return vs
			}(),
			want:        []weightRef{{0, 0, splitterv1.Blue}, {0, 1, splitterv1.Green}},
			wantManaged: []int{0},
		},
		{
			name: "a wildcard host covers the service",
			vs: func() *networkingv1.VirtualService {
				vs := vsWith(route(dest("checkout", "blue", 100), dest("checkout", "green", 0)))
				vs.Spec.Hosts = []string{"*.shop.svc.cluster.local"}
				return vs
			}(),
			want:        []weightRef{{0, 0, splitterv1.Blue}, {0, 1, splitterv1.Green}},
			wantManaged: []int{0},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt, err := findRoutes(tc.vs, "checkout", tc.names)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				if !reflect.DeepEqual(rt.weights, tc.want) || !reflect.DeepEqual(rt.managed, tc.wantManaged) {
					t.Fatalf("weights %+v managed %v, want %+v %v", rt.weights, rt.managed, tc.want, tc.wantManaged)
				}
				if got := pinnedRoutes(tc.vs, rt.pins); !reflect.DeepEqual(got, tc.wantPinned) {
					t.Errorf("pinned %+v, want %+v", got, tc.wantPinned)
				}
				return
			}
			if rt != nil {
				t.Errorf("routes %+v alongside an error", rt)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want a *ConfigError", err, err)
			}
			if ce.Field != tc.wantField {
				t.Errorf("Field %q, want %q (%v)", ce.Field, tc.wantField, err)
			}
			if ce.Object != "VirtualService/checkout-vs" {
				t.Errorf("Object %q, want VirtualService/checkout-vs", ce.Object)
			}
			if !strings.Contains(ce.Error(), tc.wantField) || !strings.Contains(ce.Error(), tc.wantMsg) {
				t.Errorf("message %q, want it to name %q and contain %q", ce.Error(), tc.wantField, tc.wantMsg)
			}
		})
	}
}

func TestConfigErrorMessage(t *testing.T) {
	if got, want := (&ConfigError{Object: "VirtualService/a", Field: "spec.http", Msg: "bad"}).Error(), "VirtualService/a spec.http: bad"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if got, want := (&ConfigError{Object: "VirtualService/a", Msg: "bad"}).Error(), "VirtualService/a: bad"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

func TestReadWeights(t *testing.T) {
	for _, tc := range []struct {
		name           string
		vs             *networkingv1.VirtualService
		want           rollout.Weights
		wantConsistent bool
	}{
		{
			name:           "one route",
			vs:             vsWith(route(dest("checkout", "blue", 75), dest("checkout", "green", 25))),
			want:           rollout.Weights{Blue: 75, Green: 25},
			wantConsistent: true,
		},
		{
			name: "two routes agree, colors in different orders",
			vs: vsWith(
				route(dest("checkout", "blue", 75), dest("checkout", "green", 25)),
				route(dest("cart", "", 100)),
				route(dest("checkout", "green", 25), dest("checkout", "blue", 75)),
			),
			want:           rollout.Weights{Blue: 75, Green: 25},
			wantConsistent: true,
		},
		{
			name: "two routes disagree",
			vs: vsWith(
				route(dest("checkout", "blue", 75), dest("checkout", "green", 25)),
				route(dest("checkout", "blue", 50), dest("checkout", "green", 50)),
			),
			want:           rollout.Weights{Blue: 75, Green: 25}, // the first managed route's
			wantConsistent: false,
		},
		{
			name: "disagreement in one color only",
			vs: vsWith(
				route(dest("checkout", "blue", 100), dest("checkout", "green", 0)),
				route(dest("checkout", "blue", 100), dest("checkout", "green", 1)),
			),
			want:           rollout.Weights{Blue: 100},
			wantConsistent: false,
		},
		{
			name:           "weights not summing to 100 are read as they are",
			vs:             vsWith(route(dest("checkout", "blue", 3), dest("checkout", "green", 4))),
			want:           rollout.Weights{Blue: 3, Green: 4},
			wantConsistent: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refs, err := findWeights(tc.vs, "checkout")
			if err != nil {
				t.Fatal(err)
			}
			got, consistent := readWeights(tc.vs, refs)
			if got != tc.want || consistent != tc.wantConsistent {
				t.Errorf("readWeights = %s, %v; want %s, %v", got, consistent, tc.want, tc.wantConsistent)
			}
		})
	}
}

// richVS is a user's VirtualService with everything splitter must not touch:
// a header match, retries, timeouts, a route to another host, and a
// catch-all route to the Service by FQDN.
const richVS = `{
  "apiVersion": "networking.istio.io/v1",
  "kind": "VirtualService",
  "metadata": {
    "name": "checkout-vs",
    "namespace": "shop",
    "resourceVersion": "4242",
    "uid": "0d2c1c8e-0000-4000-8000-000000000001",
    "labels": {"team": "payments"},
    "annotations": {"note": "hand-written"}
  },
  "spec": {
    "hosts": ["checkout", "checkout.example.com"],
    "gateways": ["mesh", "shop/public"],
    "http": [
      {
        "name": "canary-header",
        "match": [{"headers": {"x-canary": {"exact": "1"}}, "uri": {"prefix": "/api"}}],
        "route": [
          {"destination": {"host": "checkout", "subset": "blue", "port": {"number": 80}}, "weight": 90},
          {"destination": {"host": "checkout", "subset": "green", "port": {"number": 80}}, "weight": 10,
           "headers": {"request": {"set": {"x-color": "green"}}}}
        ],
        "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,reset"},
        "timeout": "10s"
      },
      {
        "name": "legacy",
        "match": [{"uri": {"prefix": "/legacy"}}],
        "route": [{"destination": {"host": "legacy.shop.svc.cluster.local"}, "weight": 100}],
        "timeout": "30s"
      },
      {
        "name": "default",
        "route": [
          {"destination": {"host": "checkout.shop.svc.cluster.local", "subset": "green"}, "weight": 10},
          {"destination": {"host": "checkout.shop.svc.cluster.local", "subset": "blue"}, "weight": 90}
        ],
        "retries": {"attempts": 1},
        "timeout": "5s"
      }
    ]
  }
}`

func decodeVS(t *testing.T, doc []byte) *networkingv1.VirtualService {
	t.Helper()
	vs := &networkingv1.VirtualService{}
	if err := json.Unmarshal(doc, vs); err != nil {
		t.Fatalf("decoding VirtualService: %v", err)
	}
	return vs
}

func toMap(t *testing.T, doc []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// routeDest returns spec.http[i].route[j] of a decoded document.
func routeDest(t *testing.T, doc map[string]any, i, j int) map[string]any {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("spec.http[%d].route[%d] missing: %v", i, j, r)
		}
	}()
	return doc["spec"].(map[string]any)["http"].([]any)[i].(map[string]any)["route"].([]any)[j].(map[string]any)
}

func TestWeightPatchOps(t *testing.T) {
	refs := []weightRef{{0, 0, splitterv1.Blue}, {0, 1, splitterv1.Green}, {2, 1, splitterv1.Blue}, {2, 0, splitterv1.Green}}
	patch, err := weightPatch("4242", refs, rollout.Weights{Blue: 25, Green: 75})
	if err != nil {
		t.Fatal(err)
	}
	var ops []map[string]any
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatalf("patch %s is not a JSON array of objects: %v", patch, err)
	}
	want := []map[string]any{
		{"op": "test", "path": "/metadata/resourceVersion", "value": "4242"},
		{"op": "add", "path": "/spec/http/0/route/0/weight", "value": float64(25)},
		{"op": "add", "path": "/spec/http/0/route/1/weight", "value": float64(75)},
		{"op": "add", "path": "/spec/http/2/route/1/weight", "value": float64(25)},
		{"op": "add", "path": "/spec/http/2/route/0/weight", "value": float64(75)},
	}
	if !reflect.DeepEqual(ops, want) {
		t.Errorf("patch ops\n got %v\nwant %v", ops, want)
	}
	// The resourceVersion is compared as a string, as the API server stores it.
	if !bytes.Contains(patch, []byte(`"value":"4242"`)) {
		t.Errorf("patch %s: the test op's value must be the string \"4242\"", patch)
	}
}

func TestWeightPatchChangesOnlyWeights(t *testing.T) {
	vs := decodeVS(t, []byte(richVS))
	if vs.ResourceVersion != "4242" || len(vs.Spec.Http) != 3 || vs.Spec.Http[0].Retries == nil || vs.Spec.Http[0].Timeout == nil ||
		len(vs.Spec.Http[0].Match) != 1 || vs.Spec.Http[0].Match[0].Headers["x-canary"] == nil {
		t.Fatalf("fixture did not decode as intended: %+v", vs)
	}
	before, err := json.Marshal(vs)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := findWeights(vs, "checkout")
	if err != nil {
		t.Fatal(err)
	}
	wantRefs := []weightRef{{0, 0, splitterv1.Blue}, {0, 1, splitterv1.Green}, {2, 0, splitterv1.Green}, {2, 1, splitterv1.Blue}}
	if !reflect.DeepEqual(refs, wantRefs) {
		t.Fatalf("refs %+v, want %+v", refs, wantRefs)
	}
	w := rollout.Weights{Blue: 40, Green: 60}
	patch, err := weightPatch(vs.ResourceVersion, refs, w)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("DecodePatch(%s): %v", patch, err)
	}
	after, err := p.Apply(before)
	if err != nil {
		t.Fatalf("applying %s: %v", patch, err)
	}

	// The weights are the new ones...
	got := toMap(t, after)
	for _, r := range refs {
		if v := routeDest(t, got, r.route, r.dest)["weight"]; v != float64(w.Of(r.color)) {
			t.Errorf("spec.http[%d].route[%d].weight = %v, want %d", r.route, r.dest, v, w.Of(r.color))
		}
	}
	if v := routeDest(t, got, 1, 0)["weight"]; v != float64(100) {
		t.Errorf("the unrelated route's weight changed to %v", v)
	}
	// ...and the typed object reads them back.
	if rw, ok := readWeights(decodeVS(t, after), refs); !ok || rw != w {
		t.Errorf("readWeights after the patch = %s, %v; want %s, true", rw, ok, w)
	}

	// Everything else is as it was: put the new weights into the original
	// document and compare both, canonically re-encoded, byte for byte.
	expected := toMap(t, before)
	for _, r := range refs {
		routeDest(t, expected, r.route, r.dest)["weight"] = float64(w.Of(r.color))
	}
	if !reflect.DeepEqual(got, expected) {
		t.Errorf("the patch changed more than the weights\nbefore %s\nafter  %s", before, after)
	}
	gotBytes, _ := json.Marshal(got)
	wantBytes, _ := json.Marshal(expected)
	if !bytes.Equal(gotBytes, wantBytes) {
		t.Errorf("canonical encodings differ\n got %s\nwant %s", gotBytes, wantBytes)
	}

	// The untouched parts of the typed object are equal too.
	av := decodeVS(t, after)
	if !reflect.DeepEqual(av.ObjectMeta, vs.ObjectMeta) {
		t.Errorf("metadata changed: %+v -> %+v", vs.ObjectMeta, av.ObjectMeta)
	}
	for i := range vs.Spec.Http {
		b, a := vs.Spec.Http[i], av.Spec.Http[i]
		if b.Name != a.Name || b.Timeout.AsDuration() != a.Timeout.AsDuration() ||
			b.GetRetries().GetAttempts() != a.GetRetries().GetAttempts() ||
			b.GetRetries().GetPerTryTimeout().AsDuration() != a.GetRetries().GetPerTryTimeout().AsDuration() ||
			len(b.Match) != len(a.Match) || len(b.Route) != len(a.Route) {
			t.Errorf("spec.http[%d] changed: %v -> %v", i, b, a)
		}
	}
}

func TestWeightPatchFailsOnAnotherResourceVersion(t *testing.T) {
	vs := decodeVS(t, []byte(richVS))
	refs, err := findWeights(vs, "checkout")
	if err != nil {
		t.Fatal(err)
	}
	patch, err := weightPatch(vs.ResourceVersion, refs, rollout.Weights{Blue: 0, Green: 100})
	if err != nil {
		t.Fatal(err)
	}
	// Someone changed the object since it was read.
	vs.ResourceVersion = "4243"
	changed, err := json.Marshal(vs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := p.Apply(changed); err == nil {
		t.Fatalf("the patch applied to resourceVersion 4243: %s", out)
	} else if !errors.Is(err, jsonpatch.ErrTestFailed) {
		t.Errorf("error %v, want the test op to fail (ErrTestFailed)", err)
	}
	// And to an object without a resourceVersion.
	vs.ResourceVersion = ""
	bare, _ := json.Marshal(vs)
	if _, err := p.Apply(bare); err == nil {
		t.Error("the patch applied to an object without a resourceVersion")
	}
}

// TestWeightPatchOnZeroWeight applies a weights patch to the object
// splitter itself creates at {blue 100, green 0}: the Istio types omit a
// zero weight from JSON (omitempty), and a JSON-patch "replace" of a missing
// key fails (RFC 6902 4.3), so the patch uses "add".
func TestWeightPatchOnZeroWeight(t *testing.T) {
	owner := &splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: "shop", UID: "uid-1"}}
	vs := OwnedVirtualService(Target{Namespace: "shop", Service: "checkout", SubsetLabel: "track", Owner: owner}, rollout.Weights{Blue: 100})
	vs.ResourceVersion = "1"
	doc, err := json.Marshal(vs)
	if err != nil {
		t.Fatal(err)
	}
	if _, present := routeDest(t, toMap(t, doc), 0, 1)["weight"]; present {
		t.Log("zero weights are serialized by this Istio version; the patch must apply either way")
	}
	refs, err := findWeights(vs, "checkout")
	if err != nil {
		t.Fatal(err)
	}
	patch, err := weightPatch(vs.ResourceVersion, refs, rollout.Weights{Blue: 95, Green: 5})
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		t.Fatalf("the weights patch does not apply to %s: %v", doc, err)
	}
	if got := routeDest(t, toMap(t, out), 0, 1)["weight"]; got != float64(5) {
		t.Errorf("green's weight after the patch is %v, want 5", got)
	}
}

func testTarget() (Target, *splitterv1.Split) {
	owner := &splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Name: "checkout-split", Namespace: "shop", UID: types.UID("5f0a7a4e-1111-4222-8333-444455556666")}}
	return Target{Namespace: "shop", Service: "checkout", SubsetLabel: "track", Owner: owner}, owner
}

func checkOwned(t *testing.T, kind string, m metav1.ObjectMeta, owner *splitterv1.Split) {
	t.Helper()
	if m.Name != "checkout" || m.Namespace != "shop" {
		t.Errorf("%s is %s/%s, want shop/checkout", kind, m.Namespace, m.Name)
	}
	if !reflect.DeepEqual(m.Labels, map[string]string{ManagedByLabel: ManagedBy}) {
		t.Errorf("%s labels %v, want {%s: %s}", kind, m.Labels, ManagedByLabel, ManagedBy)
	}
	if len(m.OwnerReferences) != 1 {
		t.Fatalf("%s owner references %+v, want one", kind, m.OwnerReferences)
	}
	ref := m.OwnerReferences[0]
	if ref.APIVersion != "splitter.dev/v1alpha1" || ref.Kind != "Split" || ref.Name != owner.Name || ref.UID != owner.UID {
		t.Errorf("%s owner reference %+v, want Split %s (%s)", kind, ref, owner.Name, owner.UID)
	}
	if ref.Controller == nil || !*ref.Controller || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		t.Errorf("%s owner reference %+v, want controller and blockOwnerDeletion", kind, ref)
	}
	if !isOwnedBy(&m, owner) {
		t.Errorf("isOwnedBy(%s, owner) = false", kind)
	}
	other := &splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Name: owner.Name, Namespace: owner.Namespace, UID: "another-uid"}}
	if isOwnedBy(&m, other) {
		t.Errorf("isOwnedBy(%s, a Split with another UID) = true", kind)
	}
}

func TestOwnedVirtualService(t *testing.T) {
	target, owner := testTarget()
	for _, w := range []rollout.Weights{{Blue: 100}, {Blue: 90, Green: 10}, {Green: 100}} {
		t.Run(w.String(), func(t *testing.T) {
			vs := OwnedVirtualService(target, w)
			checkOwned(t, "VirtualService", vs.ObjectMeta, owner)
			if !reflect.DeepEqual(vs.Spec.Hosts, []string{"checkout"}) {
				t.Errorf("hosts %v, want [checkout]", vs.Spec.Hosts)
			}
			if len(vs.Spec.Http) != 1 || len(vs.Spec.Http[0].Route) != 2 {
				t.Fatalf("http %v, want one route with two destinations", vs.Spec.Http)
			}
			for j, want := range []struct {
				subset string
				weight int32
			}{{"blue", w.Blue}, {"green", w.Green}} {
				d := vs.Spec.Http[0].Route[j]
				if d.Destination.Host != "checkout" || d.Destination.Subset != want.subset || d.Weight != want.weight {
					t.Errorf("route[%d] = %s/%s %d, want checkout/%s %d", j, d.Destination.Host, d.Destination.Subset, d.Weight, want.subset, want.weight)
				}
			}
			// splitter can manage what it creates.
			refs, err := findWeights(vs, target.Service)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := readWeights(vs, refs); !ok || got != w {
				t.Errorf("readWeights = %s, %v; want %s, true", got, ok, w)
			}
		})
	}
}

func TestOwnedDestinationRule(t *testing.T) {
	target, owner := testTarget()
	target.SubsetLabel = "example.com/color"
	dr := OwnedDestinationRule(target)
	checkOwned(t, "DestinationRule", dr.ObjectMeta, owner)
	if dr.Spec.Host != "checkout" {
		t.Errorf("host %q, want checkout", dr.Spec.Host)
	}
	if len(dr.Spec.Subsets) != 2 {
		t.Fatalf("subsets %v, want two", dr.Spec.Subsets)
	}
	for i, c := range []string{"blue", "green"} {
		s := dr.Spec.Subsets[i]
		if s.Name != c || !reflect.DeepEqual(s.Labels, map[string]string{"example.com/color": c}) {
			t.Errorf("subset[%d] = %s %v, want %s {example.com/color: %s}", i, s.Name, s.Labels, c, c)
		}
	}
}

func TestTargetVSName(t *testing.T) {
	for _, tc := range []struct {
		t    Target
		want string
	}{
		{Target{Service: "checkout"}, "checkout"},
		{Target{Service: "checkout", VirtualService: "shop-routes"}, "shop-routes"},
	} {
		if got := tc.t.vsName(); got != tc.want {
			t.Errorf("%+v.vsName() = %q, want %q", tc.t, got, tc.want)
		}
	}
}

func TestColorSubsetRouted(t *testing.T) {
	vs := &networkingv1.VirtualService{Spec: networkingapi.VirtualService{Http: []*networkingapi.HTTPRoute{
		{Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "other"}}}},
		{Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "checkout", Subset: "green"}}}},
	}}}
	if got := ColorSubsetRouted(vs); got != "green" {
		t.Errorf("ColorSubsetRouted = %q, want green", got)
	}
	vs.Spec.Http[1].Route[0].Destination.Subset = ""
	if got := ColorSubsetRouted(vs); got != "" {
		t.Errorf("a route without color subsets: %q, want none", got)
	}
}
