package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/test/meshsim"
	"splitter.dev/splitter/test/testbed"
)

// TestMain starts the package's test bed with kube-apiserver's watch cache
// off: a restarted API server's cache starts empty and answers a watch
// resumed from an older resourceVersion with 410 Gone, where etcd serves
// every change since. The observer then misses nothing across restarts.
func TestMain(m *testing.M) {
	os.Exit(testbed.RunSharedWith(m, func(c *testbed.Config) {
		// No compaction either: a watch of a kind that rarely changes
		// resumes from an old revision, which compaction would remove.
		c.APIServerArgs = append(c.APIServerArgs, "--watch-cache=false", "--etcd-compaction-interval=0")
	}))
}

// The candidates a lane releases.
const (
	kindHealthy = "healthy"
	kindGross   = "gross" // 30% errors: the watchdog's
	kindSlow    = "slow"  // 2% errors, twice the SLO's budget: the step gates'
)

var faultErrorRate = map[string]string{kindHealthy: "0", kindGross: "0.3", kindSlow: "0.02"}

// chaosConfig is what a run does; make test runs a short one, make chaos
// a long one (CHAOS_* variables).
type chaosConfig struct {
	releases, lanes int
	seed            uint64
	lease           time.Duration // the replicas' leader-election lease
}

func chaosFromEnv(t *testing.T) chaosConfig {
	c := chaosConfig{releases: 8, lanes: 4, seed: 1, lease: 3 * time.Second}
	for name, dst := range map[string]*int{"CHAOS_RELEASES": &c.releases, "CHAOS_LANES": &c.lanes} {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive integer", name, v)
			}
			*dst = n
		}
	}
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", v, err)
		}
		c.seed = n
	}
	c.lanes = min(c.lanes, c.releases)
	return c
}

// chaosPolicy: one SLO, three steps long enough for 500 req/s (splitter
// policy lint --rps 500 --scrape-interval 1s says 10 s; at slower scrapes
// four scrape intervals, as a step's evidence starts two scrapes in and
// the watchdog checkpoints every two), four extensions for the evidence
// outages cost, and an Inconclusive that rolls back, so every release
// ends by itself.
func chaosPolicy(ns string, scrape time.Duration) *splitterv1.SplitPolicy {
	return &splitterv1.SplitPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "chaos", Namespace: ns},
		Spec: splitterv1.SplitPolicySpec{
			Steps:            []int32{20, 50, 100},
			StepDuration:     &metav1.Duration{Duration: max(10*time.Second, 4*scrape)},
			Standby:          &metav1.Duration{Duration: 5 * time.Second},
			ProgressDeadline: &metav1.Duration{Duration: time.Minute},
			SLOs:             []splitterv1.SLO{{Name: "availability", Objective: "99"}},
			MaxExtensions:    ptr.To(int32(4)),
			OnInconclusive:   "rollback",
		},
	}
}

// releaseBound is the longest a release of chaosPolicy may take with no
// fault: its candidate's progress deadline, then each step's settling
// (two scrapes) and its hold with every extension and a Fail's
// confirmation. Time taken by faults does not count (faultLog.faulted).
func releaseBound(p *splitterv1.SplitPolicy, scrape time.Duration) time.Duration {
	s := p.Spec
	perStep := 2*scrape + s.StepDuration.Duration*time.Duration(2+*s.MaxExtensions)
	return s.ProgressDeadline.Duration + time.Duration(len(s.Steps))*perStep
}

