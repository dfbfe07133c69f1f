package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
	"splitter.dev/splitter/test/testbed"
)

// The verdicts under the conditions of a real cluster: Prometheus scrapes
// every 15 s (TESTBED_SCRAPE_INTERVAL when it is slower), pods are
// deleted and recreated mid-step, Prometheus stops answering, a policy
// turns invalid mid-release. These tests get a test bed of their own; its
// subtests run side by side and it is torn down when they all end.
func TestAtRealScrapeIntervals(t *testing.T) {
	testbed.Shared(t) // skips, or fails under make test, without the tools
	cfg, err := testbed.ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ScrapeInterval < 15*time.Second {
		cfg.ScrapeInterval = 15 * time.Second
	}
	tb := testbed.StartOwn(t, cfg, "15 s test bed")
	t.Logf("test bed scraping every %s", tb.ScrapeInterval())
	t.Run("HealthyReleasePromotedThroughPodChurn", func(t *testing.T) { t.Parallel(); healthyThroughPodChurn(t, tb) })
	t.Run("PrometheusOutageMidStep", func(t *testing.T) { t.Parallel(); prometheusOutage(t, tb) })
	t.Run("InvalidPolicyMidReleaseStillSnapsBack", func(t *testing.T) { t.Parallel(); invalidPolicyStillSnapsBack(t, tb) })
}

// slowSLOPolicy: availability and latency SLOs, two steps long enough for
// 100 req/s at 15 s scrapes (splitter policy lint --rps 100
// --scrape-interval 15s says a minute suffices at 50%).
func slowSLOPolicy(ns string) *splitterv1.SplitPolicy {
	return &splitterv1.SplitPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "slo", Namespace: ns},
		Spec: splitterv1.SplitPolicySpec{
			Steps:            []int32{50, 100},
			StepDuration:     &metav1.Duration{Duration: time.Minute},
			Standby:          &metav1.Duration{Duration: 20 * time.Second},
			ProgressDeadline: &metav1.Duration{Duration: 2 * time.Minute},
			SLOs: []splitterv1.SLO{
				{Name: "availability", Objective: "99.5"},
				{Name: "latency", Objective: "99", Threshold: &metav1.Duration{Duration: 250 * time.Millisecond}},
			},
			MaxExtensions: ptr.To(int32(2)),
		},
	}
}

// deletePod deletes one Ready pod of a color (its ReplicaSet recreates it:
// a new pod, new counter series, the old ones gone).
func deletePod(t *testing.T, tb *testbed.TestBed, ns string, c splitterv1.Color) string {
	t.Helper()
	var pods corev1.PodList
	if err := tb.Client.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{"track": string(c)}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			if err := tb.Client.Delete(context.Background(), &p); err != nil {
				t.Fatal(err)
			}
			return p.Name
		}
	}
	t.Fatalf("no %s pod to delete", c)
	return ""
}

// optedInUnder creates a namespace with the policy, a controller and the
// opted-in workload, and waits for it to be Idle.
func optedInUnder(t *testing.T, tb *testbed.TestBed, prefix string, pol func(ns string) *splitterv1.SplitPolicy) string {
	t.Helper()
	ns := tb.Namespace(t, prefix)
	tb.Create(t, pol(ns))
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "slo")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 2*time.Minute, readyCondition)
	return ns
}

// waitStepEvidence waits until step 1's evidence has begun: its weights
// confirmed, then settled (two scrapes; the controller holds the settled
// evidence in memory and writes it with the next transition, see
// rollout.StatusWriteDue, so the status does not show it yet).
func waitStepEvidence(t *testing.T, tb *testbed.TestBed, ns string) {
	t.Helper()
	waitPhase(t, tb, ns, splitterv1.PhaseShifting, 2*time.Minute, func(s *splitterv1.Split) error {
		if s.Status.Step < 1 || s.Status.StepStartedAt == nil || !meta.IsStatusConditionTrue(s.Status.Conditions, rollout.ConditionWeightsApplied) {
			return fmt.Errorf("step 1's weights are not confirmed")
		}
		return nil
	})
	time.Sleep(2*tb.ScrapeInterval() + time.Second)
}

func checkOf(s *splitterv1.Split, name string) *splitterv1.CheckResult {
	for i := range s.Status.Checks {
		if s.Status.Checks[i].Name == name {
			return &s.Status.Checks[i]
		}
	}
	return nil
}

