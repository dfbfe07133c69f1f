package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/plugin"
	"splitter.dev/splitter/internal/rollout"
	"splitter.dev/splitter/test/testbed"
)

// The kubectl plugin, end to end: the real kubectl on PATH runs the built
// kubectl-splitter (the splitter binary under the plugin's name) against
// the test bed with its admin kubeconfig.

var (
	pluginOnce sync.Once
	pluginDir  string
	pluginErr  error
)

// pluginBin builds kubectl-splitter once per test binary.
func pluginBin(t testing.TB) string {
	t.Helper()
	testbed.Command(t, "", []string{"kubectl"}, "install kubectl (Debian: apt-get install kubernetes-client)")
	pluginOnce.Do(func() {
		if pluginDir, pluginErr = os.MkdirTemp("", "kubectl-splitter-"); pluginErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "kubectl-splitter"), "splitter.dev/splitter/cmd/splitter").CombinedOutput()
		if err != nil {
			pluginErr = fmt.Errorf("building kubectl-splitter: %v\n%s", err, out)
			return
		}
		// kubectl's completion helper for the plugin, as make install-plugin links it.
		pluginErr = os.Symlink("kubectl-splitter", filepath.Join(pluginDir, "kubectl_complete-splitter"))
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginDir
}

type ran struct {
	out, err string
	code     int
}

func (r ran) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.out, r.err)
}

// kubectlCmd is `kubectl args...` with the plugin first on PATH and the
// test bed's admin kubeconfig.
func kubectlCmd(t testing.TB, tb *testbed.TestBed, args ...string) *exec.Cmd {
	dir := pluginBin(t)
	cmd := exec.Command("kubectl", args...)
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+tb.Kubeconfig)
	return cmd
}

func kubectl(t testing.TB, tb *testbed.TestBed, args ...string) ran {
	t.Helper()
	cmd := kubectlCmd(t, tb, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := ran{out: out.String(), err: errOut.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("kubectl %v: %v", args, err)
	}
	t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), r)
	return r
}

// mustKubectl runs kubectl and wants exit code want and, in stdout or
// stderr, each of says.
func mustKubectl(t testing.TB, tb *testbed.TestBed, want int, says []string, args ...string) ran {
	t.Helper()
	r := kubectl(t, tb, args...)
	if r.code != want {
		t.Fatalf("kubectl %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, want, r)
	}
	for _, s := range says {
		if !strings.Contains(r.out+r.err, s) {
			t.Errorf("kubectl %s does not say %q:\n%s", strings.Join(args, " "), s, r)
		}
	}
	return r
}

// kubectlTTY runs kubectl under a pseudo-terminal (util-linux script),
// as a person at a terminal would.
func kubectlTTY(t testing.TB, tb *testbed.TestBed, env []string, args ...string) (string, int) {
	t.Helper()
	script := testbed.Command(t, "", []string{"script"}, "util-linux's script(1) gives kubectl a pseudo-terminal (Debian: apt-get install bsdutils)")
	cmd := kubectlCmd(t, tb)
	cmd.Path = script
	cmd.Args = []string{"script", "-q", "-e", "-c", "kubectl " + strings.Join(args, " "), "/dev/null"}
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	} else if err != nil {
		t.Fatalf("kubectl %v on a terminal: %v\n%s", args, err, out)
	}
	return string(out), 0
}

// syncBuffer is written by a subprocess while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// watcher is a `kubectl splitter get NAME --watch` running in the background.
type watcher struct {
	out  syncBuffer
	done chan int
}

