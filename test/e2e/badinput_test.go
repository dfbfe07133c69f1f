package e2e

// A user's own VirtualService as users write them (a debug header route
// pinned to one color beside the weighted route), and bad input in the
// middle of a release: what the user sees and what happens to traffic, on
// the test bed (real API server, kwok pods, the mesh simulator routing by
// the VirtualService, Prometheus counting). Bad input before a release is
// internal/controller's TestBadInput (envtest): it needs no traffic.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
	"splitter.dev/splitter/test/meshsim"
	"splitter.dev/splitter/test/testbed"
)

// userRoutes is the user's VirtualService "app-routes": requests with
// x-debug: 1 pinned to blue, the rest weighted.
func userRoutes(ns string) *networkingv1.VirtualService {
	return &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "app-routes", Namespace: ns},
		Spec: networkingapi.VirtualService{Hosts: []string{"app"}, Http: []*networkingapi.HTTPRoute{
			{
				Name: "debug",
				Match: []*networkingapi.HTTPMatchRequest{{Headers: map[string]*networkingapi.StringMatch{
					"x-debug": {MatchType: &networkingapi.StringMatch_Exact{Exact: "1"}},
				}}},
				Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "app", Subset: "blue"}}},
			},
			{
				Name: "primary",
				Route: []*networkingapi.HTTPRouteDestination{
					{Destination: &networkingapi.Destination{Host: "app", Subset: "blue"}, Weight: 100},
					{Destination: &networkingapi.Destination{Host: "app", Subset: "green"}, Weight: 0},
				},
			},
		}},
	}
}

// userSubsets is the user's DestinationRule for app under another name.
func userSubsets(ns string) *networkingv1.DestinationRule {
	return &networkingv1.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{Name: "app-subsets", Namespace: ns},
		Spec: networkingapi.DestinationRule{Host: "app." + ns + ".svc.cluster.local", Subsets: []*networkingapi.Subset{
			{Name: "blue", Labels: map[string]string{"track": "blue"}},
			{Name: "green", Labels: map[string]string{"track": "green"}},
		}},
	}
}

// optedInWithRoutes opts "app" in with the user's VirtualService and
// DestinationRule; half the requests carry x-debug: 1.
func optedInWithRoutes(t *testing.T, tb *testbed.TestBed, ns, policy string, ann map[string]string) {
	t.Helper()
	svc := service(ns, "app", map[string]string{"app": "app"})
	svc.Annotations = map[string]string{meshsim.TrafficAnnotation: `[{"weight":1},{"weight":1,"headers":{"x-debug":"1"}}]`}
	tb.Create(t, svc)
	tb.Create(t, userRoutes(ns))
	tb.Create(t, userSubsets(ns))
	d := deployment(ns, "app", 3, map[string]string{"app": "app"}, nil)
	d.Annotations = map[string]string{splitterv1.PolicyAnnotation: policy, splitterv1.VirtualServiceAnnotation: "app-routes"}
	for k, v := range ann {
		d.Annotations[k] = v
	}
	tb.Create(t, d)
}

func getRoutes(ctx context.Context, tb *testbed.TestBed, ns string) (*networkingv1.VirtualService, error) {
	vs := &networkingv1.VirtualService{}
	return vs, tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app-routes"}, vs)
}

// primaryWeights reads the weights of the user's weighted route.
func primaryWeights(vs *networkingv1.VirtualService) rollout.Weights {
	var w rollout.Weights
	for _, d := range vs.Spec.Http[1].Route {
		switch d.Destination.Subset {
		case "blue":
			w.Blue = d.Weight
		case "green":
			w.Green = d.Weight
		}
	}
	return w
}

// hasEvent says whether the Split "app" has a Warning Event of reason.
func hasEvent(ctx context.Context, tb *testbed.TestBed, ns, reason, inNote string) error {
	var list eventsv1.EventList
	if err := tb.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, ev := range list.Items {
		if ev.Reason == reason && ev.Type == "Warning" && ev.Regarding.Kind == "Split" && strings.Contains(ev.Note, inNote) {
			return nil
		}
	}
	return fmt.Errorf("no Warning %s Event with %q among %d", reason, inNote, len(list.Items))
}

