package backtest

import (
	"math"
	"math/rand/v2"
	"time"

	"gonum.org/v1/gonum/stat/distuv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/rollout"
)

// How a replay scales the recording to the policy's weights.
//
// Release mode. The policy routes its own weights, not the recorded ones,
// so each color's recorded counts are thinned to them: per reading, over
// the stretch of time it covers, with w_p the policy's weight of a color
// and w_r the recorded one, every recorded request of that color is kept
// with probability f = s * w_p / w_r, good and bad requests alike
// (binomial thinning), where s = min(1, min over colors of w_r / w_p).
// So each color's error rate is the recorded one, the colors' shares are
// the policy's (the traffic-share check holds), and no request is
// invented: where the policy sends a color more than the recording did,
// both colors are thinned (s < 1) and the replay has less evidence than
// the policy would have had, never more. A policy identical to the
// recorded one keeps every request (f = 1): the replay is the recording.
// The assumption: a color's error rate does not depend on its weight.
//
// Baseline mode. Every recorded request of the workload is routed to the
// synthetic green with probability w_p(green) and to blue otherwise, good
// and bad alike: two colors identical by construction.
const (
	ReleaseAssumption = "each color's recorded requests thinned binomially to the policy's weights (good and bad alike: each color keeps its recorded error rate); " +
		"where the policy sends a color more than the recording did, both colors are thinned so that the shares are the policy's: the replay has at most the recorded evidence, never invented requests"
	BaselineAssumption = "the workload's recorded requests routed at random to two synthetic colors by the policy's weights (good and bad alike): the colors are identical by construction, so every rollback is a false one"
)

type mode int

const (
	releaseMode mode = iota
	baselineMode
)

// source replays a recording as a simulate.Source. Engine colors: blue
// is the recorded live Deployment, green the recorded candidate (release
// mode); both are the workload's own traffic (baseline mode).
type source struct {
	rec   *Recording
	mode  mode
	start time.Time
	rng   *rand.Rand
	// deployments maps a recorded Deployment to the engine color its
	// series count for (release mode).
	deployments map[string]splitterv1.Color
	// recorded is, per engine color, the recorded color whose
	// splitter_split_weight it follows (release mode, when recorded).
	recorded map[splitterv1.Color]splitterv1.Color
	routes   []route
	lastAt   time.Time
	last     rollout.Counters
	state    map[synthKey]*synth
	// Scale accumulates, per engine weight of green, the share of the
	// recorded requests the replay kept (release mode).
	scale map[int32]*scaleSum
	// starved is how long the policy sent green traffic where the
	// recording had none.
	starved time.Duration
	// timeline is the recording per scrape: without splitter_split_weight,
	// the recorded weights are estimated from it.
	timeline []rawPoint
	// weightScrape is how often splitter_split_weight was scraped.
	weightScrape time.Duration
	// totals are the synthetic counts fed to the engine so far, counted
	// as the engine counts growth, after each reading.
	totals []snapshot
}

// snapshot is what the engine had been fed up to At (per SLO, blue's
// then green's requests and bad).
type snapshot struct {
	At     time.Time
	Counts map[string][2][2]int64
}

type route struct {
	at time.Duration
	w  rollout.Weights
}

type synthKey struct {
	slo, deployment, series string
}

// synth is one recorded series and what the replay made of it: per engine
// color, a synthetic counter (baseline mode has two, release mode one).
type synth struct {
	n, x float64 // recorded values at the last reading
	// out is the synthetic requests and bad, blue's then green's.
	out [2][2]int64
}

// target is an engine color a recorded series feeds, and the probability
// it keeps each request with.
type target struct {
	c splitterv1.Color
	f float64
}

func index(c splitterv1.Color) int {
	if c == splitterv1.Green {
		return 1
	}
	return 0
}

type scaleSum struct{ kept, recorded float64 }

func newSource(rec *Recording, m mode, start time.Time, rng *rand.Rand) *source {
	return &source{rec: rec, mode: m, start: start, rng: rng, state: map[synthKey]*synth{}, scale: map[int32]*scaleSum{}}
}

func (s *source) Next() time.Duration { return time.Duration(1<<63 - 1) }
func (s *source) Fire(time.Duration)  {}
func (s *source) Route(t time.Duration, w rollout.Weights) {
	s.routes = append(s.routes, route{t, w})
}

