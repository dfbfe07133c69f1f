package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
	"splitter.dev/splitter/test/testbed"
)

// splitterBinary is the real binary (testbed.SplitterBinary).
func splitterBinary(t testing.TB) string { return testbed.SplitterBinary(t) }

// controllerProcess is a running `splitter run`, watching one namespace
// with its own leader-election Lease there, so tests run side by side.
type controllerProcess struct {
	*testbed.Process
	metricsAddr string
}

func startSplitter(t testing.TB, tb *testbed.TestBed, ns string) *controllerProcess {
	t.Helper()
	return startSplitterAs(t, tb, ns, tb.ControllerKubeconfig)
}

// fastPolicy suits the test bed: 1 s scrapes, 100 req/s.
func fastPolicy(ns, name string, steps []int32, checks ...splitterv1.Check) *splitterv1.SplitPolicy {
	if checks == nil {
		checks = []splitterv1.Check{
			{Name: "success-rate", Builtin: splitterv1.BuiltinSuccessRate, Min: ptr.To("0.95")},
			{Name: "latency-p99", Builtin: splitterv1.BuiltinLatencyP99, Max: ptr.To("500")},
		}
	}
	return &splitterv1.SplitPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: splitterv1.SplitPolicySpec{
			Steps:            steps,
			StepDuration:     &metav1.Duration{Duration: 8 * time.Second},
			Standby:          &metav1.Duration{Duration: 8 * time.Second},
			ProgressDeadline: &metav1.Duration{Duration: time.Minute},
			Checks:           checks,
		},
	}
}

// optedIn creates Service "app" and the annotated Deployment "app" (3 replicas).
func optedIn(t testing.TB, tb *testbed.TestBed, ns, policy string) *appsv1.Deployment {
	t.Helper()
	tb.Create(t, service(ns, "app", map[string]string{"app": "app"}))
	d := deployment(ns, "app", 3, map[string]string{"app": "app"}, nil)
	d.Annotations = map[string]string{splitterv1.PolicyAnnotation: policy}
	tb.Create(t, d)
	return d
}

func getSplit(ctx context.Context, tb *testbed.TestBed, ns string) (*splitterv1.Split, error) {
	s := &splitterv1.Split{}
	return s, tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, s)
}

// waitPhase waits until the Split reaches phase (and, if cond, cond holds).
func waitPhase(t testing.TB, tb *testbed.TestBed, ns string, phase splitterv1.Phase, timeout time.Duration, cond func(*splitterv1.Split) error) *splitterv1.Split {
	t.Helper()
	var s *splitterv1.Split
	testbed.Eventually(t, timeout, 250*time.Millisecond, "phase "+string(phase), func(ctx context.Context) (err error) {
		if s, err = getSplit(ctx, tb, ns); err != nil {
			return err
		}
		if s.Status.Phase != phase {
			return fmt.Errorf("phase %s step %d weight %d", s.Status.Phase, s.Status.Step, s.Status.Weight)
		}
		if cond != nil {
			return cond(s)
		}
		return nil
	})
	return s
}

func readyCondition(s *splitterv1.Split) error {
	if !meta.IsStatusConditionTrue(s.Status.Conditions, rollout.ConditionReady) {
		c := meta.FindStatusCondition(s.Status.Conditions, rollout.ConditionReady)
		return fmt.Errorf("not Ready: %+v", c)
	}
	return nil
}

// routedWeights reads the VirtualService the router writes.
func routedWeights(ctx context.Context, tb *testbed.TestBed, ns string) (rollout.Weights, error) {
	vs := &networkingv1.VirtualService{}
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, vs); err != nil {
		return rollout.Weights{}, err
	}
	var w rollout.Weights
	for _, d := range vs.Spec.Http[0].Route {
		if d.Destination.Subset == "blue" {
			w.Blue = d.Weight
		} else {
			w.Green = d.Weight
		}
	}
	return w, nil
}

