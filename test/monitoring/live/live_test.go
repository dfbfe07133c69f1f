// Package live runs the dashboard's queries and the alerts' expressions
// against the test bed's real Prometheus, scraping a real controller
// through a release that waits at a gate, is approved and snaps back,
// beside a Split stalled on a missing policy: names and labels line up
// with what splitter and the mesh simulator really export.
package live

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/test/monitoring"
	"splitter.dev/splitter/test/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.RunShared(m)) }

func deployment(ns, name, policy string) *appsv1.Deployment {
	lbls := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{splitterv1.PolicyAnnotation: policy}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
			},
		},
	}
}

// startSplitter runs the real binary on ns and has Prometheus scrape it.
func startSplitter(t *testing.T, tb *testbed.TestBed, ns string) {
	t.Helper()
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := testbed.StartProcess("splitter-"+ns, tb.StateDir()+"/logs", testbed.SplitterBinary(t), "run",
		"--kubeconfig="+tb.ControllerKubeconfig,
		"--prometheus-url="+tb.PrometheusURL,
		"--namespaces="+ns,
		"--leader-election-namespace="+ns,
		"--metrics-bind-address="+addr,
		"--health-probe-bind-address=127.0.0.1:0",
		"--query-timeout=5s",
		"--scrape-interval="+tb.ScrapeInterval().String(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("controller log %s (tail):\n%s", p.Log(), p.Tail())
		}
	})
	if err := tb.AddScrapeTarget("splitter-"+ns, addr); err != nil {
		t.Fatal(err)
	}
}

func getSplit(ctx context.Context, tb *testbed.TestBed, ns, name string) (*splitterv1.Split, error) {
	s := &splitterv1.Split{}
	return s, tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)
}

func waitPhase(t *testing.T, tb *testbed.TestBed, ns string, phase splitterv1.Phase, timeout time.Duration) *splitterv1.Split {
	t.Helper()
	var s *splitterv1.Split
	testbed.Eventually(t, timeout, 250*time.Millisecond, "phase "+string(phase), func(ctx context.Context) (err error) {
		if s, err = getSplit(ctx, tb, ns, "app"); err != nil {
			return err
		}
		if s.Status.Phase != phase {
			return fmt.Errorf("phase %s step %d weight %d", s.Status.Phase, s.Status.Step, s.Status.Weight)
		}
		return nil
	})
	return s
}

// eventuallyQuery waits until an instant query returns a sample that ok accepts.
func eventuallyQuery(t *testing.T, tb *testbed.TestBed, what, query string, ok func(model.Vector) error) {
	t.Helper()
	testbed.Eventually(t, time.Minute, 500*time.Millisecond, what, func(ctx context.Context) error {
		v, err := tb.Query(ctx, query)
		if err != nil {
			return err
		}
		return ok(v)
	})
}

func has(labels map[string]string) func(model.Vector) error {
	return func(v model.Vector) error {
		for _, s := range v {
			match := true
			for k, want := range labels {
				if string(s.Metric[model.LabelName(k)]) != want {
					match = false
				}
			}
			if match {
				return nil
			}
		}
		return fmt.Errorf("no sample with %v in %v", labels, v)
	}
}

type rules struct {
	Groups []struct {
		Rules []struct {
			Alert string `json:"alert"`
			Expr  string `json:"expr"`
		} `json:"rules"`
	} `json:"groups"`
}

