package controller_test

// Integration tests of the reconciler against a real kube-apiserver and
// etcd (controller-runtime's envtest) with splitter's and Istio's CRDs.
// There is no kube-controller-manager: the tests write the color
// Deployments' status themselves to make them Ready. Checks are scripted
// (the Prometheus edge); test/e2e runs them against a real Prometheus.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/controller"
	"splitter.dev/splitter/internal/mesh"
	"splitter.dev/splitter/internal/rollout"
)

// waitTimeout bounds every wait for the controller: generous, as it is a
// bound on a hang, never an assertion on speed.
const waitTimeout = 60 * time.Second

// fakeChecks is the scripted CheckRunner: one verdict per namespace (each
// test has its own), and a record of every call.
type fakeChecks struct {
	mu      sync.Mutex
	verdict map[string]splitterv1.Verdict
	calls   map[string][]analysis.Vars
}

func (f *fakeChecks) script(namespace string, v splitterv1.Verdict) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.verdict[namespace] = v
}

func (f *fakeChecks) callsIn(namespace string) []analysis.Vars {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]analysis.Vars(nil), f.calls[namespace]...)
}

func (f *fakeChecks) Run(_ context.Context, _ string, checks []analysis.Check, vars analysis.Vars, _ time.Time) []analysis.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[vars.Namespace] = append(f.calls[vars.Namespace], vars)
	v, ok := f.verdict[vars.Namespace]
	out := make([]analysis.Result, len(checks))
	for i, c := range checks {
		out[i] = analysis.Result{Name: c.Name, Bound: c.Bound(), Verdict: v, Value: 0.9, HasValue: true}
		if !ok {
			// An unscripted check is never a pass.
			out[i] = analysis.Result{Name: c.Name, Bound: c.Bound(), Verdict: splitterv1.VerdictError, Message: "not scripted"}
		}
	}
	return out
}

// env is the control plane and the controller shared by every test; each
// test works in its own namespace.
// fakeCounters stands in for Prometheus (pure counting, no cluster
// concern): per namespace, each color's counters grow at a scripted rate
// of requests and bad requests per second, from one series per color.
//
// A namespace can also have a stale pod: a pod of the candidate color's
// previous revision (ReplicaSet web-<color>-stale) that still gets some of
// the color's traffic, at its own rates. Its series is dropped as the
// controller asks (the ReplicaSets passed), as analysis.Reading.For does.
type fakeCounters struct {
	mu    sync.Mutex
	rates map[string]map[splitterv1.Color][2]float64 // namespace -> color -> {req/s, bad/s}
	cum   map[string]map[splitterv1.Color][2]float64
	at    map[string]time.Time

	staleColor map[string]splitterv1.Color // namespace -> color of its stale pod
	staleRates map[string][2]float64
	staleCum   map[string][2]float64
	revision   map[string]analysis.Revisions // namespace -> the last revisions asked for
	calls      map[string]int
}

// callsIn counts the reads of the namespace's counters.
func (f *fakeCounters) callsIn(ns string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[ns]
}

// scriptStale gives the namespace a stale pod of color c at rates.
func (f *fakeCounters) scriptStale(ns string, c splitterv1.Color, rates [2]float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(ns)
	if f.staleColor == nil {
		f.staleColor, f.staleRates = map[string]splitterv1.Color{}, map[string][2]float64{}
	}
	f.staleColor[ns], f.staleRates[ns] = c, rates
}

// revisionAsked is what the controller last asked the namespace's
// counters for.
func (f *fakeCounters) revisionAsked(ns string) analysis.Revisions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.revision[ns]
}

func (f *fakeCounters) script(ns string, rates map[splitterv1.Color][2]float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(ns)
	if f.rates == nil {
		f.rates = map[string]map[splitterv1.Color][2]float64{}
	}
	f.rates[ns] = rates
}

func (f *fakeCounters) advance(ns string) {
	if f.cum == nil {
		f.cum, f.at, f.staleCum = map[string]map[splitterv1.Color][2]float64{}, map[string]time.Time{}, map[string][2]float64{}
	}
	if f.cum[ns] == nil {
		f.cum[ns] = map[splitterv1.Color][2]float64{}
	}
	now := time.Now()
	if last, ok := f.at[ns]; ok {
		dt := now.Sub(last).Seconds()
		for c, r := range f.rates[ns] {
			cur := f.cum[ns][c]
			f.cum[ns][c] = [2]float64{cur[0] + r[0]*dt, cur[1] + r[1]*dt}
		}
		if r, ok := f.staleRates[ns]; ok {
			cur := f.staleCum[ns]
			f.staleCum[ns] = [2]float64{cur[0] + r[0]*dt, cur[1] + r[1]*dt}
		}
	}
	f.at[ns] = now
}

func (f *fakeCounters) Counters(_ context.Context, _, ns string, workloads map[splitterv1.Color]string, revision analysis.Revisions, specs []analysis.CounterSpec, _ time.Time) ([]splitterv1.SeriesReading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(ns)
	if f.revision == nil {
		f.revision, f.calls = map[string]analysis.Revisions{}, map[string]int{}
	}
	f.revision[ns] = revision
	f.calls[ns]++
	out := []splitterv1.SeriesReading{}
	for c := range workloads {
		v := f.cum[ns][c]
		for _, s := range specs {
			out = append(out, splitterv1.SeriesReading{Color: c, SLO: s.SLO, Series: "pod-1", Requests: int64(v[0]), Bad: int64(v[1])})
		}
		stalePod := controller.ColorName(workload, c) + "-stale-x7k2p"
		if sc, ok := f.staleColor[ns]; ok && sc == c && revision.Counts(c, stalePod) {
			v := f.staleCum[ns]
			for _, s := range specs {
				out = append(out, splitterv1.SeriesReading{Color: c, SLO: s.SLO, Series: "stale-pod", Requests: int64(v[0]), Bad: int64(v[1])})
			}
		}
	}
	return out, nil
}

type env struct {
	c        client.Client
	checks   *fakeChecks
	counters *fakeCounters

	testEnv *envtest.Environment
	cancel  context.CancelFunc
	done    chan error
}

var (
	sharedOnce sync.Once
	shared     *env
	sharedErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.cancel()
		if err := <-shared.done; err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
		if err := shared.testEnv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}
	os.Exit(code)
}

// setup starts the control plane and the controller once. Without the
// binaries (plain `go test`) the test is skipped, or fails under
// SPLITTER_REQUIRE_TOOLS=1 (`make test`).
func setup(t *testing.T) *env {
	t.Helper()
	for _, v := range []string{"TEST_ASSET_ETCD", "TEST_ASSET_KUBE_APISERVER"} {
		if os.Getenv(v) == "" {
			if os.Getenv("SPLITTER_REQUIRE_TOOLS") == "1" {
				t.Fatalf("%s unset: run through `make test`", v)
			}
			t.Skipf("%s unset: run through `make test`", v)
		}
	}
	sharedOnce.Do(func() { shared, sharedErr = start() })
	if sharedErr != nil {
		t.Fatalf("starting envtest and the controller: %v", sharedErr)
	}
	return shared
}

func start() (*env, error) {
	logOut := io.Discard
	if testing.Verbose() {
		logOut = os.Stderr
	}
	ctrl.SetLogger(crzap.New(crzap.WriteTo(logOut)))

	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	if err != nil {
		return nil, fmt.Errorf("locating istio.io/api: %w", err)
	}
	istioCRDs := filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml")
	te := &envtest.Environment{
		CRDInstallOptions: envtest.CRDInstallOptions{
			Paths:              []string{filepath.Join("..", "..", "deploy", "crds"), istioCRDs},
			ErrorIfPathMissing: true,
		},
	}
	cfg, err := te.Start()
	if err != nil {
		return nil, err
	}
	e := &env{testEnv: te, checks: &fakeChecks{verdict: map[string]splitterv1.Verdict{}, calls: map[string][]analysis.Vars{}},
		counters: &fakeCounters{}, done: make(chan error, 1)}
	fail := func(err error) (*env, error) {
		_ = te.Stop()
		return nil, err
	}

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, networkingv1.AddToScheme, splitterv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return fail(err)
		}
	}
	// The tests read and write directly, never through the manager's cache.
	if e.c, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fail(err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		LeaderElection:         false,
	})
	if err != nil {
		return fail(err)
	}
	r := &controller.SplitReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("splitter"),
		Checks:   e.checks,
		Counters: e.counters,
		// The fake counters "scrape" continuously.
		ScrapeInterval:   time.Second,
		WatchdogInterval: 300 * time.Millisecond,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- mgr.Start(ctx) }()
	syncCtx, syncCancel := context.WithTimeout(ctx, waitTimeout)
	defer syncCancel()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		cancel()
		<-e.done
		return fail(errors.New("the manager's cache did not sync"))
	}
	return e, nil
}

