package mesh

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// userDR is a user's DestinationRule for host, with the subsets by label.
func userDR(name, host, label string, subsets ...string) *networkingv1.DestinationRule {
	dr := &networkingv1.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec:       networkingapi.DestinationRule{Host: host},
	}
	for _, s := range subsets {
		dr.Spec.Subsets = append(dr.Spec.Subsets, &networkingapi.Subset{Name: s, Labels: map[string]string{label: s}})
	}
	return dr
}

// TestDestinationRuleByHost: the DestinationRule is found by host, not by
// name; splitter creates its own only when none has the host.
func TestDestinationRuleByHost(t *testing.T) {
	target, owner := testTarget()
	for _, tc := range []struct {
		name      string
		objs      []client.Object
		wantOwned bool   // splitter's own DestinationRule exists afterwards
		wantField string // non-empty: a *ConfigError with this Field
		wantMsg   string
	}{
		{name: "none: splitter creates its own", wantOwned: true},
		{
			name: "the user's, under another name, FQDN host",
			objs: []client.Object{userDR("checkout-subsets", "checkout.shop.svc.cluster.local", "track", "blue", "green")},
		},
		{
			name:      "one for another host does not count",
			objs:      []client.Object{userDR("cart", "cart", "track", "blue", "green"), userDR("checkout-other", "checkout.other.svc.cluster.local", "track")},
			wantOwned: true,
		},
		{
			name:      "the user's without the subsets",
			objs:      []client.Object{userDR("checkout-tls", "checkout.shop", "track")},
			wantField: "spec.subsets", wantMsg: `DestinationRule/checkout-tls spec.subsets: sets host checkout and needs a subset "blue" with labels {track: blue}`,
		},
		{
			name:      "the user's with subsets by another label",
			objs:      []client.Object{userDR("checkout-subsets", "checkout", "version", "blue", "green")},
			wantField: "spec.subsets", wantMsg: "{track: blue}",
		},
		{
			name:      "two of the user's for the same host",
			objs:      []client.Object{userDR("a", "checkout", "track", "blue", "green"), userDR("b", "checkout.shop.svc", "track", "blue", "green")},
			wantField: "spec.host", wantMsg: "DestinationRules a, b all set host checkout",
		},
		{
			name:      "splitter's and the user's",
			objs:      []client.Object{OwnedDestinationRule(target), userDR("mine", "checkout", "track", "blue", "green")},
			wantField: "spec.host", wantMsg: "(splitter's: it is not re-created while another exists)",
			wantOwned: true,
		},
		{
			name:      "the Service's name taken by one for another host",
			objs:      []client.Object{userDR("checkout", "cart", "track", "blue", "green")},
			wantField: "spec.host", wantMsg: "has host cart, not checkout",
		},
		{
			name: "the Service's name taken by one for another host, and the user's for the host",
			objs: []client.Object{userDR("checkout", "cart", "track", "blue", "green"), userDR("checkout-subsets", "checkout", "track", "blue", "green")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := fake.NewClientBuilder().WithScheme(fakeScheme(t)).WithObjects(tc.objs...).Build()
			var before networkingv1.DestinationRuleList
			if err := api.List(context.Background(), &before); err != nil {
				t.Fatal(err)
			}
			err := NewIstio(api).Ensure(context.Background(), target)
			if tc.wantField == "" && err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			if tc.wantField != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || ce.Field != tc.wantField || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("Ensure = %v, want a ConfigError on %s containing %q", err, tc.wantField, tc.wantMsg)
				}
			}
			var after networkingv1.DestinationRuleList
			if err := api.List(context.Background(), &after); err != nil {
				t.Fatal(err)
			}
			owned := false
			for _, dr := range after.Items {
				if isOwnedBy(dr, owner) {
					owned = true
					continue
				}
				// The user's are never written.
				for _, b := range before.Items {
					if b.Name == dr.Name && b.ResourceVersion != dr.ResourceVersion {
						t.Errorf("the user's DestinationRule %s was written", dr.Name)
					}
				}
			}
			if owned != tc.wantOwned {
				t.Errorf("splitter's DestinationRule exists: %v, want %v", owned, tc.wantOwned)
			}
		})
	}
}

// debugVS is a user's VirtualService: a debug header route pinned to blue
// before the weighted route.
func debugVS() *networkingv1.VirtualService {
	debug := named("debug", route(dest("checkout", "blue", 100)))
	debug.Match = []*networkingapi.HTTPMatchRequest{{Headers: map[string]*networkingapi.StringMatch{
		"x-debug": {MatchType: &networkingapi.StringMatch_Exact{Exact: "1"}},
	}}}
	vs := vsWith(debug, named("primary", route(dest("checkout", "blue", 100), dest("checkout", "green", 0))))
	vs.ResourceVersion = ""
	return vs
}

