package rollout

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"gonum.org/v1/gonum/stat/distuv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
)

// A release simulated as a real cluster would run it, for the Monte-Carlo
// tests: the engine is called when it asked to be (its requeue, capped at
// the checkpoint interval while it watches), after each of its writes,
// and when the watchdog sweep (every scrape interval) trips, exactly as
// the controller does. Traffic is Poisson per pod, bad requests binomial
// per SLO; the data plane applies new weights after a propagation delay;
// Prometheus scrapes each pod at its own phase, and a reading interpolates
// every pod's samples at one instant (analysis.Align), as the controller
// does; pods restart (counters back to zero) or are replaced (new series);
// a reading fails now and then; a shared outage can make both colors fail.

type simSpec struct {
	plan *policy.Plan
	rps  float64
	// bad is each revision's bad-request rate per SLO.
	bad map[string]map[string]float64
	// scrape is Prometheus' scrape interval (and the watchdog's).
	scrape time.Duration
	pods   int
	// restarts is each color's mean time between pod restarts (0: none).
	restarts time.Duration
	readFail float64
	// clump, when above 1, makes bad requests come in clumps of that many
	// (same mean rate): one failure retried and counted several times.
	clump       int
	propagation time.Duration
	until       time.Duration
	// outage, when set, is a shared incident: from a random moment of the
	// first steps, for outage.length, both colors fail outage.rate of the
	// requests on top of their own rates (for every SLO).
	outage struct {
		length, from time.Duration
		rate         float64
	}
}

type simPod struct {
	id       string
	requests map[string]float64 // per SLO
	bad      map[string]float64
	// phase is when, within each scrape interval, Prometheus scrapes it;
	// samples are its last scrapes, oldest first.
	phase      time.Duration
	nextScrape time.Duration
	samples    []simSample
}

type simSample struct {
	at       time.Duration
	requests map[string]float64
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
	changes  []weightChange
	pods     map[splitterv1.Color][]*simPod
	podSeq   int
	advanced time.Duration
	outageAt time.Duration
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
	s.outageAt = -1
	if spec.outage.length > 0 {
		// Somewhere in the first two steps (release at 20 s; the 100% step
		// starts after 4m50s at 1 s scrapes, later at slower ones), or
		// after outage.from when set.
		s.outageAt = time.Minute + time.Duration(rng.Int64N(int64(150*time.Second)))
		if spec.outage.from > 0 {
			s.outageAt = spec.outage.from + time.Duration(rng.Int64N(int64(2*time.Minute)))
		}
	}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for range spec.pods {
			s.pods[c] = append(s.pods[c], s.newPod(0))
		}
	}
	return s
}

func (s *promSim) newPod(now time.Duration) *simPod {
	s.podSeq++
	phase := time.Duration(s.rng.Int64N(int64(s.spec.scrape)))
	next := now - now%s.spec.scrape + phase
	if next <= now {
		next += s.spec.scrape
	}
	return &simPod{id: "pod-" + strconv.Itoa(s.podSeq), requests: map[string]float64{}, bad: map[string]float64{}, phase: phase, nextScrape: next}
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
		// Piecewise: up to the next moment the effective weights change
		// or the outage starts or ends.
		end := t
		for _, ch := range s.changes {
			if at := ch.at + s.spec.propagation; at > s.advanced && at < end {
				end = at
			}
		}
		extra := 0.0
		if s.outageAt >= 0 {
			for _, at := range []time.Duration{s.outageAt, s.outageAt + s.spec.outage.length} {
				if at > s.advanced && at < end {
					end = at
				}
			}
			if s.advanced >= s.outageAt && s.advanced < s.outageAt+s.spec.outage.length {
				extra = s.spec.outage.rate
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
						if q := 1 - (1-s.spec.bad[rev][slo.Name])*(1-extra); q > 0 && n > 0 {
							k := float64(max(1, s.spec.clump))
							p.bad[slo.Name] += min(n, k*distuv.Binomial{N: n, P: q / k, Src: randSource{s.rng}}.Rand())
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

// scrape is Prometheus taking the samples of the pods due now.
func (s *promSim) scrape() {
	now := s.elapsed()
	s.advance(now)
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for _, p := range s.pods[c] {
			if p.nextScrape > now {
				continue
			}
			p.samples = append(p.samples, simSample{at: now, requests: maps.Clone(p.requests), bad: maps.Clone(p.bad)})
			if len(p.samples) > 4 {
				p.samples = p.samples[1:]
			}
			p.nextScrape += s.spec.scrape
		}
	}
}

// nextScrape is when the next pod is due.
func (s *promSim) nextScrape() time.Duration {
	next := time.Duration(math.MaxInt64)
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for _, p := range s.pods[c] {
			next = min(next, p.nextScrape)
		}
	}
	return next
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
	ps[i] = s.newPod(s.elapsed())
}

func (s *promSim) read() (Counters, string) {
	if s.spec.readFail > 0 && s.rng.Float64() < s.spec.readFail {
		return nil, "query timed out"
	}
	at := analysis.Align(s.w.now, s.spec.scrape).Sub(s.w.start)
	out := Counters{}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for _, p := range s.pods[c] {
			for _, slo := range s.spec.plan.SLOs {
				var pairs []model.SamplePair
				var bad []model.SamplePair
				for _, x := range p.samples {
					ts := model.Time(x.at.Milliseconds())
					pairs = append(pairs, model.SamplePair{Timestamp: ts, Value: model.SampleValue(x.requests[slo.Name])})
					bad = append(bad, model.SamplePair{Timestamp: ts, Value: model.SampleValue(x.bad[slo.Name])})
				}
				n, ok := analysis.ValueAt(pairs, model.Time(at.Milliseconds()))
				if !ok {
					continue
				}
				x, _ := analysis.ValueAt(bad, model.Time(at.Milliseconds()))
				out = append(out, splitterv1.SeriesReading{Color: c, SLO: slo.Name, Series: p.id,
					Requests: int64(math.Round(n)), Bad: int64(math.Round(x))})
			}
		}
	}
	return out, ""
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
	sweepPhase := time.Duration(s.rng.Int64N(int64(spec.scrape)))
	nextSweep := sweepPhase
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
		nextScrape := s.nextScrape()
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