func startWatch(t *testing.T, tb *testbed.TestBed, ns string) *watcher {
	t.Helper()
	w := &watcher{done: make(chan int, 1)}
	cmd := kubectlCmd(t, tb, "splitter", "get", "app", "--watch", "-n", ns)
	cmd.Stdout, cmd.Stderr = &w.out, &w.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		var exit *exec.ExitError
		switch {
		case err == nil:
			w.done <- 0
		case errors.As(err, &exit):
			w.done <- exit.ExitCode()
		default:
			w.done <- -1
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return w
}

// wait returns the watch's exit code once it ends.
func (w *watcher) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case code := <-w.done:
		t.Logf("$ kubectl splitter get app --watch (exit %d)\n%s", code, w.out.String())
		return code
	case <-time.After(timeout):
		t.Fatalf("get --watch still running after %s:\n%s", timeout, w.out.String())
	}
	return -1
}

// keepTranscript writes a watch's output where PLUGIN_TRANSCRIPT_DIR says
// (for the README).
func keepTranscript(t *testing.T, name, text string) {
	if dir := os.Getenv("PLUGIN_TRANSCRIPT_DIR"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// pluginBed: Service "app", Deployment "app" not opted in yet, the policy,
// a controller.
func pluginBed(t *testing.T, prefix string, pol *splitterv1.SplitPolicy) (*testbed.TestBed, string) {
	tb := testbed.Shared(t)
	pluginBin(t)
	ns := tb.Namespace(t, prefix)
	pol.Namespace = ns
	tb.Create(t, pol)
	startSplitter(t, tb, ns)
	tb.Create(t, service(ns, "app", map[string]string{"app": "app"}))
	tb.Create(t, deployment(ns, "app", 3, map[string]string{"app": "app"}, nil))
	return tb, ns
}

func lastAction(s *splitterv1.Split) splitterv1.Action {
	if len(s.Status.Actions) == 0 {
		return splitterv1.Action{}
	}
	return s.Status.Actions[0]
}

// Opt in through the plugin, release with `kubectl set image`, watch it
// to a gate, approve it (a stale gate refused first), and the watch ends
// with exit 0; then opt out.
func TestPluginApproveWatchPromoted(t *testing.T) {
	t.Parallel()
	pol := fastPolicy("", "gated", []int32{50, 100})
	pol.Spec.Approval = &splitterv1.Approval{BeforePromotion: true}
	tb, ns := pluginBed(t, "plugin-approve", pol)

	mustKubectl(t, tb, 0, []string{"opted in with SplitPolicy gated", "app-blue", "scaled to 0", "VirtualService"},
		"splitter", "opt-in", "app", "--policy", "gated", "-n", ns)
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
	mustKubectl(t, tb, 1, []string{"nothing to approve", "Idle"}, "splitter", "approve", "app", "-n", ns)
	mustKubectl(t, tb, 0, []string{"app", "Idle", "blue/"}, "splitter", "list", "-n", ns)
	mustKubectl(t, tb, 0, []string{ns, "app", "Idle"}, "splitter", "list", "-A")
	// Shell completion of Split names, through kubectl's own completion.
	mustKubectl(t, tb, 0, []string{"app\tIdle"}, "__complete", "splitter", "approve", "-n", ns, "")

	// As in CI: the image changes, and the watch starts at once, before
	// the controller has seen the change.
	mustKubectl(t, tb, 0, nil, "set", "image", "deployment/app", "app=example.com/app:2", "-n", ns)
	w := startWatch(t, tb, ns)
	s := waitPhase(t, tb, ns, splitterv1.PhaseAwaitingApproval, 2*time.Minute, nil)

	mustKubectl(t, tb, 0, []string{"AwaitingApproval", s.Status.Gate, "kubectl splitter approve app"}, "splitter", "get", "app", "-n", ns)
	stale := s.Status.CandidateRevision + "/first-step"
	mustKubectl(t, tb, 1, []string{"not " + stale}, "splitter", "approve", "app", "--gate", stale, "-n", ns)
	mustKubectl(t, tb, 0, []string{"approved gate " + s.Status.Gate, "requested by " + testbed.AdminUser}, "splitter", "approve", "app", "--gate", s.Status.Gate, "-n", ns)

	if code := w.wait(t, 2*time.Minute); code != 0 {
		t.Errorf("get --watch of a promoted release: exit %d, want 0", code)
	}
	out := w.out.String()
	keepTranscript(t, "watch-promoted.txt", out)
	if !strings.Contains(out, "promoted: green is live at 100%") || !strings.Contains(out, "gate="+s.Status.Gate) {
		t.Errorf("the watch did not show the gate and the promotion:\n%s", out)
	}
	p, err := getSplit(context.Background(), tb, ns)
	if err != nil {
		t.Fatal(err)
	}
	if a := lastAction(p); a.Verb != "approve" || a.By != testbed.AdminUser || a.Detail != s.Status.Gate {
		t.Errorf("status.actions[0] = %+v, want approve of %s by %s", a, s.Status.Gate, testbed.AdminUser)
	}
	mustKubectl(t, tb, 0, []string{"Promoted", s.Status.CandidateRevision}, "splitter", "history", "app", "-n", ns)
	r := mustKubectl(t, tb, 0, nil, "splitter", "history", "app", "-n", ns, "-o", "json")
	var h []splitterv1.Release
	if err := json.Unmarshal([]byte(r.out), &h); err != nil || len(h) == 0 || h[0].Outcome != splitterv1.OutcomePromoted {
		t.Errorf("history -o json: %v, %+v", err, h)
	}

	// Opt out: the user's Deployment gets its replicas back.
	mustKubectl(t, tb, 0, []string{"opted out", "3 replicas back"}, "splitter", "opt-out", "app", "-n", ns)
	testbed.Eventually(t, 90*time.Second, 250*time.Millisecond, "opt-out complete", func(ctx context.Context) error {
		if _, err := getSplit(ctx, tb, ns); err == nil {
			return fmt.Errorf("the Split still exists")
		}
		d := &appsv1.Deployment{}
		if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, d); err != nil || *d.Spec.Replicas != 3 {
			return fmt.Errorf("user's Deployment replicas %v (%v)", d.Spec.Replicas, err)
		}
		return nil
	})
	mustKubectl(t, tb, 1, []string{"not opted in"}, "splitter", "opt-out", "app", "-n", ns)
}

// A faulty release after `kubectl patch`: the watch ends with exit 1;
// explain and history give the numbers; retry releases the same revision
// again, and its watch ends with exit 1 too.
func TestPluginWatchRolledBackAndRetry(t *testing.T) {
	t.Parallel()
	tb, ns := pluginBed(t, "plugin-rollback", fastPolicy("", "fast", []int32{20, 50, 100}))
	mustKubectl(t, tb, 0, nil, "splitter", "opt-in", "app", "--policy", "fast", "-n", ns)
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
	mustKubectl(t, tb, 1, []string{"nothing to retry"}, "splitter", "retry", "app", "-n", ns)

	mustKubectl(t, tb, 0, nil, "patch", "deployment", "app", "-n", ns, "--type=merge", "-p",
		`{"spec":{"template":{"metadata":{"annotations":{"meshsim.splitter.dev/error-rate":"0.3"}},"spec":{"containers":[{"name":"app","image":"example.com/app:bad"}]}}}}`)
	w := startWatch(t, tb, ns)
	if code := w.wait(t, 3*time.Minute); code != 1 {
		t.Errorf("get --watch of a rolled-back release: exit %d, want 1", code)
	}
	keepTranscript(t, "watch-rolled-back.txt", w.out.String())
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 30*time.Second, nil)
	if !strings.Contains(w.out.String(), "rolled back at step 1 (CheckFailed)") {
		t.Errorf("the watch's last line does not say where it rolled back:\n%s", w.out.String())
	}
	r := mustKubectl(t, tb, 0, []string{"rolled back at step 1 (20%)", "success-rate"}, "splitter", "explain", "app", "-n", ns)
	keepTranscript(t, "explain-rolled-back.txt", r.out)
	mustKubectl(t, tb, 0, []string{"RolledBack", "CheckFailed", s.Status.CandidateRevision}, "splitter", "history", "app", "-n", ns)
	mustKubectl(t, tb, 1, []string{"no release in progress"}, "splitter", "abort", "app", "-n", ns)

	attempt := s.Status.Attempt
	mustKubectl(t, tb, 0, []string{"retry revision " + s.Status.CandidateRevision}, "splitter", "retry", "app", "-n", ns)
	w = startWatch(t, tb, ns)
	if code := w.wait(t, 3*time.Minute); code != 1 {
		t.Errorf("get --watch of the retried (still faulty) release: exit %d, want 1", code)
	}
	s = waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 30*time.Second, nil)
	if s.Status.Attempt != attempt+1 {
		t.Errorf("attempt %d after a retry, want %d", s.Status.Attempt, attempt+1)
	}
	found := false
	for _, a := range s.Status.Actions {
		found = found || (a.Verb == "retry" && a.By == testbed.AdminUser)
	}
	if !found {
		t.Errorf("no retry by %s in status.actions %+v", testbed.AdminUser, s.Status.Actions)
	}
	if len(s.Status.History) < 2 || s.Status.History[0].Revision != s.Status.History[1].Revision {
		t.Errorf("history %+v, want two releases of the same revision", s.Status.History)
	}

	// The template moved on: a retry of the old revision is refused.
	release(t, tb, ns, "example.com/app:3", nil)
	r = kubectl(t, tb, "splitter", "retry", "app", "-n", ns)
	if r.code != 1 {
		t.Errorf("retry after the template changed: exit %d, want 1 (a refusal)\n%s", r.code, r)
	}
}