// waitFor polls f until it returns nil; on timeout the test fails with
// f's last error.
func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newNamespace(t *testing.T, e *env) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "splitter-test-"}}
	if err := e.c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func create(t *testing.T, e *env, obj client.Object) {
	t.Helper()
	if err := e.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func get(e *env, ns, name string, obj client.Object) error {
	return e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
}

// The workload every test releases: Deployment "web" (3 replicas) and the
// Service "web" that selects it.
const (
	workload     = "web"
	userReplicas = int32(3)
)

func shortPolicy(ns string, checks ...splitterv1.Check) *splitterv1.SplitPolicy {
	return &splitterv1.SplitPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "standard", Namespace: ns},
		Spec: splitterv1.SplitPolicySpec{
			Steps:        []int32{100},
			StepDuration: &metav1.Duration{Duration: 5 * time.Second},
			Checks:       checks,
		},
	}
}

func userDeployment(ns string, annotations map[string]string) *appsv1.Deployment {
	replicas := userReplicas
	labels := map[string]string{"app": workload}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: workload, Namespace: ns, Annotations: annotations},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "example.com/web:v1",
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				}}},
			},
		},
	}
}

func service(ns string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: workload, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": workload},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}
}

func splitOf(t *testing.T, e *env, ns string) *splitterv1.Split {
	t.Helper()
	s := &splitterv1.Split{}
	if err := get(e, ns, workload, s); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitPhase waits for the Split to reach phase and returns it.
func waitPhase(t *testing.T, e *env, ns string, phase splitterv1.Phase) *splitterv1.Split {
	t.Helper()
	s := &splitterv1.Split{}
	waitFor(t, "phase "+string(phase), func() error {
		if err := get(e, ns, workload, s); err != nil {
			return err
		}
		if s.Status.Phase != phase {
			return fmt.Errorf("phase is %q", s.Status.Phase)
		}
		return nil
	})
	return s
}

// markReady plays the Deployment controller: once the color Deployment
// asks for replicas pods of revision, its status says they all run and are
// available (what colorState counts as rolled out).
func markReady(t *testing.T, e *env, ns string, c splitterv1.Color, replicas int32, revision string) {
	t.Helper()
	name := controller.ColorName(workload, c)
	waitFor(t, name+" Ready", func() error {
		d := &appsv1.Deployment{}
		if err := get(e, ns, name, d); err != nil {
			return err
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
			return fmt.Errorf("%s asks for %v replicas, want %d", name, d.Spec.Replicas, replicas)
		}
		if got := d.Spec.Template.Annotations[splitterv1.RevisionAnnotation]; got != revision {
			return fmt.Errorf("%s runs revision %q, want %q", name, got, revision)
		}
		d.Status = appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation,
			Replicas:           replicas, UpdatedReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas,
		}
		return e.c.Status().Update(context.Background(), d)
	})
}

// ownedWeights reads the blue and green weights of splitter's own
// VirtualService (one route, two destinations).
func ownedWeights(vs *networkingv1.VirtualService) (rollout.Weights, error) {
	var w rollout.Weights
	if len(vs.Spec.Http) != 1 || len(vs.Spec.Http[0].Route) != 2 {
		return w, fmt.Errorf("want one route with two destinations, got %v", vs.Spec.Http)
	}
	seen := map[string]bool{}
	for _, d := range vs.Spec.Http[0].Route {
		switch d.Destination.Subset {
		case "blue":
			w.Blue = d.Weight
		case "green":
			w.Green = d.Weight
		default:
			return w, fmt.Errorf("unexpected subset %q", d.Destination.Subset)
		}
		seen[d.Destination.Subset] = true
	}
	if len(seen) != 2 {
		return w, fmt.Errorf("want subsets blue and green, got %v", seen)
	}
	return w, nil
}

// waitWeights waits for splitter's VirtualService to route want.
func waitWeights(t *testing.T, e *env, ns string, want rollout.Weights) *networkingv1.VirtualService {
	t.Helper()
	vs := &networkingv1.VirtualService{}
	waitFor(t, "VirtualService weights "+want.String(), func() error {
		if err := get(e, ns, workload, vs); err != nil {
			return err
		}
		got, err := ownedWeights(vs)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("weights are %s", got)
		}
		return nil
	})
	return vs
}

// adopt opts the workload in and brings it to Idle with blue routed at
// 100%, returning the Split.
func adopt(t *testing.T, e *env, ns string) *splitterv1.Split {
	t.Helper()
	s := &splitterv1.Split{}
	waitFor(t, "the live revision", func() error {
		if err := get(e, ns, workload, s); err != nil {
			return err
		}
		if s.Status.LiveRevision == "" {
			return errors.New("no live revision yet")
		}
		return nil
	})
	markReady(t, e, ns, splitterv1.Blue, userReplicas, s.Status.LiveRevision)
	waitFor(t, "adoption", func() error {
		if err := get(e, ns, workload, s); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(s.Status.Conditions, rollout.ConditionReady); s.Status.Phase != splitterv1.PhaseIdle || c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("phase %q, Ready %v", s.Status.Phase, c)
		}
		return nil
	})
	return s
}

// TestOptIn: one annotation turns a Deployment into a Split with two color
// Deployments; once blue is Ready, splitter routes 100% to it and scales
// the user's Deployment down, remembering its replica count.
func TestOptIn(t *testing.T) {
	e := setup(t)
	t.Parallel()
	ns := newNamespace(t, e)
	create(t, e, shortPolicy(ns))
	create(t, e, service(ns))
	create(t, e, userDeployment(ns, map[string]string{splitterv1.PolicyAnnotation: "standard"}))

	user := &appsv1.Deployment{}
	if err := get(e, ns, workload, user); err != nil {
		t.Fatal(err)
	}
	wantRev := controller.TemplateRevision(&user.Spec.Template)

	// The Split: same name, owned by the Deployment, with the finalizer.
	split := &splitterv1.Split{}
	waitFor(t, "the Split", func() error { return get(e, ns, workload, split) })
	if !hasOwner(split.OwnerReferences, "apps/v1", "Deployment", workload, user.UID) {
		t.Errorf("Split owner references = %+v, want the Deployment %s (uid %s)", split.OwnerReferences, workload, user.UID)
	}
	if !reflect.DeepEqual(split.Finalizers, []string{controller.Finalizer}) {
		t.Errorf("Split finalizers = %v, want [%s]", split.Finalizers, controller.Finalizer)
	}
	if want := (splitterv1.SplitSpec{Workload: workload, Policy: "standard"}); split.Spec != want {
		t.Errorf("Split spec = %+v, want %+v", split.Spec, want)
	}

	// The color Deployments: blue with the user's replicas, green at 0,
	// each selecting and labelling its pods with its color.
	colors := map[splitterv1.Color]*appsv1.Deployment{}
	for c, replicas := range map[splitterv1.Color]int32{splitterv1.Blue: userReplicas, splitterv1.Green: 0} {
		d := &appsv1.Deployment{}
		waitFor(t, controller.ColorName(workload, c), func() error { return get(e, ns, controller.ColorName(workload, c), d) })
		colors[c] = d
		if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
			t.Errorf("%s replicas = %v, want %d", d.Name, d.Spec.Replicas, replicas)
		}
		if got := d.Spec.Selector.MatchLabels; got["track"] != string(c) || got["app"] != workload {
			t.Errorf("%s selector = %v, want app=%s and track=%s", d.Name, got, workload, c)
		}
		if got := d.Spec.Template.Labels; got["track"] != string(c) || got["app"] != workload {
			t.Errorf("%s pod labels = %v, want app=%s and track=%s", d.Name, got, workload, c)
		}
		if got := d.Spec.Template.Annotations[splitterv1.RevisionAnnotation]; got != wantRev {
			t.Errorf("%s pod template %s = %q, want %q", d.Name, splitterv1.RevisionAnnotation, got, wantRev)
		}
		if got := d.Spec.Template.Spec.Containers[0].Image; got != "example.com/web:v1" {
			t.Errorf("%s image = %q, want the user's example.com/web:v1", d.Name, got)
		}
		if err := get(e, ns, workload, split); err != nil {
			t.Fatal(err)
		}
		if !metav1.IsControlledBy(d, split) {
			t.Errorf("%s is not controlled by the Split: %+v", d.Name, d.OwnerReferences)
		}
	}

	// Before blue is Ready nothing routes to it and the user's pods serve.
	split = splitOf(t, e, ns)
	if split.Status.LiveRevision != wantRev || split.Status.Live != splitterv1.Blue {
		t.Errorf("status live = %s revision %q, want blue revision %q", split.Status.Live, split.Status.LiveRevision, wantRev)
	}
	if err := get(e, ns, workload, &networkingv1.VirtualService{}); !apierrors.IsNotFound(err) {
		t.Errorf("VirtualService before blue is Ready: got %v, want NotFound", err)
	}
	if err := get(e, ns, workload, user); err != nil {
		t.Fatal(err)
	}
	if *user.Spec.Replicas != userReplicas {
		t.Errorf("user's Deployment scaled to %d before blue is Ready", *user.Spec.Replicas)
	}

	markReady(t, e, ns, splitterv1.Blue, userReplicas, wantRev)

	dr := &networkingv1.DestinationRule{}
	waitFor(t, "the DestinationRule", func() error { return get(e, ns, workload, dr) })
	if dr.Spec.Host != workload {
		t.Errorf("DestinationRule host = %q, want %q", dr.Spec.Host, workload)
	}
	subsets := map[string]map[string]string{}
	for _, s := range dr.Spec.Subsets {
		subsets[s.Name] = s.Labels
	}
	if want := map[string]map[string]string{"blue": {"track": "blue"}, "green": {"track": "green"}}; !reflect.DeepEqual(subsets, want) {
		t.Errorf("DestinationRule subsets = %v, want %v", subsets, want)
	}
	vs := waitWeights(t, e, ns, rollout.Weights{Blue: 100, Green: 0})
	if !reflect.DeepEqual(vs.Spec.Hosts, []string{workload}) {
		t.Errorf("VirtualService hosts = %v, want [%s]", vs.Spec.Hosts, workload)
	}
	split = splitOf(t, e, ns)
	for _, obj := range []metav1.Object{vs, dr} {
		if !metav1.IsControlledBy(obj, split) {
			t.Errorf("%s is not controlled by the Split: %+v", obj.GetName(), obj.GetOwnerReferences())
		}
	}

	// Traffic is on blue: the user's Deployment goes to 0, and the Split
	// remembers its 3 replicas.
	waitFor(t, "the user's Deployment scaled to 0", func() error {
		if err := get(e, ns, workload, user); err != nil {
			return err
		}
		if *user.Spec.Replicas != 0 {
			return fmt.Errorf("replicas = %d", *user.Spec.Replicas)
		}
		return nil
	})
	split = waitPhase(t, e, ns, splitterv1.PhaseIdle)
	if split.Status.Replicas == nil || *split.Status.Replicas != userReplicas {
		t.Errorf("status.replicas = %v, want %d", split.Status.Replicas, userReplicas)
	}
	if c := meta.FindStatusCondition(split.Status.Conditions, rollout.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready condition = %+v, want True", c)
	}
	// Blue keeps the remembered count after the user's went to 0.
	if err := get(e, ns, controller.ColorName(workload, splitterv1.Blue), colors[splitterv1.Blue]); err != nil {
		t.Fatal(err)
	}
	if got := *colors[splitterv1.Blue].Spec.Replicas; got != userReplicas {
		t.Errorf("blue replicas after the scale-down = %d, want %d", got, userReplicas)
	}

	// The transition is an Event on the Split.
	waitEvent(t, e, ns, rollout.ReasonAdopted)
}

