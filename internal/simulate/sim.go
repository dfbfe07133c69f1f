package simulate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"gonum.org/v1/gonum/stat/distuv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
	"splitter.dev/splitter/internal/rollout"
)

// Package simulate runs releases through the engine (rollout.Next) as a
// real cluster would run them, many times over, and counts how they end:
// the Monte-Carlo behind `splitter policy simulate`, `policy lint --rps`
// and the engine's statistical tests. Pure: no I/O, no clock.
//
// A release is driven as the controller drives it: the engine is called
// when it asked to be (its requeue, capped at the checkpoint interval
// while it watches), after each of its writes, and when the watchdog
// sweep (every scrape interval) trips. Traffic is Poisson per pod, bad
// requests binomial per SLO; the data plane applies new weights after a
// propagation delay; Prometheus scrapes each pod at its own phase, and a
// reading interpolates every pod's samples at one instant
// (analysis.Align), as the controller does; pods restart (counters back
// to zero) or are replaced (new series); a reading fails now and then; a
// shared outage can make both colors fail.

// The revisions of a simulated release: the live one and the candidate.
const (
	LiveRevision      = "v1"
	CandidateRevision = "v2"
)

// Spec is the traffic model of a simulated release.
type Spec struct {
	Plan *policy.Plan
	// RPS is the workload's request rate (both colors together).
	RPS float64
	// Bad is each revision's bad-request rate per SLO name.
	Bad map[string]map[string]float64
	// Scrape is Prometheus' scrape interval (and the watchdog's).
	Scrape time.Duration
	// Pods is how many pods each color runs.
	Pods int
	// Restarts is each color's mean time between pod restarts (0: none).
	Restarts time.Duration
	// ReadFail is the share of counter readings that fail.
	ReadFail float64
	// Clump, when above 1, makes bad requests come in clumps of that many
	// (same mean rate): one failure retried and counted several times.
	Clump int
	// Callers, when set, are the shares of the traffic each caller sends
	// (summing to 1), and the pods export what Istio exports: a series per
	// caller and response code, born at its first response, and latency
	// histograms per label set, read through the controller's classifiers
	// (see istio.go). Nil: one series per pod and SLO.
	Callers     []float64
	Propagation time.Duration
	// Until is how long each release is simulated for.
	Until time.Duration
	// Outage, when set, is a shared incident.
	Outage Outage
	// Drift, when set, makes both colors' bad rates wander together: each
	// rate times exp(X - sd²/2), X an Ornstein-Uhlenbeck process with
	// stationary standard deviation Drift.SD and correlation time
	// Drift.Time (the rate of a service whose error rate follows its
	// traffic, dependencies and time of day).
	Drift Drift
	// ColdStart, when set, makes ColdStart.Slow of the candidate's requests
	// slower than every latency threshold for ColdStart.For after its
	// first request (empty caches, a JIT warming up).
	ColdStart ColdStart
	// Spikes, when set, are short incidents both colors share, recurring
	// at random all through the release and its standby.
	Spikes Spikes
	// LateOnset, when set, keeps the candidate at the live revision's
	// rates until LateOnset after its promotion (into standby): a
	// regression that starts late.
	LateOnset time.Duration
	// StepOnset, when set, keeps the candidate at the live revision's
	// rates until StepOnset after its first request: a fault that starts
	// during a step, its pods already read.
	StepOnset time.Duration
	// StopAtEnd ends a release's simulation once its outcome is final
	// (rolled back, or promoted and its standby over) rather than at
	// Until: faster, same outcome, but the releases after it draw other
	// numbers than without it.
	StopAtEnd bool
}

// Outage is a shared incident: from a random moment of the first steps
// (or From plus up to 2 minutes), for Length, both colors fail Rate of
// the requests on top of their own rates (for every SLO).
type Outage struct {
	Length, From time.Duration
	Rate         float64
}

