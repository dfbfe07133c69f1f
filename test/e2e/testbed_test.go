// Package e2e runs tests against the whole test bed: a real API server,
// controllers, kwok pods, the mesh simulator and a real Prometheus.
package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
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
	"splitter.dev/splitter/test/meshsim"
	"splitter.dev/splitter/test/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.RunShared(m)) }

func deployment(ns, name string, replicas int32, lbls, ann map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls, Annotations: ann},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
			},
		},
	}
}

func service(ns, name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}
}

// blueGreen creates the seed article's layout in ns: Service "app"
// selecting both colors, Deployments app-blue and app-green with the track
// label, and a DestinationRule with the subsets. greenAnn annotates green's pods.
func blueGreen(t *testing.T, tb *testbed.TestBed, ns string, greenAnn map[string]string) {
	t.Helper()
	tb.Create(t, service(ns, "app", map[string]string{"app": "app"}))
	tb.Create(t, deployment(ns, "app-blue", 2, map[string]string{"app": "app", "track": "blue"}, nil))
	tb.Create(t, deployment(ns, "app-green", 2, map[string]string{"app": "app", "track": "green"}, greenAnn))
	tb.Create(t, &networkingv1.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
		Spec: networkingapi.DestinationRule{Host: "app", Subsets: []*networkingapi.Subset{
			{Name: "blue", Labels: map[string]string{"track": "blue"}},
			{Name: "green", Labels: map[string]string{"track": "green"}},
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := testbed.WaitDeploymentsReady(ctx, tb.Client, ns, "app-blue", "app-green"); err != nil {
		t.Fatal(err)
	}
}

func virtualService(ns string, blue, green int32) *networkingv1.VirtualService {
	return &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
		Spec: networkingapi.VirtualService{Hosts: []string{"app"}, Http: []*networkingapi.HTTPRoute{{
			Route: []*networkingapi.HTTPRouteDestination{
				{Destination: &networkingapi.Destination{Host: "app", Subset: "blue"}, Weight: blue},
				{Destination: &networkingapi.Destination{Host: "app", Subset: "green"}, Weight: green},
			},
		}}},
	}
}

// requestsByWorkload reads istio_requests_total (destination reporter) for
// ns from Prometheus, summed by workload.
func requestsByWorkload(ctx context.Context, tb *testbed.TestBed, ns string, extra string) (map[string]float64, error) {
	return tb.QueryByLabel(ctx, fmt.Sprintf(
		`sum by (destination_workload) (istio_requests_total{reporter="destination",destination_workload_namespace=%q%s})`, ns, extra),
		"destination_workload")
}

// countOver measures the requests each workload received over d, from the
// difference of two Prometheus readings of the raw counters. Counting from
// counters, not rate(), keeps the figure free of rate()'s extrapolation.
func countOver(t *testing.T, tb *testbed.TestBed, ns, extra string, d time.Duration) map[string]float64 {
	t.Helper()
	ctx := context.Background()
	before, err := requestsByWorkload(ctx, tb, ns, extra)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	after, err := requestsByWorkload(ctx, tb, ns, extra)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

// share is workload's percentage of all counted requests.
func share(counts map[string]float64, workload string) (pct, total float64) {
	for _, v := range counts {
		total += v
	}
	if total == 0 {
		return 0, 0
	}
	return 100 * counts[workload] / total, total
}

// binomialTolerance is the half-width, in percentage points, that a share
// of p measured over n requests stays within at 4.5 standard deviations
// (a correct simulator fails this about once in 150,000 runs).
func binomialTolerance(p, n float64) float64 {
	return 4.5 * 100 * math.Sqrt(p*(1-p)/n)
}

// waitForTraffic waits until Prometheus has scraped traffic to every workload named.
func waitForTraffic(t *testing.T, tb *testbed.TestBed, ns string, workloads ...string) {
	t.Helper()
	testbed.Eventually(t, 60*time.Second, time.Second, "traffic in Prometheus", func(ctx context.Context) error {
		got, err := requestsByWorkload(ctx, tb, ns, "")
		if err != nil {
			return err
		}
		for _, w := range workloads {
			if got[w] == 0 {
				return fmt.Errorf("no requests to %s yet: %v", w, got)
			}
		}
		return nil
	})
}

func TestDeploymentBecomesReadyOnKwok(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "ready")
	tb.Create(t, deployment(ns, "web", 3, map[string]string{"app": "web"}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := testbed.WaitDeploymentsReady(ctx, tb.Client, ns, "web"); err != nil {
		t.Fatal(err)
	}
	var pods corev1.PodList
	if err := tb.Client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 3 {
		t.Fatalf("%d pods, want 3", len(pods.Items))
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != testbed.NodeName || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			t.Errorf("pod %s: node %q phase %s IP %q, want scheduled on %s, Running, with an IP",
				p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP, testbed.NodeName)
		}
	}
}

func TestVirtualServiceWeightsSplitTraffic(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "split")
	blueGreen(t, tb, ns, nil)
	tb.Create(t, virtualService(ns, 90, 10))
	waitForTraffic(t, tb, ns, "app-blue", "app-green")
	time.Sleep(2 * time.Second) // the first reading must postdate the VirtualService

	counts := countOver(t, tb, ns, "", 20*time.Second)
	green, total := share(counts, "app-green")
	if total < 1000 {
		t.Fatalf("only %.0f requests counted in 20s at 100 req/s: %v", total, counts)
	}
	if tol := binomialTolerance(0.10, total); math.Abs(green-10) > tol {
		t.Errorf("green got %.2f%% of %.0f requests, want 10%% ± %.2f", green, total, tol)
	}
	t.Logf("green share %.2f%% of %.0f requests (weights 90/10)", green, total)
}

func TestErrorRateAnnotation(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "errors")
	tb.Create(t, service(ns, "app", map[string]string{"app": "app"}))
	tb.Create(t, deployment(ns, "app", 2, map[string]string{"app": "app"}, map[string]string{meshsim.ErrorRateAnnotation: "0.3"}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := testbed.WaitDeploymentsReady(ctx, tb.Client, ns, "app"); err != nil {
		t.Fatal(err)
	}
	waitForTraffic(t, tb, ns, "app")

	// One reading per response code, before and after: both counts cover
	// exactly the same requests.
	byCode := func() map[string]float64 {
		got, err := tb.QueryByLabel(context.Background(), fmt.Sprintf(
			`sum by (response_code) (istio_requests_total{reporter="destination",destination_workload_namespace=%q})`, ns), "response_code")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	before := byCode()
	time.Sleep(20 * time.Second)
	after := byCode()
	total, errs := 0.0, after["500"]-before["500"]
	for code, v := range after {
		total += v - before[code]
	}
	if total < 1000 {
		t.Fatalf("only %.0f requests counted: %v", total, after)
	}
	pct := 100 * errs / total
	if tol := binomialTolerance(0.3, total); math.Abs(pct-30) > tol {
		t.Errorf("5xx were %.2f%% (%.0f of %.0f), want 30%% ± %.2f", pct, errs, total, tol)
	}
	t.Logf("5xx share %.2f%% (error-rate 0.3)", pct)
}

func TestLatencyAnnotationMovesP99(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "latency")
	tb.Create(t, service(ns, "fast", map[string]string{"app": "fast"}))
	tb.Create(t, deployment(ns, "fast", 1, map[string]string{"app": "fast"}, nil))
	tb.Create(t, service(ns, "slow", map[string]string{"app": "slow"}))
	tb.Create(t, deployment(ns, "slow", 1, map[string]string{"app": "slow"}, map[string]string{meshsim.LatencyAnnotation: "300"}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := testbed.WaitDeploymentsReady(ctx, tb.Client, ns, "fast", "slow"); err != nil {
		t.Fatal(err)
	}
	waitForTraffic(t, tb, ns, "fast", "slow")
	// Istio's buckets: p99 of 5 ms median latency falls at or below 25 ms;
	// with a 300 ms median, p99 (~600 ms) falls in the (500, 1000] bucket.
	var p99 map[string]float64
	testbed.Eventually(t, 60*time.Second, 2*time.Second, "p99 per workload", func(ctx context.Context) (err error) {
		p99, err = tb.QueryByLabel(ctx, fmt.Sprintf(
			`histogram_quantile(0.99, sum by (destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace=%q}[20s])))`, ns),
			"destination_workload")
		if err != nil {
			return err
		}
		if p99["slow"] <= 500 || p99["slow"] > 1000 || p99["fast"] > 25 || p99["fast"] == 0 {
			return fmt.Errorf("p99: fast %.1f ms, slow %.1f ms; want fast in (0, 25], slow in (500, 1000]", p99["fast"], p99["slow"])
		}
		return nil
	})
	t.Logf("p99: fast %.1f ms, slow %.1f ms", p99["fast"], p99["slow"])
}

func TestInvalidWeightsAreRejectedAndRoutingKept(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "invalid")
	blueGreen(t, tb, ns, nil)
	vs := virtualService(ns, 90, 10)
	tb.Create(t, vs)
	waitForTraffic(t, tb, ns, "app-blue", "app-green")
	// The 90/10 routing must be in effect (and so be the simulator's last
	// valid version) before it is broken: traffic reaches both colors
	// without any VirtualService too, 50/50.
	testbed.Eventually(t, 30*time.Second, 0, "the 90/10 split in effect", func(ctx context.Context) error {
		counts := countOver(t, tb, ns, "", 3*time.Second)
		if green, total := share(counts, "app-green"); total == 0 || green > 25 {
			return fmt.Errorf("green has %.1f%% of %.0f requests", green, total)
		}
		return nil
	})

	// A total of 0 over two destinations: the API server stores it (there
	// is no Istio webhook here); the simulator must refuse it as Istio would.
	vs.Spec.Http[0].Route[0].Weight, vs.Spec.Http[0].Route[1].Weight = 0, 0
	if err := tb.Client.Update(context.Background(), vs); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, 30*time.Second, time.Second, "rejection visible in Prometheus", func(ctx context.Context) error {
		got, err := tb.QueryByLabel(ctx, fmt.Sprintf(`meshsim_config_rejected{kind="VirtualService",namespace=%q,name="app"}`, ns), "name")
		if err != nil {
			return err
		}
		if got["app"] != 1 {
			return fmt.Errorf("meshsim_config_rejected = %v, want 1", got)
		}
		return nil
	})
	if why := tb.MeshSim.Rejection(ns, "app"); !strings.Contains(why, "total destination weight = 0") {
		t.Errorf("rejection reason %q, want the weight sum named", why)
	}
	time.Sleep(time.Second)
	counts := countOver(t, tb, ns, "", 15*time.Second)
	green, total := share(counts, "app-green")
	if tol := binomialTolerance(0.10, total); total < 800 || math.Abs(green-10) > tol {
		t.Errorf("after the invalid update green got %.2f%% of %.0f requests, want the old 10%% ± %.2f", green, total, tol)
	}

	// A valid update takes effect: routing was kept, not frozen.
	if err := tb.Client.Get(context.Background(), client.ObjectKeyFromObject(vs), vs); err != nil {
		t.Fatal(err)
	}
	vs.Spec.Http[0].Route[0].Weight, vs.Spec.Http[0].Route[1].Weight = 50, 50
	if err := tb.Client.Update(context.Background(), vs); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	counts = countOver(t, tb, ns, "", 15*time.Second)
	green, total = share(counts, "app-green")
	if tol := binomialTolerance(0.5, total); total < 800 || math.Abs(green-50) > tol {
		t.Errorf("after the valid update green got %.2f%% of %.0f requests, want 50%% ± %.2f", green, total, tol)
	}
}

func TestSamplesApply(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	files, err := filepath.Glob("../../config/samples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	ctx := context.Background()
	if err := testbed.ApplyFiles(ctx, tb.Client, "", files...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tb.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}})
	})
	var pol splitterv1.SplitPolicy
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "standard"}, &pol); err != nil {
		t.Fatal(err)
	}
	if len(pol.Spec.Checks) != 3 || pol.Spec.Steps[len(pol.Spec.Steps)-1] != 100 {
		t.Errorf("sample policy read back as %+v", pol.Spec)
	}
	var d appsv1.Deployment
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "checkout"}, &d); err != nil {
		t.Fatal(err)
	}
	if d.Annotations[splitterv1.PolicyAnnotation] != "standard" {
		t.Errorf("sample Deployment lacks the opt-in annotation: %v", d.Annotations)
	}
}