// TestUserVirtualServicePinnedRoute (issue 8, 3b): splitter manages the
// weighted route of the user's VirtualService and leaves the debug route
// pinned to blue exactly as it is; the mesh routes debug requests to blue
// through the whole release. After the promotion they still go to blue
// (now the standby color), with a Warning Event, unless the Deployment
// asks for follow-live: then they go to green from the promotion on.
func TestUserVirtualServicePinnedRoute(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	for _, tc := range []struct {
		name   string
		ann    map[string]string
		follow bool
	}{
		{name: "left alone"},
		{name: "follow-live", ann: map[string]string{splitterv1.PinnedRoutesAnnotation: splitterv1.PinnedRoutesFollowLive}, follow: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := tb.Namespace(t, "pinned")
			pol := fastPolicy(ns, "fast", []int32{50, 100})
			// The 50% step outlasts its measurement; the promoted state is
			// measured during the standby.
			pol.Spec.StepDuration.Duration = 20 * time.Second
			pol.Spec.Standby.Duration = 2 * time.Minute
			tb.Create(t, pol)
			startSplitter(t, tb, ns)
			optedInWithRoutes(t, tb, ns, "fast", tc.ann)
			s := waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
			if want := "[http[1] (name: primary)]"; fmt.Sprint(s.Status.Routes) != want {
				t.Errorf("status.routes %v, want %s", s.Status.Routes, want)
			}
			if p := s.Status.PinnedRoutes; len(p) != 1 || p[0].Route != "http[0] (name: debug)" || p[0].Color != splitterv1.Blue {
				t.Errorf("status.pinnedRoutes %+v, want the debug route on blue", p)
			}
			ctx := context.Background()
			if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, &networkingv1.DestinationRule{}); err == nil {
				t.Error("splitter created a DestinationRule beside the user's app-subsets")
			}

			release(t, tb, ns, "example.com/app:2", nil)
			waitPhase(t, tb, ns, splitterv1.PhaseShifting, time.Minute, func(s *splitterv1.Split) error {
				if s.Status.Weight != 50 {
					return fmt.Errorf("weight %d", s.Status.Weight)
				}
				vs, err := getRoutes(ctx, tb, ns)
				if err != nil || primaryWeights(vs) != (rollout.Weights{Blue: 50, Green: 50}) {
					return fmt.Errorf("routes %v (%v)", vs.Spec.Http, err)
				}
				return nil
			})
			// Debug requests (half) all go to blue, the rest half and
			// half: blue 75%, green 25%.
			time.Sleep(2 * tb.ScrapeInterval())
			counts := countOver(t, tb, ns, "", 4*time.Second)
			pct, n := share(counts, "app-blue")
			t.Logf("at 50%%: blue served %.1f%% of %.0f requests (%v)", pct, n, counts)
			if tol := binomialTolerance(0.75, n); pct < 75-tol || pct > 75+tol {
				t.Errorf("at 50%%, blue served %.1f%% of %.0f requests, want 75%% ± %.1f (the debug half pinned to blue): %v", pct, n, tol, counts)
			}

			waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
			wantSubset, wantBlue := "blue", 50.0
			if tc.follow {
				wantSubset, wantBlue = "green", 0
			}
			testbed.Eventually(t, 30*time.Second, 250*time.Millisecond, "the debug route on "+wantSubset, func(ctx context.Context) error {
				vs, err := getRoutes(ctx, tb, ns)
				if err != nil {
					return err
				}
				if got := vs.Spec.Http[0].Route[0].Destination.Subset; got != wantSubset || primaryWeights(vs) != (rollout.Weights{Green: 100}) {
					return fmt.Errorf("debug route on %s, primary %s", got, primaryWeights(vs))
				}
				return nil
			})
			time.Sleep(2 * tb.ScrapeInterval())
			counts = countOver(t, tb, ns, "", 4*time.Second)
			pct, n = share(counts, "app-blue")
			t.Logf("promoted: blue served %.1f%% of %.0f requests (%v)", pct, n, counts)
			if tol := binomialTolerance(max(wantBlue, 1)/100, n); pct < wantBlue-tol || pct > wantBlue+tol {
				t.Errorf("promoted, blue served %.1f%% of %.0f requests, want %.0f%% ± %.1f: %v", pct, n, wantBlue, tol, counts)
			}
			if !tc.follow {
				testbed.Eventually(t, 10*time.Second, 250*time.Millisecond, "the PinnedRouteNotLive Event", func(ctx context.Context) error {
					return hasEvent(ctx, tb, ns, "PinnedRouteNotLive", "http[0] (name: debug) -> blue")
				})
			}
		})
	}
}

