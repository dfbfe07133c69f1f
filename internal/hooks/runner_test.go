package hooks

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/types"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

var checkout = types.NamespacedName{Namespace: "shop", Name: "checkout"}

func job(token, url string, done chan<- splitterv1.HookResult) Job {
	return Job{
		Split: checkout, Token: token, Name: "smoke", Timeout: 5 * time.Second, Payload: payload(),
		URL:  func(context.Context) (string, error) { return url, nil },
		Done: func(_ context.Context, r splitterv1.HookResult) { done <- r },
	}
}

func none(string) bool { return false }

// logTo collects a runner's log lines.
func logTo(mu *sync.Mutex, lines *[]string) logr.Logger {
	return funcr.New(func(prefix, args string) {
		mu.Lock()
		*lines = append(*lines, prefix+" "+args)
		mu.Unlock()
	}, funcr.Options{Verbosity: 1})
}

func TestRunnerCallsEachTokenOnce(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls[r.Header.Get("Idempotency-Key")]++
		mu.Unlock()
		if r.URL.Path == "/fail" {
			http.Error(w, "smoke test: GET /cart returned 502", http.StatusInternalServerError)
		}
	})
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := NewRunner(4, logr.Discard())
	r.Now = clk.Now
	defer r.Stop()
	done := make(chan splitterv1.HookResult, 4)

	if !r.Start(job("t1", srv.URL+"/ok", done)) || !r.Start(job("t2", srv.URL+"/fail", done)) {
		t.Fatal("a new token was not started")
	}
	if r.Start(job("t1", srv.URL+"/ok", done)) {
		t.Error("a running token was started again")
	}
	got := map[string]splitterv1.HookResult{}
	for range 2 {
		res := <-done
		got[res.Token] = res
	}
	if got["t1"].Verdict != splitterv1.VerdictPass || got["t2"].Verdict != splitterv1.VerdictFail ||
		got["t2"].Message != "HTTP 500 Internal Server Error: smoke test: GET /cart returned 502" || got["t1"].Name != "smoke" {
		t.Errorf("results %+v", got)
	}
	if res := r.Results(checkout, none); len(res) != 2 || res["t2"].Message != got["t2"].Message {
		t.Errorf("Results %+v, want both", res)
	}
	if res := r.Results(types.NamespacedName{Namespace: "shop", Name: "other"}, none); res != nil {
		t.Errorf("another Split's results %+v", res)
	}

	// Status records t1: it is no longer reported, nor called again.
	recorded := func(tok string) bool { return tok == "t1" }
	if res := r.Results(checkout, recorded); len(res) != 1 || res["t2"].Token != "t2" {
		t.Errorf("Results %+v, want t2 only", res)
	}
	if r.Start(job("t1", srv.URL+"/ok", done)) || r.Start(job("t2", srv.URL+"/ok", done)) {
		t.Error("a finished token was started again")
	}

	// An hour later both are forgotten.
	clk.Add(Forget + time.Minute)
	if res := r.Results(checkout, none); res != nil {
		t.Errorf("Results %+v an hour later, want none", res)
	}
	mu.Lock()
	if calls["abc/1/pre-rollout/smoke"] != 2 || len(calls) != 1 {
		t.Errorf("calls by Idempotency-Key %v", calls)
	}
	mu.Unlock()
}

// Concurrency is bounded: a hanging hook holds its slot, later calls wait
// and run once it returns. Nobody else waits.
func TestRunnerBoundsConcurrency(t *testing.T) {
	release, hanging := make(chan struct{}), make(chan struct{})
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/hang" {
			close(hanging)
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	})
	r := NewRunner(1, logr.Discard())
	defer r.Stop()
	done := make(chan splitterv1.HookResult, 2)
	r.Start(job("hang", srv.URL+"/hang", done))
	<-hanging
	r.Start(job("quick", srv.URL+"/quick", done))
	select {
	case res := <-done:
		t.Fatalf("%s finished while the only slot hangs", res.Token)
	case <-time.After(300 * time.Millisecond):
	}
	if n := r.Running(); n != 2 {
		t.Errorf("Running() = %d, want 2", n)
	}
	close(release)
	for _, want := range []string{"hang", "quick"} {
		if res := <-done; res.Token != want || res.Verdict != splitterv1.VerdictPass {
			t.Errorf("got %+v, want %s to pass", res, want)
		}
	}
}

// A runner stopped mid-call records nothing: the next process calls again.
func TestRunnerStopMidCall(t *testing.T) {
	entered := make(chan struct{})
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		close(entered)
		<-r.Context().Done()
	})
	r := NewRunner(1, logr.Discard())
	done := make(chan splitterv1.HookResult, 2)
	r.Start(job("t", srv.URL, done))
	r.Start(job("queued", srv.URL, done))
	<-entered
	r.Stop()
	select {
	case res := <-done:
		t.Errorf("a result after Stop: %+v", res)
	default:
	}
	if res := r.Results(checkout, none); res != nil {
		t.Errorf("Results after Stop %+v", res)
	}
	if r.Start(job("t", srv.URL, done)) {
		t.Error("a stopped runner started a call")
	}
}

// A URL that cannot be read fails the hook with the reader's message, and
// the log carries no URL.
func TestRunnerURLErrorAndLogs(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	r := NewRunner(1, logTo(&mu, &lines))
	defer r.Stop()
	done := make(chan splitterv1.HookResult, 2)
	j := job("t", "", done)
	j.URL = func(context.Context) (string, error) {
		return "", errors.New(`reading the hook's URL: Secret "smoke-url" not found`)
	}
	r.Start(j)
	if res := <-done; res.Verdict != splitterv1.VerdictFail || res.Message != `reading the hook's URL: Secret "smoke-url" not found` {
		t.Errorf("result %+v", res)
	}

	srv := serve(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) })
	r.Start(job("t2", srv.URL+"/hooks/"+secret+"?token="+secret, done))
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(lines) < 2 {
		t.Fatalf("log %q", lines)
	}
	for _, l := range lines {
		if strings.Contains(l, secret) || strings.Contains(l, srv.URL) {
			t.Errorf("log line shows the URL: %s", l)
		}
	}
}
