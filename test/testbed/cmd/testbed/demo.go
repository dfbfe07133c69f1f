package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/test/testbed"
)

const demoNamespace = "shop"

// runDemo runs splitter against the test bed with the sample app opted in,
// then releases a healthy version (promoted) and a faulty one (snapped
// back), printing a line per transition. With DEMO_ONCE=1 it exits 0 only
// if that is what happened; otherwise the cluster stays up until Ctrl-C.
func runDemo(ctx context.Context, tb *testbed.TestBed) error {
	bin := os.Getenv("SPLITTER_BIN")
	if bin == "" {
		bin = "bin/splitter"
	}
	scrape := tb.ScrapeInterval()
	ctrl, err := testbed.StartProcess("splitter", filepath.Join(tb.StateDir(), "logs"), bin, "run",
		"--kubeconfig="+tb.ControllerKubeconfig, "--prometheus-url="+tb.PrometheusURL, "--namespaces="+demoNamespace,
		"--leader-election-namespace="+demoNamespace, "--metrics-bind-address=127.0.0.1:0", "--health-probe-bind-address=127.0.0.1:0",
		"--scrape-interval="+scrape.String())
	if err != nil {
		return err
	}
	defer ctrl.Stop(5 * time.Second)
	fmt.Printf("demo: splitter running (pid %d, Prometheus scraping every %s), log %s\n", ctrl.PID(), scrape, ctrl.Log())

	samples, err := filepath.Glob("config/samples/*.yaml")
	if err != nil || len(samples) == 0 {
		return fmt.Errorf("no samples in config/samples (run from the repository root)")
	}
	if err := testbed.ApplyFiles(ctx, tb.Client, demoNamespace, samples...); err != nil {
		return err
	}
	step, err := applyDemoPolicy(ctx, tb, scrape)
	if err != nil {
		return err
	}
	fmt.Printf("demo: applied %s, %s (steps of %s)\n", strings.Join(samples, ", "), demoPolicy, step)
	fmt.Printf("demo: watch with  KUBECONFIG=%s kubectl -n %s get splits -w\n", tb.Kubeconfig, demoNamespace)

	w := &watcher{tb: tb}
	if _, err := w.until(ctx, 2*time.Minute, func(s *splitterv1.Split) bool {
		return s.Status.Phase == splitterv1.PhaseIdle && s.Status.Weight == 0 && conditionTrue(s, "WeightsApplied")
	}); err != nil {
		return err
	}

	fmt.Println("\ndemo: release 1.1.0 (healthy)")
	if err := setTemplate(ctx, tb, "registry.example.com/shop/checkout:1.1.0", nil); err != nil {
		return err
	}
	// A release takes four steps and a standby, and may be extended.
	releaseTimeout := max(5*time.Minute, 12*step)
	first, err := w.until(ctx, releaseTimeout, func(s *splitterv1.Split) bool {
		return len(s.Status.History) > 0 && s.Status.Phase == splitterv1.PhaseIdle
	})
	if err != nil {
		return err
	}

	fmt.Println("\ndemo: release 1.2.0 with meshsim.splitter.dev/error-rate: \"0.3\" (30% of its responses are 500s)")
	if err := setTemplate(ctx, tb, "registry.example.com/shop/checkout:1.2.0", map[string]string{"meshsim.splitter.dev/error-rate": "0.3"}); err != nil {
		return err
	}
	second, err := w.until(ctx, releaseTimeout, func(s *splitterv1.Split) bool {
		return s.Status.Phase == splitterv1.PhaseRolledBack
	})
	if err != nil {
		return err
	}

	promoted := first.Status.History[0].Outcome == splitterv1.OutcomePromoted
	snapped := second.Status.History[0].Outcome == splitterv1.OutcomeRolledBack
	fmt.Printf("\ndemo: release 1.1.0: %s; release 1.2.0: %s (%s)\n", first.Status.History[0].Outcome,
		second.Status.History[0].Outcome, second.Status.History[0].Message)
	if os.Getenv("DEMO_ONCE") == "1" {
		if !promoted || !snapped {
			return fmt.Errorf("want the first release promoted and the second snapped back")
		}
		return nil
	}
	fmt.Printf("demo: the cluster stays up; try\n  export KUBECONFIG=%s\n  kubectl -n shop get splits,deploy,virtualservices\n  kubectl -n shop describe split checkout\n  kubectl -n shop set image deploy/checkout checkout=registry.example.com/shop/checkout:1.3.0\nCtrl-C stops everything.\n", tb.Kubeconfig)
	_, _ = w.until(ctx, 24*time.Hour, func(*splitterv1.Split) bool { return false })
	fmt.Println("demo: stopping")
	return nil
}

// demoPolicy is the sample policy's shape with timings for the test bed.
const demoPolicy = "test/testbed/demo/policy.yaml"