// TestBadInputMidRelease: objects deleted by hand in the middle of a
// release (at 20%, a 30 s step).
func TestBadInputMidRelease(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	midRelease := func(t *testing.T, prefix string, userVS bool) string {
		t.Helper()
		ns := tb.Namespace(t, prefix)
		pol := fastPolicy(ns, "fast", []int32{20, 100})
		pol.Spec.StepDuration.Duration = 30 * time.Second
		tb.Create(t, pol)
		startSplitter(t, tb, ns)
		if userVS {
			optedInWithRoutes(t, tb, ns, "fast", nil)
		} else {
			optedIn(t, tb, ns, "fast")
		}
		waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
		release(t, tb, ns, "example.com/app:2", nil)
		waitPhase(t, tb, ns, splitterv1.PhaseShifting, time.Minute, func(s *splitterv1.Split) error {
			if c := meta.FindStatusCondition(s.Status.Conditions, rollout.ConditionWeightsApplied); s.Status.Weight != 20 || c == nil || c.Status != metav1.ConditionTrue {
				return fmt.Errorf("weight %d, WeightsApplied %+v", s.Status.Weight, c)
			}
			return nil
		})
		return ns
	}
	del := func(t *testing.T, obj client.Object) {
		t.Helper()
		if err := tb.Client.Delete(context.Background(), obj); err != nil {
			t.Fatalf("deleting %s: %v", obj.GetName(), err)
		}
	}

	t.Run("splitter's VirtualService deleted", func(t *testing.T) {
		t.Parallel()
		ns := midRelease(t, "del-vs", false)
		del(t, &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}})
		// Re-created at the step's weights; the release goes on.
		testbed.Eventually(t, 15*time.Second, 100*time.Millisecond, "the VirtualService back at 80/20", func(ctx context.Context) error {
			w, err := routedWeights(ctx, tb, ns)
			if err != nil || w != (rollout.Weights{Blue: 80, Green: 20}) {
				return fmt.Errorf("routed %s (%v)", w, err)
			}
			return nil
		})
		waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
	})

	t.Run("the user's VirtualService deleted", func(t *testing.T) {
		t.Parallel()
		ns := midRelease(t, "del-user-vs", true)
		del(t, &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-routes"}})
		const msg = "VirtualService/app-routes: not found (named by the splitter.dev/virtual-service annotation)"
		waitPhase(t, tb, ns, splitterv1.PhaseShifting, 30*time.Second, func(s *splitterv1.Split) error {
			if c := meta.FindStatusCondition(s.Status.Conditions, rollout.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue || c.Message != msg {
				return fmt.Errorf("Stalled %+v", c)
			}
			return nil
		})
		testbed.Eventually(t, 10*time.Second, 250*time.Millisecond, "the RoutingConflict Event", func(ctx context.Context) error {
			return hasEvent(ctx, tb, ns, "RoutingConflict", msg)
		})
		// splitter never creates a VirtualService in place of the user's.
		var list networkingv1.VirtualServiceList
		if err := tb.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil || len(list.Items) != 0 {
			t.Errorf("%d VirtualServices (%v), want none while the user's is gone", len(list.Items), err)
		}
		// The user applies it again (from Git: blue 100): splitter takes
		// it back to the step's weights and the release goes on.
		tb.Create(t, userRoutes(ns))
		testbed.Eventually(t, 30*time.Second, 100*time.Millisecond, "the user's VirtualService at 80/20", func(ctx context.Context) error {
			vs, err := getRoutes(ctx, tb, ns)
			if err != nil || primaryWeights(vs) != (rollout.Weights{Blue: 80, Green: 20}) {
				return fmt.Errorf("routes (%v)", err)
			}
			return nil
		})
		waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
	})

	t.Run("the live color's Deployment deleted", func(t *testing.T) {
		t.Parallel()
		ns := midRelease(t, "del-live", false)
		del(t, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-blue"}})
		// blue cannot be re-created (its template is no longer the
		// workload's): the Ready candidate takes all traffic at once, and
		// the release ends there, recorded and announced as such.
		s := waitPhase(t, tb, ns, splitterv1.PhaseIdle, time.Minute, func(s *splitterv1.Split) error {
			if s.Status.Live != splitterv1.Green {
				return fmt.Errorf("live %s", s.Status.Live)
			}
			return nil
		})
		if h := s.Status.History; len(h) == 0 || h[0].Reason != rollout.ReasonLiveLost || h[0].Outcome != splitterv1.OutcomePromoted {
			t.Errorf("history %+v, want LiveColorLost (promoted) first", h)
		}
		testbed.Eventually(t, 15*time.Second, 100*time.Millisecond, "green at 100%", func(ctx context.Context) error {
			if w, err := routedWeights(ctx, tb, ns); err != nil || w != (rollout.Weights{Green: 100}) {
				return fmt.Errorf("routed %s (%v)", w, err)
			}
			return nil
		})
		testbed.Eventually(t, 10*time.Second, 250*time.Millisecond, "the LiveColorLost Event", func(ctx context.Context) error {
			return hasEvent(ctx, tb, ns, rollout.ReasonLiveLost, "blue's Deployment was deleted during the release")
		})
	})

	t.Run("the candidate's Deployment deleted", func(t *testing.T) {
		t.Parallel()
		ns := midRelease(t, "del-candidate", false)
		del(t, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-green"}})
		// No Ready candidate pod: all traffic snaps back to blue, said in
		// the history and an Event.
		s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, time.Minute, nil)
		if h := s.Status.History; len(h) == 0 || h[0].Reason != rollout.ReasonCandidateUnavailable {
			t.Errorf("history %+v, want CandidateUnavailable first", h)
		}
		if w, err := routedWeights(context.Background(), tb, ns); err != nil || w != (rollout.Weights{Blue: 100}) {
			t.Errorf("routed %s (%v), want blue 100", w, err)
		}
		testbed.Eventually(t, 10*time.Second, 250*time.Millisecond, "the snap-back Event", func(ctx context.Context) error {
			return hasEvent(ctx, tb, ns, rollout.ReasonCandidateUnavailable, "green has no Ready pod")
		})
		// Recovery: the next template is released to a re-created green.
		release(t, tb, ns, "example.com/app:3", nil)
		waitPhase(t, tb, ns, splitterv1.PhaseShifting, 2*time.Minute, func(s *splitterv1.Split) error {
			if s.Status.Candidate != splitterv1.Green {
				return fmt.Errorf("candidate %s", s.Status.Candidate)
			}
			return nil
		})
	})
}