// waitEvent waits for an Event with reason on the workload's Split.
func waitEvent(t *testing.T, e *env, ns, reason string) {
	t.Helper()
	waitFor(t, "the "+reason+" Event", func() error {
		var list eventsv1.EventList
		if err := e.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Reason == reason && ev.Regarding.Kind == "Split" && ev.Regarding.Name == workload {
				return nil
			}
		}
		return fmt.Errorf("no %s Event among %d", reason, len(list.Items))
	})
}

func hasOwner(refs []metav1.OwnerReference, apiVersion, kind, name string, uid types.UID) bool {
	for _, r := range refs {
		if r.APIVersion == apiVersion && r.Kind == kind && r.Name == name && r.UID == uid {
			return true
		}
	}
	return false
}

// setImage changes the user's pod template: a release.
func setImage(t *testing.T, e *env, ns, image string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := &appsv1.Deployment{}
		if err := get(e, ns, workload, d); err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		return e.c.Update(context.Background(), d)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRelease: a one-step release whose check verdict is scripted. A
// failure snaps all traffic back to blue; a pass promotes green.
func TestRelease(t *testing.T) {
	e := setup(t)
	t.Parallel()
	for _, tc := range []struct {
		name        string
		verdict     splitterv1.Verdict
		wantPhase   splitterv1.Phase
		wantWeights rollout.Weights
		wantLive    splitterv1.Color
		wantReason  string
		wantOutcome splitterv1.Outcome
		// wantReplicas per color once the release has ended.
		wantReplicas map[splitterv1.Color]int32
	}{
		{
			name: "failing check snaps back", verdict: splitterv1.VerdictFail,
			wantPhase: splitterv1.PhaseRolledBack, wantWeights: rollout.Weights{Blue: 100}, wantLive: splitterv1.Blue,
			wantReason: rollout.ReasonCheckFailed, wantOutcome: splitterv1.OutcomeRolledBack,
			wantReplicas: map[splitterv1.Color]int32{splitterv1.Blue: userReplicas, splitterv1.Green: 0},
		},
		{
			name: "passing check promotes", verdict: splitterv1.VerdictPass,
			wantPhase: splitterv1.PhasePromoting, wantWeights: rollout.Weights{Green: 100}, wantLive: splitterv1.Green,
			wantReason: rollout.ReasonPromoted, wantOutcome: splitterv1.OutcomePromoted,
			// Blue stays up for the standby period.
			wantReplicas: map[splitterv1.Color]int32{splitterv1.Blue: userReplicas, splitterv1.Green: userReplicas},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t, e)
			e.checks.script(ns, tc.verdict)
			bound := "0.5"
			create(t, e, shortPolicy(ns, splitterv1.Check{
				Name:  "errors",
				Query: `sum(rate(errors_total{namespace="{{ .Namespace }}",pod=~"{{ .Candidate }}-.*"}[{{ .Window }}]))`,
				Max:   &bound,
			}))
			create(t, e, service(ns))
			create(t, e, userDeployment(ns, map[string]string{splitterv1.PolicyAnnotation: "standard"}))
			before := adopt(t, e, ns)
			waitWeights(t, e, ns, rollout.Weights{Blue: 100})
			if n := len(e.checks.callsIn(ns)); n != 0 {
				t.Errorf("checks ran %d times before any release", n)
			}

			setImage(t, e, ns, "example.com/web:v2")
			split := waitPhase(t, e, ns, splitterv1.PhasePreparing)
			candidate := split.Status.CandidateRevision
			if candidate == "" || candidate == before.Status.LiveRevision || split.Status.Candidate != splitterv1.Green {
				t.Fatalf("preparing %s revision %q (live %q): want green with a new revision", split.Status.Candidate, candidate, before.Status.LiveRevision)
			}
			markReady(t, e, ns, splitterv1.Green, userReplicas, candidate)
			green := &appsv1.Deployment{}
			if err := get(e, ns, controller.ColorName(workload, splitterv1.Green), green); err != nil {
				t.Fatal(err)
			}
			if got := green.Spec.Template.Spec.Containers[0].Image; got != "example.com/web:v2" {
				t.Errorf("green image = %q, want example.com/web:v2", got)
			}

			// The single step routes all traffic to green and holds it for
			// stepDuration before the checks are due.
			waitPhase(t, e, ns, splitterv1.PhaseShifting)
			waitWeights(t, e, ns, rollout.Weights{Green: 100})

			split = waitPhase(t, e, ns, tc.wantPhase)
			waitWeights(t, e, ns, tc.wantWeights)
			if split.Status.Live != tc.wantLive {
				t.Errorf("live = %s, want %s", split.Status.Live, tc.wantLive)
			}
			if len(split.Status.History) == 0 {
				t.Fatal("no history entry")
			}
			h := split.Status.History[0]
			if h.Reason != tc.wantReason || h.Outcome != tc.wantOutcome || h.Revision != candidate || h.Color != splitterv1.Green || h.Step != 1 {
				t.Errorf("history[0] = %+v, want reason %s, outcome %s, revision %s on green at step 1", h, tc.wantReason, tc.wantOutcome, candidate)
			}
			if len(split.Status.Checks) != 1 || split.Status.Checks[0].Name != "errors" || split.Status.Checks[0].Verdict != tc.verdict || split.Status.Checks[0].Step != 1 {
				t.Errorf("status.checks = %+v, want errors %s at step 1", split.Status.Checks, tc.verdict)
			}
			calls := e.checks.callsIn(ns)
			if len(calls) == 0 {
				t.Fatal("the checks never ran")
			}
			want := analysis.Vars{Namespace: ns, Workload: workload, Service: workload, Candidate: "web-green", Live: "web-blue", Window: "5s"}
			if calls[0] != want {
				t.Errorf("check vars = %+v, want %+v", calls[0], want)
			}
			for c, replicas := range tc.wantReplicas {
				name := controller.ColorName(workload, c)
				waitFor(t, fmt.Sprintf("%s at %d replicas", name, replicas), func() error {
					d := &appsv1.Deployment{}
					if err := get(e, ns, name, d); err != nil {
						return err
					}
					if *d.Spec.Replicas != replicas {
						return fmt.Errorf("replicas = %d", *d.Spec.Replicas)
					}
					return nil
				})
			}
		})
	}
}

