package backtest

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
	"splitter.dev/splitter/internal/simulate"
)

// Options are a replay's settings.
type Options struct {
	// Policy is the policy's name, for the report.
	Policy string
	Plan   *policy.Plan
	Seed   uint64
	// Checks, when set, judges the policy's PromQL checks at an instant
	// against the recorded Deployments (release mode); otherwise they pass.
	Checks func(now time.Time, live, candidate string) []analysis.Result
	// Releases is how many releases baseline mode starts (default 200).
	Releases int
}

// rawPoint is what each recorded Deployment received over one scrape
// interval ending At.
type rawPoint struct {
	At       time.Time
	Seconds  float64
	Requests map[string]float64            // by Deployment (first SLO)
	Bad      map[string]map[string]float64 // by SLO, Deployment
}

// timeline reads the recording at every scrape from From to To: what each
// Deployment's counters grew by (per series, restarts counted as the
// controller counts them, analysis.Growth).
func (r *Recording) timeline() ([]rawPoint, error) {
	type key struct{ slo, dep, id string }
	last := map[key]float64{}
	lastBad := map[key]float64{}
	var out []rawPoint
	prev := r.From
	for at := r.From; !at.After(r.To); at = at.Add(r.Scrape) {
		p := rawPoint{At: at, Seconds: at.Sub(prev).Seconds(), Requests: map[string]float64{}, Bad: map[string]map[string]float64{}}
		for i, s := range r.SLOs {
			reading, err := r.readAt(i, at, at.Add(r.Scrape+max(500*time.Millisecond, r.Scrape/10)))
			if err != nil {
				return nil, err
			}
			p.Bad[s.SLO] = map[string]float64{}
			for w, series := range reading {
				for _, x := range series {
					k := key{s.SLO, w.Name, x.ID}
					n0 := last[k]
					x0 := lastBad[k]
					last[k], lastBad[k] = x.Requests, x.Bad
					if at.Equal(r.From) {
						continue
					}
					// A series that appears in the window began then (series
					// exist from their first request): all of it is new.
					dn, dx := x.Requests-n0, x.Bad-x0
					if dn < 0 || dx < 0 {
						dn, dx = x.Requests, x.Bad
					}
					if i == 0 {
						p.Requests[w.Name] += dn
					}
					p.Bad[s.SLO][w.Name] += min(dx, dn)
				}
			}
		}
		if at.After(r.From) {
			out = append(out, p)
		}
		prev = at
	}
	return out, nil
}

// recordedRelease is the release in the recording: which color was live,
// when the recorded first step began (first, estimated to half a scrape)
// and when the candidate last had traffic.
type recordedRelease struct {
	live, cand  splitterv1.Color
	first, last time.Time
	fromWeights bool
}

// findRelease finds the release: from splitter_split_weight when
// Prometheus scraped the controller, else from the counters.
func (r *Recording) findRelease(tl []rawPoint) (recordedRelease, error) {
	dep := func(c splitterv1.Color) string { return r.Workload + "-" + string(c) }
	first, last := map[splitterv1.Color]int{}, map[splitterv1.Color]int{}
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		first[c], last[c] = -1, -1
		for i, p := range tl {
			if p.Requests[dep(c)] > 0 {
				if first[c] < 0 {
					first[c] = i
				}
				last[c] = i
			}
		}
	}
	// start is when a point's stretch began.
	start := func(i int) time.Time { return tl[i].At.Add(-time.Duration(tl[i].Seconds * float64(time.Second))) }
	_, haveBlue := r.weightAt(splitterv1.Blue, r.From)
	_, haveGreen := r.weightAt(splitterv1.Green, r.From)
	if r.Weights != nil && haveBlue && haveGreen {
		rel, err := r.releaseFromWeights()
		if err != nil {
			return rel, err
		}
		// The candidate's first requests bound the write from above.
		if i := first[rel.cand]; i >= 0 && tl[i].At.Before(rel.first) {
			rel.first = start(i).Add(tl[i].At.Sub(start(i)) / 2)
		}
		return rel, nil
	}
	b, g := first[splitterv1.Blue], first[splitterv1.Green]
	switch {
	case b < 0 && g < 0:
		return recordedRelease{}, fmt.Errorf("%w: neither %s nor %s received traffic between %s and %s", ErrNoRelease, dep(splitterv1.Blue), dep(splitterv1.Green), stamp(r.From), stamp(r.To))
	case b < 0 || g < 0:
		only := splitterv1.Blue
		if b < 0 {
			only = splitterv1.Green
		}
		return recordedRelease{}, fmt.Errorf("%w: only %s received traffic between %s and %s (to measure the policy's false rollbacks on it, use --baseline-only)",
			ErrNoRelease, dep(only), stamp(r.From), stamp(r.To))
	case !start(b).After(r.From) && !start(g).After(r.From):
		return recordedRelease{}, fmt.Errorf("both %s and %s had traffic from the window's start (%s): start the window before the release, when only the live color had traffic",
			dep(splitterv1.Blue), dep(splitterv1.Green), stamp(r.From))
	}
	rel := recordedRelease{live: splitterv1.Blue, cand: splitterv1.Green}
	if g < b {
		rel.live, rel.cand = splitterv1.Green, splitterv1.Blue
	}
	// The first requests came within the stretch: its middle.
	i := first[rel.cand]
	rel.first = start(i).Add(tl[i].At.Sub(start(i)) / 2)
	rel.last = tl[last[rel.cand]].At
	if last[rel.cand] == len(tl)-1 {
		rel.last = r.To
	}
	return rel, nil
}

