package hooks

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Runner defaults.
const (
	// DefaultConcurrency bounds the calls in flight across all Splits;
	// more wait their turn (a call's timeout starts when it is made).
	DefaultConcurrency = 16
	// Forget is how long a finished call is remembered: its result until
	// status records it (a Split deleted or superseded never does), its
	// token so that it is not called twice by this process.
	Forget = time.Hour
	// resolveTimeout bounds reading the URL (a Secret) before a call.
	resolveTimeout = 30 * time.Second
)

// Job is one hook call to make.
type Job struct {
	Split types.NamespacedName
	Token string
	Name  string
	// Timeout bounds the call.
	Timeout time.Duration
	Payload Payload
	// URL gives the URL at call time (it may read a Secret); an error
	// fails the call with the error as message, so it must not carry the
	// URL either.
	URL func(ctx context.Context) (string, error)
	// Done is told the result once stored (wake the Split); not called
	// when the runner stops mid-call. ctx ends when the runner stops: do
	// not block past it.
	Done func(ctx context.Context, res splitterv1.HookResult)
}

// Runner makes hook calls in the background: each token once per
// process, at most Concurrency at a time, and keeps each result until the
// Split's status records it. Nothing waits on a call: the release loop
// asks for results each time it runs. A process that stops mid-call
// records nothing, so the next one calls again (at least once).
type Runner struct {
	Caller *Caller
	Log    logr.Logger
	Now    func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup

	mu        sync.Mutex
	calls     map[types.NamespacedName]map[string]*call
	lastPrune time.Time
}

type call struct {
	done     bool
	recorded bool
	result   splitterv1.HookResult
}

// NewRunner returns a runner that makes at most concurrency calls at once.
func NewRunner(concurrency int, log logr.Logger) *Runner {
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{
		Caller: &Caller{}, Log: log, Now: time.Now,
		ctx: ctx, cancel: cancel, sem: make(chan struct{}, concurrency),
		calls: map[types.NamespacedName]map[string]*call{},
	}
}

// Run returns when ctx ends, after canceling the calls in flight and
// waiting for them to return (manager.Runnable).
func (r *Runner) Run(ctx context.Context) error {
	<-ctx.Done()
	r.Stop()
	return nil
}

// Stop cancels the calls in flight and waits for them; their results are
// not recorded.
func (r *Runner) Stop() {
	r.cancel()
	r.wg.Wait()
}

// Start makes the call in the background unless its token is running,
// finished or recorded already; it says whether it started it.
func (r *Runner) Start(j Job) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return false
	}
	r.pruneLocked()
	byToken := r.calls[j.Split]
	if byToken == nil {
		byToken = map[string]*call{}
		r.calls[j.Split] = byToken
	}
	if byToken[j.Token] != nil {
		return false
	}
	c := &call{}
	byToken[j.Token] = c
	r.wg.Add(1)
	go r.run(j, c)
	return true
}

func (r *Runner) run(j Job, c *call) {
	defer r.wg.Done()
	log := r.Log.WithValues("split", j.Split.String(), "hook", j.Name, "token", j.Token)
	select {
	case r.sem <- struct{}{}:
	case <-r.ctx.Done():
		r.forget(j, c)
		return
	}
	defer func() { <-r.sem }()

	start := r.Now()
	log.V(1).Info("Calling hook", "timeout", j.Timeout.String())
	out := r.call(j)
	if r.ctx.Err() != nil {
		// Stopping: the next controller calls it again.
		log.Info("Hook call interrupted by shutdown; it will be called again")
		r.forget(j, c)
		return
	}
	verdict := splitterv1.VerdictFail
	if out.Pass {
		verdict = splitterv1.VerdictPass
	}
	now := r.Now()
	res := splitterv1.HookResult{Token: j.Token, Name: j.Name, Verdict: verdict, Message: out.Message, At: metav1.NewTime(now)}
	log.Info("Hook called", "verdict", verdict, "message", out.Message, "took", now.Sub(start).Round(time.Millisecond).String())

	r.mu.Lock()
	c.done, c.result = true, res
	r.mu.Unlock()
	if j.Done != nil {
		j.Done(r.ctx, res)
	}
}

func (r *Runner) call(j Job) Outcome {
	ctx, cancel := context.WithTimeout(r.ctx, min(j.Timeout, resolveTimeout))
	url, err := j.URL(ctx)
	cancel()
	if err != nil {
		return fail("%v", err)
	}
	return r.Caller.Call(r.ctx, url, j.Timeout, j.Payload)
}

// forget drops a call that did not finish, so a later Start makes it.
func (r *Runner) forget(j Job, c *call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls[j.Split][j.Token] == c {
		delete(r.calls[j.Split], j.Token)
	}
}

// Results are split's finished calls that status does not record yet
// (recorded says which it does); a recorded call's result is dropped, its
// token kept so it is not called again.
func (r *Runner) Results(split types.NamespacedName, recorded func(token string) bool) map[string]splitterv1.HookResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
	var out map[string]splitterv1.HookResult
	for token, c := range r.calls[split] {
		switch {
		case !c.done || c.recorded:
		case recorded(token):
			c.recorded, c.result.Message = true, ""
		default:
			if out == nil {
				out = map[string]splitterv1.HookResult{}
			}
			out[token] = c.result
		}
	}
	return out
}

// Running counts the calls started and not finished (waiting for their
// turn or in flight).
func (r *Runner) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, byToken := range r.calls {
		for _, c := range byToken {
			if !c.done {
				n++
			}
		}
	}
	return n
}

// pruneLocked forgets calls finished more than Forget ago, at most once
// a minute.
func (r *Runner) pruneLocked() {
	now := r.Now()
	if now.Sub(r.lastPrune) < time.Minute {
		return
	}
	r.lastPrune = now
	for split, byToken := range r.calls {
		for token, c := range byToken {
			if c.done && now.Sub(c.result.At.Time) > Forget {
				delete(byToken, token)
			}
		}
		if len(byToken) == 0 {
			delete(r.calls, split)
		}
	}
}
