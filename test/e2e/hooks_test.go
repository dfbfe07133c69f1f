package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/hooks"
	"splitter.dev/splitter/internal/rollout"
	"splitter.dev/splitter/test/testbed"
)

// hookCall is one request a hookServer received.
type hookCall struct {
	Path    string
	Payload hooks.Payload
	// Routed is what the VirtualService routed when the call came.
	Routed rollout.Weights
}

// hookServer is a hook receiver in the test process, on 127.0.0.1 (the
// controller runs on the same machine). answer says what to reply; it
// may block until ctx ends (the controller hung up, or the test ended).
type hookServer struct {
	srv    *httptest.Server
	mu     sync.Mutex
	calls  []hookCall
	open   int
	answer func(ctx context.Context, c hookCall) (int, string)
}

func newHookServer(t *testing.T, tb *testbed.TestBed, ns string, answer func(ctx context.Context, c hookCall) (int, string)) *hookServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hookServer{answer: answer}
	stop := make(chan struct{})
	h.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Reading the body whole lets the server notice a hang-up.
		var c hookCall
		c.Path = r.URL.Path
		if err := json.NewDecoder(r.Body).Decode(&c.Payload); err != nil {
			http.Error(w, "bad payload: "+err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("Idempotency-Key") != c.Payload.Token {
			http.Error(w, "Idempotency-Key is not the token", http.StatusBadRequest)
			return
		}
		c.Routed, _ = routedWeights(r.Context(), tb, ns)
		h.mu.Lock()
		h.calls = append(h.calls, c)
		h.open++
		h.mu.Unlock()
		defer func() { h.mu.Lock(); h.open--; h.mu.Unlock() }()
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		code, body := h.answer(ctx, c)
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	})}}
	h.srv.Start()
	t.Cleanup(func() { close(stop); h.srv.Close() })
	return h
}

func (h *hookServer) URL(path string) string { return h.srv.URL + path }

func (h *hookServer) Calls() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookCall(nil), h.calls...)
}

// Open counts the calls not answered yet.
func (h *hookServer) Open() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.open
}

// hang answers only when the caller hangs up or the test ends.
func hang(ctx context.Context, _ hookCall) (int, string) {
	<-ctx.Done()
	return http.StatusOK, "too late"
}

// hookToken is a credential in a hook's URL: it must never show in the
// controller's log, the Split's status or its Events.
const hookToken = "tok-3f9c2a7e51d04b8e9a6c"

func withHooks(p *splitterv1.SplitPolicy, hs ...splitterv1.Hook) *splitterv1.SplitPolicy {
	p.Spec.Hooks = hs
	return p
}

func eventNotes(ctx context.Context, tb *testbed.TestBed, ns string) ([]eventsv1.Event, error) {
	var list eventsv1.EventList
	if err := tb.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// hasEventOf is hasEvent for any type.
func hasEventOf(ctx context.Context, tb *testbed.TestBed, ns, kind, reason, inNote string) error {
	evs, err := eventNotes(ctx, tb, ns)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		if ev.Reason == reason && ev.Type == kind && ev.Regarding.Kind == "Split" && strings.Contains(ev.Note, inNote) {
			return nil
		}
	}
	return fmt.Errorf("no %s %s Event with %q among %d", kind, reason, inNote, len(evs))
}

// noToken checks the controller's log, the Split's status (but the copy
// of the policy) and its Events for the URL's token.
func noToken(t *testing.T, tb *testbed.TestBed, ns string, ctrl *controllerProcess) {
	t.Helper()
	ctx := context.Background()
	if b, err := os.ReadFile(ctrl.Log()); err != nil {
		t.Error(err)
	} else if strings.Contains(string(b), hookToken) {
		t.Errorf("the controller's log %s shows the hook URL's token", ctrl.Log())
	}
	s, err := getSplit(ctx, tb, ns)
	if err != nil {
		t.Fatal(err)
	}
	// status.policy copies the policy: a URL given in clear is there, as
	// in the policy itself (tokens go in a Secret, urlFrom).
	s.Status.Policy = nil
	if b, _ := json.Marshal(s); strings.Contains(string(b), hookToken) {
		t.Error("the Split shows the hook URL's token")
	}
	evs, err := eventNotes(ctx, tb, ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if strings.Contains(ev.Note, hookToken) {
			t.Errorf("Event %s shows the hook URL's token: %s", ev.Reason, ev.Note)
		}
	}
}

func hookResult(s *splitterv1.Split, name string) *splitterv1.HookResult {
	for i := range s.Status.Hooks {
		if s.Status.Hooks[i].Name == name {
			return &s.Status.Hooks[i]
		}
	}
	return nil
}

