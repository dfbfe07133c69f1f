package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
	"splitter.dev/splitter/test/testbed"
)

// writes reads splitter_api_writes_total, summed and by kind and result
// ("VirtualService/ok", "SplitStatus/conflict"...), from the controller's
// /metrics.
func (c *controllerProcess) writes(t testing.TB) (total float64, byKind map[string]float64) {
	t.Helper()
	resp, err := http.Get("http://" + c.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	byKind = map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "splitter_api_writes_total{")
		if !ok {
			continue
		}
		labels, val, _ := strings.Cut(rest, "} ")
		kind, result := "", ""
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "kind":
				kind = v
			case "result":
				result = v
			}
		}
		v, _ := strconv.ParseFloat(strings.TrimSpace(val), 64)
		byKind[kind+"/"+result] += v
		total += v
	}
	return total, byKind
}

// Once a workload is Idle, the controller writes nothing while nothing changes.
func TestNoWritesWhileIdle(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "idle")
	tb.Create(t, fastPolicy(ns, "fast", []int32{50, 100}))
	ctrl := startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
	time.Sleep(3 * time.Second) // let the adoption's last writes settle
	before, _ := ctrl.writes(t)
	// Longer than the 1 minute periodic requeue of a stalled Split would be
	// irrelevant here; 20 s covers many resyncs of a healthy one.
	time.Sleep(20 * time.Second)
	after, kinds := ctrl.writes(t)
	if after != before {
		t.Errorf("%v writes while Idle (by kind now: %v), want none", after-before, kinds)
	}
}

type logLine struct {
	TS      time.Time `json:"ts"`
	Msg     string    `json:"msg"`
	Verdict string    `json:"verdict"`
	Weight  string    `json:"weight"`
}

// failToWrite finds, in a controller's JSON log, the time between the last
// failing verdict and the next weights write.
func failToWrite(path string) (time.Duration, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	var failAt time.Time
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch {
		case l.Msg == "Check evaluated" && l.Verdict == "Fail":
			failAt = l.TS
		case l.Msg == "Weights set" && !failAt.IsZero():
			return l.TS.Sub(failAt), true
		}
	}
	return 0, false
}