// Abort a release mid-step: traffic snaps back, the outcome is Aborted,
// and who asked is recorded; a second abort is refused.
func TestPluginAbort(t *testing.T) {
	t.Parallel()
	pol := fastPolicy("", "slow", []int32{20, 100})
	pol.Spec.StepDuration = &metav1.Duration{Duration: 2 * time.Minute}
	tb, ns := pluginBed(t, "plugin-abort", pol)
	mustKubectl(t, tb, 0, nil, "splitter", "opt-in", "app", "--policy", "slow", "-n", ns)
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:2", nil)
	w := startWatch(t, tb, ns)
	s := waitPhase(t, tb, ns, splitterv1.PhaseShifting, 2*time.Minute, nil)
	mustKubectl(t, tb, 0, []string{"abort the release of revision " + s.Status.CandidateRevision}, "splitter", "abort", "app", "-n", ns)
	s = waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, time.Minute, nil)
	if h := s.Status.History[0]; h.Outcome != splitterv1.OutcomeAborted {
		t.Errorf("history %+v, want Aborted", h)
	}
	if a := lastAction(s); a.Verb != "abort" || a.By != testbed.AdminUser {
		t.Errorf("status.actions[0] = %+v, want abort by %s", a, testbed.AdminUser)
	}
	if w, err := routedWeights(context.Background(), tb, ns); err != nil || w != (rollout.Weights{Blue: 100}) {
		t.Errorf("routed %s (%v), want blue 100", w, err)
	}
	if code := w.wait(t, time.Minute); code != 1 {
		t.Errorf("get --watch of an aborted release: exit %d, want 1", code)
	}
	mustKubectl(t, tb, 1, []string{"no release in progress"}, "splitter", "abort", "app", "-n", ns)
}