// Spikes are shared incidents at the times of a Poisson process with mean
// gap Every: for Length, both colors fail Rate of the requests on top of
// their own rates (for every SLO).
type Spikes struct {
	Every, Length time.Duration
	Rate          float64
}

// ColdStart is a candidate slow at first (see Spec.ColdStart).
type ColdStart struct {
	Slow float64
	For  time.Duration
}

// Drift is a shared wandering of the bad rates (see Spec.Drift).
type Drift struct {
	SD   float64
	Time time.Duration
}

type simPod struct {
	id       string
	requests []float64 // per SLO, in the plan's order
	bad      []float64
	// phase is when, within each scrape interval, Prometheus scrapes it;
	// samples are its last scrapes, oldest first.
	phase      time.Duration
	nextScrape time.Duration
	samples    []simSample
	// istio: the pod's label sets when Spec.Callers is set.
	istio []*istioSet
}

type simSample struct {
	at       time.Duration
	requests []float64
	bad      []float64
	istio    []istioValue
}

// podSource is the simulated traffic: pods, their counters and
// Prometheus' scrapes of them.
type podSource struct {
	spec Spec
	rng  *rand.Rand
	d    *driver
	// effective weights over time: the data plane follows routed after
	// the propagation delay.
	changes     []weightChange
	pods        map[splitterv1.Color][]*simPod
	podSeq      int
	advanced    time.Duration
	outageAt    time.Duration
	restartNext map[splitterv1.Color]time.Duration
	// spikes are the shared spikes' start times, in order (Spec.Spikes).
	spikes []time.Duration
	// drift is the shared log-rate's current value (Spec.Drift).
	drift float64
}

// promSim is one simulated release: the driver and its pods.
type promSim struct {
	*driver
	pods *podSource
}

type weightChange struct {
	at time.Duration
	w  rollout.Weights
}

// Drive is how the release is driven.
func (spec Spec) Drive() Drive {
	return Drive{Plan: spec.Plan, Scrape: spec.Scrape, ReleaseAt: Released, Until: spec.Until, ReadyDelay: 10 * time.Second, StopAtEnd: spec.StopAtEnd}
}

func newPromSim(spec Spec, rng *rand.Rand) *promSim {
	dr := newDriver(spec.Drive(), rng)
	dr.firstGreenSet = true
	s := &podSource{spec: spec, rng: rng, d: dr, pods: map[splitterv1.Color][]*simPod{}}
	dr.src = s
	s.outageAt = -1
	if spec.Outage.Length > 0 {
		// Somewhere in the first two steps (release at 20 s; the 100% step
		// starts after 4m50s at 1 s scrapes, later at slower ones), or
		// after outage.from when set.
		s.outageAt = time.Minute + time.Duration(rng.Int64N(int64(150*time.Second)))
		if spec.Outage.From > 0 {
			s.outageAt = spec.Outage.From + time.Duration(rng.Int64N(int64(2*time.Minute)))
		}
	}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for range spec.Pods {
			s.pods[c] = append(s.pods[c], s.newPod(c, 0))
		}
	}
	if sp := spec.Spikes; sp.Every > 0 && sp.Length > 0 {
		for t := time.Duration(rng.ExpFloat64() * float64(sp.Every)); t < spec.Until; t += sp.Length + time.Duration(rng.ExpFloat64()*float64(sp.Every)) {
			s.spikes = append(s.spikes, t)
		}
	}
	return &promSim{driver: dr, pods: s}
}

func (s *promSim) run() Result                      { return s.driver.run(s.pods.start) }
func (s *promSim) scrape()                          { s.pods.scrape() }
func (s *promSim) read() (rollout.Counters, string) { return s.pods.Read(s.elapsed()) }

// start draws each color's first pod restart.
func (s *podSource) start() {
	s.restartNext = map[splitterv1.Color]time.Duration{}
	s.drawRestart(splitterv1.Blue, 0)
	s.drawRestart(splitterv1.Green, 0)
}