// policyWeight is green's weight under the policy at t (offset); before
// any route, the live color has everything.
func (s *source) policyWeight(t time.Duration) float64 {
	w := 0.0
	for _, r := range s.routes {
		if r.at > t {
			break
		}
		w = float64(r.w.Green)
	}
	return w
}

// average is f's mean over (from, to], sampled at 16 points: weights are
// steps, and a reading covers a scrape or so, so the error is at most a
// sixteenth of a step's change, once per change.
func average(from, to time.Time, f func(time.Time) float64) float64 {
	const k = 16
	d := to.Sub(from)
	if d <= 0 {
		return f(to)
	}
	sum := 0.0
	for i := range k {
		sum += f(from.Add(time.Duration((float64(i) + 0.5) / k * float64(d))))
	}
	return sum / k
}

type increment struct {
	key       synthKey
	color     splitterv1.Color
	st        *synth
	good, bad float64
	reset     bool
	// fresh: a series seen for the first time (its past is not counted).
	fresh   bool
	slo, id string
	// the recorded series' samples around the reading, and its counts at
	// the reading's instant
	bracket          splitterv1.Bracket
	recorded, recBad float64
}

// Read reads every recorded series at the controller's instant for t and
// thins or splits what each grew by since the last reading.
func (s *source) Read(t time.Duration) (rollout.Counters, string) {
	at := analysis.Align(s.start.Add(t), s.rec.Scrape)
	if !s.lastAt.IsZero() && !at.After(s.lastAt) {
		return s.last, ""
	}
	from := s.lastAt
	if from.IsZero() {
		from = at
	}
	var incs []increment
	recorded := map[splitterv1.Color]float64{}
	for i, spec := range s.rec.SLOs {
		reading, err := s.rec.ReadAt(i, s.start.Add(t))
		if err != nil {
			return nil, err.Error()
		}
		for w, series := range reading {
			c, ok := s.colorOf(w.Name)
			if !ok {
				continue
			}
			for _, x := range series {
				if x.Bracket.Unread {
					continue // for the live gross check alone
				}
				n, bad := float64(round(x.Requests)), float64(round(x.Bad))
				k := synthKey{spec.SLO, w.Name, x.ID}
				st := s.state[k]
				inc := increment{key: k, color: c, slo: spec.SLO, id: x.ID, bracket: x.Bracket, recorded: n, recBad: bad}
				switch {
				case st == nil:
					st = &synth{}
					s.state[k] = st
					inc.reset, inc.fresh = true, true
					inc.good, inc.bad = n-min(bad, n), min(bad, n)
				case n < st.n || bad < st.x:
					inc.reset = true
					inc.good, inc.bad = n-min(bad, n), min(bad, n)
				default:
					dn, dx := n-st.n, min(bad-st.x, n-st.n)
					inc.good, inc.bad = dn-dx, dx
					if i == 0 {
						recorded[c] += dn
					}
				}
				st.n, st.x = n, bad
				inc.st = st
				incs = append(incs, inc)
			}
		}
	}
	keep := s.factors(from, at, recorded)
	out := make(rollout.Counters, 0, len(incs)*2)
	snap := snapshot{At: s.start.Add(t), Counts: map[string][2][2]int64{}}
	if n := len(s.totals); n > 0 {
		for k, v := range s.totals[n-1].Counts {
			snap.Counts[k] = v
		}
	}
	for _, inc := range incs {
		if inc.reset {
			inc.st.out = [2][2]int64{}
		}
		feed := func(c splitterv1.Color, n, bad int64) {
			o := &inc.st.out[index(c)]
			o[0] += n
			o[1] += bad
			if !inc.fresh {
				v := snap.Counts[inc.slo]
				v[index(c)][0] += n
				v[index(c)][1] += bad
				snap.Counts[inc.slo] = v
			}
			id := inc.id
			if s.mode == baselineMode {
				id += "/" + string(c)
			}
			r := splitterv1.SeriesReading{Color: c, SLO: inc.slo, Series: inc.key.deployment + "/" + id, Requests: o[0], Bad: o[1]}
			if s.mode != baselineMode {
				r.Bracket = thinBracket(inc.bracket, *o, inc.recorded, inc.recBad, keep[inc.color][0].f)
			}
			out = append(out, r)
		}
		tg := keep[inc.color]
		bad := thin(s.rng, inc.bad, tg[0].f)
		n := bad + thin(s.rng, inc.good, tg[0].f)
		feed(tg[0].c, n, bad)
		if len(tg) == 2 {
			// Baseline mode: each request goes to one color or the other.
			feed(tg[1].c, round(inc.good+inc.bad)-n, round(inc.bad)-bad)
		}
	}
	s.lastAt, s.last = at, out
	s.totals = append(s.totals, snap)
	return out, ""
}

