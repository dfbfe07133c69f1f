package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
	"splitter.dev/splitter/test/testbed"
)

// sloPolicy judges on counts only; steps are long so that what catches a
// fault mid-step can only be the watchdog.
func sloPolicy(ns string, steps []int32, stepDuration time.Duration) *splitterv1.SplitPolicy {
	return &splitterv1.SplitPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "slo", Namespace: ns},
		Spec: splitterv1.SplitPolicySpec{
			Steps:            steps,
			StepDuration:     &metav1.Duration{Duration: stepDuration},
			Standby:          &metav1.Duration{Duration: 5 * time.Second},
			ProgressDeadline: &metav1.Duration{Duration: time.Minute},
			SLOs:             []splitterv1.SLO{{Name: "availability", Objective: "99.5"}},
			MaxExtensions:    ptr.To(int32(1)),
			OnInconclusive:   "pause",
		},
	}
}

// A green with 30% errors is snapped back by the watchdog within a few
// scrapes, long before its step would have ended.
func TestWatchdogSnapsBackGrossFault(t *testing.T) {
	t.Parallel()
	watchdogSnapsBack(t, testbed.Shared(t))
}

func watchdogSnapsBack(t *testing.T, tb *testbed.TestBed) {
	ns := tb.Namespace(t, "watchdog")
	tb.Create(t, sloPolicy(ns, []int32{20, 100}, 2*time.Minute))
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "slo")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:bad", map[string]string{"meshsim.splitter.dev/error-rate": "0.3"})
	shifting := waitPhase(t, tb, ns, splitterv1.PhaseShifting, time.Minute, func(s *splitterv1.Split) error {
		if s.Status.StepStartedAt == nil {
			return fmt.Errorf("hold not started")
		}
		return nil
	})
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, time.Minute, nil)
	h := s.Status.History[0]
	if h.Reason != rollout.ReasonWatchdog || !strings.Contains(h.Message, "availability") {
		t.Errorf("history %+v, want a WatchdogTripped snap-back naming availability", h)
	}
	held := h.FinishedAt.Sub(shifting.Status.StepStartedAt.Time)
	t.Logf("snapped back %s after the step's hold began (the step lasts 2m): %s", held, h.Message)
	if w, err := routedWeights(context.Background(), tb, ns); err != nil || w != (rollout.Weights{Blue: 100}) {
		t.Errorf("routed %s (%v), want blue 100", w, err)
	}
}

// A healthy service with 1 request per second never gathers the evidence
// a step needs: it is extended, then paused with the reason in status,
// never promoted.
func TestLowTrafficPausesInsteadOfPromoting(t *testing.T) {
	t.Parallel()
	lowTrafficPauses(t, testbed.Shared(t))
}

func lowTrafficPauses(t *testing.T, tb *testbed.TestBed) {
	ns := tb.Namespace(t, "low-traffic")
	tb.Create(t, sloPolicy(ns, []int32{50, 100}, 5*time.Second))
	startSplitter(t, tb, ns)
	svc := service(ns, "app", map[string]string{"app": "app"})
	svc.Annotations = map[string]string{"meshsim.splitter.dev/rps": "1"}
	tb.Create(t, svc)
	d := deployment(ns, "app", 2, map[string]string{"app": "app"}, nil)
	d.Annotations = map[string]string{splitterv1.PolicyAnnotation: "slo"}
	tb.Create(t, d)
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:2", nil)
	s := waitPhase(t, tb, ns, splitterv1.PhaseAwaitingApproval, 2*time.Minute, nil)
	if !strings.Contains(s.Status.Gate, "paused-step-1") {
		t.Errorf("gate %q, want the pause at step 1", s.Status.Gate)
	}
	var avail *splitterv1.CheckResult
	for i := range s.Status.Checks {
		if s.Status.Checks[i].Name == "availability" {
			avail = &s.Status.Checks[i]
		}
	}
	// At 1 req/s a color may get a few requests since the step's baseline,
	// or none at all (a Poisson count of a few): either way the verdict
	// says the requests are too few.
	if avail == nil || avail.Verdict != splitterv1.VerdictInconclusive ||
		!(strings.Contains(avail.Message, "requests needed") || strings.Contains(avail.Message, "no requests since the step's baseline") ||
			strings.Contains(avail.Message, "requests to compare")) {
		t.Errorf("availability verdict %+v, want Inconclusive saying more requests are needed", avail)
	}
	if h := s.Status.History; len(h) > 0 && h[0].Outcome == splitterv1.OutcomePromoted {
		t.Errorf("promoted without evidence: %+v", h[0])
	}
	// Events are written after the status, by the recorder's own
	// goroutine: wait a little for it (CI once listed them too soon).
	testbed.Eventually(t, 10*time.Second, 200*time.Millisecond, "a Paused Event with the reason", func(ctx context.Context) error {
		var events corev1.EventList
		if err := tb.Client.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Reason == rollout.ReasonPaused && strings.Contains(e.Message, "no verdict") {
				return nil
			}
		}
		return fmt.Errorf("none among %d Events", len(events.Items))
	})
}