func (s *podSource) drawRestart(c splitterv1.Color, from time.Duration) {
	if s.spec.Restarts > 0 {
		s.restartNext[c] = from + time.Duration(s.rng.ExpFloat64()*float64(s.spec.Restarts))
	} else {
		s.restartNext[c] = never
	}
}

func (s *podSource) Next() time.Duration {
	return min(s.nextScrape(), s.restartNext[splitterv1.Blue], s.restartNext[splitterv1.Green])
}

func (s *podSource) Fire(t time.Duration) {
	switch {
	case t == s.nextScrape():
		s.scrape()
	default:
		c := splitterv1.Blue
		if t == s.restartNext[splitterv1.Green] {
			c = splitterv1.Green
		}
		s.restart(c)
		s.drawRestart(c, t)
	}
}

func (s *podSource) Route(t time.Duration, w rollout.Weights) {
	s.changes = append(s.changes, weightChange{at: t, w: w})
}

func (s *podSource) newPod(c splitterv1.Color, now time.Duration) *simPod {
	s.podSeq++
	phase := time.Duration(s.rng.Int64N(int64(s.spec.Scrape)))
	next := now - now%s.spec.Scrape + phase
	if next <= now {
		next += s.spec.Scrape
	}
	p := &simPod{id: "pod-" + strconv.Itoa(s.podSeq), requests: make([]float64, len(s.spec.Plan.SLOs)), bad: make([]float64, len(s.spec.Plan.SLOs)), phase: phase, nextScrape: next}
	if len(s.spec.Callers) > 0 {
		p.istio = s.newIstioSets(c, p.id)
	}
	return p
}

func (s *podSource) elapsed() time.Duration { return s.d.elapsed() }

// weightsAt are the weights the data plane applies at offset t.
func (s *podSource) weightsAt(t time.Duration) *rollout.Weights {
	var cur *rollout.Weights
	for i := range s.changes {
		if s.changes[i].at+s.spec.Propagation <= t {
			cur = &s.changes[i].w
		}
	}
	return cur
}

// advance grows every pod's counters up to offset t.
func (s *podSource) advance(t time.Duration) {
	for s.advanced < t {
		// Piecewise: up to the next moment the effective weights change
		// or the outage starts or ends.
		end := t
		for _, ch := range s.changes {
			if at := ch.at + s.spec.Propagation; at > s.advanced && at < end {
				end = at
			}
		}
		if at := s.onsetAt(); at > s.advanced && at < end {
			end = at
		}
		if cs := s.spec.ColdStart; cs.Slow > 0 && s.d.res.FirstGreen >= 0 {
			if at := s.d.res.FirstGreen + cs.For; at > s.advanced && at < end {
				end = at
			}
		}
		extra := 0.0
		if s.outageAt >= 0 {
			for _, at := range []time.Duration{s.outageAt, s.outageAt + s.spec.Outage.Length} {
				if at > s.advanced && at < end {
					end = at
				}
			}
			if s.advanced >= s.outageAt && s.advanced < s.outageAt+s.spec.Outage.Length {
				extra = s.spec.Outage.Rate
			}
		}
		for len(s.spikes) > 0 && s.spikes[0]+s.spec.Spikes.Length <= s.advanced {
			s.spikes = s.spikes[1:]
		}
		if len(s.spikes) > 0 {
			from, to := s.spikes[0], s.spikes[0]+s.spec.Spikes.Length
			for _, at := range []time.Duration{from, to} {
				if at > s.advanced && at < end {
					end = at
				}
			}
			if s.advanced >= from && s.advanced < to {
				extra = 1 - (1-extra)*(1-s.spec.Spikes.Rate)
			}
		}
		w := s.weightsAt(s.advanced)
		dt := (end - s.advanced).Seconds()
		mult := s.stepDrift(dt)
		if w != nil {
			for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
				if w.Of(c) == 0 || len(s.pods[c]) == 0 {
					continue
				}
				if c == s.d.status.Candidate && s.d.res.FirstGreen < 0 && isRelease(s.d.status.Phase) {
					s.d.res.FirstGreen = s.advanced
				}
				rates := s.drifted(s.spec.Bad[s.ratesOf(s.d.w.colors[c].spec.Revision)], mult)
				rates = s.cold(s.d.w.colors[c].spec.Revision, rates)
				perPod := s.spec.RPS * dt * float64(w.Of(c)) / 100 / float64(len(s.pods[c]))
				for _, p := range s.pods[c] {
					if len(s.spec.Callers) > 0 {
						s.advanceIstio(p, perPod, rates, extra)
						continue
					}
					n := poissonDraw(s.rng, perPod)
					for i, slo := range s.spec.Plan.SLOs {
						p.requests[i] += n
						if q := 1 - (1-rates[slo.Name])*(1-extra); q > 0 && n > 0 {
							k := float64(max(1, s.spec.Clump))
							p.bad[i] += min(n, k*distuv.Binomial{N: n, P: q / k, Src: randSource{s.rng}}.Rand())
						}
					}
				}
			}
		}
		s.advanced = end
	}
}