// TestUserVirtualService: with splitter.dev/virtual-service, splitter
// changes the weights of the routes to the Service and nothing else, and
// uses the user's DestinationRule as it is.
func TestUserVirtualService(t *testing.T) {
	e := setup(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, e)

	vsIn := fromYAML(t, ns, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web-routes
  labels: {team: shop}
  annotations: {note: hand-written}
spec:
  hosts: [web]
  gateways: [mesh]
  http:
  - name: canary-header
    match:
    - headers:
        x-canary: {exact: "1"}
    route:
    - destination: {host: web, subset: blue, port: {number: 80}}
      weight: 50
    - destination: {host: web, subset: green, port: {number: 80}}
      weight: 50
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,reset"}
    timeout: 10s
  - name: legacy
    match:
    - uri: {prefix: /legacy}
    route:
    - destination: {host: legacy.other.svc.cluster.local}
    timeout: 3s
  - name: default
    route:
    - destination: {host: web.NAMESPACE.svc.cluster.local, subset: green}
      weight: 50
    - destination: {host: web.NAMESPACE.svc.cluster.local, subset: blue}
      weight: 50
    retries: {attempts: 1}
`)
	drIn := fromYAML(t, ns, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: web
spec:
  host: web
  trafficPolicy:
    connectionPool:
      http: {http1MaxPendingRequests: 100}
  subsets:
  - name: blue
    labels: {track: blue}
  - name: green
    labels: {track: green}
`)
	create(t, e, vsIn)
	create(t, e, drIn)
	before, drBefore := vsIn.DeepCopy(), drIn.DeepCopy()
	if err := get(e, ns, "web-routes", before); err != nil {
		t.Fatal(err)
	}
	if err := get(e, ns, "web", drBefore); err != nil {
		t.Fatal(err)
	}

	create(t, e, shortPolicy(ns))
	create(t, e, service(ns))
	create(t, e, userDeployment(ns, map[string]string{
		splitterv1.PolicyAnnotation:         "standard",
		splitterv1.VirtualServiceAnnotation: "web-routes",
	}))
	split := adopt(t, e, ns)
	if split.Spec.VirtualService != "web-routes" {
		t.Errorf("Split spec.virtualService = %q, want web-routes", split.Spec.VirtualService)
	}

	after := before.DeepCopy()
	waitFor(t, "blue at 100% on both routes to web", func() error {
		if err := get(e, ns, "web-routes", after); err != nil {
			return err
		}
		for _, r := range []int{0, 2} {
			w, err := routeWeights(after, r)
			if err != nil {
				return err
			}
			if w != (rollout.Weights{Blue: 100}) {
				return fmt.Errorf("route %d weights %s", r, w)
			}
		}
		return nil
	})

	// Everything but the weights is as the user wrote it.
	wantSpec, gotSpec := withoutWeights(t, before), withoutWeights(t, after)
	if !reflect.DeepEqual(gotSpec, wantSpec) {
		a, _ := yaml.Marshal(wantSpec)
		b, _ := yaml.Marshal(gotSpec)
		t.Errorf("VirtualService spec changed beyond the weights:\nbefore:\n%s\nafter:\n%s", a, b)
	}
	if !reflect.DeepEqual(after.GetLabels(), before.GetLabels()) || !reflect.DeepEqual(after.GetAnnotations(), before.GetAnnotations()) {
		t.Errorf("VirtualService labels/annotations changed: %v %v -> %v %v", before.GetLabels(), before.GetAnnotations(), after.GetLabels(), after.GetAnnotations())
	}
	if refs := after.GetOwnerReferences(); len(refs) != 0 {
		t.Errorf("the user's VirtualService got owner references %+v", refs)
	}
	// The other host's route keeps having no weight at all.
	if _, found, _ := unstructured.NestedFieldNoCopy(nthRoute(t, after, 1, 0), "weight"); found {
		t.Errorf("the legacy route's destination got a weight: %v", nthRoute(t, after, 1, 0))
	}

	// The user's DestinationRule is used as it is, never written.
	drAfter := drBefore.DeepCopy()
	if err := get(e, ns, "web", drAfter); err != nil {
		t.Fatal(err)
	}
	if drAfter.GetResourceVersion() != drBefore.GetResourceVersion() {
		t.Errorf("the user's DestinationRule was written: %v -> %v", drBefore.Object["spec"], drAfter.Object["spec"])
	}
	// No VirtualService of splitter's own beside the user's.
	var list networkingv1.VirtualServiceList
	if err := e.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		names := []string{}
		for _, vs := range list.Items {
			names = append(names, vs.Name)
		}
		t.Errorf("VirtualServices = %v, want only web-routes", names)
	}
}

func fromYAML(t *testing.T, ns, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(strings.ReplaceAll(doc, "NAMESPACE", ns)), &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace(ns)
	return u
}

func nthRoute(t *testing.T, vs *unstructured.Unstructured, route, dest int) map[string]any {
	t.Helper()
	http, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
	if route >= len(http) {
		t.Fatalf("no route %d in %v", route, http)
	}
	dests, _, _ := unstructured.NestedSlice(http[route].(map[string]any), "route")
	if dest >= len(dests) {
		t.Fatalf("no destination %d in route %d: %v", dest, route, dests)
	}
	return dests[dest].(map[string]any)
}

// routeWeights reads the blue and green weights of one route of a
// VirtualService read as unstructured; an absent weight is 0.
func routeWeights(vs *unstructured.Unstructured, route int) (rollout.Weights, error) {
	var w rollout.Weights
	http, _, err := unstructured.NestedSlice(vs.Object, "spec", "http")
	if err != nil || route >= len(http) {
		return w, fmt.Errorf("no route %d: %v", route, err)
	}
	dests, _, err := unstructured.NestedSlice(http[route].(map[string]any), "route")
	if err != nil {
		return w, err
	}
	for _, d := range dests {
		subset, _, _ := unstructured.NestedString(d.(map[string]any), "destination", "subset")
		weight, _, err := unstructured.NestedInt64(d.(map[string]any), "weight")
		if err != nil {
			return w, err
		}
		switch subset {
		case "blue":
			w.Blue = int32(weight)
		case "green":
			w.Green = int32(weight)
		}
	}
	return w, nil
}

// withoutWeights is the VirtualService's spec with every weight removed.
func withoutWeights(t *testing.T, vs *unstructured.Unstructured) map[string]any {
	t.Helper()
	spec, _, err := unstructured.NestedMap(vs.Object, "spec") // a deep copy
	if err != nil {
		t.Fatal(err)
	}
	http, _, _ := unstructured.NestedSlice(spec, "http")
	for _, r := range http {
		dests, _, _ := unstructured.NestedSlice(r.(map[string]any), "route")
		for _, d := range dests {
			delete(d.(map[string]any), "weight")
		}
		if err := unstructured.SetNestedSlice(r.(map[string]any), dests, "route"); err != nil {
			t.Fatal(err)
		}
	}
	if err := unstructured.SetNestedSlice(spec, http, "http"); err != nil {
		t.Fatal(err)
	}
	return spec
}