// releaseFromWeights reads the release off splitter_split_weight: the
// first step was written between the last sample at 0 and the first
// above it (first is the middle).
func (r *Recording) releaseFromWeights() (recordedRelease, error) {
	rel := recordedRelease{live: splitterv1.Blue, cand: splitterv1.Green, fromWeights: true}
	if w, _ := r.weightAt(splitterv1.Green, r.From); w >= 50 {
		rel.live, rel.cand = splitterv1.Green, splitterv1.Blue
	}
	if w, _ := r.weightAt(rel.cand, r.From); w > 0 {
		return rel, fmt.Errorf("%s-%s already had %g%% of the traffic at the window's start (%s), as splitter_split_weight recorded: start the window before the release",
			r.Workload, rel.cand, w, stamp(r.From))
	}
	from, to := model.TimeFromUnixNano(r.From.UnixNano()), model.TimeFromUnixNano(r.To.UnixNano())
	prev := model.Time(0)
	for _, p := range r.Weights[rel.cand] {
		if p.Timestamp > to {
			break
		}
		if p.Value <= 0 || p.Timestamp < from {
			if rel.first.IsZero() {
				prev = p.Timestamp
			}
			continue
		}
		if rel.first.IsZero() {
			lo := prev.Time()
			if prev == 0 {
				lo = p.Timestamp.Time().Add(-r.weightScrape())
			}
			rel.first = lo.Add(p.Timestamp.Time().Sub(lo) / 2)
		}
		rel.last = p.Timestamp.Time()
	}
	if rel.first.IsZero() {
		return rel, fmt.Errorf("%w: splitter_split_weight gave %s-%s no traffic between %s and %s (to measure the policy's false rollbacks, use --baseline-only)",
			ErrNoRelease, r.Workload, rel.cand, stamp(r.From), stamp(r.To))
	}
	if w, _ := r.weightAt(rel.cand, r.To); w > 0 {
		rel.last = r.To
	}
	return rel, nil
}