// Pause holds the weights through more than a step's hold; resume goes
// on; promote --skip-steps --yes ends it at 100%.
func TestPluginPauseResumePromote(t *testing.T) {
	t.Parallel()
	pol := fastPolicy("", "steps", []int32{20, 50, 80, 100})
	pol.Spec.StepDuration = &metav1.Duration{Duration: 15 * time.Second}
	tb, ns := pluginBed(t, "plugin-pause", pol)
	mustKubectl(t, tb, 0, nil, "splitter", "opt-in", "app", "--policy", "steps", "-n", ns)
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
	mustKubectl(t, tb, 1, []string{"no release in progress"}, "splitter", "pause", "app", "-n", ns)

	release(t, tb, ns, "example.com/app:2", nil)
	waitPhase(t, tb, ns, splitterv1.PhaseShifting, 2*time.Minute, func(s *splitterv1.Split) error {
		if s.Status.StepStartedAt == nil {
			return fmt.Errorf("weights not applied yet")
		}
		return nil
	})
	mustKubectl(t, tb, 0, []string{"pause the release"}, "splitter", "pause", "app", "-n", ns)
	s := waitPhase(t, tb, ns, splitterv1.PhaseShifting, 30*time.Second, func(s *splitterv1.Split) error {
		if s.Status.PausedAt == nil {
			return fmt.Errorf("not paused yet")
		}
		return nil
	})
	mustKubectl(t, tb, 1, []string{"already paused"}, "splitter", "pause", "app", "-n", ns)
	mustKubectl(t, tb, 0, []string{"PAUSED"}, "splitter", "get", "app", "-n", ns)
	// Colour on a terminal only, and never with NO_COLOR.
	if out, _ := kubectlTTY(t, tb, nil, "splitter", "get", "app", "-n", ns); !strings.Contains(out, "\x1b[33mPAUSED\x1b[0m") {
		t.Errorf("no colour on a terminal:\n%q", out)
	}
	if out, _ := kubectlTTY(t, tb, []string{"NO_COLOR=1"}, "splitter", "get", "app", "-n", ns); strings.Contains(out, "\x1b[") || !strings.Contains(out, "PAUSED") {
		t.Errorf("colour with NO_COLOR=1:\n%q", out)
	}
	// On a terminal the watch redraws in place; --timeout gives up with 1.
	if out, code := kubectlTTY(t, tb, nil, "splitter", "get", "app", "--watch", "--timeout", "3s", "-n", ns); code != 1 ||
		!strings.Contains(out, "\x1b[H\x1b[2J") || !strings.Contains(out, "gave up waiting") {
		t.Errorf("get --watch --timeout 3s on a terminal: exit %d, want 1 with redraws and the reason:\n%q", code, out)
	}

	// Held for longer than the step: nothing moves.
	step, weight := s.Status.Step, s.Status.Weight
	deadline := time.Now().Add(2*pol.Spec.StepDuration.Duration + 5*time.Second)
	for time.Now().Before(deadline) {
		cur, err := getSplit(context.Background(), tb, ns)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Status.Phase != splitterv1.PhaseShifting || cur.Status.Step != step || cur.Status.Weight != weight {
			t.Fatalf("paused at step %d (%d%%), now %s step %d (%d%%)", step, weight, cur.Status.Phase, cur.Status.Step, cur.Status.Weight)
		}
		if w, err := routedWeights(context.Background(), tb, ns); err != nil || w.Green != weight {
			t.Fatalf("paused at %d%%, routed %s (%v)", weight, w, err)
		}
		time.Sleep(time.Second)
	}
	mustKubectl(t, tb, 0, []string{"resume the release"}, "splitter", "resume", "app", "-n", ns)
	mustKubectl(t, tb, 1, []string{"not paused"}, "splitter", "resume", "app", "-n", ns)
	waitPhase(t, tb, ns, splitterv1.PhaseShifting, time.Minute, func(s *splitterv1.Split) error {
		if s.Status.PausedAt != nil {
			return fmt.Errorf("still paused")
		}
		return nil
	})

	// Not a terminal and no --yes: refused; with --yes, promoted.
	mustKubectl(t, tb, 1, []string{"--yes"}, "splitter", "promote", "app", "--skip-steps", "-n", ns)
	mustKubectl(t, tb, 0, []string{"promote revision"}, "splitter", "promote", "app", "--skip-steps", "--yes", "-n", ns)
	s = waitPhase(t, tb, ns, splitterv1.PhasePromoting, time.Minute, nil)
	if h := s.Status.History[0]; h.Outcome != splitterv1.OutcomePromoted || h.Reason != rollout.ReasonPromotedByOperator {
		t.Errorf("history %+v, want Promoted by %s", h, rollout.ReasonPromotedByOperator)
	}
	var verbs []string
	for _, a := range s.Status.Actions {
		verbs = append(verbs, a.Verb+" by "+a.By)
	}
	want := []string{"promote by " + testbed.AdminUser, "resume by " + testbed.AdminUser, "pause by " + testbed.AdminUser}
	if strings.Join(verbs, ", ") != strings.Join(want, ", ") {
		t.Errorf("actions %v, want %v", verbs, want)
	}
}

