package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/backtest"
	"splitter.dev/splitter/internal/rollout"
	"splitter.dev/splitter/test/testbed"
)

// policyFile writes a SplitPolicy as the YAML a user would keep.
func policyFile(t *testing.T, dir string, p *splitterv1.SplitPolicy) string {
	t.Helper()
	p = p.DeepCopy()
	p.TypeMeta = metav1.TypeMeta{APIVersion: splitterv1.GroupVersion.String(), Kind: "SplitPolicy"}
	p.ResourceVersion, p.UID, p.Generation, p.CreationTimestamp, p.ManagedFields = "", "", 0, metav1.Time{}, nil
	data, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, p.Name+".yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runBacktest runs `splitter policy backtest` and returns its stdout,
// stderr and exit code.
func runBacktest(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testbed.SplitterBinary(t), append([]string{"policy", "backtest"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// liveDecision is when the controller decided to snap back: the
// transition's Event (events.k8s.io, to the microsecond).
func liveDecision(t *testing.T, tb *testbed.TestBed, ns, reason string) time.Time {
	t.Helper()
	var events eventsv1.EventList
	if err := tb.Client.List(context.Background(), &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if e.Reason == reason {
			return e.EventTime.Time
		}
	}
	t.Fatalf("no %s Event in %s", reason, ns)
	return time.Time{}
}

// A release the watchdog snaps back on the test bed, then backtested over
// its window from what Prometheus recorded:
//   - the same policy decides Fail on the same step, within a scrape
//     interval of the live decision;
//   - a looser policy over the same window does not roll back;
//   - baseline mode over the healthy stretch before the release agrees
//     with `policy simulate` for the traffic it measured.
//
// Prometheus scrapes the controller's /metrics, so the recorded weights
// are splitter_split_weight's.
func TestBacktestReplaysLiveSnapBack(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "backtest")
	strict := sloPolicy(ns, []int32{20, 100}, 2*time.Minute)
	strict.Name = "strict"
	tb.Create(t, strict)
	ctrl := startSplitter(t, tb, ns)
	if err := tb.AddScrapeTarget("splitter-"+ns, ctrl.metricsAddr); err != nil {
		t.Fatal(err)
	}
	tb.Create(t, service(ns, "app", map[string]string{"app": "app"}))
	d := deployment(ns, "app", 3, map[string]string{"app": "app"}, map[string]string{"meshsim.splitter.dev/error-rate": "0.003"})
	d.Annotations = map[string]string{splitterv1.PolicyAnnotation: "strict"}
	tb.Create(t, d)
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	// A healthy stretch for baseline mode, then the release.
	healthyFrom := time.Now().Add(5 * time.Second)
	const healthy = 150 * time.Second
	time.Sleep(time.Until(healthyFrom.Add(healthy)))
	windowFrom := time.Now().Add(-30 * time.Second)
	// 50% errors: the controller snaps back as soon as its evidence
	// crosses the threshold (a trip on samples waits for no confirming
	// look), and the recording has no candidate traffic after that. The
	// replay thins the counts to the policy's weights (68% kept in one CI
	// run) and must still cross within the recording: at 20% errors the
	// live trip came at a likelihood ratio of 640 against 167, and 68% of
	// that evidence (e^(0.68 ln 640) = 81) was not enough.
	release(t, tb, ns, "example.com/app:bad", map[string]string{"meshsim.splitter.dev/error-rate": "0.5"})
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 2*time.Minute, nil)
	h := s.Status.History[0]
	if h.Reason != rollout.ReasonWatchdog {
		t.Fatalf("the live release ended %s (%s), want a watchdog snap-back", h.Reason, h.Message)
	}
	decided := liveDecision(t, tb, ns, rollout.ReasonWatchdog)
	// Let Prometheus scrape past the decision (a reading looks a scrape
	// and a margin back).
	time.Sleep(5 * tb.ScrapeInterval())
	windowTo := time.Now().Add(-time.Second)
	scrape := tb.ScrapeInterval()

	dir := t.TempDir()
	common := []string{"--prometheus-url", tb.PrometheusURL, "-n", ns, "--workload", "app",
		"--from", windowFrom.UTC().Format(time.RFC3339), "--to", windowTo.UTC().Format(time.RFC3339)}

	// The same policy.
	svg := filepath.Join(dir, "backtest.svg")
	out, errOut, code := runBacktest(t, append([]string{"-f", policyFile(t, dir, strict), "-o", "json", "--svg", svg}, common...)...)
	if code != 0 {
		t.Fatalf("backtest exit %d: %s", code, errOut)
	}
	var rep backtest.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("backtest output: %v\n%.2000s", err, out)
	}
	text, _, _ := runBacktest(t, append([]string{"-f", policyFile(t, dir, strict)}, common...)...)
	t.Logf("live: %s at %s on step %d (%s)\nbacktest:\n%s", h.Reason, decided.UTC().Format("15:04:05.000"), h.Step, h.Message, text)
	keepTranscript(t, "backtest", text)
	stepAt := liveDecision(t, tb, ns, rollout.ReasonStepAdvanced)
	var replayStep time.Time
	for _, d := range rep.Decisions {
		if d.Reason == rollout.ReasonStepAdvanced && replayStep.IsZero() {
			replayStep = d.At
		}
	}
	t.Logf("first step: live %s, replay %s (recorded first step estimated at %s)", stepAt.UTC().Format("15:04:05.000"),
		replayStep.UTC().Format("15:04:05.000"), rep.CandidateFirst.UTC().Format("15:04:05.000"))
	if rep.Outcome != "rolledback" || rep.Decided == nil {
		t.Fatalf("backtest outcome %s, want rolledback", rep.Outcome)
	}
	if rep.Decided.Step != h.Step {
		t.Errorf("backtest decided on step %d, the controller on step %d", rep.Decided.Step, h.Step)
	}
	// Three scrape intervals: the replay looks once per scrape interval
	// while the controller looks when its requeues fall (up to one
	// interval apart on the same evidence); where the recorded share
	// differs from the policy's weight the replay thins the counts (it
	// keeps at most the recorded evidence), which can hold its decision
	// one more look (CI once saw 1.03 s at 1 s scrapes with 80% of the
	// requests kept); and a trip on samples may stand at once on one side
	// and wait for the confirming look on the other (2.34 s apart in 1 run
	// of 3 at 1 s scrapes, before the replay had samples: see
	// backtest.thinBracket).
	if gap := rep.Decided.At.Sub(decided); math.Abs(float64(gap)) > float64(3*scrape) {
		t.Errorf("backtest decided at %s, the controller at %s: %s apart, more than three scrape intervals (%s)",
			rep.Decided.At.UTC().Format("15:04:05.000"), decided.UTC().Format("15:04:05.000"), gap, 3*scrape)
	}
	if !strings.HasPrefix(rep.RecordedWeights, "splitter_split_weight") {
		t.Errorf("recorded weights from %q, want splitter_split_weight (Prometheus scrapes the controller)", rep.RecordedWeights)
	}
	chart, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	if err := wellFormed(chart); err != nil {
		t.Errorf("the SVG is not well-formed XML: %v", err)
	}
	keepTranscript(t, "backtest.svg", string(chart))

	// A looser policy over the same window.
	loose := strict.DeepCopy()
	loose.Name = "loose"
	loose.Spec.SLOs = []splitterv1.SLO{{Name: "availability", Objective: "40"}}
	loose.Spec.Compare = &splitterv1.Compare{MaxRatio: "500", FailRatio: "600"}
	out, errOut, code = runBacktest(t, append([]string{"-f", policyFile(t, dir, loose), "-o", "json"}, common...)...)
	if code != 0 {
		t.Fatalf("loose backtest exit %d: %s", code, errOut)
	}
	var looseRep backtest.Report
	if err := json.Unmarshal([]byte(out), &looseRep); err != nil {
		t.Fatal(err)
	}
	if looseRep.Outcome == "rolledback" {
		t.Errorf("the loose policy rolled back: %+v", looseRep.Decided)
	}

	// Baseline mode over the healthy stretch, and simulate for the traffic
	// it measured.
	quick := sloPolicy(ns, []int32{50, 100}, 5*time.Second)
	quick.Name = "quick"
	quickFile := policyFile(t, dir, quick)
	out, errOut, code = runBacktest(t, "-f", quickFile, "--prometheus-url", tb.PrometheusURL, "-n", ns, "--workload", "app",
		"--from", healthyFrom.UTC().Format(time.RFC3339), "--to", healthyFrom.Add(healthy).UTC().Format(time.RFC3339),
		"--baseline-only", "--releases", "60", "-o", "json")
	if code != 0 {
		t.Fatalf("baseline exit %d: %s", code, errOut)
	}
	var bl backtest.BaselineReport
	if err := json.Unmarshal([]byte(out), &bl); err != nil {
		t.Fatal(err)
	}
	t.Logf("baseline: %d releases, promoted %d, paused %d, rolled back %d; traffic %.1f req/s, %.3f%% bad; %s",
		bl.Releases, bl.Promoted, bl.Paused, bl.RolledBack, bl.Traffic.RPS, 100*bl.Traffic.BadRate["availability"], bl.Simulate)
	if bl.Traffic.RPS < 10 || bl.Releases == 0 {
		t.Fatalf("baseline measured %.1f req/s over %d releases", bl.Traffic.RPS, bl.Releases)
	}
	args := strings.Fields(bl.Simulate)
	if len(args) < 3 || args[0] != "splitter" {
		t.Fatalf("simulate line %q", bl.Simulate)
	}
	simOut, err := exec.Command(testbed.SplitterBinary(t), append(args[1:], "--runs", "400", "-o", "json")...).Output()
	if err != nil {
		t.Fatalf("%s: %v", bl.Simulate, err)
	}
	var sims []struct {
		Healthy struct {
			Runs            int `json:"runs"`
			Promoted        int `json:"promoted"`
			RolledBack      int `json:"rolledBack"`
			RolledBackShare struct {
				Low, High float64
			} `json:"rolledBackShare"`
		} `json:"healthy"`
	}
	if err := json.Unmarshal(simOut, &sims); err != nil || len(sims) != 1 {
		t.Fatalf("simulate output: %v\n%s", err, simOut)
	}
	sim := sims[0].Healthy
	t.Logf("simulate: %d runs, promoted %d, rolled back %d [%.3f, %.3f]", sim.Runs, sim.Promoted, sim.RolledBack, sim.RolledBackShare.Low, sim.RolledBackShare.High)
	// Consistent: the false-rollback intervals overlap.
	if bl.FalseRollbacks.High < sim.RolledBackShare.Low || sim.RolledBackShare.High < bl.FalseRollbacks.Low {
		t.Errorf("false rollbacks: baseline %.3f [%.3f, %.3f], simulate [%.3f, %.3f]", bl.FalseRollbacks.Share, bl.FalseRollbacks.Low, bl.FalseRollbacks.High,
			sim.RolledBackShare.Low, sim.RolledBackShare.High)
	}
}

// Bad input: a clear error each, exit 1 (2 for usage), no stack trace.
func TestBacktestBadInput(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "backtest-bad")
	dir := t.TempDir()
	good := policyFile(t, dir, sloPolicy(ns, []int32{20, 100}, time.Minute))
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: splitter.dev/v1alpha1\nkind: SplitPolicy\nmetadata: {name: p}\nspec: {steps: [50, 10, 100]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A workload that is not opted in: its traffic is recorded as "quiet"'s
	// own, from now on.
	tb.Create(t, service(ns, "quiet", map[string]string{"app": "quiet"}))
	tb.Create(t, deployment(ns, "quiet", 1, map[string]string{"app": "quiet"}, nil))
	testbed.Eventually(t, time.Minute, time.Second, "quiet's series in Prometheus", func(ctx context.Context) error {
		v, err := tb.Query(ctx, `istio_requests_total{destination_workload_namespace="`+ns+`",destination_workload="quiet"}`)
		if err == nil && len(v) == 0 {
			err = errors.New("none yet")
		}
		return err
	})
	now := time.Now()
	at := func(d time.Duration) string { return now.Add(d).UTC().Format(time.RFC3339) }
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"unknown workload", []string{"-f", good, "-n", ns, "--workload", "nope", "--from", at(-10 * time.Minute)}, 1, "no istio_requests_total series for Deployment nope"},
		{"window with no data", []string{"-f", good, "-n", ns, "--workload", "quiet", "--from", at(-20 * time.Minute), "--to", at(-10 * time.Minute)}, 1, "no samples of " + ns + "/quiet"},
		{"past retention", []string{"-f", good, "-n", ns, "--workload", "app", "--from", at(-48 * time.Hour), "--to", at(-47 * time.Hour)}, 1, "retention"},
		{"policy fails lint", []string{"-f", bad, "-n", ns, "--workload", "app", "--from", at(-10 * time.Minute)}, 1, "fails lint"},
		{"to before from", []string{"-f", good, "-n", ns, "--workload", "app", "--from", at(-time.Minute), "--to", at(-2 * time.Minute)}, 1, "must be after --from"},
		{"bad time", []string{"-f", good, "-n", ns, "--workload", "app", "--from", "yesterday"}, 2, "--from"},
		{"no namespace", []string{"-f", good, "--workload", "app", "--from", at(-time.Minute)}, 2, "-n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runBacktest(t, append(tc.args, "--prometheus-url", tb.PrometheusURL)...)
			if code != tc.code || !strings.Contains(errOut, tc.says) {
				t.Errorf("exit %d, want %d, stderr %q, want it to say %q (stdout %q)", code, tc.code, errOut, tc.says, out)
			}
			if strings.Contains(errOut, "goroutine ") || strings.Contains(errOut, "panic") {
				t.Errorf("a stack trace: %s", errOut)
			}
		})
	}
}

func wellFormed(data []byte) error {
	dec := xml.NewDecoder(bytes.NewReader(data))
	for {
		if _, err := dec.Token(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}
