package rollout

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"gonum.org/v1/gonum/stat/distuv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/policy"
)

// A release simulated as a real cluster would run it, for the Monte-Carlo
// tests: the engine is called when it asked to be (its requeue, capped at
// the checkpoint interval while it watches), after each of its writes,
// and when the watchdog sweep (every scrape interval) trips, exactly as
// the controller does. Traffic is Poisson per pod, bad requests binomial
// per SLO; the data plane applies new weights after a propagation delay;
// Prometheus scrapes every pod's counters at a fixed phase and a reading
// returns the last scrape; pods restart (counters back to zero) or are
// replaced (new series); a reading fails now and then.

type simSpec struct {
	plan *policy.Plan
	rps  float64
	// bad is each revision's bad-request rate per SLO.
	bad map[string]map[string]float64
	// scrape is Prometheus' scrape interval (and the watchdog's).
	scrape time.Duration
	pods   int
	// restarts is each color's mean time between pod restarts (0: none).
	restarts    time.Duration
	readFail    float64
	propagation time.Duration
	until       time.Duration
}

type simPod struct {
	id       string
	requests map[string]float64 // per SLO
	bad      map[string]float64
}

type simResult struct {
	phase   splitterv1.Phase
	history []splitterv1.Release
	// firstGreen is when the candidate first had traffic (offset).
	firstGreen time.Duration
	// ended is when the release ended (rollback or promotion), offset.
	ended time.Duration
	lines []string
}

// outcome names how the release ended: promoted, rolledback, paused or
// unfinished.
func (r simResult) outcome() string {
	if len(r.history) > 0 {
		switch r.history[0].Outcome {
		case splitterv1.OutcomePromoted:
			return "promoted"
		case splitterv1.OutcomeRolledBack:
			return "rolledback"
		}
		return string(r.history[0].Outcome)
	}
	if r.phase == splitterv1.PhaseAwaitingApproval {
		return "paused"
	}
	return "unfinished"
}

type promSim struct {
	spec   simSpec
	rng    *rand.Rand
	w      *fakeWorld
	status splitterv1.SplitStatus
	// effective weights over time: the data plane follows routed after
	// the propagation delay.
	changes []weightChange
	pods    map[splitterv1.Color][]*simPod
	podSeq  int
	// scraped is Prometheus' view: the last scrape of each series.
	scraped  Counters
	advanced time.Duration
	res      simResult
}

type weightChange struct {
	at time.Duration
	w  Weights
}

func newPromSim(spec simSpec, rng *rand.Rand) *promSim {
	w := newFakeWorld("v1")
	w.readyDelay = 10 * time.Second
	s := &promSim{spec: spec, rng: rng, w: w, pods: map[splitterv1.Color][]*simPod{}}
	s.res.firstGreen = -1
	s.res.ended = -1
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for range spec.pods {
			s.pods[c] = append(s.pods[c], s.newPod())
		}
	}
	return s
}

func (s *promSim) newPod() *simPod {
	s.podSeq++
	return &simPod{id: "pod-" + strconv.Itoa(s.podSeq), requests: map[string]float64{}, bad: map[string]float64{}}
}

func (s *promSim) elapsed() time.Duration { return s.w.now.Sub(s.w.start) }

// weightsAt are the weights the data plane applies at offset t.
func (s *promSim) weightsAt(t time.Duration) *Weights {
	var cur *Weights
	for i := range s.changes {
		if s.changes[i].at+s.spec.propagation <= t {
			cur = &s.changes[i].w
		}
	}
	return cur
}