// stepDrift moves the shared log-rate over dt seconds (exact
// Ornstein-Uhlenbeck step) and returns the rates' multiplier for them.
func (s *podSource) stepDrift(dt float64) float64 {
	d := s.spec.Drift
	if d.SD <= 0 || d.Time <= 0 {
		return 1
	}
	if s.advanced == 0 {
		s.drift = d.SD * s.rng.NormFloat64() // stationary from the start
	}
	a := math.Exp(-dt / d.Time.Seconds())
	s.drift = s.drift*a + d.SD*math.Sqrt(1-a*a)*s.rng.NormFloat64()
	return math.Exp(s.drift - d.SD*d.SD/2)
}

// drifted is rates times the drift's multiplier, capped at 90%.
func (s *podSource) drifted(rates map[string]float64, mult float64) map[string]float64 {
	if mult == 1 {
		return rates
	}
	out := make(map[string]float64, len(rates))
	for k, v := range rates {
		out[k] = min(0.9, v*mult)
	}
	return out
}

// cold applies the candidate's cold start to its rates.
func (s *podSource) cold(rev string, rates map[string]float64) map[string]float64 {
	cs := s.spec.ColdStart
	if rev != CandidateRevision || cs.Slow <= 0 || s.d.res.FirstGreen < 0 || s.advanced >= s.d.res.FirstGreen+cs.For {
		return rates
	}
	out := make(map[string]float64, len(rates))
	for _, slo := range s.spec.Plan.SLOs {
		out[slo.Name] = rates[slo.Name]
		if slo.ThresholdMs > 0 {
			out[slo.Name] = max(rates[slo.Name], cs.Slow)
		}
	}
	return out
}

// onsetAt is when a late onset starts (offset), never before the
// promotion is known.
func (s *podSource) onsetAt() time.Duration {
	switch {
	case s.spec.StepOnset > 0 && s.d.res.FirstGreen >= 0:
		return s.d.res.FirstGreen + s.spec.StepOnset
	case s.spec.LateOnset <= 0 || s.d.res.Promoted < 0:
		return never
	}
	return s.d.res.Promoted + s.spec.LateOnset
}

// ratesOf is whose rates a revision has now: the candidate has the live
// revision's before a late onset.
func (s *podSource) ratesOf(rev string) string {
	if rev == CandidateRevision && (s.spec.LateOnset > 0 || s.spec.StepOnset > 0) && s.advanced < s.onsetAt() {
		return LiveRevision
	}
	return rev
}

func poissonDraw(rng *rand.Rand, mean float64) float64 {
	if mean <= 0 {
		return 0
	}
	return distuv.Poisson{Lambda: mean, Src: randSource{rng}}.Rand()
}