func TestPinColors(t *testing.T) {
	for _, tc := range []struct {
		st               splitterv1.SplitStatus
		wantFollow, keep splitterv1.Color
	}{
		{st: splitterv1.SplitStatus{}},
		{st: splitterv1.SplitStatus{Phase: splitterv1.PhaseIdle, Live: splitterv1.Blue}, wantFollow: splitterv1.Blue},
		// During a release, a route pinned to the candidate is the user's
		// way to try it: kept.
		{st: splitterv1.SplitStatus{Phase: splitterv1.PhaseShifting, Live: splitterv1.Blue, Candidate: splitterv1.Green}, wantFollow: splitterv1.Blue, keep: splitterv1.Green},
		{st: splitterv1.SplitStatus{Phase: splitterv1.PhasePreparing, Live: splitterv1.Green, Candidate: splitterv1.Blue}, wantFollow: splitterv1.Green, keep: splitterv1.Blue},
		{st: splitterv1.SplitStatus{Phase: splitterv1.PhaseAwaitingApproval, Live: splitterv1.Blue, Candidate: splitterv1.Green}, wantFollow: splitterv1.Blue, keep: splitterv1.Green},
		// Promoted: green is live, blue on standby; pinned routes move to green.
		{st: splitterv1.SplitStatus{Phase: splitterv1.PhasePromoting, Live: splitterv1.Green, Standby: splitterv1.Blue}, wantFollow: splitterv1.Green},
		// Snapping back or snapped back: the candidate is going away.
		{st: splitterv1.SplitStatus{Phase: splitterv1.PhaseRollingBack, Live: splitterv1.Blue, Candidate: splitterv1.Green}, wantFollow: splitterv1.Blue},
		{st: splitterv1.SplitStatus{Phase: splitterv1.PhaseRolledBack, Live: splitterv1.Blue, Candidate: splitterv1.Green}, wantFollow: splitterv1.Blue},
	} {
		if f, k := PinColors(tc.st); f != tc.wantFollow || k != tc.keep {
			t.Errorf("PinColors(%s live %s candidate %s) = %q, %q; want %q, %q", tc.st.Phase, tc.st.Live, tc.st.Candidate, f, k, tc.wantFollow, tc.keep)
		}
	}
}

// TestPinnedRoutes: a route pinned to one color is reported and left
// alone through weight writes; with Follow set, it moves to that color in
// the same write as the weights, and only its subset changes.
func TestPinnedRoutes(t *testing.T) {
	ctx := context.Background()
	base, _ := testTarget()
	base.VirtualService = "checkout-vs"
	for _, tc := range []struct {
		name         string
		follow, keep splitterv1.Color
		w            rollout.Weights
		wantSubset   string // the debug route's subset afterwards
		wantWrites   int
	}{
		{name: "left alone", w: rollout.Weights{Blue: 90, Green: 10}, wantSubset: "blue", wantWrites: 1},
		{name: "left alone at promotion", w: rollout.Weights{Green: 100}, wantSubset: "blue", wantWrites: 1},
		{name: "follows the live color with the weights", follow: splitterv1.Green, w: rollout.Weights{Green: 100}, wantSubset: "green", wantWrites: 1},
		{name: "follows with the weights already routed", follow: splitterv1.Green, w: rollout.Weights{Blue: 100}, wantSubset: "green", wantWrites: 1},
		{name: "already on the live color: nothing to write", follow: splitterv1.Blue, w: rollout.Weights{Blue: 100}, wantSubset: "blue", wantWrites: 0},
		{name: "kept on the candidate", follow: splitterv1.Green, keep: splitterv1.Blue, w: rollout.Weights{Blue: 100}, wantSubset: "blue", wantWrites: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := debugVS()
			api := fake.NewClientBuilder().WithScheme(fakeScheme(t)).WithObjects(in, OwnedDestinationRule(base)).Build()
			writes := 0
			r := NewIstio(api)
			r.OnWrite = func(kind string, err error) {
				if kind == KindVirtualService && err == nil {
					writes++
				}
			}
			tg := base
			tg.Follow, tg.Keep = tc.follow, tc.keep

			g, err := r.Inspect(ctx, tg)
			if err != nil {
				t.Fatal(err)
			}
			wantPinned := []splitterv1.PinnedRoute{{Route: "http[0] (name: debug)", Color: splitterv1.Blue}}
			if !reflect.DeepEqual(g.Managed, []string{"http[1] (name: primary)"}) || !reflect.DeepEqual(g.Pinned, wantPinned) {
				t.Errorf("Inspect: managed %v pinned %+v, want [http[1] (name: primary)] %+v", g.Managed, g.Pinned, wantPinned)
			}
			if g.Weights == nil || *g.Weights != (rollout.Weights{Blue: 100}) {
				t.Errorf("Inspect weights %v, want blue 100", g.Weights)
			}
			if got, want := g.PinsToMove(tg), tc.wantWrites > 0 && tc.wantSubset != "blue"; got != want {
				t.Errorf("PinsToMove = %v, want %v", got, want)
			}

			if err := r.SetWeights(ctx, tg, tc.w); err != nil {
				t.Fatal(err)
			}
			if writes != tc.wantWrites {
				t.Errorf("%d VirtualService writes, want %d", writes, tc.wantWrites)
			}
			out := &networkingv1.VirtualService{}
			if err := api.Get(ctx, client.ObjectKeyFromObject(in), out); err != nil {
				t.Fatal(err)
			}
			if got := out.Spec.Http[0].Route[0].Destination.Subset; got != tc.wantSubset {
				t.Errorf("the debug route's subset is %q, want %q", got, tc.wantSubset)
			}
			// Nothing else of the debug route changes: its match and weight.
			want := debugVS().Spec.Http[0]
			got := out.Spec.Http[0]
			got.Route[0].Destination.Subset = "blue"
			if !proto.Equal(got, want) {
				t.Errorf("the debug route changed beyond its subset: %v, want %v", got, want)
			}
			if w, _ := readWeights(out, []weightRef{{1, 0, splitterv1.Blue}, {1, 1, splitterv1.Green}}); w != tc.w {
				t.Errorf("primary routes %s, want %s", w, tc.w)
			}
		})
	}
}

