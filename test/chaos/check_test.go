package chaos

import (
	"strings"
	"testing"
	"time"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// The observer's checks are code too: each invariant is shown a history
// that breaks it, and a clean one.
func TestCheckFindsEachViolation(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	const ns = "lane"
	dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Spec: networkingapi.DestinationRule{Host: "app", Subsets: []*networkingapi.Subset{{Name: "blue"}, {Name: "green"}}}}
	vs := func(blue, green int32) *networkingv1.VirtualService {
		return &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
			Spec: networkingapi.VirtualService{Hosts: []string{"app"}, Http: []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{
				{Destination: &networkingapi.Destination{Host: "app", Subset: "blue"}, Weight: blue},
				{Destination: &networkingapi.Destination{Host: "app", Subset: "green"}, Weight: green},
			}}}}}
	}
	dep := func(color string, replicas, ready int32) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-" + color},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To(replicas), Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{splitterv1.RevisionAnnotation: "r2"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Image: "img:" + color}}}}},
			Status: appsv1.DeploymentStatus{ReadyReplicas: ready, UpdatedReplicas: ready}}
	}
	twoRoutes := func(blue0, green0, blue1, green1 int32) *networkingv1.VirtualService {
		v := vs(blue0, green0)
		v.Spec.Http = append(v.Spec.Http, vs(blue1, green1).Spec.Http[0])
		return v
	}
	deleted := func(o client.Object) client.Object { return deletedObj{o} }
	split := func(phase splitterv1.Phase, verdict splitterv1.Verdict, outcome splitterv1.Outcome) *splitterv1.Split {
		s := &splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}}
		s.Status.Phase = phase
		if phase != splitterv1.PhaseIdle {
			s.Status.Candidate, s.Status.CandidateRevision = splitterv1.Green, "r2"
		}
		if verdict != "" {
			s.Status.Checks = []splitterv1.CheckResult{{Name: "availability", Verdict: verdict}}
		}
		if outcome != "" {
			reason := "CheckFailed"
			if outcome == splitterv1.OutcomePromoted {
				reason = "Promoted"
			}
			s.Status.History = []splitterv1.Release{{Revision: "r2", Outcome: outcome, Reason: reason, StartedAt: metav1.NewTime(t0)}}
		}
		return s
	}
	// A healthy release: opt-in, green up, 20%, 100%, promoted.
	healthy := []client.Object{
		dr, dep("blue", 2, 2), vs(100, 0),
		split(splitterv1.PhasePreparing, "", ""), dep("green", 2, 2),
		split(splitterv1.PhaseShifting, "", ""), vs(80, 20), vs(0, 100),
		split(splitterv1.PhasePromoting, "", splitterv1.OutcomePromoted),
	}
	gross := map[string]string{"img:green": kindGross}
	tests := []struct {
		name    string
		objs    []client.Object
		kinds   map[string]string
		bound   time.Duration
		wantErr string // "" means no violation
	}{
		{"healthy", healthy, map[string]string{"img:green": kindHealthy}, time.Hour, ""},
		{"weights not 100", []client.Object{dr, dep("blue", 2, 2), vs(90, 0)}, nil, time.Hour, "weights sum to 90"},
		{"unknown subset", []client.Object{dep("blue", 2, 2), vs(100, 0)}, nil, time.Hour, "which no DestinationRule defines"},
		{"weight to a color without Ready pods", []client.Object{dr, dep("blue", 2, 2), vs(100, 0), dep("green", 2, 0), vs(80, 20)}, nil, time.Hour, "no Ready pod"},
		{"weight to a color scaled to zero whose status is stale", []client.Object{dr, dep("blue", 2, 2), vs(100, 0), dep("green", 0, 2), vs(80, 20)}, nil, time.Hour, "no Ready pod"},
		{"routed color deleted", []client.Object{dr, dep("blue", 2, 2), dep("green", 2, 2), vs(80, 20), deleted(dep("green", 2, 2))}, nil, time.Hour, "deleted while green has weight 20"},
		{"weight rises in a second route after a Fail", []client.Object{
			dr, dep("blue", 2, 2), dep("green", 2, 2), twoRoutes(80, 20, 80, 20),
			split(splitterv1.PhaseShifting, splitterv1.VerdictFail, ""), twoRoutes(80, 20, 50, 50),
			split(splitterv1.PhaseRolledBack, "", splitterv1.OutcomeRolledBack),
		}, map[string]string{"img:green": kindHealthy}, time.Hour, "http[1]: candidate green's weight rose 20 -> 50"},
		{"a release twice in the history", append(append([]client.Object(nil), healthy[:8]...), func() client.Object {
			s := split(splitterv1.PhasePromoting, "", splitterv1.OutcomePromoted)
			s.Status.History = append(s.Status.History, s.Status.History[0])
			return s
		}()), map[string]string{"img:green": kindHealthy}, time.Hour, "in the history 2 times"},
		{"promoted, then snapped back in standby: one release", append(append([]client.Object(nil), healthy...), func() client.Object {
			s := split(splitterv1.PhaseRolledBack, "", splitterv1.OutcomePromoted)
			s.Status.History = append([]splitterv1.Release{{Revision: "r2", Outcome: splitterv1.OutcomeRolledBack, Reason: "WatchdogTripped", StartedAt: metav1.NewTime(t0)}}, s.Status.History...)
			return s
		}()), map[string]string{"img:green": kindHealthy}, time.Hour, ""},
		{"routed color scaled to zero", []client.Object{dr, dep("blue", 2, 2), vs(100, 0), dep("blue", 0, 2)}, nil, time.Hour, "scaled to zero while blue has weight 100"},
		{"weight rises after a Fail", []client.Object{
			dr, dep("blue", 2, 2), dep("green", 2, 2), vs(80, 20),
			split(splitterv1.PhaseShifting, splitterv1.VerdictFail, ""), vs(50, 50),
			split(splitterv1.PhaseRolledBack, "", splitterv1.OutcomeRolledBack),
		}, map[string]string{"img:green": kindHealthy}, time.Hour, "rose 20 -> 50 after a Fail verdict"},
		{"gross fault promoted", healthy, gross, time.Hour, "a gross fault was promoted"},
		{"release stuck", healthy[:8], map[string]string{"img:green": kindHealthy}, time.Hour, "stuck"},
		{"over its bound", healthy, map[string]string{"img:green": kindHealthy}, time.Second, "over its bound"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cs []change
			for i, o := range tc.objs {
				// Each change a second apart, in resourceVersion order.
				c := change{kind: "x", rv: uint64(i + 1), at: t0.Add(time.Duration(i) * time.Second), obj: o}
				if d, ok := o.(deletedObj); ok {
					c.obj, c.deleted = d.Object, true
				}
				cs = append(cs, c)
			}
			v := check(cs, runFacts{workload: "app", lanes: map[string]bool{ns: true}, bound: tc.bound,
				faulted: func(from, to time.Time) time.Duration { return 0 }, kinds: tc.kinds}, t0.Add(time.Hour))
			got := strings.Join(v.violations, "\n")
			if tc.wantErr == "" && got != "" {
				t.Errorf("violations in a clean history:\n%s", got)
			}
			if tc.wantErr != "" && !strings.Contains(got, tc.wantErr) {
				t.Errorf("violations %q, want one saying %q", got, tc.wantErr)
			}
		})
	}
}

// deletedObj marks an object of a test history as deleted.
type deletedObj struct{ client.Object }

// Overlapping faults count once, and only within the release.
func TestCovered(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	spans := [][2]time.Time{{at(0), at(10)}, {at(5), at(15)}, {at(20), at(25)}, {at(40), at(60)}}
	for _, tc := range []struct {
		from, to int
		want     time.Duration
	}{
		{0, 30, 20 * time.Second},   // [0,15] and [20,25]
		{12, 22, 5 * time.Second},   // [12,15] and [20,22]
		{30, 35, 0},                 // between faults
		{50, 100, 10 * time.Second}, // [50,60]
	} {
		if got := covered(append([][2]time.Time(nil), spans...), at(tc.from), at(tc.to)); got != tc.want {
			t.Errorf("covered [%d, %d] = %s, want %s", tc.from, tc.to, got, tc.want)
		}
	}
}