// advance grows every pod's counters up to offset t.
func (s *promSim) advance(t time.Duration) {
	for s.advanced < t {
		// Piecewise: up to the next moment the effective weights change.
		end := t
		for _, ch := range s.changes {
			if at := ch.at + s.spec.propagation; at > s.advanced && at < end {
				end = at
			}
		}
		w := s.weightsAt(s.advanced)
		dt := (end - s.advanced).Seconds()
		if w != nil {
			for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
				if w.Of(c) == 0 || len(s.pods[c]) == 0 {
					continue
				}
				if c == s.status.Candidate && s.res.firstGreen < 0 && isRelease(s.status.Phase) {
					s.res.firstGreen = s.advanced
				}
				rev := s.w.colors[c].spec.Revision
				perPod := s.spec.rps * dt * float64(w.Of(c)) / 100 / float64(len(s.pods[c]))
				for _, p := range s.pods[c] {
					n := poissonDraw(s.rng, perPod)
					for _, slo := range s.spec.plan.SLOs {
						p.requests[slo.Name] += n
						if q := s.spec.bad[rev][slo.Name]; q > 0 && n > 0 {
							p.bad[slo.Name] += distuv.Binomial{N: n, P: q, Src: randSource{s.rng}}.Rand()
						}
					}
				}
			}
		}
		s.advanced = end
	}
}

func isRelease(p splitterv1.Phase) bool {
	return p == splitterv1.PhaseShifting || p == splitterv1.PhaseAwaitingApproval || p == splitterv1.PhasePromoting
}

func poissonDraw(rng *rand.Rand, mean float64) float64 {
	if mean <= 0 {
		return 0
	}
	return distuv.Poisson{Lambda: mean, Src: randSource{rng}}.Rand()
}

// scrape is Prometheus taking every pod's sample.
func (s *promSim) scrape() {
	s.advance(s.elapsed())
	var out Counters
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for _, p := range s.pods[c] {
			for _, slo := range s.spec.plan.SLOs {
				out = append(out, splitterv1.SeriesReading{Color: c, SLO: slo.Name, Series: p.id,
					Requests: int64(p.requests[slo.Name]), Bad: int64(p.bad[slo.Name])})
			}
		}
	}
	s.scraped = out
}

// restart restarts one random pod of a color: half the time the same pod
// (its counters back at zero), half a new one (new series).
func (s *promSim) restart(c splitterv1.Color) {
	s.advance(s.elapsed())
	ps := s.pods[c]
	i := s.rng.IntN(len(ps))
	if s.rng.IntN(2) == 0 {
		ps[i].requests, ps[i].bad = map[string]float64{}, map[string]float64{}
		return
	}
	ps[i] = s.newPod()
}

func (s *promSim) read() (Counters, string) {
	if s.spec.readFail > 0 && s.rng.Float64() < s.spec.readFail {
		return nil, "query timed out"
	}
	if s.scraped == nil {
		return Counters{}, ""
	}
	return append(Counters(nil), s.scraped...), ""
}

// reconcile calls the engine the way the controller does and applies
// its decision; it returns when to call it again.
func (s *promSim) reconcile() time.Duration {
	for range 3 {
		o := s.w.observe()
		o.Counters, o.CountersErr = nil, ""
		if _, _, ok := Watched(s.status); ok {
			o.Counters, o.CountersErr = s.read()
		}
		d := Next(s.spec.plan, s.status, o)
		s.status = d.Status
		before := s.w.routed
		s.w.apply(d.Desired)
		if s.w.routed != nil && (before == nil || *before != *s.w.routed) {
			s.changes = append(s.changes, weightChange{at: s.elapsed(), w: *s.w.routed})
		}
		if d.Transition != nil {
			s.res.lines = append(s.res.lines, fmt.Sprintf("%8s %-16s step=%d weight=%d %s: %s", s.elapsed().Round(time.Second), d.Status.Phase, d.Status.Step, d.Status.Weight, d.Transition.Reason, d.Transition.Message))
			if (d.Status.Phase == splitterv1.PhaseRollingBack || d.Status.Phase == splitterv1.PhasePromoting) && s.res.ended < 0 {
				s.res.ended = s.elapsed()
			}
		}
		req := d.Requeue
		if _, _, ok := Watched(s.status); ok && (req == 0 || req > 30*time.Second) {
			req = 30 * time.Second
		}
		if req > time.Millisecond {
			return req
		}
		if req == 0 {
			return time.Hour
		}
	}
	return time.Second
}