// Release replays the policy over the recorded release: the same engine
// loop as `policy simulate` (simulate.DriveRelease), fed the recorded
// counters thinned to the policy's weights (see source.go).
func Release(rec *Recording, opt Options) (*Report, error) {
	tl, err := rec.timeline()
	if err != nil {
		return nil, err
	}
	rel, err := rec.findRelease(tl)
	if err != nil {
		return nil, err
	}
	scrape := rec.Scrape
	p := *opt.Plan
	p.Timing = analysis.Timing{Scrape: scrape}
	liveDep, candDep := rec.Workload+"-"+string(rel.live), rec.Workload+"-"+string(rel.cand)
	rep := &Report{Window: windowOf(rec, opt), Live: liveDep, Candidate: candDep,
		CandidateFirst: rel.first, CandidateLast: rel.last, Assumption: ReleaseAssumption,
		RecordedWeights: "estimated from each color's share of the requests in each reading (scrape splitter's /metrics for exact ones: splitter_split_weight)"}
	if rel.fromWeights {
		rep.RecordedWeights = "splitter_split_weight, as Prometheus scraped the controller"
	}
	// The replay's first step is written when the recorded one was
	// (estimated to half a scrape): the release begins two watch events
	// before (the candidate's Ready, then the write's own).
	releaseAt := rel.first.Sub(rec.From) - 2*watchDelay
	if releaseAt < 5*time.Second {
		releaseAt = 5 * time.Second
		rep.Notes = append(rep.Notes, fmt.Sprintf("the window starts %s before the recorded candidate's first traffic: the replay's release starts at +%s, later than it should (start the window earlier)",
			rel.first.Sub(rec.From).Round(time.Second), releaseAt))
	}
	// After the recorded candidate's last traffic the replay has no more
	// evidence: it ends once every reading covers it, and a sweep (every
	// scrape) has looked.
	until := rec.To
	if rel.last.Before(rec.To) {
		until = rel.last.Add(2*scrape + max(500*time.Millisecond, scrape/10))
		if until.After(rec.To) {
			until = rec.To
		}
	}
	rng := rand.New(rand.NewPCG(opt.Seed, opt.Seed+1))
	src := newSource(rec, releaseMode, rec.From, rng)
	src.deployments = map[string]splitterv1.Color{liveDep: splitterv1.Blue, rec.Workload: splitterv1.Blue, candDep: splitterv1.Green}
	src.timeline = tl
	if rel.fromWeights {
		src.recorded = map[splitterv1.Color]splitterv1.Color{splitterv1.Blue: rel.live, splitterv1.Green: rel.cand}
		src.weightScrape = rec.weightScrape()
	}
	d := simulate.Drive{Plan: &p, Scrape: scrape, Start: rec.From, ReleaseAt: releaseAt, Until: until.Sub(rec.From), StopAtEnd: true,
		WakeOnReady: true, WatchDelay: watchDelay}
	switch {
	case len(p.Checks) > 0 && opt.Checks != nil:
		d.Checks = func(now time.Time) []analysis.Result { return opt.Checks(now, liveDep, candDep) }
	case len(p.Checks) > 0:
		rep.Notes = append(rep.Notes, "the policy's PromQL checks are not evaluated: they pass here")
	}
	if len(p.Hooks) > 0 {
		rep.Notes = append(rep.Notes, "the policy's hooks are not called: they pass here")
	}
	res := simulate.DriveRelease(d, src, rng)

	stepStart := rec.From
	for _, x := range res.Decisions {
		if x.At.Before(rec.From.Add(releaseAt)) {
			continue // adopting the live revision
		}
		dec := Decision{At: x.At, After: Offset(x.At.Sub(rel.first)), Phase: x.Phase, Step: x.Step, Weight: x.Weight, Reason: x.Reason, Message: x.Message}
		for _, c := range x.Checks {
			dec.Checks = append(dec.Checks, Check{Name: c.Name, Verdict: c.Verdict, Value: c.Value, Bound: c.Bound, Message: c.Message, Step: c.Step})
		}
		if x.Step > 0 && x.Phase != splitterv1.PhaseRolledBack && x.Phase != splitterv1.PhaseIdle {
			dec.Counts = countsOf(src.fedBetween(stepStart, x.At), liveDep, candDep)
		}
		if x.Step != stepAfter(x) {
			stepStart = x.At
		}
		rep.Decisions = append(rep.Decisions, dec)
		if rep.Decided == nil && (x.Phase == splitterv1.PhaseRollingBack || x.Phase == splitterv1.PhasePromoting) {
			dd := dec
			rep.Decided = &dd
		}
	}
	rep.Outcome = res.Outcome()
	if rep.Outcome == "unfinished" {
		rep.Outcome = "undecided"
		if rel.last.Before(rec.To) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("the recorded candidate had no traffic after %s (the recorded release ended there): the replay stops there, undecided",
				rel.last.UTC().Format(time.TimeOnly)))
		} else {
			rep.Notes = append(rep.Notes, "the window ended before the policy decided: widen it (--to)")
		}
	}
	if src.starved > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("for %s the policy sent %s traffic where the recording had none: no evidence there", src.starved.Round(time.Second), candDep))
	}
	for w, s := range src.scale {
		if w > 0 && s.recorded > 0 {
			rep.Evidence = append(rep.Evidence, StepEvidence{Weight: w, Kept: s.kept / s.recorded})
		}
	}
	sort.Slice(rep.Evidence, func(i, j int) bool { return rep.Evidence[i].Weight < rep.Evidence[j].Weight })
	rep.Timeline = pool(tl, func(p rawPoint) Point {
		pt := Point{At: p.At, Seconds: p.Seconds, Requests: map[splitterv1.Color]float64{}, Bad: map[string]map[splitterv1.Color]float64{},
			PolicyWeight: src.policyWeight(p.At.Sub(rec.From))}
		for dep, n := range p.Requests {
			if c, ok := src.deployments[dep]; ok {
				pt.Requests[c] += n
			}
		}
		for slo, m := range p.Bad {
			pt.Bad[slo] = map[splitterv1.Color]float64{}
			for dep, x := range m {
				if c, ok := src.deployments[dep]; ok {
					pt.Bad[slo][c] += x
				}
			}
		}
		if rel.fromWeights {
			pt.RecordedWeight, _ = rec.weightAt(rel.cand, p.At)
		} else if total := pt.Requests[splitterv1.Blue] + pt.Requests[splitterv1.Green]; total > 0 {
			pt.RecordedWeight = 100 * pt.Requests[splitterv1.Green] / total
		}
		return pt
	})
	return rep, nil
}