// scrape is Prometheus taking the samples of the pods due now.
func (s *podSource) scrape() {
	now := s.elapsed()
	s.advance(now)
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for _, p := range s.pods[c] {
			if p.nextScrape > now {
				continue
			}
			p.samples = append(p.samples, simSample{at: now, requests: slices.Clone(p.requests), bad: slices.Clone(p.bad), istio: snapshotIstio(p)})
			if len(p.samples) > 4 {
				p.samples = p.samples[1:]
			}
			p.nextScrape += s.spec.Scrape
		}
	}
}

// nextScrape is when the next pod is due.
func (s *podSource) nextScrape() time.Duration {
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
func (s *podSource) restart(c splitterv1.Color) {
	s.advance(s.elapsed())
	ps := s.pods[c]
	i := s.rng.IntN(len(ps))
	if s.rng.IntN(2) == 0 {
		clear(ps[i].requests)
		clear(ps[i].bad)
		restartIstio(ps[i])
		return
	}
	ps[i] = s.newPod(c, s.elapsed())
}

func (s *podSource) Read(t time.Duration) (rollout.Counters, string) {
	if s.spec.ReadFail > 0 && s.rng.Float64() < s.spec.ReadFail {
		return nil, "query timed out"
	}
	at := analysis.Align(s.d.w.start.Add(t), s.spec.Scrape).Sub(s.d.w.start)
	if len(s.spec.Callers) > 0 {
		return s.readIstio(model.Time(at.Milliseconds())), ""
	}
	out := rollout.Counters{}
	var pairs, bad []model.SamplePair
	partial := map[splitterv1.Color]bool{}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for _, p := range s.pods[c] {
			for i, slo := range s.spec.Plan.SLOs {
				pairs, bad = pairs[:0], bad[:0]
				for _, x := range p.samples {
					ts := model.Time(x.at.Milliseconds())
					pairs = append(pairs, model.SamplePair{Timestamp: ts, Value: model.SampleValue(x.requests[i])})
					bad = append(bad, model.SamplePair{Timestamp: ts, Value: model.SampleValue(x.bad[i])})
				}
				n, ok := analysis.ValueAt(pairs, model.Time(at.Milliseconds()))
				if !ok {
					if len(pairs) > 0 { // a pod first scraped after at: for the gross check alone
						partial[c] = true
						b := bracket(pairs, bad)
						b.Unread = true
						out = append(out, splitterv1.SeriesReading{Color: c, SLO: slo.Name, Series: p.id, Bracket: b})
					}
					continue
				}
				x, _ := analysis.ValueAt(bad, model.Time(at.Milliseconds()))
				out = append(out, splitterv1.SeriesReading{Color: c, SLO: slo.Name, Series: p.id,
					Requests: int64(math.Round(n)), Bad: int64(math.Round(x)), Bracket: bracket(pairs, bad)})
			}
		}
	}
	for i := range out {
		out[i].Bracket.Partial = partial[out[i].Color]
	}
	return out, ""
}

// bracket is a pod's last samples, as analysis.BracketOf has them.
func bracket(requests, bad []model.SamplePair) splitterv1.Bracket {
	b, x := analysis.BracketOf(requests, false), analysis.BracketOf(bad, true)
	if b.LastAt == 0 || x.LastAt != b.LastAt {
		return splitterv1.Bracket{}
	}
	b.PrevBad, b.LastBad = x.PrevBad, x.LastBad
	if len(x.Earlier) != len(b.Earlier) {
		b.Earlier = nil
	}
	for i := range b.Earlier {
		b.Earlier[i].Bad = x.Earlier[i].Bad
	}
	return b
}

// Released is when, in every simulated release, the candidate revision
// appears (the user's Deployment changes).
const Released = 20 * time.Second

// Run simulates one release, drawing from rng.
func Run(spec Spec, rng *rand.Rand) Result { return newPromSim(spec, rng).run() }