// TestInvalidPolicy: a policy the CRD accepts but splitter rejects stalls
// the Split with the field path, touches no traffic, and fixing the policy
// lets the opt-in proceed.
func TestInvalidPolicy(t *testing.T) {
	e := setup(t)
	t.Parallel()
	one := "1"
	for _, tc := range []struct {
		name       string
		spec       *splitterv1.SplitPolicySpec // nil: no policy at all
		wantReason string
		wantInMsg  string
	}{
		{
			name: "query uses an unknown field",
			spec: &splitterv1.SplitPolicySpec{Checks: []splitterv1.Check{{
				Name: "errors", Query: `sum(rate(errors_total{pod="{{ .Pod }}"}[1m]))`, Max: &one,
			}}},
			wantReason: "PolicyInvalid", wantInMsg: "spec.checks[0].query",
		},
		{
			name:       "step shorter than the minimum",
			spec:       &splitterv1.SplitPolicySpec{StepDuration: &metav1.Duration{Duration: time.Second}},
			wantReason: "PolicyInvalid", wantInMsg: "spec.stepDuration",
		},
		{
			name:       "subset label is not a label key",
			spec:       &splitterv1.SplitPolicySpec{SubsetLabel: "track color"},
			wantReason: "PolicyInvalid", wantInMsg: "spec.subsetLabel",
		},
		{
			name:       "policy missing",
			wantReason: "PolicyNotFound", wantInMsg: `SplitPolicy "standard" not found`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ns := newNamespace(t, e)
			pol := shortPolicy(ns)
			if tc.spec != nil {
				pol.Spec = *tc.spec
				create(t, e, pol)
			}
			create(t, e, service(ns))
			create(t, e, userDeployment(ns, map[string]string{splitterv1.PolicyAnnotation: "standard"}))

			split := &splitterv1.Split{}
			var stalled *metav1.Condition
			waitFor(t, "Stalled", func() error {
				if err := get(e, ns, workload, split); err != nil {
					return err
				}
				stalled = meta.FindStatusCondition(split.Status.Conditions, rollout.ConditionStalled)
				if stalled == nil || stalled.Status != metav1.ConditionTrue {
					return fmt.Errorf("Stalled = %+v", stalled)
				}
				return nil
			})
			if stalled.Reason != tc.wantReason || !strings.Contains(stalled.Message, tc.wantInMsg) {
				t.Errorf("Stalled = %s %q, want reason %s and a message with %q", stalled.Reason, stalled.Message, tc.wantReason, tc.wantInMsg)
			}
			if c := meta.FindStatusCondition(split.Status.Conditions, rollout.ConditionReady); c == nil || c.Status != metav1.ConditionFalse {
				t.Errorf("Ready = %+v, want False", c)
			}
			if split.Status.Phase != "" {
				t.Errorf("phase = %q, want none: nothing was adopted", split.Status.Phase)
			}
			// No traffic change: nothing routed, nothing created, the
			// user's pods still serving.
			if err := get(e, ns, workload, &networkingv1.VirtualService{}); !apierrors.IsNotFound(err) {
				t.Errorf("VirtualService: got %v, want NotFound", err)
			}
			if err := get(e, ns, workload, &networkingv1.DestinationRule{}); !apierrors.IsNotFound(err) {
				t.Errorf("DestinationRule: got %v, want NotFound", err)
			}
			var deps appsv1.DeploymentList
			if err := e.c.List(ctx, &deps, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, d := range deps.Items {
				names = append(names, fmt.Sprintf("%s(%d)", d.Name, *d.Spec.Replicas))
			}
			if want := []string{fmt.Sprintf("%s(%d)", workload, userReplicas)}; !reflect.DeepEqual(names, want) {
				t.Errorf("Deployments = %v, want only the user's %v", names, want)
			}

			// Fixing the policy is seen through the watch: the Split
			// un-stalls and the opt-in goes on.
			fixed := shortPolicy(ns)
			if tc.spec == nil {
				create(t, e, fixed)
			} else {
				err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
					if err := get(e, ns, "standard", pol); err != nil {
						return err
					}
					pol.Spec = fixed.Spec
					return e.c.Update(ctx, pol)
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "Stalled=False and the blue Deployment", func() error {
				if err := get(e, ns, workload, split); err != nil {
					return err
				}
				if c := meta.FindStatusCondition(split.Status.Conditions, rollout.ConditionStalled); c == nil || c.Status != metav1.ConditionFalse {
					return fmt.Errorf("Stalled = %+v", c)
				}
				return get(e, ns, controller.ColorName(workload, splitterv1.Blue), &appsv1.Deployment{})
			})
		})
	}
}

// sloReleaseAt20 starts a release under an SLO policy (steps 20/100 of
// 10 minutes, availability 99.5%) with healthy counters, and waits until
// the candidate, green, has 20%. It returns the policy.
func sloReleaseAt20(t *testing.T, e *env, ns string) *splitterv1.SplitPolicy {
	t.Helper()
	return sloReleaseAt20With(t, e, ns, nil)
}

// sloReleaseAt20With is sloReleaseAt20 with the policy changed first.
func sloReleaseAt20With(t *testing.T, e *env, ns string, change func(*splitterv1.SplitPolicySpec)) *splitterv1.SplitPolicy {
	t.Helper()
	ctx := context.Background()
	pol := &splitterv1.SplitPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "standard", Namespace: ns},
		Spec: splitterv1.SplitPolicySpec{
			Steps:        []int32{20, 100},
			StepDuration: &metav1.Duration{Duration: 10 * time.Minute},
			SLOs:         []splitterv1.SLO{{Name: "availability", Objective: "99.5"}},
		},
	}
	if change != nil {
		change(&pol.Spec)
	}
	create(t, e, pol)
	create(t, e, service(ns))
	e.counters.script(ns, map[splitterv1.Color][2]float64{splitterv1.Blue: {80, 0.08}, splitterv1.Green: {20, 0.02}})
	user := userDeployment(ns, map[string]string{splitterv1.PolicyAnnotation: "standard"})
	create(t, e, user)
	s := adopt(t, e, ns)

	// Release v2: green becomes Ready and gets 20%.
	waitFor(t, "a new image", func() error {
		if err := get(e, ns, workload, user); err != nil {
			return err
		}
		user.Spec.Template.Spec.Containers[0].Image = "example.com/web:v2"
		return e.c.Update(ctx, user)
	})
	s = waitPhase(t, e, ns, splitterv1.PhasePreparing)
	markReady(t, e, ns, s.Status.Candidate, userReplicas, s.Status.CandidateRevision)
	waitPhase(t, e, ns, splitterv1.PhaseShifting)
	waitWeights(t, e, ns, rollout.Weights{Blue: 80, Green: 20})
	return pol
}

// A policy with SLOs and checks: a step's checks run when its hold ends,
// counted from when its evidence settled, which the controller holds in
// memory until the next transition (patchStatus). A pass that asked
// whether the checks were due on the status as written never ran them
// (that status has not settled), while the engine waited for their
// verdicts: the step held until the evidence was written 5 minutes on.
func TestChecksRunWhenTheSettledHoldEnds(t *testing.T) {
	e := setup(t)
	t.Parallel()
	bound := "0.5"
	ns := newNamespace(t, e)
	e.checks.script(ns, splitterv1.VerdictPass)
	sloReleaseAt20With(t, e, ns, func(p *splitterv1.SplitPolicySpec) {
		p.StepDuration = &metav1.Duration{Duration: 5 * time.Second}
		p.Checks = []splitterv1.Check{{Name: "errors", Query: `sum(rate(errors_total{namespace="{{ .Namespace }}"}[{{ .Window }}]))`, Max: &bound}}
	})
	waitFor(t, "the step's checks to run", func() error {
		if n := len(e.checks.callsIn(ns)); n == 0 {
			return fmt.Errorf("no check run yet (phase %s, step %d)", splitOf(t, e, ns).Status.Phase, splitOf(t, e, ns).Status.Step)
		}
		return nil
	})
}