// watchDelay is how soon a replayed controller hears of its own writes
// and of a Deployment turning Ready: a watch event's latency.
const watchDelay = 50 * time.Millisecond

// stepAfter is the step a transition leads to: the next one after a
// StepAdvanced, the same otherwise.
func stepAfter(x simulate.Decision) int32 {
	if x.Reason == "StepAdvanced" {
		return x.Step + 1
	}
	return x.Step
}

// countsOf lists what the engine was fed, blue as the live Deployment and
// green as the candidate.
func countsOf(fed map[string][2][2]int64, live, cand string) []Count {
	var out []Count
	for _, slo := range slices.Sorted(maps.Keys(fed)) {
		for i, name := range []string{cand, live} {
			v := fed[slo][1-i]
			out = append(out, Count{SLO: slo, Deployment: name, Requests: v[0], Bad: v[1]})
		}
	}
	return out
}

// maxPoints bounds the timeline a report carries.
const maxPoints = 600

// pool turns raw points into at most maxPoints report points, adding up
// consecutive ones (weights: the last point's).
func pool(tl []rawPoint, conv func(rawPoint) Point) []Point {
	k := max(1, int(math.Ceil(float64(len(tl))/maxPoints)))
	var out []Point
	for i := 0; i < len(tl); i += k {
		var acc *Point
		for _, rp := range tl[i:min(len(tl), i+k)] {
			p := conv(rp)
			if acc == nil {
				acc = &p
				continue
			}
			acc.At, acc.Seconds = p.At, acc.Seconds+p.Seconds
			acc.PolicyWeight, acc.RecordedWeight = p.PolicyWeight, p.RecordedWeight
			for c, n := range p.Requests {
				acc.Requests[c] += n
			}
			for slo, m := range p.Bad {
				for c, x := range m {
					acc.Bad[slo][c] += x
				}
			}
		}
		out = append(out, *acc)
	}
	return out
}