// A healthy release under availability and latency SLOs is promoted while
// a green and a blue pod are deleted and recreated in the middle of its
// first step; the latency SLO is judged on Prometheus' histogram.
func healthyThroughPodChurn(t *testing.T, tb *testbed.TestBed) {
	ns := optedInUnder(t, tb, "churn", slowSLOPolicy)
	release(t, tb, ns, "example.com/app:2", nil)
	waitStepEvidence(t, tb, ns)
	time.Sleep(20 * time.Second)
	t.Logf("deleted %s and %s mid-step", deletePod(t, tb, ns, splitterv1.Green), deletePod(t, tb, ns, splitterv1.Blue))

	var step1 *splitterv1.Split
	waitPhase(t, tb, ns, splitterv1.PhaseShifting, 5*time.Minute, func(s *splitterv1.Split) error {
		if s.Status.Step < 2 {
			return fmt.Errorf("still at step %d", s.Status.Step)
		}
		step1 = s
		return nil
	})
	lat := checkOf(step1, "latency")
	if lat == nil || lat.Verdict != splitterv1.VerdictPass || lat.Step != 1 || !strings.Contains(lat.Message, "green ") {
		t.Errorf("step 1's latency verdict %+v, want a Pass judged on counts", lat)
	}
	s := waitPhase(t, tb, ns, splitterv1.PhasePromoting, 6*time.Minute, nil)
	if h := s.Status.History; len(h) == 0 || h[0].Outcome != splitterv1.OutcomePromoted {
		t.Fatalf("history %+v, want Promoted", h)
	}
	for _, c := range s.Status.Checks {
		if c.Verdict != splitterv1.VerdictPass {
			t.Errorf("check %s %s: %s", c.Name, c.Verdict, c.Message)
		}
	}
}

// Prometheus stops answering for 30 s in the middle of a step: the looks
// in between are Errors for themselves only; the release goes on and is
// promoted, with no rollback.
func prometheusOutage(t *testing.T, tb *testbed.TestBed) {
	ns := optedInUnder(t, tb, "outage", slowSLOPolicy)
	release(t, tb, ns, "example.com/app:2", nil)
	waitStepEvidence(t, tb, ns)
	time.Sleep(10 * time.Second)
	// SIGSTOP: Prometheus neither answers nor scrapes, as when it hangs.
	if err := tb.SignalProcess("prometheus", syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	time.Sleep(30 * time.Second)
	if err := tb.SignalProcess("prometheus", syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("Prometheus stopped for %s mid-step", time.Since(stopped).Round(time.Second))
	s := waitPhase(t, tb, ns, splitterv1.PhasePromoting, 8*time.Minute, nil)
	for _, h := range s.Status.History {
		if h.Outcome != splitterv1.OutcomePromoted {
			t.Errorf("history %+v: want only the promotion", h)
		}
	}
}

// A policy made invalid in the middle of a release with a faulty green:
// the Split stalls, but the watchdog keeps judging with the last valid
// plan and snaps back.
func invalidPolicyStillSnapsBack(t *testing.T, tb *testbed.TestBed) {
	ns := optedInUnder(t, tb, "stalled", func(ns string) *splitterv1.SplitPolicy {
		pol := slowSLOPolicy(ns)
		pol.Spec.StepDuration = &metav1.Duration{Duration: 10 * time.Minute}
		return pol
	})

	release(t, tb, ns, "example.com/app:bad", map[string]string{"meshsim.splitter.dev/error-rate": "0.3"})
	waitPhase(t, tb, ns, splitterv1.PhaseShifting, 2*time.Minute, nil)
	// At once, before the first scrape with green's errors can be judged:
	// a field the CRD admits and the controller refuses.
	ctx := context.Background()
	testbed.Eventually(t, 30*time.Second, 100*time.Millisecond, "an invalid policy", func(ctx context.Context) error {
		p := &splitterv1.SplitPolicy{}
		if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "slo"}, p); err != nil {
			return err
		}
		p.Spec.Watchdog = &splitterv1.Watchdog{Alpha: "0.01"}
		return tb.Client.Update(ctx, p)
	})
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 3*time.Minute, nil)
	if h := s.Status.History; len(h) == 0 || h[0].Reason != rollout.ReasonWatchdog {
		t.Fatalf("history %+v, want a watchdog snap-back", h)
	}
	stalled := meta.FindStatusCondition(s.Status.Conditions, rollout.ConditionStalled)
	if stalled == nil || stalled.Status != metav1.ConditionTrue || stalled.Reason != "PolicyInvalid" {
		t.Errorf("Stalled %+v, want True with PolicyInvalid", stalled)
	} else if stalled.LastTransitionTime.After(s.Status.History[0].FinishedAt.Time) {
		t.Errorf("stalled at %s, snapped back at %s: the stall did not come first", stalled.LastTransitionTime, s.Status.History[0].FinishedAt)
	}
	if w, err := routedWeights(ctx, tb, ns); err != nil || w != (rollout.Weights{Blue: 100}) {
		t.Errorf("routed %s (%v), want blue 100", w, err)
	}
}