// fedBetween is what the engine was fed between two instants, per SLO:
// blue's then green's requests and bad.
func (s *source) fedBetween(from, to time.Time) map[string][2][2]int64 {
	at := func(t time.Time) map[string][2][2]int64 {
		var last map[string][2][2]int64
		for _, sn := range s.totals {
			if sn.At.After(t) {
				break
			}
			last = sn.Counts
		}
		return last
	}
	a, b := at(from), at(to)
	out := map[string][2][2]int64{}
	for slo, v := range b {
		w := a[slo]
		for i := range 2 {
			for j := range 2 {
				v[i][j] -= w[i][j]
			}
		}
		out[slo] = v
	}
	return out
}

// colorOf is the engine color a recorded Deployment's series count for.
func (s *source) colorOf(deployment string) (splitterv1.Color, bool) {
	if s.mode == baselineMode {
		return "", true
	}
	c, ok := s.deployments[deployment]
	return c, ok
}

// factors returns, for the recorded series of each engine color ("" in
// baseline mode), the engine colors they feed over (from, to].
func (s *source) factors(from, to time.Time, recorded map[splitterv1.Color]float64) map[splitterv1.Color][]target {
	pGreen := average(from, to, func(t time.Time) float64 { return s.policyWeight(t.Sub(s.start)) }) / 100
	if s.mode == baselineMode {
		return map[splitterv1.Color][]target{"": {{splitterv1.Green, pGreen}, {splitterv1.Blue, 1 - pGreen}}}
	}
	policy := map[splitterv1.Color]float64{splitterv1.Blue: 1 - pGreen, splitterv1.Green: pGreen}
	rec := map[splitterv1.Color]float64{}
	// The recorded weights: splitter_split_weight's, unless it changed
	// within a controller scrape of the reading (when it changed is then
	// known only to that scrape); else estimated from the counts.
	ws := s.weightScrape
	if s.recorded != nil && !s.rec.weightChanges(s.recorded[splitterv1.Green], from.Add(-ws), to.Add(ws)) {
		for c, rc := range s.recorded {
			rec[c] = average(from, to, func(t time.Time) float64 { w, _ := s.rec.weightAt(rc, t); return w }) / 100
		}
	} else if g, ok := s.estimate(from, to, pGreen); ok {
		rec[splitterv1.Blue], rec[splitterv1.Green] = 1-g, g
	}
	scale := 1.0
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		if policy[c] > 0 {
			scale = min(scale, rec[c]/policy[c])
		}
	}
	f := map[splitterv1.Color]float64{}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		if rec[c] > 0 {
			f[c] = min(1, scale*policy[c]/rec[c])
		}
	}
	if policy[splitterv1.Green] > 0 && rec[splitterv1.Green] == 0 {
		s.starved += to.Sub(from)
	}
	if total := recorded[splitterv1.Blue] + recorded[splitterv1.Green]; total > 0 {
		// Keyed by the weight in force at the reading's end (an interval
		// across a step change counts for the new step).
		w := int32(s.policyWeight(to.Sub(s.start)) + 0.5)
		if s.scale[w] == nil {
			s.scale[w] = &scaleSum{}
		}
		s.scale[w].recorded += total
		s.scale[w].kept += recorded[splitterv1.Blue]*f[splitterv1.Blue] + recorded[splitterv1.Green]*f[splitterv1.Green]
	}
	return map[splitterv1.Color][]target{splitterv1.Blue: {{splitterv1.Blue, f[splitterv1.Blue]}}, splitterv1.Green: {{splitterv1.Green, f[splitterv1.Green]}}}
}