func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("../../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rf rules
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

func TestDashboardAndAlertsOnALiveRelease(t *testing.T) {
	tb := testbed.Shared(t)
	ctx := context.Background()
	start := time.Now()
	ns := tb.Namespace(t, "monitoring")
	tb.Create(t, &splitterv1.SplitPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "gated", Namespace: ns},
		Spec: splitterv1.SplitPolicySpec{
			Steps:            []int32{20, 50, 100},
			StepDuration:     &metav1.Duration{Duration: 8 * time.Second},
			Standby:          &metav1.Duration{Duration: 8 * time.Second},
			ProgressDeadline: &metav1.Duration{Duration: time.Minute},
			Approval:         &splitterv1.Approval{BeforeFirstStep: true},
			Checks:           []splitterv1.Check{{Name: "success-rate", Builtin: splitterv1.BuiltinSuccessRate, Min: ptr.To("0.95")}},
		},
	})
	startSplitter(t, tb, ns)
	tb.Create(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "app"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
	tb.Create(t, deployment(ns, "app", "gated"))
	// A second workload names a policy that does not exist: Stalled.
	tb.Create(t, deployment(ns, "orphan", "missing"))
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second)

	alerts := alertExprs(t)
	// SplitStalled's expression (without its 10 minutes): the stall is
	// written by a path that does not update the metrics; the watchdog
	// sweep's refresh shows it.
	eventuallyQuery(t, tb, "SplitStalled's expression", alerts["SplitStalled"],
		has(map[string]string{"namespace": ns, "split": "orphan", "reason": "PolicyNotFound"}))

	// A faulty release (30% errors) waits at the first-step gate.
	d := &appsv1.Deployment{}
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, d); err != nil {
		t.Fatal(err)
	}
	base := d.DeepCopy()
	d.Spec.Template.Spec.Containers[0].Image = "example.com/app:bad"
	d.Spec.Template.Annotations = map[string]string{"meshsim.splitter.dev/error-rate": "0.3"}
	if err := tb.Client.Patch(ctx, d, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	s := waitPhase(t, tb, ns, splitterv1.PhaseAwaitingApproval, 90*time.Second)
	since := float64(s.Status.PhaseStartedAt.Unix())
	eventuallyQuery(t, tb, "the gate's waiting-since gauge",
		fmt.Sprintf(`splitter_split_gate_waiting_since_timestamp_seconds{namespace=%q,split="app"}`, ns),
		func(v model.Vector) error {
			if len(v) != 1 || float64(v[0].Value) < since || float64(v[0].Value) >= since+1 {
				return fmt.Errorf("got %v, want status.phaseStartedAt %v", v, since)
			}
			return nil
		})
	// A gate waiting over an hour cannot be waited for: the alert's
	// expression with the threshold at 0 s finds it.
	eventuallyQuery(t, tb, "GateWaitingTooLong's expression at 0 s",
		strings.Replace(alerts["GateWaitingTooLong"], "> 3600", "> 0", 1), has(map[string]string{"namespace": ns, "split": "app"}))

	approved := s.DeepCopy()
	approved.Annotations = map[string]string{splitterv1.ApproveAnnotation: s.Status.Gate}
	if err := tb.Client.Patch(ctx, approved, client.MergeFrom(s)); err != nil {
		t.Fatal(err)
	}
	s = waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 2*time.Minute)
	if h := s.Status.History; len(h) == 0 || h[0].Reason == "" {
		t.Fatalf("history %+v, want a rollback with its reason", h)
	}
	reason := s.Status.History[0].Reason
	eventuallyQuery(t, tb, "ReleaseRolledBack's expression", alerts["ReleaseRolledBack"],
		has(map[string]string{"namespace": ns, "split": "app", "reason": reason}))
	eventuallyQuery(t, tb, "the gate gauge back to 0",
		fmt.Sprintf(`splitter_split_gate_waiting_since_timestamp_seconds{namespace=%q,split="app"}`, ns),
		func(v model.Vector) error {
			if len(v) != 1 || v[0].Value != 0 {
				return fmt.Errorf("got %v, want 0", v)
			}
			return nil
		})
	if v, err := tb.Query(ctx, alerts["ControllerNotSweeping"]); err != nil || len(v) != 0 {
		t.Errorf("ControllerNotSweeping's expression with the controller sweeping: %v (%v), want nothing", v, err)
	}

	// The counters born at the snap-back scraped a few times, as a
	// dashboard would see them.
	for _, m := range []string{"splitter_check_verdicts_total", "splitter_snapbacks_total"} {
		eventuallyQuery(t, tb, m+" scraped 3 times", fmt.Sprintf(`count_over_time(%s{namespace=%q,split="app"}[1m]) >= 3`, m, ns),
			has(map[string]string{"split": "app"}))
	}

	// Every dashboard query, over the release, with the variables of
	// this Split: each returns data, and a few say what happened.
	raw, err := os.ReadFile("../../../deploy/grafana/splitter.json")
	if err != nil {
		t.Fatal(err)
	}
	exprs, err := monitoring.Expressions(raw)
	if err != nil {
		t.Fatal(err)
	}
	// The range's steps end at end: the last samples are on the grid.
	end := time.Now()
	start = end.Add(-end.Sub(start).Truncate(time.Second) - time.Second)
	vars := strings.NewReplacer("$__rate_interval", "4s", "$__range", model.Duration(end.Sub(start).Round(time.Second)+time.Second).String(),
		"$namespace", ns, "$split", "app")
	c, err := promapi.NewClient(promapi.Config{Address: tb.PrometheusURL})
	if err != nil {
		t.Fatal(err)
	}
	api := promv1.NewAPI(c)
	maxBy := map[string]map[string]float64{} // where -> series -> max value
	for _, e := range exprs {
		q := vars.Replace(e.Expr)
		val, _, _, err := api.QueryRange(ctx, q, promv1.Range{Start: start, End: end, Step: time.Second})
		if err != nil {
			t.Errorf("%s: %v\n\t%s", e.Where, err, q)
			continue
		}
		m, ok := val.(model.Matrix)
		if !ok || len(m) == 0 {
			t.Errorf("%s: no data over the release\n\t%s", e.Where, q)
			continue
		}
		maxBy[e.Where] = map[string]float64{}
		for _, ss := range m {
			top := 0.0
			for _, p := range ss.Values {
				// A ratio is NaN (0/0) where its window holds no requests,
				// e.g. green's after the snap-back; Go's max keeps a NaN.
				if v := float64(p.Value); !math.IsNaN(v) {
					top = max(top, v)
				}
			}
			maxBy[e.Where][ss.Metric.String()] = top
		}
		t.Logf("%s: %d series, max %v", e.Where, len(m), maxBy[e.Where])
	}
	for _, c := range []struct{ title, ref, series string }{
		{"Weights", "A", `{color="green"}`},
		{"Snap-backs by reason", "A", `{reason="` + reason + `"}`},
		{"Check verdicts", "A", `{verdict="Fail"}`},
		{"Check verdicts", "A", `{check="success-rate", verdict="Fail"}`},
		{"Verdicts by check in range", "A", fmt.Sprintf(`{check="success-rate", namespace=%q, split="app", verdict="Fail"}`, ns)},
		{"Error rate per color", "A", `{destination_workload="app-green"}`},
		{"Error rate per color", "B", `{destination_workload="app-green"}`},
		{"Request rate per color", "A", `{destination_workload="app-blue"}`},
		{"p99 latency per color", "A", `{destination_workload="app-green"}`},
		{"Stalled Splits", "A", `{}`},
		{"Gates waiting", "A", `{}`},
		{"Time in the current step", "A", `{}`},
		{"Watchdog sweep duration", "A", `{}`},
		{"API writes", "A", `{kind="VirtualService", result="ok"}`},
	} {
		found := false
		for where, series := range maxBy {
			if strings.Contains(where, fmt.Sprintf("%q", c.title)) && strings.HasSuffix(where, " "+c.ref) {
				if v := series[c.series]; v > 0 {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("panel %q %s: no series %s above 0", c.title, c.ref, c.series)
		}
	}
}