// TestWeightPatchMovesPins: the subset move is a replace of that one member.
func TestWeightPatchMovesPins(t *testing.T) {
	patch, err := weightPatch("7", nil, rollout.Weights{}, pinMove{route: 2, dest: 1, to: splitterv1.Green})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"test","path":"/metadata/resourceVersion","value":"7"},{"op":"replace","path":"/spec/http/2/route/1/destination/subset","value":"green"}]`
	if string(patch) != want {
		t.Errorf("patch %s, want %s", patch, want)
	}
}

func TestPinnedNotLive(t *testing.T) {
	debug := []splitterv1.PinnedRoute{{Route: "http[0] (name: debug)", Color: splitterv1.Blue}}
	idleBlue := splitterv1.SplitStatus{Phase: splitterv1.PhaseIdle, Live: splitterv1.Blue, PinnedRoutes: debug}
	shifting := splitterv1.SplitStatus{Phase: splitterv1.PhaseShifting, Live: splitterv1.Blue, Candidate: splitterv1.Green, PinnedRoutes: debug}
	promoted := splitterv1.SplitStatus{Phase: splitterv1.PhasePromoting, Live: splitterv1.Green, Standby: splitterv1.Blue, PinnedRoutes: debug}
	idleGreen := splitterv1.SplitStatus{Phase: splitterv1.PhaseIdle, Live: splitterv1.Green, PinnedRoutes: debug}
	toGreen := []splitterv1.PinnedRoute{{Route: "http[0] (name: debug)", Color: splitterv1.Green}}
	for _, tc := range []struct {
		name        string
		before, now splitterv1.SplitStatus
		want        string // substring; "" for no warning
	}{
		{name: "pinned to the live color", before: idleBlue, now: shifting},
		{name: "a release starts", before: idleBlue, now: shifting},
		{name: "promotion leaves the route on the standby color", before: shifting, now: promoted, want: "(green is): http[0] (name: debug) -> blue"},
		{name: "said once", before: promoted, now: idleGreen},
		{name: "the user moves it", before: idleGreen, now: splitterv1.SplitStatus{Phase: splitterv1.PhaseIdle, Live: splitterv1.Green, PinnedRoutes: toGreen}},
		{name: "pinned to the candidate during a release", before: idleBlue, now: splitterv1.SplitStatus{Phase: splitterv1.PhaseShifting, Live: splitterv1.Blue, Candidate: splitterv1.Green, PinnedRoutes: toGreen}},
		{name: "pinned to a candidate that was rolled back", before: splitterv1.SplitStatus{Phase: splitterv1.PhaseShifting, Live: splitterv1.Blue, Candidate: splitterv1.Green, PinnedRoutes: toGreen},
			now: splitterv1.SplitStatus{Phase: splitterv1.PhaseRollingBack, Live: splitterv1.Blue, Candidate: splitterv1.Green, PinnedRoutes: toGreen}, want: "-> green"},
		{name: "found at opt-in", now: idleGreen, want: splitterv1.PinnedRoutesFollowLive},
		{name: "before adoption", now: splitterv1.SplitStatus{PinnedRoutes: debug}},
	} {
		got := PinnedNotLive(tc.before, tc.now)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: PinnedNotLive = %q, want %q", tc.name, got, tc.want)
		}
	}
}