// Finding 8: a stall during a release (here the policy made invalid
// mid-step) must not stop the watchdog: with the last valid plan kept in
// status, a candidate that goes bad is still snapped back, and the Split
// says both that it is stalled and why traffic moved.
func TestStallKeepsTheWatchdog(t *testing.T) {
	e := setup(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, e)
	pol := sloReleaseAt20(t, e, ns)

	// The policy becomes invalid (a field the CRD admits, the controller
	// refuses): the Split stalls, traffic stays.
	waitFor(t, "an invalid policy", func() error {
		if err := get(e, ns, "standard", pol); err != nil {
			return err
		}
		pol.Spec.Watchdog = &splitterv1.Watchdog{Alpha: "0.01"}
		return e.c.Update(ctx, pol)
	})
	waitFor(t, "Stalled", func() error {
		sp := splitOf(t, e, ns)
		if c := meta.FindStatusCondition(sp.Status.Conditions, rollout.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "PolicyInvalid" {
			return fmt.Errorf("Stalled = %+v", c)
		}
		return nil
	})
	waitWeights(t, e, ns, rollout.Weights{Blue: 80, Green: 20})
	// The stall of a Split whose Stalled condition was False is announced.
	waitEvent(t, e, ns, "PolicyInvalid")

	// Green goes bad: 40% errors. The watchdog still snaps back.
	e.counters.script(ns, map[splitterv1.Color][2]float64{splitterv1.Blue: {80, 0.08}, splitterv1.Green: {20, 8}})
	waitWeights(t, e, ns, rollout.Weights{Blue: 100, Green: 0})
	sp := splitOf(t, e, ns)
	t.Logf("history %+v conditions %+v", sp.Status.History, sp.Status.Conditions)
	if len(sp.Status.History) == 0 || sp.Status.History[0].Reason != rollout.ReasonWatchdog {
		t.Fatalf("history %+v, want a watchdog snap-back", sp.Status.History)
	}
	if c := meta.FindStatusCondition(sp.Status.Conditions, rollout.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("after the snap-back Stalled = %+v, want still True (the policy is still invalid)", c)
	}
}

// TestEvidenceByRevision: a color's evidence counts the pods of its
// revision only. A pod of the candidate color's previous revision that
// still gets traffic (stale endpoints after an API-server restart, a
// rolling update's old pods: make chaos rolled back 3 of 62 healthy
// releases for it) fails 40% of its requests, and the release holds; the
// same failures on the revision's own pod snap it back.
func TestEvidenceByRevision(t *testing.T) {
	e := setup(t)
	t.Parallel()
	ns := newNamespace(t, e)
	sloReleaseAt20(t, e, ns)
	s := splitOf(t, e, ns)
	green, blue := s.Status.Candidate, s.Status.Live

	// The pod template carries the revision as a label, so its ReplicaSets do.
	d := &appsv1.Deployment{}
	if err := get(e, ns, controller.ColorName(workload, green), d); err != nil {
		t.Fatal(err)
	}
	if got := d.Spec.Template.Labels[splitterv1.RevisionLabel]; got != s.Status.CandidateRevision {
		t.Fatalf("%s's pod template has %s=%q, want %q", d.Name, splitterv1.RevisionLabel, got, s.Status.CandidateRevision)
	}
	// Play the Deployment controller: each color's ReplicaSet of its
	// revision, and green's of an older one.
	replicaSet := func(c splitterv1.Color, suffix, revision string) string {
		owner := &appsv1.Deployment{}
		if err := get(e, ns, controller.ColorName(workload, c), owner); err != nil {
			t.Fatal(err)
		}
		sel := map[string]string{"app": workload, "pod-template-hash": suffix}
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{
				Name: owner.Name + "-" + suffix, Namespace: ns,
				Labels:          map[string]string{splitterv1.RevisionLabel: revision, "pod-template-hash": suffix},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(owner, appsv1.SchemeGroupVersion.WithKind("Deployment"))},
			},
			Spec: appsv1.ReplicaSetSpec{
				Selector: &metav1.LabelSelector{MatchLabels: sel},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: sel},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/web"}}},
				},
			},
		}
		create(t, e, rs)
		return rs.Name
	}
	greenRS := replicaSet(green, "5c9d7", s.Status.CandidateRevision)
	blueRS := replicaSet(blue, "7f6b8", s.Status.LiveRevision)
	staleRS := replicaSet(green, "stale", "an-older-revision")
	want := analysis.Revisions{green: {Own: []string{greenRS}, Other: []string{staleRS}}, blue: {Own: []string{blueRS}}}
	waitFor(t, "the counters read by revision", func() error {
		if got := e.counters.revisionAsked(ns); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("asked for %v, want %v", got, want)
		}
		return nil
	})

	// The stale pod fails 40% of its requests: not the release's evidence.
	e.counters.scriptStale(ns, green, [2]float64{20, 8})
	from := e.counters.callsIn(ns)
	waitFor(t, "60 reads with the stale pod failing", func() error {
		if n := e.counters.callsIn(ns) - from; n < 60 {
			return fmt.Errorf("%d reads", n)
		}
		return nil
	})
	waitWeights(t, e, ns, rollout.Weights{Blue: 80, Green: 20})
	if sp := splitOf(t, e, ns); len(sp.Status.History) != 0 {
		t.Fatalf("history %+v: the stale pod's failures were counted against the release", sp.Status.History)
	}

	// The control: the same failures on the revision's own pod snap back.
	from = e.counters.callsIn(ns)
	e.counters.script(ns, map[splitterv1.Color][2]float64{blue: {80, 0.08}, green: {20, 8}})
	waitWeights(t, e, ns, rollout.Weights{Blue: 100, Green: 0})
	t.Logf("the control snapped back after %d reads", e.counters.callsIn(ns)-from)
	if sp := splitOf(t, e, ns); len(sp.Status.History) == 0 || sp.Status.History[0].Reason != rollout.ReasonWatchdog {
		t.Fatalf("history %+v, want a watchdog snap-back", sp.Status.History)
	}
}

// A Deployment's spec is written on the condition that its generation is
// the one read: a status the Deployment controller wrote since does not
// refuse it (a resourceVersion precondition did, 0-2 times a release), a
// spec changed since does.
func TestSpecPatchPrecondition(t *testing.T) {
	e := setup(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, e)
	d := userDeployment(ns, nil)
	create(t, e, d)
	read := d.DeepCopy()

	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1}
	if err := e.c.Status().Update(ctx, d); err != nil {
		t.Fatal(err)
	}
	patch, err := controller.SpecPatch(read, "/spec/replicas", 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Patch(ctx, read.DeepCopy(), patch); err != nil {
		t.Fatalf("after a status write: %v, want the patch applied", err)
	}

	read = d.DeepCopy()
	if err := get(e, ns, workload, read); err != nil {
		t.Fatal(err)
	}
	d = read.DeepCopy()
	d.Spec.Template.Spec.Containers[0].Image = "example.com/web:v9"
	if err := e.c.Update(ctx, d); err != nil {
		t.Fatal(err)
	}
	patch, err = controller.SpecPatch(read, "/spec/replicas", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Patch(ctx, read.DeepCopy(), patch); !mesh.PatchNotApplied(err) {
		t.Fatalf("after a spec change: %v, want the generation test refused", err)
	}
	if err := get(e, ns, workload, d); err != nil || *d.Spec.Replicas != 2 {
		t.Fatalf("replicas %v (%v), want 2 kept", d.Spec.Replicas, err)
	}

	// Deleted and created again: generation 1 again, another UID.
	read = d.DeepCopy()
	if err := e.c.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Deployment gone", func() error {
		if err := get(e, ns, workload, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	again := userDeployment(ns, nil)
	create(t, e, again)
	read.Generation = again.Generation
	patch, err = controller.SpecPatch(read, "/spec/replicas", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Patch(ctx, read.DeepCopy(), patch); !mesh.PatchNotApplied(err) {
		t.Fatalf("to a Deployment created again at the same generation: %v, want the UID test refused", err)
	}
}

// waitStalled waits for Stalled=True with reason and a message containing
// msg, and for a Warning Event of that reason saying the same.
func waitStalled(t *testing.T, e *env, ns, reason, msg string) *splitterv1.Split {
	t.Helper()
	split := &splitterv1.Split{}
	waitFor(t, "Stalled "+reason, func() error {
		if err := get(e, ns, workload, split); err != nil {
			return err
		}
		c := meta.FindStatusCondition(split.Status.Conditions, rollout.ConditionStalled)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != reason || !strings.Contains(c.Message, msg) {
			return fmt.Errorf("Stalled = %+v, want reason %s with %q", c, reason, msg)
		}
		return nil
	})
	waitFor(t, "the "+reason+" Event", func() error {
		var list eventsv1.EventList
		if err := e.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Reason == reason && ev.Type == corev1.EventTypeWarning && ev.Regarding.Name == workload && strings.Contains(ev.Note, msg) {
				return nil
			}
		}
		return fmt.Errorf("no Warning %s Event with %q among %d", reason, msg, len(list.Items))
	})
	return split
}

// userObjects records the resourceVersions of the Istio objects in ns.
func userObjects(t *testing.T, e *env, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var vss networkingv1.VirtualServiceList
	var drs networkingv1.DestinationRuleList
	if err := e.c.List(context.Background(), &vss, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if err := e.c.List(context.Background(), &drs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, vs := range vss.Items {
		out["VirtualService/"+vs.Name] = vs.ResourceVersion
	}
	for _, dr := range drs.Items {
		out["DestinationRule/"+dr.Name] = dr.ResourceVersion
	}
	return out
}

// update applies change to the object named by obj's kind and name, retrying on conflicts.
func update(t *testing.T, e *env, obj client.Object, change func()) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := get(e, obj.GetNamespace(), obj.GetName(), obj); err != nil {
			return err
		}
		change()
		return e.c.Update(context.Background(), obj)
	})
	if err != nil {
		t.Fatalf("updating %s: %v", obj.GetName(), err)
	}
}

func remove(t *testing.T, e *env, obj client.Object) {
	t.Helper()
	if err := e.c.Delete(context.Background(), obj); err != nil {
		t.Fatalf("deleting %s: %v", obj.GetName(), err)
	}
}

// A user's VirtualService for web: a debug route pinned to blue, then the
// weighted route.
const userRoutesYAML = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-routes}
spec:
  hosts: [web]
  http:
  - name: debug
    match:
    - headers:
        x-debug: {exact: "1"}
    route:
    - destination: {host: web, subset: blue}
    timeout: 3s
  - name: primary
    route:
    - destination: {host: web, subset: blue}
      weight: 100
    - destination: {host: web, subset: green}
      weight: 0
`

const userDRYAML = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web-subsets}
spec:
  host: web.NAMESPACE.svc.cluster.local
  subsets:
  - {name: blue, labels: {track: blue}}
  - {name: green, labels: {track: green}}
`