// A pre-rollout smoke test, its URL (with a token) in a Secret, passes:
// it is called once, before any traffic moves, told which pods are the
// candidate's, and the release is promoted.
func TestHookPreRolloutSmokePasses(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "hook-smoke")
	srv := newHookServer(t, tb, ns, func(context.Context, hookCall) (int, string) {
		return http.StatusOK, "3 smoke tests passed\nGET /cart 200\n"
	})
	tb.Create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke-url", Namespace: ns},
		StringData: map[string]string{"url": srv.URL("/smoke?token="+hookToken) + "\n"},
	})
	tb.Create(t, withHooks(fastPolicy(ns, "fast", []int32{20, 100}), splitterv1.Hook{
		Name: "smoke", At: splitterv1.HookPreRollout, URLFrom: &splitterv1.SecretKeyRef{Name: "smoke-url"},
		Timeout: &metav1.Duration{Duration: 10 * time.Second}, Metadata: map[string]string{"suite": "smoke"},
	}))
	ctrl := startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	idle := waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
	if n := len(srv.Calls()); n != 0 {
		t.Errorf("opting in called the hook %d time(s); only a release does", n)
	}

	release(t, tb, ns, "example.com/app:2", nil)
	s := waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
	calls := srv.Calls()
	if len(calls) != 1 {
		t.Fatalf("the hook was called %d times, want once: %+v", len(calls), calls)
	}
	c := calls[0]
	rev := s.Status.LiveRevision
	want := hooks.Payload{
		Schema: hooks.Schema, Namespace: ns, Split: "app", Workload: "app", Hook: "smoke", Point: "pre-rollout",
		Candidate: hooks.Version{Color: "green", Revision: rev, Deployment: "app-green"},
		Live:      hooks.Version{Color: "blue", Revision: idle.Status.LiveRevision, Deployment: "app-blue"},
		Subset:    hooks.Label{Key: "track", Value: "green"}, Service: "app",
		Metadata: map[string]string{"suite": "smoke"}, Token: rev + "/1/pre-rollout/0/smoke",
	}
	if got, w := fmt.Sprintf("%+v", c.Payload), fmt.Sprintf("%+v", want); got != w {
		t.Errorf("payload\n got %s\nwant %s", got, w)
	}
	if c.Path != "/smoke" || c.Routed != (rollout.Weights{Blue: 100}) {
		t.Errorf("called at %s with the routes at %s, want /smoke before any traffic moved", c.Path, c.Routed)
	}
	if h := hookResult(s, "smoke"); h == nil || h.Verdict != splitterv1.VerdictPass || h.Message != "HTTP 200 OK: 3 smoke tests passed | GET /cart 200" {
		t.Errorf("status.hooks %+v", s.Status.Hooks)
	}
	testbed.Eventually(t, 10*time.Second, 250*time.Millisecond, "HookPassed Event", func(ctx context.Context) error {
		return hasEventOf(ctx, tb, ns, "Normal", "HookPassed", "3 smoke tests passed")
	})
	noToken(t, tb, ns, ctrl)
}

// A step hook failing at step 2 snaps the release back: the body's first
// line is in status.checks, the history and the Event.
func TestHookStepFailureSnapsBack(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "hook-step")
	srv := newHookServer(t, tb, ns, func(_ context.Context, c hookCall) (int, string) {
		if c.Payload.Step == 2 {
			return http.StatusInternalServerError, "load test: checkout p99 870ms > 500ms\nsee run 42\n"
		}
		return http.StatusOK, "load test passed"
	})
	tb.Create(t, withHooks(fastPolicy(ns, "fast", []int32{20, 50, 100}), splitterv1.Hook{
		Name: "load", At: splitterv1.HookStep, URL: srv.URL("/load/" + hookToken),
	}))
	ctrl := startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:2", nil)
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 2*time.Minute, nil)
	const first = "load test: checkout p99 870ms > 500ms"
	h := s.Status.History[0]
	if h.Outcome != splitterv1.OutcomeRolledBack || h.Reason != rollout.ReasonHookFailed || h.Step != 2 || !strings.Contains(h.Message, first) {
		t.Errorf("history %+v, want RolledBack at step 2 by HookFailed with %q", h, first)
	}
	if c := checkOf(s, "hook/load"); c == nil || c.Verdict != splitterv1.VerdictFail || !strings.Contains(c.Message, "HTTP 500 Internal Server Error: "+first) {
		t.Errorf("check hook/load %+v, want Fail with the body's first line", c)
	}
	calls := srv.Calls()
	if len(calls) != 2 || calls[0].Payload.Step != 1 || calls[1].Payload.Step != 2 ||
		calls[0].Routed.Green != 20 || calls[1].Routed.Green != 50 || calls[1].Payload.Weight != 50 {
		t.Errorf("calls %+v, want step 1 at 20%% then step 2 at 50%%", calls)
	}
	testbed.Eventually(t, 10*time.Second, 250*time.Millisecond, "HookFailed Event", func(ctx context.Context) error {
		return hasEvent(ctx, tb, ns, rollout.ReasonHookFailed, first)
	})
	if w, err := routedWeights(context.Background(), tb, ns); err != nil || w != (rollout.Weights{Blue: 100}) {
		t.Errorf("routed %s (%v), want blue 100", w, err)
	}
	noToken(t, tb, ns, ctrl)
}

