package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
	"splitter.dev/splitter/test/meshsim"
	"splitter.dev/splitter/test/testbed"
)

// The verdicts on both Prometheus versions users run. The shared test bed
// runs the default (3.x, built from its module); this test starts a second
// test bed on TESTBED_PROMETHEUS_LEGACY (Debian's 2.42) and runs the
// verdict tests' bodies on it side by side (about 40 s of the package's
// time): 3.x normalises `le` on ingestion and left-opened range selectors,
// and a verdict must not depend on either.
func TestVerdictsOnLegacyPrometheus(t *testing.T) {
	t.Parallel()
	shared := testbed.Shared(t) // skips, or fails under make test, without the tools
	cfg, err := testbed.ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case cfg.PrometheusLegacy == "" && os.Getenv(testbed.RequireEnv) == "1":
		t.Fatal("TESTBED_PROMETHEUS_LEGACY is unset: run through `make test`, which sets it")
	case cfg.PrometheusLegacy == "":
		t.Skip("TESTBED_PROMETHEUS_LEGACY is unset")
	case cfg.PrometheusLegacy == cfg.Prometheus:
		t.Skipf("the shared test bed already runs %s (PROMETHEUS_FLAVOR=debian)", cfg.Prometheus)
	}
	cfg.Prometheus = cfg.PrometheusLegacy
	tb := testbed.StartOwn(t, cfg, "legacy Prometheus test bed")
	vShared, err := shared.PrometheusVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vLegacy, err := tb.PrometheusVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shared test bed on Prometheus %s, this one on %s (%s)", vShared, vLegacy, cfg.Prometheus)
	if vShared == vLegacy {
		t.Fatalf("both test beds run Prometheus %s: nothing is compared", vShared)
	}

	t.Run("WatchdogSnapsBackGrossFault", func(t *testing.T) { t.Parallel(); watchdogSnapsBack(t, tb) })
	t.Run("LatencySLOFaultSnapsBack", func(t *testing.T) { t.Parallel(); latencySLOSnapsBack(t, tb) })
	t.Run("ErrorFaultSnapsBack", func(t *testing.T) {
		t.Parallel()
		faultRelease(t, tb, "errors", map[string]string{meshsim.ErrorRateAnnotation: "0.3"}, "success-rate")
	})
	t.Run("LatencyFaultSnapsBack", func(t *testing.T) {
		t.Parallel()
		faultRelease(t, tb, "slow", map[string]string{meshsim.LatencyAnnotation: "400"}, "latency-p99")
	})
	t.Run("HealthyReleasePromoted", func(t *testing.T) { t.Parallel(); healthyReleasePromoted(t, tb) })
	t.Run("LowTrafficPausesInsteadOfPromoting", func(t *testing.T) { t.Parallel(); lowTrafficPauses(t, tb) })
}

// TestLatencySLOFaultSnapsBack: the latency SLO is read from the
// histogram's threshold bucket, whose `le` Prometheus 3 spells 250.0 and
// a Go target 250; a green slower than the threshold is snapped back.
func TestLatencySLOFaultSnapsBack(t *testing.T) {
	t.Parallel()
	latencySLOSnapsBack(t, testbed.Shared(t))
}

// latencySLOSnapsBack: a green four times slower than the latency SLO's
// threshold is snapped back by the watchdog naming latency: the threshold
// bucket was found (a missing one is an error, never a verdict).
func latencySLOSnapsBack(t *testing.T, tb *testbed.TestBed) {
	ns := tb.Namespace(t, "latency-slo")
	pol := sloPolicy(ns, []int32{20, 100}, 2*time.Minute)
	pol.Spec.SLOs = append(pol.Spec.SLOs, splitterv1.SLO{Name: "latency", Objective: "99", Threshold: &metav1.Duration{Duration: 250 * time.Millisecond}})
	tb.Create(t, pol)
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "slo")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:slow", map[string]string{meshsim.LatencyAnnotation: "1000"})
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 2*time.Minute, nil)
	if h := s.Status.History[0]; h.Reason != rollout.ReasonWatchdog || !strings.Contains(h.Message, "latency") {
		t.Errorf("history %+v, want a WatchdogTripped snap-back naming latency", h)
	}
	if w, err := routedWeights(context.Background(), tb, ns); err != nil || w != (rollout.Weights{Blue: 100}) {
		t.Errorf("routed %s (%v), want blue 100", w, err)
	}
}