// firstScrapeWith returns the time of the first sample of selector's
// series above zero, between from and to.
func firstScrapeWith(ctx context.Context, tb *testbed.TestBed, selector string, from, to time.Time) (time.Time, error) {
	c, err := promapi.NewClient(promapi.Config{Address: tb.PrometheusURL})
	if err != nil {
		return time.Time{}, err
	}
	// The raw samples (a range selector at to), not a range query's steps:
	// a step grid would put the fault up to a step after its sample.
	window := to.Sub(from).Round(time.Second) + time.Second
	v, _, _, err := promv1.NewAPI(c).Query(ctx, fmt.Sprintf("%s[%s]", selector, model.Duration(window)), to)
	if err != nil {
		return time.Time{}, err
	}
	m, ok := v.(model.Matrix)
	if !ok || len(m) == 0 {
		return time.Time{}, fmt.Errorf("no samples of %s", selector)
	}
	var first time.Time
	for _, s := range m {
		for _, p := range s.Values {
			if p.Value > 0 && !p.Timestamp.Time().Before(from) {
				if first.IsZero() || p.Timestamp.Time().Before(first) {
					first = p.Timestamp.Time()
				}
				break
			}
		}
	}
	if first.IsZero() {
		return time.Time{}, fmt.Errorf("%s never above zero", selector)
	}
	return first, nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func worst(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// BenchmarkSnapBack reports, over 5 faulty releases (30% errors), the time
// from the fault reaching Prometheus (first scrape with the candidate's 5xx)
// to the VirtualService at 100% live, and from the failing verdict to the
// snap-back write (from the controller's log). Threshold checks run at the
// end of each step, so the first figure is bounded by the step duration.
func BenchmarkSnapBack(b *testing.B) {
	tb := testbed.Shared(b)
	const runs = 5
	var gross, verdictToWrite []time.Duration
	for i := range runs {
		ns := tb.Namespace(b, fmt.Sprintf("bench-snap-%d", i))
		pol := fastPolicy(ns, "fast", []int32{20, 100})
		pol.Spec.StepDuration = &metav1.Duration{Duration: 5 * time.Second}
		tb.Create(b, pol)
		ctrl := startSplitter(b, tb, ns)
		optedIn(b, tb, ns, "fast")
		waitPhase(b, tb, ns, splitterv1.PhaseIdle, 3*time.Minute, readyCondition)
		start := time.Now()
		release(b, tb, ns, "example.com/app:bad", map[string]string{"meshsim.splitter.dev/error-rate": "0.3"})
		d, err := faultToSnapBack(tb, ns, start, 2*time.Minute)
		if err != nil {
			b.Fatalf("run %d: %v", i, err)
		}
		gross = append(gross, d)
		ctrl.Stop(5 * time.Second)
		if d, ok := failToWrite(ctrl.Log()); ok {
			verdictToWrite = append(verdictToWrite, d)
		}
	}
	b.ReportMetric(median(gross).Seconds(), "fault-to-snapback-median-s")
	b.ReportMetric(worst(gross).Seconds(), "fault-to-snapback-worst-s")
	if len(verdictToWrite) > 0 {
		b.ReportMetric(float64(median(verdictToWrite).Microseconds())/1000, "verdict-to-write-median-ms")
		b.ReportMetric(float64(worst(verdictToWrite).Microseconds())/1000, "verdict-to-write-worst-ms")
	}
}

// BenchmarkWritesPerStep reports the API writes of one healthy release with
// four steps, by kind: Routing should be one per step. The controller counts
// its writes (splitter_api_writes_total); the API server's audit log says
// what it received from the controller's own identity, by verb, resource
// and response code (api-<verb>-<resource>-<code>/release), so refused
// VirtualService patches (409 conflict, 422 invalid) show apart from the
// accepted ones.
func BenchmarkWritesPerStep(b *testing.B) {
	tb := testbed.Shared(b)
	ns := tb.Namespace(b, "bench-writes")
	pol := fastPolicy(ns, "fast", []int32{10, 25, 50, 100})
	pol.Spec.StepDuration = &metav1.Duration{Duration: 5 * time.Second}
	pol.Spec.Standby = &metav1.Duration{Duration: 5 * time.Second}
	_, kb, ka := releaseWrites(b, tb, pol, 3*time.Minute, 4)
	b.ReportMetric((ka["VirtualService/ok"]-kb["VirtualService/ok"])/4, "vs-writes/step")
	b.ReportMetric(ka["VirtualService/conflict"]-kb["VirtualService/conflict"], "vs-conflicts/release")
	b.ReportMetric((ka["SplitStatus/ok"]-kb["SplitStatus/ok"])/4, "status-writes/step")
	b.ReportMetric(ka["Deployment/ok"]-kb["Deployment/ok"], "deployment-writes/release")
}

// releaseWrites opts the app in under pol with a controller of its own,
// releases a new image once it is Idle, and waits (each phase up to
// within) until the release is promoted and Idle again. It reports the
// controller's writes (writes/release) and what the API server received
// from it (reportAudit, per step of steps), and returns the Split and the
// controller's write counters before and after the release.
func releaseWrites(b *testing.B, tb *testbed.TestBed, pol *splitterv1.SplitPolicy, within time.Duration, steps int) (*splitterv1.Split, map[string]float64, map[string]float64) {
	b.Helper()
	ns := pol.Namespace
	tb.Create(b, pol)
	ctrl := startSplitterAs(b, tb, ns, tb.ControllerKubeconfig)
	optedIn(b, tb, ns, pol.Name)
	waitPhase(b, tb, ns, splitterv1.PhaseIdle, 3*time.Minute, readyCondition)
	time.Sleep(2 * time.Second)
	before, kb := ctrl.writes(b)
	since := time.Now()
	release(b, tb, ns, "example.com/app:2", nil)
	waitPhase(b, tb, ns, splitterv1.PhasePromoting, within, nil)
	s := waitPhase(b, tb, ns, splitterv1.PhaseIdle, within, readyCondition)
	time.Sleep(2 * time.Second)
	after, ka := ctrl.writes(b)
	b.ReportMetric(after-before, "writes/release")
	if received, err := tb.AuditWrites(since, testbed.ControllerUser); err != nil {
		b.Logf("no audit figures: %v", err)
	} else {
		reportAudit(b, received, steps)
	}
	return s, kb, ka
}

// BenchmarkWritesPerSLORelease is BenchmarkWritesPerStep for a release
// of the recommended SLO shape (steps 20/50/100, 10% standby control),
// shortened to 1-minute steps and a 6-minute standby: what the API
// server received for the whole release, from its audit log. Evidence
// alone waits for a transition or analysis.Timing.EvidenceWriteEvery.
func BenchmarkWritesPerSLORelease(b *testing.B) {
	tb := testbed.Shared(b)
	ns := tb.Namespace(b, "bench-slo-writes")
	pol := sloPolicy(ns, []int32{20, 50, 100}, time.Minute)
	pol.Spec.Standby = &metav1.Duration{Duration: 6 * time.Minute}
	pol.Spec.StandbyWeight = 10
	pol.Spec.SLOs = append(pol.Spec.SLOs, splitterv1.SLO{Name: "latency", Objective: "99", Threshold: &metav1.Duration{Duration: 250 * time.Millisecond}})
	s, kb, ka := releaseWrites(b, tb, pol, 10*time.Minute, 3)
	if h := s.Status.History; len(h) == 0 || h[0].Outcome != splitterv1.OutcomePromoted {
		b.Fatalf("the release was not promoted: %+v", h)
	}
	b.ReportMetric(ka["SplitStatus/ok"]-kb["SplitStatus/ok"], "status-writes/release")
	b.ReportMetric(ka["VirtualService/ok"]-kb["VirtualService/ok"], "vs-writes/release")
	b.ReportMetric(ka["Deployment/ok"]-kb["Deployment/ok"], "deployment-writes/release")
}

// BenchmarkController100 opts 100 workloads in (3 replicas each) and
// reports the controller's resident memory once all are Idle; then it
// releases all 100 under an SLO policy (long steps, so all stay Shifting
// with the watchdog running every second) and reports the controller's
// and Prometheus' CPU over 30 s.
func BenchmarkController100(b *testing.B) {
	tb := testbed.Shared(b)
	ns := tb.Namespace(b, "bench-100")
	tb.Create(b, sloPolicy(ns, []int32{50, 100}, 10*time.Minute))
	ctrl := startSplitter(b, tb, ns)
	const n = 100
	for i := range n {
		name := fmt.Sprintf("w%03d", i)
		svc := service(ns, name, map[string]string{"app": name})
		svc.Annotations = map[string]string{"meshsim.splitter.dev/rps": "5"}
		tb.Create(b, svc)
		d := deployment(ns, name, 3, map[string]string{"app": name}, nil)
		d.Annotations = map[string]string{splitterv1.PolicyAnnotation: "slo"}
		tb.Create(b, d)
	}
	allIn := func(what string, ok func(*splitterv1.Split) bool) time.Duration {
		start := time.Now()
		testbed.Eventually(b, 10*time.Minute, 2*time.Second, what, func(ctx context.Context) error {
			var list splitterv1.SplitList
			if err := tb.Client.List(ctx, &list); err != nil {
				return err
			}
			got := 0
			for i := range list.Items {
				if list.Items[i].Namespace == ns && ok(&list.Items[i]) {
					got++
				}
			}
			if got < n {
				return fmt.Errorf("%d/%d", got, n)
			}
			return nil
		})
		return time.Since(start)
	}
	b.ReportMetric(allIn("100 Splits Idle and Ready", func(s *splitterv1.Split) bool { return readyCondition(s) == nil }).Seconds(), "adopt-100-s")
	time.Sleep(10 * time.Second)
	b.ReportMetric(float64(testbed.RSSKiB(ctrl.PID()))/1024, "idle-controller-RSS-MiB")

	for i := range n {
		d := &appsv1.Deployment{}
		if err := tb.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("w%03d", i)}, d); err != nil {
			b.Fatal(err)
		}
		base := d.DeepCopy()
		d.Spec.Template.Spec.Containers[0].Image = "example.com/app:2"
		if err := tb.Client.Patch(context.Background(), d, client.MergeFrom(base)); err != nil {
			b.Fatal(err)
		}
	}
	allIn("100 Splits Shifting", func(s *splitterv1.Split) bool {
		return s.Status.Phase == splitterv1.PhaseShifting && s.Status.StepStartedAt != nil
	})
	prom := tb.PIDs()["prometheus"]
	c0, p0, t0 := cpuSeconds(ctrl.PID()), cpuSeconds(prom), time.Now()
	time.Sleep(30 * time.Second)
	c1, p1, el := cpuSeconds(ctrl.PID()), cpuSeconds(prom), time.Since(t0).Seconds()
	b.ReportMetric(100*(c1-c0)/el, "controller-CPU-%-of-a-core")
	b.ReportMetric(100*(p1-p0)/el, "prometheus-CPU-%-of-a-core")
	b.ReportMetric(float64(testbed.RSSKiB(ctrl.PID()))/1024, "releasing-controller-RSS-MiB")
}

