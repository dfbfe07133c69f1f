package rollout

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/gonum/stat/distuv"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
)

// fakeWorld is a pure stand-in for the cluster in engine tests: color
// Deployments become Ready a fixed delay after their spec changes, and the
// router applies weights at once.
type fakeWorld struct {
	now        time.Time
	start      time.Time
	revision   string // the user's template hash
	replicas   int32
	readyDelay time.Duration
	// neverReady keeps a revision's pods unready (a crash-looping image).
	neverReady map[string]bool
	colors     map[splitterv1.Color]*fakeColor
	routed     *Weights
	approve    string
	abort      string
	pause      string
	retry      string
	promote    string
	by         string

	// hook answers a hook call: its verdict, message and how long it takes.
	hook        func(c HookCall) (splitterv1.Verdict, string, time.Duration)
	hookStarted map[string]time.Time
	hookCalls   map[string]HookCall

	weightWrites int
	colorWrites  int

	// Traffic, when rps > 0: counters grow by the routed weights, with
	// errors at errRate of the revision each color runs (deterministic).
	rps     float64
	errRate map[string]float64
	// random draws Poisson arrivals and binomial errors instead of
	// expected values.
	random *rand.Rand
	// readErr, when set, makes a counter reading fail at some instants.
	readErr  func(now time.Time) string
	counted  time.Time
	requests map[splitterv1.Color]float64
	errors   map[splitterv1.Color]float64
}

// count advances the counters to w.now.
func (w *fakeWorld) count() {
	if w.rps == 0 {
		return
	}
	if w.requests == nil {
		w.requests, w.errors, w.counted = map[splitterv1.Color]float64{}, map[splitterv1.Color]float64{}, w.now
	}
	dt := w.now.Sub(w.counted).Seconds()
	w.counted = w.now
	if w.routed == nil || dt <= 0 {
		return
	}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		n := w.rps * dt * float64(w.routed.Of(c)) / 100
		p := w.errRate[w.colors[c].spec.Revision]
		if w.random == nil {
			w.requests[c] += n
			w.errors[c] += n * p
			continue
		}
		k := float64(distuv.Poisson{Lambda: n, Src: randSource{w.random}}.Rand())
		w.requests[c] += k
		if k > 0 && p > 0 {
			w.errors[c] += distuv.Binomial{N: k, P: p, Src: randSource{w.random}}.Rand()
		}
	}
}

func (w *fakeWorld) counters() Counters {
	var out Counters
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		out = append(out, splitterv1.SeriesReading{Color: c, SLO: "availability", Series: "pod-0",
			Requests: int64(w.requests[c]), Bad: int64(w.errors[c])})
	}
	return out
}

type fakeColor struct {
	spec    ColorSpec
	readyAt time.Time
	lost    bool // pods lost (node failure): Ready 0 until the spec changes
	// deleted: the Deployment is gone; the controller recreates it only
	// from the workload's current template (as applyColors does).
	deleted bool
}

func newFakeWorld(rev string) *fakeWorld {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &fakeWorld{
		now: t0, start: t0, revision: rev, replicas: 3, readyDelay: 5 * time.Second,
		neverReady: map[string]bool{},
		colors:     map[splitterv1.Color]*fakeColor{splitterv1.Blue: {}, splitterv1.Green: {}},
	}
}

func (w *fakeWorld) observe() Observations {
	o := Observations{Now: w.now, Revision: w.revision, Replicas: w.replicas, Colors: map[splitterv1.Color]ColorState{},
		Approve: w.approve, Abort: w.abort, Pause: w.pause, Retry: w.retry, Promote: w.promote, RequestedBy: w.by}
	for token, at := range w.hookStarted {
		v, msg, took := w.hook(w.hookCalls[token])
		if !w.now.Before(at.Add(took)) {
			if o.Hooks == nil {
				o.Hooks = map[string]splitterv1.HookResult{}
			}
			o.Hooks[token] = splitterv1.HookResult{Token: token, Name: w.hookCalls[token].Hook.Name, Verdict: v, Message: msg, At: metav1.NewTime(at.Add(took))}
		}
	}
	for c, fc := range w.colors {
		if fc.deleted {
			o.Colors[c] = ColorState{}
			continue
		}
		st := ColorState{Revision: fc.spec.Revision, Replicas: fc.spec.Replicas, RolledOut: !w.now.Before(fc.readyAt)}
		if st.RolledOut && !fc.lost && !w.neverReady[fc.spec.Revision] {
			st.Ready = fc.spec.Replicas
		}
		o.Colors[c] = st
	}
	if w.routed != nil {
		r := *w.routed
		o.Routed = &r
	}
	if w.rps > 0 {
		w.count()
		o.Counters = w.counters()
		if w.readErr != nil {
			if msg := w.readErr(w.now); msg != "" {
				o.Counters, o.CountersErr = nil, msg
			}
		}
	}
	return o
}

// apply converges the world to d, counting writes as the controller would
// (only what differs is written).
func (w *fakeWorld) apply(d Desired) []string {
	var writes []string
	if d.Weights != nil && (w.routed == nil || *w.routed != *d.Weights) {
		r := *d.Weights
		w.routed = &r
		w.weightWrites++
		writes = append(writes, "weights "+r.String())
	}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		want, ok := d.Colors[c]
		if !ok {
			continue
		}
		fc := w.colors[c]
		if fc.deleted {
			if want.Revision == "" || want.Revision != w.revision {
				continue // its template is not the workload's: not recreated
			}
			fc.deleted, fc.spec = false, ColorSpec{}
		}
		if want.Revision == "" {
			want.Revision = fc.spec.Revision
		}
		if fc.spec != want {
			fc.spec, fc.readyAt, fc.lost = want, w.now.Add(w.readyDelay), false
			w.colorWrites++
			writes = append(writes, fmt.Sprintf("%s replicas=%d revision=%s", c, want.Replicas, want.Revision))
		}
	}
	return writes
}