// A pre-rollout hook with onFailure: pause holds the release before any
// traffic moves; approving the gate goes on, without calling it again.
func TestHookFailurePausesUntilApproved(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "hook-pause")
	srv := newHookServer(t, tb, ns, func(context.Context, hookCall) (int, string) {
		return http.StatusServiceUnavailable, "schema migration 42 pending"
	})
	tb.Create(t, withHooks(fastPolicy(ns, "fast", []int32{50, 100}), splitterv1.Hook{
		Name: "migrations", At: splitterv1.HookPreRollout, URL: srv.URL("/migrations"), OnFailure: "pause",
	}))
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:2", nil)
	s := waitPhase(t, tb, ns, splitterv1.PhaseAwaitingApproval, 2*time.Minute, nil)
	if !strings.HasSuffix(s.Status.Gate, "/hook/pre-rollout/0/migrations") {
		t.Errorf("gate %q, want one named after the hook", s.Status.Gate)
	}
	if c := checkOf(s, "hook/migrations"); c == nil || c.Verdict != splitterv1.VerdictFail || !strings.Contains(c.Message, "HTTP 503 Service Unavailable: schema migration 42 pending") {
		t.Errorf("check hook/migrations %+v", c)
	}
	if w, err := routedWeights(context.Background(), tb, ns); err != nil || w != (rollout.Weights{Blue: 100}) {
		t.Errorf("routed %s (%v) while paused on the hook, want blue 100", w, err)
	}
	testbed.Eventually(t, 10*time.Second, 250*time.Millisecond, "HookFailed Event", func(ctx context.Context) error {
		return hasEvent(ctx, tb, ns, rollout.ReasonHookFailed, "schema migration 42 pending")
	})

	split, err := getSplit(context.Background(), tb, ns)
	if err != nil {
		t.Fatal(err)
	}
	base := split.DeepCopy()
	split.Annotations = map[string]string{splitterv1.ApproveAnnotation: s.Status.Gate, splitterv1.RequestedByAnnotation: "e2e"}
	if err := tb.Client.Patch(context.Background(), split, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	s = waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
	if a := s.Status.Actions; len(a) == 0 || a[0].Verb != "approve" || a[0].By != "e2e" {
		t.Errorf("actions %+v, want the approval by e2e", s.Status.Actions)
	}
	if n := len(srv.Calls()); n != 1 {
		t.Errorf("the hook was called %d times, want once (approving does not call it again)", n)
	}
}

// A hook that hangs past its timeout fails the release before any traffic
// moves.
func TestHookTimeoutFails(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "hook-timeout")
	srv := newHookServer(t, tb, ns, hang)
	tb.Create(t, withHooks(fastPolicy(ns, "fast", []int32{50, 100}), splitterv1.Hook{
		Name: "smoke", At: splitterv1.HookPreRollout, URL: srv.URL("/smoke"), Timeout: &metav1.Duration{Duration: 2 * time.Second},
	}))
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:2", nil)
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 2*time.Minute, nil)
	const msg = "no answer within 2s (the hook's timeout)"
	if h := s.Status.History[0]; h.Reason != rollout.ReasonHookFailed || !strings.Contains(h.Message, msg) {
		t.Errorf("history %+v, want HookFailed with %q", h, msg)
	}
	if h := hookResult(s, "smoke"); h == nil || h.Verdict != splitterv1.VerdictFail {
		t.Errorf("status.hooks %+v", s.Status.Hooks)
	}
	if n := len(srv.Calls()); n != 1 {
		t.Errorf("called %d times, want once (no retries inside a call)", n)
	}
}