// cpuSeconds is a process's user+system CPU time from /proc/<pid>/stat.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// BenchmarkWatchdogSnapBack reports, over 5 concurrent runs each, the time
// from the fault reaching Prometheus (first scrape with green's 5xx) to the
// VirtualService at 100% blue, for a gross fault (30% errors) and a 5x
// regression (0.2% -> 1%), caught by the watchdog mid-step (steps of 10
// minutes, 20% weight, 100 req/s, 1 s scrapes); and the same faults under
// threshold checks (success rate >= 0.995 over 30 s steps).
// SPLITTER_BENCH_FAULTS (a regexp) selects faults by name; with
// TESTBED_SCRAPE_INTERVAL=15s it measures at a user's scrape interval.
func BenchmarkWatchdogSnapBack(b *testing.B) {
	only := regexp.MustCompile(os.Getenv("SPLITTER_BENCH_FAULTS"))
	tb := testbed.Shared(b)
	type fault struct {
		name      string
		base, bad string
		threshold bool
	}
	for _, f := range []fault{
		{"gross-watchdog", "0", "0.3", false},
		{"5x-watchdog", "0.002", "0.01", false},
		{"gross-threshold", "0", "0.3", true},
		{"5x-threshold", "0.002", "0.01", true},
	} {
		if !only.MatchString(f.name) {
			continue
		}
		results := make(chan time.Duration, 5)
		for i := range 5 {
			go func() {
				d, err := oneFault(b, tb, fmt.Sprintf("bench-%s-%d", f.name, i), f.base, f.bad, f.threshold)
				if err != nil {
					b.Log(err)
					d = -1
				}
				results <- d
			}()
		}
		// A run that never snapped back counts as the longest time (the
		// 5-minute timeout), not as a run that did not happen.
		var ds []time.Duration
		missed := 0
		for range 5 {
			d := <-results
			if d < 0 {
				missed++
				d = 5 * time.Minute
			}
			ds = append(ds, d)
		}
		b.ReportMetric(median(ds).Seconds(), f.name+"-median-s")
		b.ReportMetric(worst(ds).Seconds(), f.name+"-worst-s")
		b.ReportMetric(float64(missed), f.name+"-never-snapped-back")
	}
}