// TestBadInput: each bad input stalls the Split with the cause (a field
// path where there is one) in the Stalled condition and a Warning Event,
// leaves traffic as it is (the user's pods serve, no routing object of
// splitter's, the user's routing objects unwritten), and the Split
// recovers by itself once the cause is fixed. Malformed and missing
// policies are TestInvalidPolicy's; bad input mid-release is test/e2e's
// TestBadInputMidRelease.
func TestBadInput(t *testing.T) {
	e := setup(t)
	t.Parallel()
	vsWith := func(ns, http string) *unstructured.Unstructured {
		return fromYAML(t, ns, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web-routes}\nspec:\n  hosts: [web]\n  http:\n"+http)
	}
	const primary = `
  - name: primary
    route:
    - destination: {host: web, subset: blue}
      weight: 100
    - destination: {host: web, subset: green}
      weight: 0
`
	otherService := func(ns, name string, selector map[string]string) *corev1.Service {
		s := service(ns)
		s.Name, s.Spec.Selector = name, selector
		return s
	}
	setAnnotation := func(t *testing.T, e *env, ns, key, value string) {
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: workload}}
		update(t, e, d, func() {
			if value == "" {
				delete(d.Annotations, key)
			} else {
				d.Annotations[key] = value
			}
		})
	}
	// restorePrimary gives the user's VirtualService back its one primary route.
	restorePrimary := func(t *testing.T, e *env, ns string) {
		vs := vsWith(ns, "")
		update(t, e, vs, func() { vs.Object["spec"] = vsWith(ns, primary).Object["spec"] })
	}
	for _, tc := range []struct {
		name string
		// objs are created before the Deployment, besides the policy.
		objs func(ns string) []client.Object
		// ann are the Deployment's annotations besides the policy.
		ann        map[string]string
		wantReason string
		wantInMsg  string
		fix        func(t *testing.T, e *env, ns string)
	}{
		{
			name:       "missing Service",
			wantReason: "ServiceNotFound", wantInMsg: "no Service selects the pods of web",
			fix: func(t *testing.T, e *env, ns string) { create(t, e, service(ns)) },
		},
		{
			name: "two Services select the pods",
			objs: func(ns string) []client.Object {
				return []client.Object{service(ns), otherService(ns, "web-canary", map[string]string{"app": workload})}
			},
			wantReason: "ServiceAmbiguous", wantInMsg: "Services web, web-canary all select the pods of web: name one with splitter.dev/service",
			fix: func(t *testing.T, e *env, ns string) {
				remove(t, e, otherService(ns, "web-canary", nil))
			},
		},
		{
			name:       "a named Service without a selector",
			objs:       func(ns string) []client.Object { return []client.Object{otherService(ns, "web-external", nil)} },
			ann:        map[string]string{splitterv1.ServiceAnnotation: "web-external"},
			wantReason: "ServiceInvalid", wantInMsg: "Service web-external spec.selector: empty",
			fix: func(t *testing.T, e *env, ns string) {
				s := otherService(ns, "web-external", nil)
				update(t, e, s, func() { s.Spec.Selector = map[string]string{"app": workload} })
			},
		},
		{
			name: "a named Service that does not select the pods",
			objs: func(ns string) []client.Object {
				return []client.Object{otherService(ns, "web-other", map[string]string{"app": "other"})}
			},
			ann:        map[string]string{splitterv1.ServiceAnnotation: "web-other"},
			wantReason: "ServiceInvalid", wantInMsg: "Service web-other spec.selector: map[app:other] does not select the pods of web",
			fix: func(t *testing.T, e *env, ns string) {
				s := otherService(ns, "web-other", nil)
				update(t, e, s, func() { s.Spec.Selector = map[string]string{"app": workload} })
			},
		},
		{
			name:       "the service annotation names a Service that does not exist",
			objs:       func(ns string) []client.Object { return []client.Object{service(ns)} },
			ann:        map[string]string{splitterv1.ServiceAnnotation: "web-svc"},
			wantReason: "ServiceNotFound", wantInMsg: `Service "web-svc" (named by splitter.dev/service) not found`,
			fix: func(t *testing.T, e *env, ns string) {
				create(t, e, otherService(ns, "web-svc", map[string]string{"app": workload}))
			},
		},
		{
			name:       "the virtual-service annotation names a VirtualService that does not exist",
			objs:       func(ns string) []client.Object { return []client.Object{service(ns)} },
			ann:        map[string]string{splitterv1.VirtualServiceAnnotation: "web-routes"},
			wantReason: "RoutingConflict", wantInMsg: "VirtualService/web-routes: not found (named by the splitter.dev/virtual-service annotation)",
			fix: func(t *testing.T, e *env, ns string) { create(t, e, fromYAML(t, ns, userRoutesYAML)) },
		},
		{
			name:       "the routes annotation names a route that does not exist",
			objs:       func(ns string) []client.Object { return []client.Object{service(ns), fromYAML(t, ns, userRoutesYAML)} },
			ann:        map[string]string{splitterv1.VirtualServiceAnnotation: "web-routes", splitterv1.RoutesAnnotation: "primary,main"},
			wantReason: "RoutingConflict", wantInMsg: `VirtualService/web-routes spec.http: no HTTP route named "main"`,
			fix: func(t *testing.T, e *env, ns string) {
				setAnnotation(t, e, ns, splitterv1.RoutesAnnotation, "primary")
			},
		},
		{
			name:       "the routes annotation names a route pinned to one color",
			objs:       func(ns string) []client.Object { return []client.Object{service(ns), fromYAML(t, ns, userRoutesYAML)} },
			ann:        map[string]string{splitterv1.VirtualServiceAnnotation: "web-routes", splitterv1.RoutesAnnotation: "debug"},
			wantReason: "RoutingConflict", wantInMsg: "VirtualService/web-routes spec.http[0].route: route http[0] (name: debug) is named by the splitter.dev/routes annotation",
			fix: func(t *testing.T, e *env, ns string) {
				setAnnotation(t, e, ns, splitterv1.RoutesAnnotation, "primary")
			},
		},
		{
			name:       "the routes annotation without a VirtualService of the user's",
			objs:       func(ns string) []client.Object { return []client.Object{service(ns)} },
			ann:        map[string]string{splitterv1.RoutesAnnotation: "primary"},
			wantReason: "AnnotationInvalid", wantInMsg: "Deployment web metadata.annotations[splitter.dev/routes]",
			fix: func(t *testing.T, e *env, ns string) {
				setAnnotation(t, e, ns, splitterv1.RoutesAnnotation, "")
			},
		},
		{
			name:       "an unknown pinned-routes value",
			objs:       func(ns string) []client.Object { return []client.Object{service(ns)} },
			ann:        map[string]string{splitterv1.PinnedRoutesAnnotation: "follow"},
			wantReason: "AnnotationInvalid", wantInMsg: `Deployment web metadata.annotations[splitter.dev/pinned-routes]: "follow" is not a known value`,
			fix: func(t *testing.T, e *env, ns string) {
				setAnnotation(t, e, ns, splitterv1.PinnedRoutesAnnotation, splitterv1.PinnedRoutesFollowLive)
			},
		},
		{
			name: "the user's VirtualService is for other hosts",
			objs: func(ns string) []client.Object {
				vs := vsWith(ns, primary)
				_ = unstructured.SetNestedStringSlice(vs.Object, []string{"cart", "web.example.com"}, "spec", "hosts")
				return []client.Object{service(ns), vs}
			},
			ann:        map[string]string{splitterv1.VirtualServiceAnnotation: "web-routes"},
			wantReason: "RoutingConflict", wantInMsg: "VirtualService/web-routes spec.hosts: [cart web.example.com] does not name web",
			fix: func(t *testing.T, e *env, ns string) {
				vs := vsWith(ns, "")
				update(t, e, vs, func() { _ = unstructured.SetNestedStringSlice(vs.Object, []string{"cart", "web"}, "spec", "hosts") })
			},
		},
		{
			name: "the user's VirtualService routes to other subsets only",
			objs: func(ns string) []client.Object {
				return []client.Object{service(ns), vsWith(ns, `
  - name: v1
    route:
    - destination: {host: web, subset: v1}
`)}
			},
			ann:        map[string]string{splitterv1.VirtualServiceAnnotation: "web-routes"},
			wantReason: "RoutingConflict", wantInMsg: "VirtualService/web-routes spec.http: no HTTP route sends traffic to web with both subsets blue and green",
			fix: restorePrimary,
		},
		{
			name: "the user's VirtualService has a third destination beside blue and green",
			objs: func(ns string) []client.Object {
				return []client.Object{service(ns), vsWith(ns, `
  - name: main
    route:
    - destination: {host: web, subset: blue}
      weight: 80
    - destination: {host: web, subset: green}
      weight: 10
    - destination: {host: legacy}
      weight: 10
`)}
			},
			ann:        map[string]string{splitterv1.VirtualServiceAnnotation: "web-routes"},
			wantReason: "RoutingConflict", wantInMsg: "VirtualService/web-routes spec.http[0].route: route http[0] (name: main) carries both color subsets",
			fix: restorePrimary,
		},
		{
			name: "the user's DestinationRule for the host, under another name, without the subsets",
			objs: func(ns string) []client.Object {
				dr := fromYAML(t, ns, userDRYAML)
				unstructured.RemoveNestedField(dr.Object, "spec", "subsets")
				return []client.Object{service(ns), dr}
			},
			wantReason: "RoutingConflict", wantInMsg: `DestinationRule/web-subsets spec.subsets: sets host web and needs a subset "blue" with labels {track: blue}`,
			fix: func(t *testing.T, e *env, ns string) {
				dr := fromYAML(t, ns, userDRYAML)
				update(t, e, dr, func() { dr.Object["spec"] = fromYAML(t, ns, userDRYAML).Object["spec"] })
			},
		},
		{
			name: "two DestinationRules for the host",
			objs: func(ns string) []client.Object {
				other := fromYAML(t, ns, userDRYAML)
				other.SetName("web-tls")
				return []client.Object{service(ns), fromYAML(t, ns, userDRYAML), other}
			},
			wantReason: "RoutingConflict", wantInMsg: "spec.host: DestinationRules web-subsets, web-tls all set host web",
			fix: func(t *testing.T, e *env, ns string) {
				dr := fromYAML(t, ns, userDRYAML)
				dr.SetName("web-tls")
				remove(t, e, dr)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t, e)
			create(t, e, shortPolicy(ns))
			if tc.objs != nil {
				for _, obj := range tc.objs(ns) {
					create(t, e, obj)
				}
			}
			before := userObjects(t, e, ns)
			ann := map[string]string{splitterv1.PolicyAnnotation: "standard"}
			for k, v := range tc.ann {
				ann[k] = v
			}
			create(t, e, userDeployment(ns, ann))

			split := waitStalled(t, e, ns, tc.wantReason, tc.wantInMsg)
			if c := meta.FindStatusCondition(split.Status.Conditions, rollout.ConditionReady); c == nil || c.Status != metav1.ConditionFalse {
				t.Errorf("Ready = %+v, want False", c)
			}
			// Traffic as it was: the user's routing objects unwritten,
			// no VirtualService of splitter's, the user's pods serving.
			after := userObjects(t, e, ns)
			for k := range after {
				if strings.HasPrefix(k, "VirtualService/") && before[k] == "" {
					t.Errorf("splitter created %s while stalled", k)
				}
			}
			for k, rv := range before {
				if after[k] != rv {
					t.Errorf("%s was written while stalled: resourceVersion %s -> %s", k, rv, after[k])
				}
			}
			user := &appsv1.Deployment{}
			if err := get(e, ns, workload, user); err != nil || *user.Spec.Replicas != userReplicas {
				t.Errorf("the user's Deployment: %v replicas (%v), want %d", user.Spec.Replicas, err, userReplicas)
			}

			// The fix is seen through a watch: the Split un-stalls and
			// splitter adopts the workload, routing blue at 100%.
			tc.fix(t, e, ns)
			waitFor(t, "Stalled=False", func() error {
				if err := get(e, ns, workload, split); err != nil {
					return err
				}
				if c := meta.FindStatusCondition(split.Status.Conditions, rollout.ConditionStalled); c == nil || c.Status != metav1.ConditionFalse {
					return fmt.Errorf("Stalled = %+v", c)
				}
				return nil
			})
			adopt(t, e, ns)
		})
	}
}