// A faulty candidate whose step hook hangs is still snapped back by the
// watchdog: nothing in the release loop waits on a hook.
func TestHangingHookWatchdogSnapsBack(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "hook-hang")
	srv := newHookServer(t, tb, ns, hang)
	tb.Create(t, withHooks(sloPolicy(ns, []int32{20, 100}, 2*time.Minute), splitterv1.Hook{
		Name: "soak", At: splitterv1.HookStep, URL: srv.URL("/soak"), Timeout: &metav1.Duration{Duration: 5 * time.Minute},
	}))
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
	testbed.Eventually(t, time.Minute, 250*time.Millisecond, "the step hook called", func(context.Context) error {
		if srv.Open() == 0 {
			return fmt.Errorf("%d calls, none open", len(srv.Calls()))
		}
		return nil
	})
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 2*time.Minute, nil)
	h := s.Status.History[0]
	if h.Reason != rollout.ReasonWatchdog {
		t.Errorf("history %+v, want a snap-back by the watchdog", h)
	}
	// Compare with TestWatchdogSnapsBackGrossFault's figure (no hook).
	t.Logf("snapped back %s after the step's hold began, its hook still hanging: %s", h.FinishedAt.Sub(shifting.Status.StepStartedAt.Time), h.Message)
	if srv.Open() != 1 {
		t.Errorf("%d hook calls open at the snap-back, want the hanging one", srv.Open())
	}
	if h := hookResult(s, "soak"); h != nil {
		t.Errorf("the hanging hook has a result %+v", h)
	}
	if w, err := routedWeights(context.Background(), tb, ns); err != nil || w != (rollout.Weights{Blue: 100}) {
		t.Errorf("routed %s (%v), want blue 100", w, err)
	}
}

// A hook's URL Secret that is missing fails the hook, naming the Secret.
func TestHookURLSecretMissingFails(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "hook-secret")
	tb.Create(t, withHooks(fastPolicy(ns, "fast", []int32{50, 100}), splitterv1.Hook{
		Name: "smoke", At: splitterv1.HookPreRollout, URLFrom: &splitterv1.SecretKeyRef{Name: "smoke-url"},
	}))
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:2", nil)
	s := waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 2*time.Minute, nil)
	want := fmt.Sprintf("reading the hook's URL: Secret %s/smoke-url not found", ns)
	if h := hookResult(s, "smoke"); h == nil || h.Verdict != splitterv1.VerdictFail || h.Message != want {
		t.Errorf("status.hooks %+v, want a Fail saying %q", s.Status.Hooks, want)
	}
	if h := s.Status.History[0]; h.Reason != rollout.ReasonHookFailed || !strings.Contains(h.Message, want) {
		t.Errorf("history %+v", h)
	}
}

// Hooks are called at least once: a controller killed mid-call calls the
// hook again after its restart, with the same token (the Idempotency-Key).
func TestHookCalledAgainAfterControllerKilled(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "hook-kill")
	entered := make(chan struct{}, 1)
	var mu sync.Mutex
	n := 0
	srv := newHookServer(t, tb, ns, func(ctx context.Context, c hookCall) (int, string) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if first {
			entered <- struct{}{}
			return hang(ctx, c)
		}
		return http.StatusOK, "smoke tests passed"
	})
	tb.Create(t, withHooks(fastPolicy(ns, "fast", []int32{50, 100}), splitterv1.Hook{
		Name: "smoke", At: splitterv1.HookPreRollout, URL: srv.URL("/smoke"), Timeout: &metav1.Duration{Duration: 5 * time.Minute},
	}))
	ctrl := startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:2", nil)
	select {
	case <-entered:
	case <-time.After(2 * time.Minute):
		t.Fatal("the hook was not called")
	}
	ctrl.Kill()
	s, err := getSplit(context.Background(), tb, ns)
	if err != nil {
		t.Fatal(err)
	}
	if s.Status.Phase != splitterv1.PhasePreparing || len(s.Status.Hooks) != 0 {
		t.Fatalf("killed mid-call in phase %s with hooks %+v, want Preparing and no result", s.Status.Phase, s.Status.Hooks)
	}
	startSplitter(t, tb, ns)
	s = waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
	calls := srv.Calls()
	if len(calls) != 2 || calls[0].Payload.Token != calls[1].Payload.Token {
		t.Fatalf("calls %+v, want the same token twice", calls)
	}
	if h := hookResult(s, "smoke"); h == nil || h.Verdict != splitterv1.VerdictPass || h.Token != calls[0].Payload.Token {
		t.Errorf("status.hooks %+v", s.Status.Hooks)
	}
}