// run simulates one release of v2, started 20 s in.
func (s *promSim) run() simResult {
	spec := s.spec
	scrapePhase := time.Duration(s.rng.Int64N(int64(spec.scrape)))
	sweepPhase := time.Duration(s.rng.Int64N(int64(spec.scrape)))
	nextScrape, nextSweep := scrapePhase, sweepPhase
	nextWake := time.Duration(0)
	released := false
	restartNext := map[splitterv1.Color]time.Duration{}
	drawRestart := func(c splitterv1.Color, from time.Duration) {
		if spec.restarts > 0 {
			restartNext[c] = from + time.Duration(s.rng.ExpFloat64()*float64(spec.restarts))
		} else {
			restartNext[c] = math.MaxInt64
		}
	}
	drawRestart(splitterv1.Blue, 0)
	drawRestart(splitterv1.Green, 0)
	const releaseAt = 20 * time.Second
	for {
		next := min(nextScrape, nextSweep, nextWake, restartNext[splitterv1.Blue], restartNext[splitterv1.Green])
		if !released {
			next = min(next, releaseAt)
		}
		if next > spec.until {
			break
		}
		s.w.now = s.w.start.Add(next)
		switch {
		case !released && next == releaseAt:
			s.w.revision = "v2"
			released = true
			nextWake = next
		case next == nextScrape:
			s.scrape()
			nextScrape += spec.scrape
		case next == restartNext[splitterv1.Blue] || next == restartNext[splitterv1.Green]:
			c := splitterv1.Blue
			if next == restartNext[splitterv1.Green] {
				c = splitterv1.Green
			}
			s.restart(c)
			drawRestart(c, next)
		case next == nextSweep:
			nextSweep += spec.scrape
			if _, _, ok := Watched(s.status); ok {
				if counters, errMsg := s.read(); errMsg == "" {
					if _, tripped := SweepLook(spec.plan, s.status, counters, s.w.now); tripped {
						nextWake = next
					}
				}
			}
		case next == nextWake:
			before := s.w.routed
			wait := s.reconcile()
			nextWake = next + wait
			if s.w.routed != before {
				nextWake = min(nextWake, next+time.Second) // the write's watch event
			}
		}
	}
	s.res.phase, s.res.history = s.status.Phase, s.status.History
	return s.res
}

// tally counts outcomes.
type tally struct {
	n        int
	outcomes map[string]int
	reasons  map[string]int
	detect   []float64 // seconds from green's first traffic to the end, for rollbacks
}

func (t *tally) add(r simResult) {
	if t.outcomes == nil {
		t.outcomes, t.reasons = map[string]int{}, map[string]int{}
	}
	t.n++
	o := r.outcome()
	t.outcomes[o]++
	if o == "rolledback" {
		h := r.history[0]
		msg := h.Message
		if len(msg) > 60 {
			msg = msg[:60]
		}
		t.reasons[h.Reason+": "+msg]++
		if r.firstGreen >= 0 && r.ended >= 0 {
			t.detect = append(t.detect, (r.ended - r.firstGreen).Seconds())
		}
	}
}

func (t *tally) share(o string) float64 { return float64(t.outcomes[o]) / float64(t.n) }

func (t *tally) median() float64 {
	if len(t.detect) == 0 {
		return math.NaN()
	}
	d := append([]float64(nil), t.detect...)
	sort.Float64s(d)
	return d[len(d)/2]
}

func (t *tally) String() string {
	return fmt.Sprintf("%d releases: promoted %d, paused %d, rolled back %d, unfinished %d",
		t.n, t.outcomes["promoted"], t.outcomes["paused"], t.outcomes["rolledback"], t.outcomes["unfinished"])
}

// wilsonUpper is a 95% upper bound on a share, for reporting.
func wilsonUpper(k, n int) float64 {
	if n == 0 {
		return 1
	}
	z := 1.96
	p := float64(k) / float64(n)
	nn := float64(n)
	return (p + z*z/(2*nn) + z*math.Sqrt(p*(1-p)/nn+z*z/(4*nn*nn))) / (1 + z*z/nn)
}
