package analysis

import (
	"fmt"
	"math"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// CheckpointEvery bounds how often the evidence is written to status while
// nothing else changes: every 30 s, or two scrapes if that is longer, so
// every target has a new sample in every chunk. Between checkpoints each
// look judges the evidence folded so far plus the counters' growth since
// the checkpoint; a restart loses nothing but that look.
func (t Timing) CheckpointEvery() time.Duration { return max(30*time.Second, 2*t.scrape()) }

// EvidenceWriteEvery bounds how long evidence folded in memory waits for
// its status write when nothing else changes (see rollout.StatusWriteDue):
// five minutes, or two checkpoints if that is longer. A restart in that
// time loses the evidence's granularity: the next look counts the growth
// since the written checkpoint as one chunk (a coarser sequence of the
// same test, which keeps its bound; a late regression's onset is then
// placed at that checkpoint, which can delay its detection by up to that
// stretch); and the requests, up to the restart, of pods new since then
// (Growth counts a series of a proxy the checkpoint does not know from
// its first reading), of pods gone since, and of proxies restarted since
// before their reset. The first checkpoint past the candidate's warmup is
// written at once (see rollout.StatusWriteDue). Issue 18 asked for 20 API writes or fewer a release with an
// SLO policy; a status write every checkpoint cost 33 of the recommended
// policy's 51.
func (t Timing) EvidenceWriteEvery() time.Duration {
	return max(5*time.Minute, 2*t.CheckpointEvery())
}

// PendingLookEvery is how often a release whose watchdog trip awaits its
// confirming look is looked at: a fifth of a scrape, at least a second. A
// trip on counts bracketed by samples stands once every live-color target
// has been scraped past the fault, any time within that scrape. (The
// sweep that finds trips stays at once a scrape: simulated with a sweep
// five times a scrape, a shared 20 s outage with one pod a color rolled
// back 1.1% and 1.6% of healthy releases at 30 and 60 s scrapes, against
// 0.5% and 0.3% with one sweep a scrape.)
func PendingLookEvery(t Timing) time.Duration { return max(time.Second, t.scrape()/5) }

// GrossLookEvery is the longest the sweep goes, between its full looks,
// without the gross check's look (see Evidence.Gross; the controller also
// looks when a scrape is due to have landed). Each look reads the
// counters (a handful of queries serve every release at once).
const GrossLookEvery = time.Second

// Look is one reading of a release's counters.
type Look struct {
	At       time.Time
	Readings []splitterv1.SeriesReading
	// Err says why the reading failed (an error, a timeout, partial data,
	// a missing series): Error for this look only, the evidence is kept.
	Err string
}

// OK says whether the look can be counted.
func (l Look) OK() bool { return l.Err == "" && l.Readings != nil }

// Stage is where the release stands, as far as the evidence is concerned.
type Stage struct {
	// Green is judged against Blue: the candidate against the live color
	// during a release, the new live color against the standby after it.
	Green, Blue splitterv1.Color
	// Weight is green's intended weight (percent).
	Weight int32
}

// Evidence is the count-based checks of one release: the policy, where
// the release stands, and its state, which Evidence updates in place.
type Evidence struct {
	Policy
	Stage
	Timing
	State *splitterv1.AnalysisStatus
}

// Begin starts a release's evidence: the weights have been still (the live
// color at 100%), so the first chunk is pure.
func Begin(at time.Time) *splitterv1.AnalysisStatus {
	t := metav1.NewTime(at)
	return &splitterv1.AnalysisStatus{StartedAt: &t, BaselineAt: &t}
}

// Unsettle marks a weight change: from here until the new weights have
// settled, chunks may mix the candidate's old and new weights (or any
// weight the router was seen at), and the step's evidence starts again.
func (e Evidence) Unsettle(weights ...int32) {
	a := e.State
	for _, w := range weights {
		a.MixedWeight = max(a.MixedWeight, w)
	}
	a.BaselineAt, a.SettleAt, a.Step, a.FailPending = nil, nil, nil, false
}

// Confirmed records when the router reported the new weights: the step's
// evidence starts at the first reading at or after settle later. warmup,
// given when these weights are the candidate's first traffic, starts its
// warmup then: the step's evidence waits for its end.
func (e Evidence) Confirmed(at time.Time, settle, warmup time.Duration) {
	a := e.State
	if warmup > 0 && a.WarmupUntil == nil {
		t := metav1.NewTime(at.Add(settle + warmup))
		a.WarmupUntil = &t
	}
	if a.SettleAt == nil && a.BaselineAt == nil {
		t := metav1.NewTime(at.Add(settle))
		if a.WarmupUntil != nil && a.WarmupUntil.After(t.Time) {
			t = *a.WarmupUntil.DeepCopy()
		}
		a.SettleAt = &t
	}
}

// WarmupMaxRatio is how much worse than the live color a candidate may be
// while it warms up (10% errors against 0.1%, 30% slow against 0.3%)
// without that being evidence against it. During warmup the watchdog's
// relative test takes, instead of the comparison with maxRatio, the
// candidate's bad rate against WarmupMaxRatio times the upper bound on
// the live color's (at most 50%): a gross fault, not a cold start. The
// live color's counts during warmup join its reference (its rate is its
// own at any weight). A test supermartingale may change its test from
// chunk to chunk as long as each chunk's is chosen before the chunk is
// seen, so both share one accumulator and one bound.
const WarmupMaxRatio = 100.0

// warmupGross is the highest bad rate a warming-up candidate may have.
const warmupGross = 0.5

// warming says the chunk starting at the checkpoint is in the
// candidate's warmup.
func (e Evidence) warming() bool {
	a := e.State
	return a.WarmupUntil != nil && a.CheckpointAt != nil && a.CheckpointAt.Before(a.WarmupUntil)
}

// warmupRate is the null rate of a warming-up candidate for one SLO.
func (p Policy) warmupRate(s SLO, ref Count) float64 {
	if ref.N <= 0 {
		return warmupGross
	}
	up := clopperPearsonUpper(math.Max(0, math.Min(ref.X, ref.N)), ref.N, p.ReferenceAlpha())
	return math.Min(warmupGross, math.Max(WarmupMaxRatio*up, up+p.Margin*s.Budget()))
}

// Restart starts the step's evidence again from the look (folded first):
// an extension after an incident judges what follows it, and a gate's
// first Fail is confirmed on evidence that does not share its edges.
func (e Evidence) Restart(l Look) {
	if !l.OK() || e.State.BaselineAt == nil || e.State.TripPendingAt != nil {
		return
	}
	e.fold(l)
	t := metav1.NewTime(l.At)
	e.State.BaselineAt, e.State.Step = &t, nil
}

// Observe takes one look: it starts the checkpoint if there is none, runs
// the watchdog on everything up to the look, and folds the look into the
// state when a checkpoint is due (every CheckpointEvery, when new series
// appeared, or when the weights have settled). It returns the watchdog's
// verdict and whether the state changed.
func (e Evidence) Observe(l Look) (trip Trip, changed bool) {
	if !l.OK() {
		return Trip{}, false
	}
	a := e.State
	if a.CheckpointAt == nil {
		e.fold(l)
		return Trip{}, true
	}
	if trip := e.Gross(l); trip.Tripped {
		return trip, false
	}
	chunk, fresh := Growth(a.Checkpoint, l.Readings)
	trial := *a.DeepCopy()
	Evidence{e.Policy, e.Stage, e.Timing, &trial}.add(chunk, l.At)
	if e.WatchdogOn {
		if trip = e.trip(&trial, l.At); trip.Tripped {
			// A trip stands only if a look at least one scrape later still
			// trips, with nothing folded meanwhile so that look pools both.
			// Prometheus scrapes each target at its own moment, and reading
			// every series at one instant still spreads a scrape's growth
			// over its interval: the start of an incident both colors
			// share can reach one color's counts a scrape before the
			// other's. A scrape later every target has been scraped past
			// it. (Simulated, this keeps a sharp 20 s outage on both colors
			// within the budget at 30 s scrapes; it costs a scrape of
			// detection time.)
			//
			//
			// Unless the trip also stands on counts bracketed by samples,
			// which no scrape's timing can have tilted against green (see
			// tripsWhateverTheTiming): then it snaps back at once.
			if sure, ok := e.tripsWhateverTheTiming(l); ok {
				return sure, false
			}
			if a.TripPendingAt == nil {
				t := metav1.NewTime(l.At)
				a.TripPendingAt = &t
				return Trip{}, true
			}
			if l.At.Sub(a.TripPendingAt.Time) >= e.scrape() {
				return trip, false
			}
			return Trip{}, false
		}
	}
	if a.TripPendingAt != nil {
		a.TripPendingAt, changed = nil, true
		trial.TripPendingAt = nil
	}
	settle := a.BaselineAt == nil && a.SettleAt != nil && !l.At.Before(a.SettleAt.Time)
	if settle || fresh || l.At.Sub(a.CheckpointAt.Time) >= e.CheckpointEvery() {
		*a = trial
		e.moveCheckpoint(l)
		if settle {
			t := metav1.NewTime(l.At)
			a.BaselineAt, a.SettleAt, a.MixedWeight, a.Step = &t, nil, 0, nil
		}
		return Trip{}, true
	}
	return Trip{}, changed
}

// Scrape timing, without the confirming look. Each color's counts as
// read at one instant are interpolated between samples, so a scrape's
// growth, an incident's included, can show in one color a scrape before
// the other. Samples bound that: read green at its last sample no later
// than T, and blue at its last sample, T being the earliest of blue's last
// samples. Green's counts then end by T and blue's at T or after: of an
// incident both colors share, blue has counted at least as much as green.
// (Counts, not rates: blue's window is longer, so a burst that ended
// before T is diluted more in blue's; that tilt is at most the ratio of
// the windows, 2-3x at 15 s scrapes, the order of the smallest alternative
// weighed: a review's search of 60,000 shared outages found no trip from
// it, and the fast path only confirms a trip of the usual reading.)
// A trip that also stands on those counts does not wait a scrape. Blue's brackets must
// hold all its counts: a series the reading left out (born after the
// reading's instant: a proxy's first 503) would be an incident blue
// counted and the bracket missed, so blue's partial brackets give no
// bound. Green's may be partial: what they miss only lowers green.
//
// The bound is per SLO: an SLO whose series lack brackets (a reader
// without samples, a counter reset between the last two) or whose green
// series has no sample by T counts nothing toward the trip (its mixture
// taken as 0, below its true value: the statistic can only be lower).

// The bracketed reading only confirms a trip of the usual one. Judged on
// its own at every look it rolled back more healthy releases in the
// simulator (clumps of 3: 7 of 1,000, against 5; one pod a color with a
// shared 20 s outage at 60 s scrapes: 11, against 3), and even at 100
// times the threshold it tripped in the same shared outages at 60 s
// scrapes (2 and 1 of 1,000, against 1 and 0): the argument covers the
// end of the chunk a look judges, but the chunk starts at the checkpoint's
// interpolated reading, and how much of an incident that left to the
// chunk before can differ by color (an onset that starts at the
// checkpoint sees only this chunk). Checkpoints that keep their samples
// would close that; see the README's "Scrape timing".

// tripsWhateverTheTiming judges the watchdog on the look's bracketed
// counts; ok when it trips on them.
func (e Evidence) tripsWhateverTheTiming(l Look) (Trip, bool) {
	a := e.State
	t, ok := bracketInstant(l.Readings, e.Blue)
	if !ok {
		return Trip{}, false
	}
	prev := map[seriesKey]splitterv1.SeriesReading{}
	for _, r := range a.Checkpoint {
		prev[seriesKey{r.Color, r.SLO, r.Series}] = r
	}
	dropped := map[string]bool{}
	bounded := make([]splitterv1.SeriesReading, 0, len(l.Readings))
	for _, r := range l.Readings {
		b := r.Bracket
		if r.Color != e.Green && r.Color != e.Blue || b.Unread {
			continue
		}
		if b.LastAt == 0 {
			dropped[r.SLO] = true
			continue
		}
		switch {
		case r.Color == e.Blue:
			r.Requests, r.Bad = b.LastRequests, b.LastBad
		case b.LastAt <= t:
			r.Requests, r.Bad = b.LastRequests, b.LastBad
		case b.PrevAt <= t:
			r.Requests, r.Bad = b.PrevRequests, b.PrevBad
		default:
			dropped[r.SLO] = true
			continue
		}
		if p, ok := prev[seriesKey{r.Color, r.SLO, r.Series}]; ok && r.Color == e.Green && r.Requests < p.Requests {
			// Green's sample is older than the checkpoint's interpolated
			// reading: no growth, unless the series restarted (then no
			// bound: which sample is past the restart is not known).
			if 10*r.Requests < 9*p.Requests {
				dropped[r.SLO] = true
				continue
			}
			r.Requests, r.Bad = p.Requests, p.Bad
		}
		bounded = append(bounded, r)
	}
	chunk, _ := Growth(a.Checkpoint, bounded)
	for slo := range dropped {
		delete(chunk, slo)
	}
	if len(dropped) == len(e.SLOs) {
		return Trip{}, false
	}
	trial := *a.DeepCopy()
	Evidence{e.Policy, e.Stage, e.Timing, &trial}.add(chunk, l.At)
	trip := e.tripWithout(&trial, l.At, dropped)
	return trip, trip.Tripped
}

// bracketInstant is T: the earliest of blue's series' last samples, in
// milliseconds; not ok when a blue series has no bracket or a partial
// one, or blue has no series.
func bracketInstant(rs []splitterv1.SeriesReading, blue splitterv1.Color) (int64, bool) {
	t, any := int64(math.MaxInt64), false
	for _, r := range rs {
		if r.Color != blue || r.Bracket.Unread {
			continue
		}
		if r.Bracket.LastAt == 0 || r.Bracket.Partial {
			return 0, false
		}
		t, any = min(t, r.Bracket.LastAt), true
	}
	return t, any
}

// Fold folds the look into the state now (before a transition that
// changes what the next chunk means).
func (e Evidence) Fold(l Look) {
	if !l.OK() {
		return
	}
	e.fold(l)
}

func (e Evidence) fold(l Look) {
	if e.State.TripPendingAt != nil {
		// A trip waits for its confirming look: folding now would keep
		// evidence the next scrapes may correct.
		return
	}
	if e.State.CheckpointAt != nil {
		chunk, _ := Growth(e.State.Checkpoint, l.Readings)
		e.add(chunk, l.At)
	}
	e.moveCheckpoint(l)
}

// moveCheckpoint makes the look the checkpoint: its read series, and the
// checkpoint's reading of a series the look has only as Unread (a pod
// whose last scrapes a federation missed lags the reading's instant): it
// stays known, so the gross check does not take its whole counter for a
// new series, and Growth counts it from there when it is read again.
func (e Evidence) moveCheckpoint(l Look) {
	t := metav1.NewTime(l.At)
	unread := map[seriesKey]bool{}
	read := make([]splitterv1.SeriesReading, 0, len(l.Readings))
	for _, r := range l.Readings {
		if r.Bracket.Unread {
			unread[seriesKey{r.Color, r.SLO, r.Series}] = true
			continue
		}
		read = append(read, r)
	}
	for _, c := range e.State.Checkpoint {
		if unread[seriesKey{c.Color, c.SLO, c.Series}] {
			read = append(read, c)
		}
	}
	e.State.Checkpoint, e.State.CheckpointAt = read, &t
}

// add adds a chunk's evidence, from the checkpoint to the time given, to
// the state: the watchdog's tests always; the step's counts and the
// reference only when the chunk is pure.
func (e Evidence) add(chunk Chunk, to time.Time) {
	a := e.State
	pure := a.BaselineAt != nil
	onset := 0.0
	if a.CheckpointAt != nil {
		onset = e.onsetSpent(to) - e.onsetSpent(a.CheckpointAt.Time)
	}
	for _, s := range e.SLOs {
		measureDispersion(e.watchdog(s.Name), a.LastChunk, chunk, e.Green, e.Blue)
	}
	for _, s := range e.SLOs {
		g, b := chunk.Of(s.Name, e.Green), chunk.Of(s.Name, e.Blue)
		w := e.watchdog(s.Name)
		rel, abs := e.relative(w), decode(w.AbsLogLR, len(RateAlternatives))
		startOnsets(rel, onset)
		clump := Dispersion(*w, a.Watchdog)
		share := math.NaN()
		if g.N+b.N > 0 {
			share = g.N / (g.N + b.N)
		}
		if !pure {
			share = math.Max(share, float64(a.MixedWeight)/100)
			if math.IsNaN(share) {
				share = float64(a.MixedWeight) / 100
			}
		}
		if e.warming() {
			if !pure {
				a.Reference = addTotal(a.Reference, s.Name, e.Blue, b)
			}
			grossStep(rel, g, e.warmupRate(s, total(a.Reference, s.Name, e.Blue)), clump)
		} else {
			relativeStep(rel, g, b, share, e.MaxRatio, clump)
		}
		if pure && e.Weight == 100 {
			if p0, ok := e.ReferenceRate(s, total(a.Reference, s.Name, e.Blue)); ok {
				absoluteStep(abs, g, p0, clump)
			}
		}
		w.LogLR, w.AbsLogLR = encode(rel), encode(abs)
		if pure {
			a.Step = addTotal(a.Step, s.Name, e.Green, g)
			a.Step = addTotal(a.Step, s.Name, e.Blue, b)
			if e.Weight < 100 {
				a.Reference = addTotal(a.Reference, s.Name, e.Blue, b)
			}
		}
	}
	a.LastChunk = lastChunk(e.SLOs, chunk, e.Green, e.Blue)
}

// trip judges the watchdog on a state whose evidence runs up to the time
// given.
func (e Evidence) trip(a *splitterv1.AnalysisStatus, upTo time.Time) Trip {
	return e.tripWithout(a, upTo, nil)
}

// tripWithout is trip with the dropped SLOs' mixtures taken as 0.
func (e Evidence) tripWithout(a *splitterv1.AnalysisStatus, upTo time.Time, dropped map[string]bool) Trip {
	var rel, abs [][]float64
	var names []string
	at := Evidence{e.Policy, e.Stage, e.Timing, a}
	for _, s := range e.SLOs {
		w := watchdogOf(a, s.Name)
		r, ab := at.relative(&w), decode(w.AbsLogLR, len(RateAlternatives))
		if dropped[s.Name] {
			r, ab = zeroMixture(len(r)), zeroMixture(len(ab))
		}
		rel = append(rel, r)
		abs = append(abs, ab)
		names = append(names, s.Name)
	}
	trip := e.watchdogTrip(rel, 1-at.onsetSpent(upTo), abs, names, string(e.Green), string(e.Blue))
	if trip.Reason == "RelativeRegression" && a.WarmupUntil != nil && upTo.Before(a.WarmupUntil.Time) {
		trip.Message = "during its warmup, " + trip.Message + fmt.Sprintf(" (warming up, the candidate is held to %g times the live color's rate, at most %g%%)", WarmupMaxRatio, 100*warmupGross)
	}
	return trip
}

// relative is an SLO's relative evidence: the log of the onset mixture's
// started part per alternative, which begins at the release's start with
// OnsetInitial's mass (and at 0, the log of 1, in a status from before
// the mixture).
func (e Evidence) relative(w *splitterv1.WatchdogStatus) []float64 {
	if len(w.LogLR) == 0 && e.State.StartedAt != nil {
		rel := make([]float64, len(RatioAlternatives))
		for i := range rel {
			rel[i] = math.Log(OnsetInitial)
		}
		return rel
	}
	return decode(w.LogLR, len(RatioAlternatives))
}

// onsetSpent is the mass of the onset mixture started by the time given:
// OnsetInitial at the release's start, then the rest by onsetPrior at
// every OnsetEvery. 1 (everything started at once) in a status from
// before the mixture.
func (e Evidence) onsetSpent(t time.Time) float64 {
	if e.State.StartedAt == nil {
		return 1
	}
	k := math.Floor(float64(t.Sub(e.State.StartedAt.Time)) / float64(OnsetEvery))
	return OnsetInitial + (1-OnsetInitial)*onsetPrior(time.Duration(math.Max(0, k))*OnsetEvery)
}

// Sweep judges the watchdog on the state plus the look, without changing
// anything: the periodic sweep's cheap look. fresh says the look has
// series the checkpoint lacks (a new pod): the reconcile should fold them
// in soon, since a new series counts only from its first folded reading.
func (e Evidence) Sweep(l Look) (trip Trip, fresh bool) {
	if !l.OK() || e.State.CheckpointAt == nil {
		return Trip{}, false
	}
	chunk, fresh := Growth(e.State.Checkpoint, l.Readings)
	if !e.WatchdogOn {
		return Trip{}, fresh
	}
	if trip := e.Gross(l); trip.Tripped {
		return trip, fresh
	}
	trial := *e.State.DeepCopy()
	Evidence{e.Policy, e.Stage, e.Timing, &trial}.add(chunk, l.At)
	return e.trip(&trial, l.At), fresh
}

// StepCounts is the current step's evidence up to the look, per SLO:
// green's and blue's counts since the baseline.
func (e Evidence) StepCounts(l Look) (green, blue map[string]Count, ok bool) {
	a := e.State
	if a.BaselineAt == nil || a.CheckpointAt == nil || !l.OK() {
		return nil, nil, false
	}
	chunk, _ := Growth(a.Checkpoint, l.Readings)
	green, blue = map[string]Count{}, map[string]Count{}
	for _, s := range e.SLOs {
		green[s.Name] = total(a.Step, s.Name, e.Green).Add(chunk.Of(s.Name, e.Green))
		blue[s.Name] = total(a.Step, s.Name, e.Blue).Add(chunk.Of(s.Name, e.Blue))
	}
	return green, blue, true
}

// Reference is the live color's evidence during the release, per SLO.
func (e Evidence) Reference() map[string]Count {
	out := map[string]Count{}
	for _, s := range e.SLOs {
		out[s.Name] = total(e.State.Reference, s.Name, e.Blue)
	}
	return out
}

func (e Evidence) watchdog(slo string) *splitterv1.WatchdogStatus {
	a := e.State
	for i := range a.Watchdog {
		if a.Watchdog[i].SLO == slo {
			return &a.Watchdog[i]
		}
	}
	a.Watchdog = append(a.Watchdog, splitterv1.WatchdogStatus{SLO: slo})
	return &a.Watchdog[len(a.Watchdog)-1]
}

func watchdogOf(a *splitterv1.AnalysisStatus, slo string) splitterv1.WatchdogStatus {
	for _, w := range a.Watchdog {
		if w.SLO == slo {
			return w
		}
	}
	return splitterv1.WatchdogStatus{SLO: slo}
}

func total(ts []splitterv1.CountTotal, slo string, c splitterv1.Color) Count {
	for _, t := range ts {
		if t.SLO == slo && t.Color == c {
			return Count{N: float64(t.Requests), X: float64(t.Bad)}
		}
	}
	return Count{}
}

func addTotal(ts []splitterv1.CountTotal, slo string, c splitterv1.Color, n Count) []splitterv1.CountTotal {
	for i := range ts {
		if ts[i].SLO == slo && ts[i].Color == c {
			ts[i].Requests += int64(n.N)
			ts[i].Bad += int64(n.X)
			return ts
		}
	}
	return append(ts, splitterv1.CountTotal{SLO: slo, Color: c, Requests: int64(n.N), Bad: int64(n.X)})
}

func decode(ss []string, n int) []float64 {
	out := make([]float64, n)
	for i := 0; i < n && i < len(ss); i++ {
		out[i], _ = strconv.ParseFloat(ss[i], 64)
	}
	return out
}

func encode(fs []float64) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = strconv.FormatFloat(f, 'g', 10, 64)
	}
	return out
}