// TestPinnedRoutesThroughRelease (issue 8, 3b): a user's VirtualService
// with a debug header route pinned to blue beside the weighted route, and
// the user's DestinationRule under another name. splitter manages the
// weighted route only and says so in status; the debug route is left
// exactly as it is through a release and its promotion, with a Warning
// Event once it points at the standby color, unless the Deployment asks
// for follow-live: then it moves to the live color in the promotion's
// write, and nothing else of it changes.
func TestPinnedRoutesThroughRelease(t *testing.T) {
	e := setup(t)
	t.Parallel()
	for _, tc := range []struct {
		name       string
		follow     bool
		wantSubset string // the debug route's after the promotion
	}{
		{name: "left alone", wantSubset: "blue"},
		{name: "follow-live", follow: true, wantSubset: "green"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t, e)
			e.checks.script(ns, splitterv1.VerdictPass)
			one := "1"
			create(t, e, shortPolicy(ns, splitterv1.Check{Name: "errors", Query: `sum(errors_total{namespace="{{ .Namespace }}"})`, Max: &one}))
			create(t, e, service(ns))
			vs := fromYAML(t, ns, userRoutesYAML)
			create(t, e, vs)
			create(t, e, fromYAML(t, ns, userDRYAML))
			ann := map[string]string{splitterv1.PolicyAnnotation: "standard", splitterv1.VirtualServiceAnnotation: "web-routes"}
			if tc.follow {
				ann[splitterv1.PinnedRoutesAnnotation] = splitterv1.PinnedRoutesFollowLive
			}
			create(t, e, userDeployment(ns, ann))
			before := fromYAML(t, ns, userRoutesYAML)
			if err := get(e, ns, "web-routes", before); err != nil {
				t.Fatal(err)
			}
			debugBefore := nthRoute(t, before, 0, 0)

			split := adopt(t, e, ns)
			if want := []string{"http[1] (name: primary)"}; !reflect.DeepEqual(split.Status.Routes, want) {
				t.Errorf("status.routes = %v, want %v", split.Status.Routes, want)
			}
			if want := []splitterv1.PinnedRoute{{Route: "http[0] (name: debug)", Color: splitterv1.Blue}}; !reflect.DeepEqual(split.Status.PinnedRoutes, want) {
				t.Errorf("status.pinnedRoutes = %+v, want %+v", split.Status.PinnedRoutes, want)
			}
			// Splitter uses the user's DestinationRule for the host: none of its own.
			if err := get(e, ns, workload, &networkingv1.DestinationRule{}); !apierrors.IsNotFound(err) {
				t.Errorf("splitter's DestinationRule: %v, want NotFound (the user's web-subsets has the host)", err)
			}

			setImage(t, e, ns, "example.com/web:v2")
			split = waitPhase(t, e, ns, splitterv1.PhasePreparing)
			markReady(t, e, ns, splitterv1.Green, userReplicas, split.Status.CandidateRevision)
			waitPhase(t, e, ns, splitterv1.PhaseShifting)
			got := fromYAML(t, ns, userRoutesYAML)
			waitFor(t, "green 100 on the primary route", func() error {
				if err := get(e, ns, "web-routes", got); err != nil {
					return err
				}
				if w, err := routeWeights(got, 1); err != nil || w != (rollout.Weights{Green: 100}) {
					return fmt.Errorf("primary routes %s (%v)", w, err)
				}
				return nil
			})
			if d := nthRoute(t, got, 0, 0); !reflect.DeepEqual(d, debugBefore) {
				t.Errorf("during the release the debug route became %v, want %v", d, debugBefore)
			}

			waitPhase(t, e, ns, splitterv1.PhasePromoting)
			waitFor(t, "the debug route on "+tc.wantSubset, func() error {
				if err := get(e, ns, "web-routes", got); err != nil {
					return err
				}
				if s, _, _ := unstructured.NestedString(nthRoute(t, got, 0, 0), "destination", "subset"); s != tc.wantSubset {
					return fmt.Errorf("subset %q", s)
				}
				return nil
			})
			// Nothing else of the debug route changed.
			debugAfter := nthRoute(t, got, 0, 0)
			_ = unstructured.SetNestedField(debugAfter, "blue", "destination", "subset")
			if !reflect.DeepEqual(debugAfter, debugBefore) {
				t.Errorf("the debug route changed beyond its subset: %v, want %v", debugAfter, debugBefore)
			}
			wantSpec, gotSpec := withoutWeights(t, before), withoutWeights(t, got)
			_ = unstructured.SetNestedField(gotSpec["http"].([]any)[0].(map[string]any)["route"].([]any)[0].(map[string]any), "blue", "destination", "subset")
			if !reflect.DeepEqual(gotSpec, wantSpec) {
				t.Errorf("the VirtualService changed beyond the weights and the pinned subset:\n%v\nwant\n%v", gotSpec, wantSpec)
			}
			if !tc.follow {
				waitEvent(t, e, ns, "PinnedRouteNotLive")
			}
			waitFor(t, "status.pinnedRoutes on "+tc.wantSubset, func() error {
				s := splitOf(t, e, ns)
				if len(s.Status.PinnedRoutes) != 1 || string(s.Status.PinnedRoutes[0].Color) != tc.wantSubset {
					return fmt.Errorf("pinnedRoutes %+v", s.Status.PinnedRoutes)
				}
				return nil
			})
		})
	}
}