// TestChaos runs releases in several namespaces at once while two
// controller replicas with leader election are SIGKILLed and restarted,
// the API server is restarted, etcd and Prometheus hang, at seeded random
// instants; then the observer checks every change.
func TestChaos(t *testing.T) {
	tb := testbed.Shared(t)
	cfg := chaosFromEnv(t)
	rng := rand.New(rand.NewPCG(cfg.seed, 0x5eed))
	t.Logf("chaos: %d releases in %d namespaces, seed %d (CHAOS_SEED), scrapes every %s", cfg.releases, cfg.lanes, cfg.seed, tb.ScrapeInterval())

	obs, err := Observe(tb.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Stop()
	replicas := startReplicas(t, tb, 2, cfg.lease, rng.Uint64())

	// The lanes: each a namespace with its app, released one after another.
	images := map[string]string{}
	var imagesMu sync.Mutex
	var lanes []string
	for i := range cfg.lanes {
		ns := tb.Namespace(t, fmt.Sprintf("chaos-%d", i))
		tb.Create(t, chaosPolicy(ns, tb.ScrapeInterval()))
		tb.Create(t, appService(ns))
		tb.Create(t, appDeployment(ns))
		lanes = append(lanes, ns)
	}
	for _, ns := range lanes {
		waitSplit(t, tb, ns, 2*time.Minute, func(s *splitterv1.Split) bool { return s.Status.Phase == splitterv1.PhaseIdle })
	}
	bound := releaseBound(chaosPolicy("", tb.ScrapeInterval()), tb.ScrapeInterval())

	// Faults run until the lanes are done.
	faults := &faultLog{lease: cfg.lease, step: chaosPolicy("", tb.ScrapeInterval()).Spec.StepDuration.Duration}
	ctx, stopFaults := context.WithCancel(context.Background())
	faultsDone := make(chan struct{})
	faultSeed := rng.Uint64()
	go func() {
		defer close(faultsDone)
		injectFaults(ctx, t, tb, replicas, faults, faultSeed)
	}()

	// What Prometheus says of its scrapes, for the report.
	scrapeErrs := watchScrapes(ctx, tb.PrometheusURL)

	// Each lane releases its share, one after another.
	t0 := time.Now()
	var wg sync.WaitGroup
	per := splitEvenly(cfg.releases, cfg.lanes)
	for i, ns := range lanes {
		laneRNG := rand.New(rand.NewPCG(rng.Uint64(), uint64(i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per[i] {
				kind := pickKind(laneRNG)
				image := fmt.Sprintf("chaos.example/app:%s-%s-%d", kind, ns, j)
				imagesMu.Lock()
				images[image] = kind
				imagesMu.Unlock()
				if err := releaseAndWait(tb, ns, image, kind, bound+faults.waitCap()); err != nil {
					t.Errorf("%s release %d (%s): %v", ns, j, kind, err)
					return // the observer reports it as stuck
				}
			}
		}()
	}
	wg.Wait()
	stopFaults()
	<-faultsDone
	elapsed := time.Since(t0)
	time.Sleep(2 * time.Second) // the last changes reach the observer
	obs.Stop()

	changes, gaps, watchErrs := obs.Changes()
	laneSet := map[string]bool{}
	for _, ns := range lanes {
		laneSet[ns] = true
	}
	v := check(changes, runFacts{workload: "app", lanes: laneSet, bound: bound, faulted: faults.faulted, kinds: images}, time.Now())

	// The figures.
	outcomes := map[string]map[splitterv1.Outcome]int{}
	for _, r := range v.releases {
		if outcomes[r.kind] == nil {
			outcomes[r.kind] = map[splitterv1.Outcome]int{}
		}
		o := r.outcome
		if o == "" {
			o = "Stuck"
		}
		outcomes[r.kind][o]++
	}
	counts := faults.counts()
	report := []string{
		fmt.Sprintf("chaos: %d releases in %d namespaces in %s (seed %d)", len(v.releases), cfg.lanes, elapsed.Round(time.Second), cfg.seed),
		fmt.Sprintf("  faults: %d in all: %s", faults.total(), counts),
		fmt.Sprintf("  takeover after a leader kill: %s; controller restarts %d (killed, or exited on losing the Lease); leader changes %d", faults.takeovers(), replicas.restarts(), leaderChanges(changes)),
		fmt.Sprintf("  changes observed: %d (%d transitions: weight or phase changes); watch errors %d, gaps %d", len(changes), v.transitions, watchErrs, gaps),
	}
	for _, kind := range []string{kindHealthy, kindGross, kindSlow} {
		report = append(report, fmt.Sprintf("  %-8s %s", kind, outcomeLine(outcomes[kind])))
	}
	stuck := 0
	for _, r := range v.releases {
		if r.end.IsZero() {
			stuck++
		}
	}
	report = append(report, fmt.Sprintf("  violations %d, stuck %d, healthy rolled back %d, gross promoted %d, slow promoted %d",
		len(v.violations), stuck, outcomes[kindHealthy][splitterv1.OutcomeRolledBack], outcomes[kindGross][splitterv1.OutcomePromoted], outcomes[kindSlow][splitterv1.OutcomePromoted]))
	for _, e := range scrapeErrs() {
		report = append(report, "  scrape error: "+e)
	}
	for _, line := range report {
		t.Log(line)
		fmt.Println(line) // make chaos prints the figures
	}
	if len(v.releases) != cfg.releases {
		t.Errorf("the observer saw %d releases, the lanes made %d", len(v.releases), cfg.releases)
	}
	if gaps > 0 {
		t.Errorf("the observer missed changes %d times (410 Gone): the checks may have missed a violation", gaps)
	}
	for _, msg := range v.violations {
		t.Error("violation: " + msg)
	}
	for _, r := range v.releases {
		if r.kind == kindHealthy && r.outcome == splitterv1.OutcomeRolledBack {
			t.Logf("healthy release rolled back: %s %s: %s: %s", r.ns, r.image, r.reason, r.message)
			if a := r.last.Status.Analysis; a != nil {
				b, _ := json.Marshal(a)
				t.Logf("  its analysis then: %s", b)
			}
		}
	}
}

// appService is the app's Service, with 500 simulated requests a second.
func appService(ns string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns, Annotations: map[string]string{meshsim.RPSAnnotation: "500"}},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "app"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
}

func clientKey(ns string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: "app"} }

func appDeployment(ns string) *appsv1.Deployment {
	lbls := map[string]string{"app": "app"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns, Annotations: map[string]string{splitterv1.PolicyAnnotation: "chaos"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "chaos.example/app:0"}}},
			},
		},
	}
}