// estimate is green's recorded share of the requests around (from, to]
// (a few scrapes: one reading's counts are often too few). A share within
// sampling error (2.5 standard deviations) of the policy's, over the
// stretch before the reading, after it, both, or the reading alone, is
// taken to be the policy's: the recording ran those weights, and a replay
// of the same weights keeps every request. (Looking on one side only
// keeps a step change next to the reading from blurring the share; the
// reading alone serves a recorded step shorter than the stretches, such
// as a release the controller snapped back within seconds: there the
// wider stretches hold the traffic before and after it, and the replay
// thinned the live color to a fifth, too little to judge against.)
func (s *source) estimate(from, to time.Time, policy float64) (float64, bool) {
	half := max(5*time.Second, 2*s.rec.Scrape)
	share := func(lo, hi time.Time) (g, n float64) {
		for _, p := range s.timeline {
			if !p.At.After(lo) || p.At.After(hi) {
				continue
			}
			for dep, x := range p.Requests {
				n += x
				if s.deployments[dep] == splitterv1.Green {
					g += x
				}
			}
		}
		return g, n
	}
	var centred float64
	ok := false
	for i, w := range [][2]time.Time{{from.Add(-half), to.Add(half)}, {from.Add(-2 * half), to}, {from, to.Add(2 * half)}, {from, to}} {
		g, n := share(w[0], w[1])
		if n == 0 {
			continue
		}
		if math.Abs(g/n-policy) <= 2.5*math.Sqrt(policy*(1-policy)/n) {
			return policy, true
		}
		if i == 0 {
			centred, ok = g/n, true
		}
	}
	return centred, ok
}

// thinBracket is the synthetic series' bracket: its counts at the
// reading's instant plus the recorded samples' distance from the recorded
// reading, thinned by the reading's factor f (in expectation, not drawn:
// the samples are not counts the replay feeds, only the bounds the
// watchdog's trip on samples reads, so that the replay can trip at once
// where the controller did; without them its trips waited for the
// confirming look, which a recording that ends at the controller's
// snap-back never holds).
func thinBracket(b splitterv1.Bracket, at [2]int64, recorded, recBad, f float64) splitterv1.Bracket {
	if b.LastAt == 0 {
		return b
	}
	shift := func(v int64, base float64, from int64) int64 {
		return max(0, from+int64(math.Round(f*(float64(v)-base))))
	}
	b.PrevRequests, b.PrevBad = shift(b.PrevRequests, recorded, at[0]), shift(b.PrevBad, recBad, at[1])
	b.LastRequests, b.LastBad = shift(b.LastRequests, recorded, at[0]), shift(b.LastBad, recBad, at[1])
	b.PrevBad, b.LastBad = min(b.PrevBad, b.PrevRequests), min(b.LastBad, b.LastRequests)
	if b.PrevRequests > b.LastRequests || b.PrevBad > b.LastBad {
		return splitterv1.Bracket{}
	}
	// The earlier samples thinned alike, those that still count up to
	// the later ones kept.
	earlier := make([]splitterv1.Sample, len(b.Earlier))
	for i, e := range b.Earlier {
		e.Requests, e.Bad = shift(e.Requests, recorded, at[0]), shift(e.Bad, recBad, at[1])
		e.Bad = min(e.Bad, e.Requests)
		earlier[i] = e
	}
	b.Earlier = nil
	for i := len(earlier) - 1; i >= 0; i-- {
		next := splitterv1.Sample{Requests: b.PrevRequests, Bad: b.PrevBad}
		if len(b.Earlier) > 0 {
			next = b.Earlier[0]
		}
		if earlier[i].Requests > next.Requests || earlier[i].Bad > next.Bad {
			break
		}
		b.Earlier = append([]splitterv1.Sample{earlier[i]}, b.Earlier...)
	}
	return b
}

// thin keeps each of n requests with probability f.
func thin(rng *rand.Rand, n, f float64) int64 {
	switch {
	case n <= 0 || f <= 0:
		return 0
	case f >= 1:
		return round(n)
	}
	return round(distuv.Binomial{N: n, P: f, Src: randSource{rng}}.Rand())
}

type randSource struct{ r *rand.Rand }

func (s randSource) Uint64() uint64 { return s.r.Uint64() }