// release changes the pod template, with extra pod annotations.
func release(t testing.TB, tb *testbed.TestBed, ns, image string, ann map[string]string) {
	t.Helper()
	d := &appsv1.Deployment{}
	ctx := context.Background()
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, d); err != nil {
		t.Fatal(err)
	}
	base := d.DeepCopy()
	d.Spec.Template.Spec.Containers[0].Image = image
	if d.Spec.Template.Annotations == nil {
		d.Spec.Template.Annotations = map[string]string{}
	}
	for k, v := range ann {
		d.Spec.Template.Annotations[k] = v
	}
	if err := tb.Client.Patch(ctx, d, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
}

func colorReplicas(ctx context.Context, tb *testbed.TestBed, ns string, c splitterv1.Color) (int32, error) {
	d := &appsv1.Deployment{}
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app-" + string(c)}, d); err != nil {
		return 0, err
	}
	return *d.Spec.Replicas, nil
}

func TestHealthyReleasePromoted(t *testing.T) {
	t.Parallel()
	healthyReleasePromoted(t, testbed.Shared(t))
}

func healthyReleasePromoted(t *testing.T, tb *testbed.TestBed) {
	ns := tb.Namespace(t, "promote")
	tb.Create(t, fastPolicy(ns, "fast", []int32{20, 100}))
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:2", nil)
	s := waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
	if s.Status.Live != splitterv1.Green || s.Status.Standby != splitterv1.Blue {
		t.Fatalf("promoted to live %s, standby %s; want green live, blue standby", s.Status.Live, s.Status.Standby)
	}
	if h := s.Status.History; len(h) == 0 || h[0].Outcome != splitterv1.OutcomePromoted {
		t.Fatalf("history %+v, want a Promoted entry first", h)
	}
	for _, c := range s.Status.Checks {
		if c.Verdict != splitterv1.VerdictPass {
			t.Errorf("check %s: %s (%s)", c.Name, c.Verdict, c.Message)
		}
	}
	// Standby keeps blue up; then it is scaled to zero.
	if n, err := colorReplicas(context.Background(), tb, ns, splitterv1.Blue); err != nil || n != 3 {
		t.Errorf("blue has %d replicas during standby (%v), want 3", n, err)
	}
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, time.Minute, readyCondition)
	testbed.Eventually(t, 30*time.Second, 250*time.Millisecond, "blue scaled to zero", func(ctx context.Context) error {
		if n, err := colorReplicas(ctx, tb, ns, splitterv1.Blue); err != nil || n != 0 {
			return fmt.Errorf("blue replicas %d (%v)", n, err)
		}
		return nil
	})
	if w, err := routedWeights(context.Background(), tb, ns); err != nil || w != (rollout.Weights{Green: 100}) {
		t.Errorf("routed %s (%v), want green 100", w, err)
	}
}

// faultRelease releases a bad version and checks it is snapped back with
// the failing check named.
func faultRelease(t *testing.T, tb *testbed.TestBed, prefix string, ann map[string]string, wantCheck string) {
	ns := tb.Namespace(t, prefix)
	tb.Create(t, fastPolicy(ns, "fast", []int32{20, 50, 100}))
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:bad", ann)
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 2*time.Minute, nil)
	h := s.Status.History[0]
	if h.Outcome != splitterv1.OutcomeRolledBack || h.Reason != rollout.ReasonCheckFailed || !strings.Contains(h.Message, wantCheck) {
		t.Errorf("history %+v, want RolledBack by CheckFailed naming %s", h, wantCheck)
	}
	if h.Step != 1 {
		t.Errorf("rolled back at step %d, want at the first step", h.Step)
	}
	if c := meta.FindStatusCondition(s.Status.Conditions, rollout.ConditionSLOsMet); c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, wantCheck) {
		t.Errorf("SLOsMet %+v, want False naming %s", c, wantCheck)
	}
	if w, err := routedWeights(context.Background(), tb, ns); err != nil || w != (rollout.Weights{Blue: 100}) {
		t.Errorf("routed %s (%v), want blue 100", w, err)
	}
	testbed.Eventually(t, 30*time.Second, 250*time.Millisecond, "candidate scaled to zero", func(ctx context.Context) error {
		if n, err := colorReplicas(ctx, tb, ns, splitterv1.Green); err != nil || n != 0 {
			return fmt.Errorf("green replicas %d (%v)", n, err)
		}
		return nil
	})
}