// Baseline replays many releases of the policy over a window without one:
// the workload's own traffic split at random into two identical colors.
// Every rollback is a false one.
func Baseline(rec *Recording, opt Options) (*BaselineReport, error) {
	p := *opt.Plan
	scrape := rec.Scrape
	p.Timing = analysis.Timing{Scrape: scrape}
	n := opt.Releases
	if n <= 0 {
		n = 200
	}
	const releaseAt = 10 * time.Second
	// A healthy release's length: its steps and standby (and the time to
	// start); the drive allows every extension on top.
	length := releaseAt + time.Duration(len(p.Steps))*p.StepDuration + p.Standby + time.Minute
	longest := releaseAt + time.Duration(len(p.Steps)*(1+p.MaxExtensions))*p.StepDuration + p.Standby + 2*time.Minute
	window := rec.To.Sub(rec.From)
	if window < length {
		return nil, fmt.Errorf("the window (%s) is shorter than one release under this policy (about %s: %d steps of %s, standby %s): widen it",
			window, length, len(p.Steps), p.StepDuration, p.Standby)
	}
	// Every release gets its whole course in the window: starts are spread
	// over what leaves the longest release room (or a healthy one's, when
	// the window is shorter; releases cut short then count as unfinished
	// and stay out of the shares).
	room := window - longest
	if room < 0 {
		room = window - length
	}
	every := time.Duration(0)
	if n > 1 {
		every = room / time.Duration(n-1)
	}
	if every < scrape && n > 1 {
		every = scrape
		n = int(room/every) + 1
	}
	rep := &BaselineReport{Window: windowOf(rec, opt), Assumption: BaselineAssumption, Releases: n, Every: every.Round(time.Second).String(),
		Length: length.String(), Reasons: map[string]int{}}
	if len(p.Checks) > 0 {
		rep.Notes = append(rep.Notes, "the policy's PromQL checks are not evaluated (the synthetic colors are not in Prometheus): they pass here")
	}
	if len(p.Hooks) > 0 {
		rep.Notes = append(rep.Notes, "the policy's hooks are not called: they pass here")
	}
	var promote []float64
	var busy time.Duration // the releases' total course, for Disjoint
	for i := range n {
		start := rec.From.Add(time.Duration(i) * every)
		seed := opt.Seed + uint64(i)
		rng := rand.New(rand.NewPCG(seed, seed+1))
		src := newSource(rec, baselineMode, start, rng)
		until := min(longest, rec.To.Sub(start))
		d := simulate.Drive{Plan: &p, Scrape: scrape, Start: start, ReleaseAt: releaseAt, Until: until, StopAtEnd: true,
			WakeOnReady: true, WatchDelay: watchDelay}
		res := simulate.DriveRelease(d, src, rng)
		course := until
		switch res.Outcome() {
		case "promoted":
			rep.Promoted++
			promote = append(promote, (res.Ended - releaseAt).Seconds())
			course = min(until, res.Ended+p.Standby)
		case "rolledback":
			rep.RolledBack++
			h := res.History[0]
			msg := h.Message
			if len(msg) > 60 {
				msg = msg[:60]
			}
			rep.Reasons[h.Reason+": "+msg]++
			if strings.Contains(h.Message, "AbsoluteRegression") {
				rep.Incidents++
			}
			course = res.Ended
		case "paused":
			rep.Paused++
		default:
			rep.Unfinished++
		}
		busy += course
	}
	if len(rep.Reasons) == 0 {
		rep.Reasons = nil
	}
	finished := n - rep.Unfinished
	if finished == 0 {
		return nil, fmt.Errorf("no release finished within the window (%s): widen it", window)
	}
	rep.Length = (busy / time.Duration(n)).Round(time.Second).String()
	rep.Disjoint = max(1, int(window/max(time.Second, busy/time.Duration(n))))
	rep.FalseRollbacks = share(rep.RolledBack, finished, rep.Disjoint)
	rep.PausedShare = share(rep.Paused, finished, rep.Disjoint)
	if len(promote) > 0 {
		rep.PromotionSeconds = &Quantiles{P50: simulate.Quantile(promote, 0.5), P90: simulate.Quantile(promote, 0.9), P99: simulate.Quantile(promote, 0.99)}
	}
	tl, err := rec.timeline()
	if err != nil {
		return nil, err
	}
	rep.Traffic = measure(tl, rec.SLOs)
	if both := bothColors(tl, rec.Workload); both {
		rep.Notes = append(rep.Notes, "both colors had traffic in the window (a release?): the synthetic colors still share every request at random, but the rates are the mix's")
	}
	return rep, nil
}

// share is k of n with a 95% Wilson interval counted over at most
// `independent` releases: overlapping releases share traffic, so n
// overstates the sample size.
func share(k, n, independent int) Share {
	s := Share{Share: float64(k) / float64(n)}
	s.Low, s.High = simulate.WilsonShare(s.Share, min(n, max(1, independent)))
	return s
}

func measure(tl []rawPoint, slos []analysis.CounterSpec) Traffic {
	t := Traffic{BadRate: map[string]float64{}}
	secs, total := 0.0, 0.0
	bad := map[string]float64{}
	for _, p := range tl {
		secs += p.Seconds
		for _, n := range p.Requests {
			total += n
		}
		for slo, m := range p.Bad {
			for _, x := range m {
				bad[slo] += x
			}
		}
	}
	if secs > 0 {
		t.RPS = total / secs
	}
	for _, s := range slos {
		if total > 0 {
			t.BadRate[s.SLO] = bad[s.SLO] / total
		}
	}
	return t
}

func bothColors(tl []rawPoint, workload string) bool {
	var b, g bool
	for _, p := range tl {
		b = b || p.Requests[workload+"-blue"] > 0
		g = g || p.Requests[workload+"-green"] > 0
	}
	return b && g
}