// callHooks starts the calls not started yet, as the controller's runner
// does (once per token).
func (w *fakeWorld) callHooks(calls []HookCall) []string {
	var started []string
	for _, c := range calls {
		if _, ok := w.hookStarted[c.Token]; ok {
			continue
		}
		if w.hookStarted == nil {
			w.hookStarted, w.hookCalls = map[string]time.Time{}, map[string]HookCall{}
		}
		w.hookStarted[c.Token], w.hookCalls[c.Token] = w.now, c
		started = append(started, "hook call "+c.Token)
	}
	return started
}

// verdictFunc scripts the checks: it returns the results for a step.
type verdictFunc func(s splitterv1.SplitStatus, w *fakeWorld) []analysis.Result

func results(v splitterv1.Verdict, names ...string) []analysis.Result {
	var out []analysis.Result
	for _, n := range names {
		r := analysis.Result{Name: n, Verdict: v, Bound: ">= 0.99"}
		if v == splitterv1.VerdictPass || v == splitterv1.VerdictFail {
			r.HasValue = true
			r.Value = 0.999
			if v == splitterv1.VerdictFail {
				r.Value = 0.7
			}
		}
		if v == splitterv1.VerdictInconclusive {
			r.Message = "no data"
		}
		out = append(out, r)
	}
	return out
}

func allPass(s splitterv1.SplitStatus, _ *fakeWorld) []analysis.Result {
	return results(splitterv1.VerdictPass, "success-rate")
}

// scenario drives the engine against the fake world, reconciling on every
// tick, and writes one transcript line per transition or write.
type scenario struct {
	plan     *policy.Plan
	world    *fakeWorld
	status   splitterv1.SplitStatus
	verdicts verdictFunc
	traffic  *traffic
	events   map[time.Duration]func(*fakeWorld) // at offset from start
	tick     time.Duration
	until    time.Duration
	lines    []string
	// checkInvariants is called after every decision.
	checkInvariants func(before splitterv1.SplitStatus, o Observations, d Decision) error
	violations      []string
}

func (sc *scenario) run() string {
	if sc.tick == 0 {
		sc.tick = time.Second
	}
	offsets := make([]time.Duration, 0, len(sc.events))
	for off := range sc.events {
		offsets = append(offsets, off)
	}
	sort.Slice(offsets, func(i, j int) bool { return offsets[i] < offsets[j] })
	next := 0
	for elapsed := time.Duration(0); elapsed <= sc.until; elapsed += sc.tick {
		sc.world.now = sc.world.start.Add(elapsed)
		for next < len(offsets) && offsets[next] <= elapsed {
			sc.events[offsets[next]](sc.world)
			sc.lines = append(sc.lines, fmt.Sprintf("%6s  -- event at %s", fmtOffset(elapsed), fmtOffset(offsets[next])))
			next++
		}
		sc.reconcile(elapsed)
	}
	sc.lines = append(sc.lines, fmt.Sprintf("writes: weights=%d colors=%d", sc.world.weightWrites, sc.world.colorWrites))
	return strings.Join(sc.lines, "\n") + "\n"
}

func (sc *scenario) reconcile(elapsed time.Duration) {
	// The engine asks to be called again at once (Requeue of 1ms) when the
	// controller has work for it: checks to evaluate, a newer template.
	for range 3 {
		o := sc.world.observe()
		if ChecksDue(sc.plan, sc.status, o.Now) && len(sc.plan.Checks) > 0 {
			o.Verdicts = sc.verdicts(sc.status, sc.world)
		}
		before := sc.status
		d := Next(sc.plan, sc.status, o)
		if sc.checkInvariants != nil {
			if err := sc.checkInvariants(before, o, d); err != nil {
				sc.violations = append(sc.violations, fmt.Sprintf("%s: %v", fmtOffset(elapsed), err))
			}
		}
		sc.status = d.Status
		writes := sc.world.apply(d.Desired)
		writes = append(writes, sc.world.callHooks(d.Desired.Hooks)...)
		if d.Transition != nil {
			s := d.Status
			sc.lines = append(sc.lines, fmt.Sprintf("%6s  %-16s step=%d weight=%-3d live=%s/%s cand=%s/%s  %s: %s",
				fmtOffset(elapsed), s.Phase, s.Step, s.Weight, s.Live, s.LiveRevision, orDash(string(s.Candidate)), orDash(s.CandidateRevision),
				d.Transition.Reason, d.Transition.Message))
		}
		for _, wr := range writes {
			sc.lines = append(sc.lines, fmt.Sprintf("%6s      write %s", fmtOffset(elapsed), wr))
		}
		if d.Requeue == 0 || d.Requeue > time.Millisecond {
			return
		}
	}
}

// randSource adapts math/rand/v2 to gonum's random source.
type randSource struct{ r *rand.Rand }

func (s randSource) Uint64() uint64 { return s.r.Uint64() }

func fmtOffset(d time.Duration) string { return "+" + d.String() }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