func pickKind(rng *rand.Rand) string {
	switch x := rng.Float64(); {
	case x < 0.6:
		return kindHealthy
	case x < 0.8:
		return kindGross
	default:
		return kindSlow
	}
}

func splitEvenly(n, parts int) []int {
	out := make([]int, parts)
	for i := range n {
		out[i%parts]++
	}
	return out
}

// releaseAndWait changes the app's image (and its simulated error rate)
// and waits for the release to end: an entry in the Split's history that
// began after the change, with the Split at rest. Requests are retried
// through API-server restarts.
func releaseAndWait(tb *testbed.TestBed, ns, image, kind string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var began time.Time
	for {
		if time.Now().After(deadline) {
			return fmt.Errorf("could not change the image within %s", timeout)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d := &appsv1.Deployment{}
		err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, d)
		if err == nil {
			base := d.DeepCopy()
			d.Spec.Template.Spec.Containers[0].Image = image
			if d.Spec.Template.Annotations == nil {
				d.Spec.Template.Annotations = map[string]string{}
			}
			d.Spec.Template.Annotations[meshsim.ErrorRateAnnotation] = faultErrorRate[kind]
			began = time.Now().Truncate(time.Second) // history times are whole seconds
			err = tb.Client.Patch(ctx, d, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		}
		cancel()
		if err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s := &splitterv1.Split{}
		err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, s)
		cancel()
		if err == nil && len(s.Status.History) > 0 && !s.Status.History[0].StartedAt.Time.Before(began) &&
			(s.Status.Phase == splitterv1.PhaseIdle || s.Status.Phase == splitterv1.PhaseRolledBack) {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("%s did not end within %s", image, timeout)
}

func waitSplit(t *testing.T, tb *testbed.TestBed, ns string, timeout time.Duration, ok func(*splitterv1.Split) bool) {
	t.Helper()
	testbed.Eventually(t, timeout, 250*time.Millisecond, ns+"'s Split", func(ctx context.Context) error {
		s := &splitterv1.Split{}
		if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, s); err != nil {
			return err
		}
		if !ok(s) {
			return fmt.Errorf("phase %s step %d", s.Status.Phase, s.Status.Step)
		}
		return nil
	})
}

func outcomeLine(m map[splitterv1.Outcome]int) string {
	var parts []string
	total := 0
	for o, n := range m {
		parts = append(parts, fmt.Sprintf("%s %d", o, n))
		total += n
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d: %s", total, strings.Join(parts, ", "))
}

// injectFaults runs two fault loops until ctx ends: one SIGKILLs a
// controller replica (the leader two times in five) every 2-6 s, the other
// restarts kube-apiserver, hangs etcd or Prometheus, or restarts
// Prometheus, every 3-9 s after the last such fault ended.
func injectFaults(ctx context.Context, t *testing.T, tb *testbed.TestBed, rs *replicaSet, log *faultLog, seed uint64) {
	var wg sync.WaitGroup
	loop := func(stream uint64, lo, hi time.Duration, inject func(rng *rand.Rand) bool) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, stream))
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(lo + time.Duration(rng.Int64N(int64(hi-lo)+1))):
			}
			if !inject(rng) {
				return
			}
		}
	}
	wg.Add(2)
	go loop(1, 2*time.Second, 6*time.Second, func(rng *rand.Rand) bool {
		start := time.Now()
		if rng.Float64() < 0.4 {
			// The takeover is timed in the background: other faults go on.
			if l := rs.leader(); l != nil {
				if holder := waitHolder(tb); holder != "" {
					l.kill()
					killed := time.Now()
					wg.Add(1)
					go func() {
						defer wg.Done()
						took := rs.waitTakeover(tb, holder, killed)
						log.add(faultLeaderKill, killed, killed.Add(took))
					}()
					return true
				}
			}
		}
		rs.killOther()
		log.add(faultReplicaKill, start, time.Now())
		return true
	})
	go loop(2, 3*time.Second, 9*time.Second, func(rng *rand.Rand) bool {
		start := time.Now()
		uniform := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
		switch x := rng.Float64(); {
		case x < 0.3:
			if err := tb.Restart(context.Background(), "kube-apiserver", true); err != nil {
				t.Errorf("restarting kube-apiserver: %v", err)
				return false
			}
			log.add(faultAPIServer, start, time.Now())
		case x < 0.65:
			hang(t, tb, "etcd", uniform(time.Second, 3*time.Second))
			log.add(faultEtcd, start, time.Now())
		case x < 0.9:
			hang(t, tb, "prometheus", uniform(3*time.Second, 10*time.Second))
			log.add(faultPrometheus, start, time.Now())
		default:
			if err := tb.Restart(context.Background(), "prometheus", true); err != nil {
				t.Errorf("restarting Prometheus: %v", err)
				return false
			}
			log.add(faultPrometheus, start, time.Now())
		}
		return true
	})
	wg.Wait()
}