// The CRD's own validation (OpenAPI and CEL) refuses malformed policies at
// admission, before the controller sees them.
func TestSplitPolicyValidation(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "policy")
	for _, tc := range []struct {
		name    string
		spec    splitterv1.SplitPolicySpec
		wantErr string
	}{
		{"valid", splitterv1.SplitPolicySpec{Steps: []int32{10, 50, 100}}, ""},
		{"not increasing", splitterv1.SplitPolicySpec{Steps: []int32{50, 10, 100}}, "steps must be strictly increasing"},
		{"duplicate step", splitterv1.SplitPolicySpec{Steps: []int32{10, 10, 100}}, "Duplicate value"},
		{"not ending at 100", splitterv1.SplitPolicySpec{Steps: []int32{10, 50}}, "steps must end at 100"},
		{"step above 100", splitterv1.SplitPolicySpec{Steps: []int32{50, 150}}, "should be less than or equal to 100"},
		{"maxStepDuration with maxExtensions", splitterv1.SplitPolicySpec{MaxStepDuration: &metav1.Duration{Duration: 10 * time.Minute}, MaxExtensions: ptr.To(int32(2))}, "set maxExtensions or maxStepDuration, not both"},
		{"check with both builtin and query", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{
			Name: "x", Builtin: splitterv1.BuiltinSuccessRate, Query: "up", Min: ptr.To("1"),
		}}}, "exactly one of builtin and query"},
		{"check without bound", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{
			Name: "x", Builtin: splitterv1.BuiltinSuccessRate,
		}}}, "at least one of min and max"},
		{"bound not a number", splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{
			Name: "x", Builtin: splitterv1.BuiltinSuccessRate, Min: ptr.To("ninety"),
		}}}, "spec.checks[0].min"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := &splitterv1.SplitPolicy{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "p-", Namespace: ns},
				Spec:       tc.spec,
			}
			err := tb.Client.Create(context.Background(), pol)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("valid policy refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// The install manifests apply cleanly, and the controller's pods pass the
// restricted Pod Security Standard (non-root, read-only root filesystem).
func TestDeployManifestsApply(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	files := []string{"../../deploy/namespace.yaml"}
	rbac, _ := filepath.Glob("../../deploy/rbac/*.yaml")
	files = append(append(files, rbac...), "../../deploy/controller.yaml")
	ctx := context.Background()
	if err := testbed.ApplyFiles(ctx, tb.Client, "", files...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tb.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "splitter-system"}})
	})
	d := &appsv1.Deployment{}
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: "splitter-system", Name: "splitter-controller"}, d); err != nil {
		t.Fatal(err)
	}
	pod, c := d.Spec.Template.Spec, d.Spec.Template.Spec.Containers[0]
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem ||
		c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Errorf("the controller's security settings are not the restricted ones: pod %+v, container %+v", pod.SecurityContext, c.SecurityContext)
	}
	// The namespace enforces the "restricted" Pod Security Standard: pods
	// that break it are refused, and the Deployment would never be Ready.
	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := testbed.WaitDeploymentsReady(readyCtx, tb.Client, "splitter-system", "splitter-controller"); err != nil {
		t.Error(err)
	}
}