// A verb decided on a Split read before someone else wrote it: the write
// meets a conflict (the resourceVersion precondition), the Split is read
// again and the verb decided again. The same target is written; a target
// that moved on (here a newer template superseded the release) is refused.
func TestPluginStaleTargetRefused(t *testing.T) {
	t.Parallel()
	pol := fastPolicy("", "slow", []int32{20, 100})
	pol.Spec.StepDuration = &metav1.Duration{Duration: 2 * time.Minute}
	tb, ns := pluginBed(t, "plugin-stale", pol)
	mustKubectl(t, tb, 0, nil, "splitter", "opt-in", "app", "--policy", "slow", "-n", ns)
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
	ctx := context.Background()
	touch := func() {
		s, err := getSplit(ctx, tb, ns)
		if err != nil {
			t.Fatal(err)
		}
		base := s.DeepCopy()
		s.Annotations = map[string]string{"example.com/touched": time.Now().Format(time.RFC3339Nano)}
		if err := tb.Client.Patch(ctx, s, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}

	release(t, tb, ns, "example.com/app:2", nil)
	first := waitPhase(t, tb, ns, splitterv1.PhaseShifting, 2*time.Minute, nil)
	firstRev := first.Status.CandidateRevision // PatchFresh refreshes first in place
	release(t, tb, ns, "example.com/app:3", nil)
	waitPhase(t, tb, ns, splitterv1.PhaseShifting, 2*time.Minute, func(s *splitterv1.Split) error {
		if s.Status.CandidateRevision == firstRev {
			return fmt.Errorf("still releasing %s", s.Status.CandidateRevision)
		}
		return nil
	})
	_, err := plugin.PatchFresh(ctx, tb.Client, first, func() (plugin.Change, error) { return plugin.Abort(first, "e2e") })
	var r *plugin.Refusal
	if !errors.As(err, &r) || !strings.Contains(r.Reason, "moved on") {
		t.Fatalf("abort of a superseded release: %v, want a refusal saying it moved on", err)
	}
	if s, err := getSplit(ctx, tb, ns); err != nil || s.Annotations[splitterv1.AbortAnnotation] != "" {
		t.Fatalf("the stale abort was written: %v (%v)", s.Annotations, err)
	}

	// Same target, another writer in between: written after one conflict.
	stale, err := getSplit(ctx, tb, ns)
	if err != nil {
		t.Fatal(err)
	}
	touch()
	decisions := 0
	if _, err := plugin.PatchFresh(ctx, tb.Client, stale, func() (plugin.Change, error) { decisions++; return plugin.Abort(stale, "e2e") }); err != nil {
		t.Fatal(err)
	}
	if decisions != 2 {
		t.Errorf("decided %d times, want 2 (once more after the conflict)", decisions)
	}
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, time.Minute, nil)
	if h := s.Status.History[0]; h.Outcome != splitterv1.OutcomeAborted || h.Revision == firstRev {
		t.Errorf("history %+v, want the second release Aborted", h)
	}
	if a := lastAction(s); a.Verb != "abort" || a.By != "e2e" {
		t.Errorf("status.actions[0] = %+v, want abort by e2e", a)
	}
}