// Tally counts how releases ended.
type Tally struct {
	N int
	// Outcomes counts releases by Result.Outcome.
	Outcomes map[string]int
	// Reasons counts rollbacks by reason and (the start of) the message.
	Reasons map[string]int
	// Detect is, for each rollback, the seconds from the candidate's first
	// traffic to the rollback decision.
	Detect []float64
	// DetectAt is Detect by the candidate weight the rollback happened at.
	DetectAt map[int32][]float64
	// Promote is, for each promotion, the seconds from the release (the
	// new revision) to the promotion decision.
	Promote []float64
}

// Add counts one release.
func (t *Tally) Add(r Result) {
	if t.Outcomes == nil {
		t.Outcomes, t.Reasons, t.DetectAt = map[string]int{}, map[string]int{}, map[int32][]float64{}
	}
	t.N++
	o := r.Outcome()
	t.Outcomes[o]++
	switch o {
	case "rolledback":
		h := r.History[0]
		msg := h.Message
		if len(msg) > 60 {
			msg = msg[:60]
		}
		t.Reasons[h.Reason+": "+msg]++
		if r.FirstGreen >= 0 && r.Ended >= 0 {
			d := (r.Ended - r.FirstGreen).Seconds()
			t.Detect = append(t.Detect, d)
			t.DetectAt[r.Weight] = append(t.DetectAt[r.Weight], d)
		}
	case "promoted":
		if r.Ended >= 0 {
			t.Promote = append(t.Promote, (r.Ended - Released).Seconds())
		}
	}
}

// Share is the share of releases that ended with outcome o.
func (t *Tally) Share(o string) float64 { return float64(t.Outcomes[o]) / float64(t.N) }

// Median is the median detection time (NaN without rollbacks).
func (t *Tally) Median() float64 { return Quantile(t.Detect, 0.5) }

// Quantile is the q-quantile of xs, the element at rank len*q of the
// sorted values (NaN when empty).
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	d := append([]float64(nil), xs...)
	sort.Float64s(d)
	return d[min(len(d)-1, int(float64(len(d))*q+1e-9))]
}

func (t *Tally) String() string {
	return fmt.Sprintf("%d releases: promoted %d, paused %d, rolled back %d, unfinished %d",
		t.N, t.Outcomes["promoted"], t.Outcomes["paused"], t.Outcomes["rolledback"], t.Outcomes["unfinished"])
}

// RunN simulates n releases of spec from seed (the same seed gives the
// same tally).
func RunN(spec Spec, n int, seed uint64) *Tally {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	t := &Tally{}
	for range n {
		t.Add(newPromSim(spec, rng).run())
	}
	return t
}

// WilsonUpper is a 95% upper bound on a share of k in n.
func WilsonUpper(k, n int) float64 {
	_, hi := Wilson(k, n)
	return hi
}

// Wilson is the 95% Wilson score interval of a share of k in n.
func Wilson(k, n int) (lo, hi float64) {
	if n == 0 {
		return 0, 1
	}
	return WilsonShare(float64(k)/float64(n), n)
}

// WilsonShare is the 95% Wilson score interval of a share p observed over
// n trials (p need not be a whole count over n).
func WilsonShare(p float64, n int) (lo, hi float64) {
	if n == 0 {
		return 0, 1
	}
	z := 1.96
	nn := float64(n)
	mid := (p + z*z/(2*nn)) / (1 + z*z/nn)
	half := z * math.Sqrt(p*(1-p)/nn+z*z/(4*nn*nn)) / (1 + z*z/nn)
	lo, hi = max(0, mid-half), min(1, mid+half)
	if p == 0 {
		lo = 0 // not a rounding error's 1e-17
	}
	return lo, hi
}

// randSource adapts math/rand/v2 to gonum's random source.
type randSource struct{ r *rand.Rand }

func (s randSource) Uint64() uint64 { return s.r.Uint64() }