func oneFault(b *testing.B, tb *testbed.TestBed, prefix, base, bad string, threshold bool) (time.Duration, error) {
	ns := tb.Namespace(b, prefix)
	pol := sloPolicy(ns, []int32{20, 100}, 10*time.Minute)
	if threshold {
		pol = fastPolicy(ns, "slo", []int32{20, 100}, splitterv1.Check{Name: "success-rate", Builtin: splitterv1.BuiltinSuccessRate, Min: ptr.To("0.995")})
		pol.Spec.StepDuration = &metav1.Duration{Duration: 30 * time.Second}
	}
	tb.Create(b, pol)
	startSplitter(b, tb, ns)
	tb.Create(b, service(ns, "app", map[string]string{"app": "app"}))
	d := deployment(ns, "app", 3, map[string]string{"app": "app"}, map[string]string{"meshsim.splitter.dev/error-rate": base})
	d.Annotations = map[string]string{splitterv1.PolicyAnnotation: "slo"}
	tb.Create(b, d)
	waitPhase(b, tb, ns, splitterv1.PhaseIdle, 3*time.Minute, readyCondition)
	start := time.Now()
	release(b, tb, ns, "example.com/app:bad", map[string]string{"meshsim.splitter.dev/error-rate": bad})
	return faultToSnapBack(tb, ns, start, 5*time.Minute)
}

// faultToSnapBack polls the VirtualService finely until green, having had
// traffic, is back at 0, and returns the time from the first scrape holding
// green's 5xx to that moment.
func faultToSnapBack(tb *testbed.TestBed, ns string, start time.Time, timeout time.Duration) (time.Duration, error) {
	var snapped time.Time
	sawGreen := false
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		w, err := routedWeights(context.Background(), tb, ns)
		if err == nil && w.Green > 0 {
			sawGreen = true
		}
		if err == nil && sawGreen && w == (rollout.Weights{Blue: 100}) {
			snapped = time.Now()
			break
		}
	}
	if snapped.IsZero() {
		return 0, fmt.Errorf("%s: no snap-back within %s", ns, timeout)
	}
	faultAt, err := firstScrapeWith(context.Background(), tb, fmt.Sprintf(
		`istio_requests_total{reporter="destination",destination_workload_namespace=%q,destination_workload="app-green",response_code="500"}`, ns),
		start.Add(-2*time.Second), snapped)
	if err != nil {
		return 0, err
	}
	return snapped.Sub(faultAt), nil
}