// applyDemoPolicy applies demoPolicy, its step duration and standby
// stretched to a few scrapes when Prometheus scrapes slowly (a step of 10 s
// holds 10 scrapes at 1 s, not even one at 15 s). It returns the step duration.
func applyDemoPolicy(ctx context.Context, tb *testbed.TestBed, scrape time.Duration) (time.Duration, error) {
	data, err := os.ReadFile(demoPolicy)
	if err != nil {
		return 0, err
	}
	objs, err := testbed.ReadObjects(data)
	if err != nil || len(objs) != 1 {
		return 0, fmt.Errorf("%s: want one SplitPolicy (%v)", demoPolicy, err)
	}
	pol := objs[0]
	pol.SetNamespace(demoNamespace)
	step, err := stretch(pol.Object, 4*scrape, "spec", "stepDuration")
	if err != nil {
		return 0, err
	}
	if _, err := stretch(pol.Object, 2*scrape, "spec", "standby"); err != nil {
		return 0, err
	}
	if err := testbed.Apply(ctx, tb.Client, pol); err != nil {
		return 0, fmt.Errorf("%s: %w", demoPolicy, err)
	}
	return step, nil
}

// stretch raises the duration at path to at least floor and returns it.
func stretch(obj map[string]any, floor time.Duration, path ...string) (time.Duration, error) {
	v, _, err := unstructured.NestedString(obj, path...)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %s: %w", demoPolicy, strings.Join(path, "."), err)
	}
	if d >= floor {
		return d, nil
	}
	return floor, unstructured.SetNestedField(obj, floor.String(), path...)
}

func conditionTrue(s *splitterv1.Split, t string) bool {
	for _, c := range s.Status.Conditions {
		if c.Type == t {
			return c.Status == "True"
		}
	}
	return false
}

// setTemplate changes the sample Deployment's image and pod annotations.
func setTemplate(ctx context.Context, tb *testbed.TestBed, image string, ann map[string]string) error {
	d := &appsv1.Deployment{}
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: demoNamespace, Name: "checkout"}, d); err != nil {
		return err
	}
	base := d.DeepCopy()
	d.Spec.Template.Spec.Containers[0].Image = image
	d.Spec.Template.Annotations = ann
	return tb.Client.Patch(ctx, d, client.MergeFrom(base))
}

// watcher prints a line whenever the Split's phase, step or weight changes.
type watcher struct {
	tb   *testbed.TestBed
	last string
}

func (w *watcher) until(ctx context.Context, timeout time.Duration, done func(*splitterv1.Split) bool) (*splitterv1.Split, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		s := &splitterv1.Split{}
		if err := w.tb.Client.Get(ctx, client.ObjectKey{Namespace: demoNamespace, Name: "checkout"}, s); err == nil {
			key := fmt.Sprintf("%s/%d/%d/%s", s.Status.Phase, s.Status.Step, s.Status.Weight, s.Status.Live)
			if key != w.last {
				w.last = key
				w.print(ctx, s)
			}
			if done(s) {
				return s, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the Split: %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (w *watcher) print(ctx context.Context, s *splitterv1.Split) {
	st := s.Status
	line := fmt.Sprintf("%s  %-16s live=%-5s", time.Now().Format("15:04:05"), st.Phase, st.Live)
	if st.Candidate != "" {
		line += fmt.Sprintf(" candidate=%-5s step=%d weight=%3d%%", st.Candidate, st.Step, st.Weight)
	}
	var checks []string
	for _, c := range st.Checks {
		checks = append(checks, fmt.Sprintf("%s=%s %s (%s)", c.Name, orNone(c.Value), c.Verdict, c.Bound))
	}
	if len(checks) > 0 {
		line += "  checks: " + strings.Join(checks, ", ")
	}
	if split, err := trafficSplit(ctx, w.tb); err == nil && split != "" {
		line += "  | seen: " + split
	}
	fmt.Println(line)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// trafficSplit is each workload's share of recent requests (the last 10 s,
// or four scrapes if longer), as Prometheus sees them (reporter=destination).
func trafficSplit(ctx context.Context, tb *testbed.TestBed) (string, error) {
	window := model.Duration(max(10*time.Second, 4*tb.ScrapeInterval()))
	rates, err := tb.QueryByLabel(ctx, fmt.Sprintf(
		`sum by (destination_workload) (rate(istio_requests_total{reporter="destination",destination_workload_namespace=%q}[%s]))`, demoNamespace, window),
		"destination_workload")
	if err != nil {
		return "", err
	}
	total := 0.0
	for _, r := range rates {
		total += r
	}
	names := make([]string, 0, len(rates))
	for n, r := range rates {
		if r > 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", n, math.Round(100*rates[n]/total)))
	}
	return strings.Join(parts, ", "), nil
}