func TestErrorFaultSnapsBack(t *testing.T) {
	t.Parallel()
	faultRelease(t, testbed.Shared(t), "errors", map[string]string{"meshsim.splitter.dev/error-rate": "0.3"}, "success-rate")
}

func TestLatencyFaultSnapsBack(t *testing.T) {
	t.Parallel()
	faultRelease(t, testbed.Shared(t), "slow", map[string]string{"meshsim.splitter.dev/latency-ms": "400"}, "latency-p99")
}

// The controller is killed with SIGKILL mid-release and restarted: the
// release resumes at its step, and the weights never go backwards or skip.
func TestControllerKilledMidRelease(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "crash")
	tb.Create(t, fastPolicy(ns, "fast", []int32{10, 30, 60, 100}))
	ctrl := startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	// Record every weight the VirtualService shows, all along, starting
	// with a reading taken before the release.
	var mu sync.Mutex
	w0, err := routedWeights(context.Background(), tb, ns)
	if err != nil {
		t.Fatal(err)
	}
	seen := []int32{w0.Green}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if w, err := routedWeights(context.Background(), tb, ns); err == nil {
				mu.Lock()
				if len(seen) == 0 || seen[len(seen)-1] != w.Green {
					seen = append(seen, w.Green)
				}
				mu.Unlock()
			}
		}
	}()
	defer func() { close(stop); <-done }()

	release(t, tb, ns, "example.com/app:2", nil)
	before := waitPhase(t, tb, ns, splitterv1.PhaseShifting, 2*time.Minute, func(s *splitterv1.Split) error {
		if s.Status.Step != 2 || s.Status.StepStartedAt == nil {
			return fmt.Errorf("step %d", s.Status.Step)
		}
		return nil
	})
	ctrl.Kill()
	time.Sleep(3 * time.Second)
	after, err := getSplit(context.Background(), tb, ns)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status.Step != before.Status.Step || after.Status.Weight != 30 {
		t.Fatalf("while the controller was dead the step moved: %d -> %d", before.Status.Step, after.Status.Step)
	}
	startSplitter(t, tb, ns)
	waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)

	mu.Lock()
	defer mu.Unlock()
	want := []int32{0, 10, 30, 60, 100}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("green's weights over the release %v, want exactly %v (no step skipped or repeated)", seen, want)
	}
}

// An invalid policy stalls the Split with the field path, leaves traffic
// where it is, and the release resumes once the policy is fixed.
func TestInvalidPolicyLeavesTrafficUntouched(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "invalid-policy")
	pol := fastPolicy(ns, "fast", []int32{20, 100})
	pol.Spec.StepDuration.Duration = 30 * time.Second
	tb.Create(t, pol)
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
	release(t, tb, ns, "example.com/app:2", nil)
	waitPhase(t, tb, ns, splitterv1.PhaseShifting, time.Minute, func(s *splitterv1.Split) error {
		if w, err := routedWeights(context.Background(), tb, ns); err != nil || w.Green != 20 {
			return fmt.Errorf("routed %s (%v)", w, err)
		}
		return nil
	})

	// The CRD admits this template; compiling it fails on the unknown field.
	ctx := context.Background()
	if err := tb.Client.Get(ctx, client.ObjectKeyFromObject(pol), pol); err != nil {
		t.Fatal(err)
	}
	pol.Spec.Checks = append(pol.Spec.Checks, splitterv1.Check{Name: "custom", Query: `sum(up{pod="{{ .Pod }}"})`, Max: ptr.To("1")})
	if err := tb.Client.Update(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, tb, ns, splitterv1.PhaseShifting, 30*time.Second, func(s *splitterv1.Split) error {
		c := meta.FindStatusCondition(s.Status.Conditions, rollout.ConditionStalled)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "spec.checks[2].query") {
			return fmt.Errorf("Stalled %+v, want True naming spec.checks[2].query", c)
		}
		return nil
	})
	time.Sleep(5 * time.Second)
	if w, err := routedWeights(ctx, tb, ns); err != nil || w.Green != 20 {
		t.Fatalf("routing changed while stalled: %s (%v), want green 20", w, err)
	}

	if err := tb.Client.Get(ctx, client.ObjectKeyFromObject(pol), pol); err != nil {
		t.Fatal(err)
	}
	pol.Spec.Checks = pol.Spec.Checks[:2]
	pol.Spec.StepDuration.Duration = 5 * time.Second
	if err := tb.Client.Update(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
}