// hang stops a process with SIGSTOP for d, as a stalled node would.
func hang(t *testing.T, tb *testbed.TestBed, name string, d time.Duration) {
	if err := tb.SignalProcess(name, syscall.SIGSTOP); err != nil {
		t.Errorf("stopping %s: %v", name, err)
		return
	}
	time.Sleep(d)
	if err := tb.SignalProcess(name, syscall.SIGCONT); err != nil {
		t.Errorf("continuing %s: %v", name, err)
	}
}

// watchScrapes polls Prometheus' targets every second until ctx ends; the
// function it returns lists each distinct scrape error with when it was
// first and last seen.
func watchScrapes(ctx context.Context, base string) func() []string {
	var mu sync.Mutex
	type seen struct{ first, last time.Time }
	errs := map[string]*seen{}
	go func() {
		c := http.Client{Timeout: 2 * time.Second}
		for ctx.Err() == nil {
			time.Sleep(time.Second)
			resp, err := c.Get(base + "/api/v1/targets")
			if err != nil {
				continue
			}
			var out struct {
				Data struct {
					ActiveTargets []struct {
						LastError string `json:"lastError"`
					} `json:"activeTargets"`
				} `json:"data"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			mu.Lock()
			for _, t := range out.Data.ActiveTargets {
				if t.LastError == "" {
					continue
				}
				if errs[t.LastError] == nil {
					errs[t.LastError] = &seen{first: time.Now()}
				}
				errs[t.LastError].last = time.Now()
			}
			mu.Unlock()
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for e, s := range errs {
			out = append(out, fmt.Sprintf("%s (%s to %s)", e, s.first.Format("15:04:05"), s.last.Format("15:04:05")))
		}
		sort.Strings(out)
		return out
	}
}

// leaderChanges counts the changes of the Lease's holder.
func leaderChanges(changes []change) int {
	n, holder := 0, ""
	for _, c := range changes {
		l, ok := c.obj.(*coordinationv1.Lease)
		if !ok || l.Namespace != leaseNamespace || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == holder {
			continue
		}
		if holder != "" {
			n++
		}
		holder = *l.Spec.HolderIdentity
	}
	return n
}