// A policy that does not exist stalls the Split before anything is created.
func TestMissingPolicyCreatesNothing(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "no-policy")
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "absent")
	testbed.Eventually(t, 60*time.Second, 250*time.Millisecond, "Stalled PolicyNotFound", func(ctx context.Context) error {
		s, err := getSplit(ctx, tb, ns)
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(s.Status.Conditions, rollout.ConditionStalled)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != "PolicyNotFound" {
			return fmt.Errorf("Stalled %+v", c)
		}
		return nil
	})
	ctx := context.Background()
	d := &appsv1.Deployment{}
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, d); err != nil || *d.Spec.Replicas != 3 {
		t.Errorf("user's Deployment changed: replicas %v (%v)", d.Spec.Replicas, err)
	}
	var vss networkingv1.VirtualServiceList
	if err := tb.Client.List(ctx, &vss, client.InNamespace(ns)); err != nil || len(vss.Items) != 0 {
		t.Errorf("%d VirtualServices created (%v), want none", len(vss.Items), err)
	}
}

// Removing the annotation gives the user's Deployment its replicas back,
// routes to it, and removes only what splitter created.
func TestOptOutRestoresDeployment(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "optout")
	tb.Create(t, fastPolicy(ns, "fast", []int32{100}))
	startSplitter(t, tb, ns)
	user := optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
	ctx := context.Background()
	testbed.Eventually(t, 30*time.Second, 250*time.Millisecond, "user's Deployment scaled to zero", func(ctx context.Context) error {
		if err := tb.Client.Get(ctx, client.ObjectKeyFromObject(user), user); err != nil || *user.Spec.Replicas != 0 {
			return fmt.Errorf("replicas %v (%v)", user.Spec.Replicas, err)
		}
		return nil
	})

	base := user.DeepCopy()
	delete(user.Annotations, splitterv1.PolicyAnnotation)
	if err := tb.Client.Patch(ctx, user, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, 90*time.Second, 250*time.Millisecond, "opt-out complete", func(ctx context.Context) error {
		if _, err := getSplit(ctx, tb, ns); err == nil {
			return fmt.Errorf("the Split still exists")
		}
		for _, name := range []string{"app-blue", "app-green"} {
			if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &appsv1.Deployment{}); err == nil {
				return fmt.Errorf("%s still exists", name)
			}
		}
		return nil
	})
	if err := tb.Client.Get(ctx, client.ObjectKeyFromObject(user), user); err != nil || *user.Spec.Replicas != 3 || user.Status.ReadyReplicas != 3 {
		t.Errorf("user's Deployment: replicas %v, ready %d (%v); want 3/3", user.Spec.Replicas, user.Status.ReadyReplicas, err)
	}
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, &networkingv1.VirtualService{}); err == nil {
		t.Error("splitter's VirtualService survived opt-out")
	}
	svc := service(ns, "app", nil)
	if err := tb.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Errorf("the user's Service is gone: %v", err)
	}
	// Traffic reaches the user's own pods again (counted from now on).
	time.Sleep(2 * time.Second)
	if counts := countOver(t, tb, ns, "", 5*time.Second); counts["app"] < 200 {
		t.Errorf("requests to the user's Deployment over 5s after opt-out: %v, want about 500", counts)
	}
}
