package analysis

import (
	"fmt"
	"math"
	"slices"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// The gross check: a trip on the last scrapes alone, at once.
//
// The watchdog's tests read every series at one interpolated instant a
// scrape in the past, and a trip on them waits for a scrape's confirming
// look (or for counts bracketed by samples). A gross fault is clear from
// the newest samples alone, within a second of their landing in
// Prometheus; what must not trip is an incident both colors share. The
// gross check judges only the samples of the look, on a window that no
// scrape timing can tilt against the candidate:
//
//   - T is the earliest of the live color's newest samples, S the latest
//     of its oldest (one per proxy: a proxy's series are scraped
//     together). Every live-color proxy is read from its last sample at
//     or before S to its first at or after T, so each window holds [S, T].
//   - Every candidate proxy is read from its first sample at or after S to
//     its last at or before T: each window lies inside [S, T].
//
// Of anything both colors share, the live color then counts everything
// that happened in [S, T], and the candidate at most that. Weighted
// routing sends a request to the candidate with probability w, so if the
// candidate is at most MaxRatio times as bad as the live color, its
// expected bad requests are at most m = MaxRatio · w / (1 − w) times the
// live color's, whatever the incident's shape in time, and of the bad
// requests of both, the candidate's share is at most q0 = m / (1 + m)
// (Poisson counts: given the total K, the candidate's are binomial). The
// check trips when the candidate's share is so far above q0 that the
// binomial tail's Chernoff bound, exp(−K · KL(k/K ‖ q0)), deflated by the
// clump size the watchdog measured, is below WatchdogAlpha / GrossLooks
// (per SLO). m is doubled (grossSlack) for what the weights do not say
// exactly: the realized split of few requests, callers' proxies, a live
// pod whose scrapes fail (its counts are missing: with m doubled, a third
// of the live color's proxies missing at 50% still cannot trip).
//
// While the weights move, the window may straddle two splits: w is then
// the higher of the weights before and after. No trip is possible during
// warmup (a cold start is not a fault), with all the traffic on the
// candidate (nothing to compare with; the absolute test judges), or when
// the live color's samples may not hold all its counts: a sum of series
// not sampled together, or a series of the checkpoint missing from the
// look. A proxy new to the reading is in the look with its samples
// (Bracket.Unread) and in S, so its window holds [S, T] too; a pod not
// scraped at all yet is missing (as it is from every reading), which the
// slack above covers.
//
// From two reviews that tried to break it with their own traffic (issue 18):
//   - When the candidate's share of requests a second in the windows is
//     well above the weights' (a route pinned to the candidate, traffic
//     around the VirtualService, a standby color without Ready pods: all
//     the traffic on the live color while the weights say 90%), there is
//     no judgement: that traffic's mix of requests need not be the
//     weighted traffic's (raising w to the share still tripped 200 of 200
//     when the pinned requests hit an endpoint whose dependency failed on
//     both colors; on the weights alone, 20 of 30 and 40 of 40).
//   - The candidate's bad requests are counted without its worst proxy: a
//     request that crashes a pod, or a clump of retries on one host, is
//     one pod's burst, not a verdict (a shared 19-request burst on one
//     candidate pod at 10% tripped with probability about w). A query of
//     death that retries carry to two or three candidate pods still
//     trips it, as it trips the watchdog's tests a scrape later.
//   - Availability SLOs only: Envoy latches its histograms at each stats
//     flush (5 s), so a histogram sample's timestamp does not say when its
//     requests happened (3 of 100 shared slow bursts tripped).
//   - A series the checkpoint read with counts is never born, whatever
//     its samples say, and the checkpoint keeps the reading of a series
//     the look has only as Unread (a federation that missed a pod for
//     a few scrapes: its whole counter read as new tripped 200 of 200;
//     see bornIn and moveCheckpoint).
// It also trusts that a sample's timestamp is when its counts were read:
// an aggregator that re-exports proxies' counts late, by a lag that
// differs per pod, breaks the window argument (10-28% of shared bursts
// tripped in the review's runs). Prometheus scraping each proxy, Istio's
// default, keeps it; otherwise turn it off (Timing.NoGross,
// --gross-check-interval=0).

// GrossLooks is how many looks the gross check's level is divided by:
// at once a second, a release looked at for a year takes 3% of the
// watchdog's alpha.
const GrossLooks = 1e9

// grossSlack doubles the candidate's share of a shared incident's bad
// requests that the check allows (see above).
const grossSlack = 2.0

// grossPoint is a series' counts at one sample.
type grossPoint struct {
	at   int64
	n, x int64
}

// grossSeries is one series' samples, oldest first; born: zero before the
// first (see splitterv1.Bracket.Born).
type grossSeries struct {
	points []grossPoint
	born   bool
}

// valueAt is the series' counts at a sample instant of its proxy: its own
// sample, zero before a born series' first; ok false when not known.
func (s grossSeries) valueAt(t int64) (grossPoint, bool) {
	for _, p := range s.points {
		if p.at == t {
			return p, true
		}
	}
	if s.born && t < s.points[0].at {
		return grossPoint{at: t}, true
	}
	return grossPoint{}, false
}

// grossProxies groups one color's series of one SLO by proxy, with the
// proxy's sample instants (sorted). ok false when a series has no usable
// samples.
func grossProxies(rs []splitterv1.SeriesReading, color splitterv1.Color, slo string, known map[seriesKey]bool) (map[string][]grossSeries, map[string][]int64, bool) {
	series, times := map[string][]grossSeries{}, map[string][]int64{}
	for _, r := range rs {
		if r.Color != color || r.SLO != slo {
			continue
		}
		b := r.Bracket
		if b.LastAt == 0 || b.Inexact {
			return nil, nil, false
		}
		var s grossSeries
		// A series the checkpoint holds was not born in this read,
		// whatever its samples say (a scrape that missed it).
		b.Born = b.Born && !known[seriesKey{r.Color, r.SLO, r.Series}]
		if b.Born && b.BornAfter != NoSample && (len(b.Earlier) > 0 && b.Earlier[0].At > b.BornAfter || len(b.Earlier) == 0 && (b.PrevAt == NoSample || b.PrevAt > b.BornAfter)) {
			s.points = append(s.points, grossPoint{at: b.BornAfter}) // absent from its target's scrape: zero
		}
		for _, p := range b.Earlier {
			s.points = append(s.points, grossPoint{p.At, p.Requests, p.Bad})
		}
		if b.PrevAt != NoSample {
			s.points = append(s.points, grossPoint{b.PrevAt, b.PrevRequests, b.PrevBad})
		}
		s.points = append(s.points, grossPoint{b.LastAt, b.LastRequests, b.LastBad})
		s.born = b.Born
		proxy := proxyOf(r.Series)
		if proxy == "" {
			proxy = r.Series // a series per proxy
		}
		series[proxy] = append(series[proxy], s)
		for _, p := range s.points {
			if !slices.Contains(times[proxy], p.at) {
				times[proxy] = append(times[proxy], p.at)
			}
		}
	}
	for _, ts := range times {
		slices.Sort(ts)
	}
	return series, times, true
}

// grossWindow sums a proxy's requests and bad requests from one of its
// sample instants to another; ok false when a series' counts there are
// not known or fell (a restart).
func grossWindow(ss []grossSeries, from, to int64) (n, x float64, ok bool) {
	for _, s := range ss {
		a, ok1 := s.valueAt(from)
		b, ok2 := s.valueAt(to)
		if !ok1 || !ok2 || b.n < a.n || b.x < a.x {
			return 0, 0, false
		}
		n += float64(b.n - a.n)
		x += float64(b.x - a.x)
	}
	return n, x, true
}

// grossTally is what the windows of one color hold.
type grossTally struct {
	bad, worst float64 // bad requests, and the most of one proxy
	rate       float64 // requests a second
}

func (t *grossTally) add(n, x float64, from, to int64) {
	t.bad += x
	t.worst = max(t.worst, x)
	t.rate += n / (float64(to-from) / 1000)
}

// grossCounts is what the candidate's and the live color's windows
// described above hold; ok false when the look gives no such windows.
func (e Evidence) grossCounts(l Look, slo string) (green, blue grossTally, ok bool) {
	// Series the checkpoint read with counts existed then (one read as
	// zero was born after its instant: still born).
	known := map[seriesKey]bool{}
	for _, c := range e.State.Checkpoint {
		known[seriesKey{c.Color, c.SLO, c.Series}] = c.Requests > 0
	}
	bs, bt, ok := grossProxies(l.Readings, e.Blue, slo, known)
	if !ok || len(bs) == 0 {
		return green, blue, false
	}
	gs, gt, ok := grossProxies(l.Readings, e.Green, slo, known)
	if !ok || len(gs) == 0 {
		return green, blue, false
	}
	for _, c := range e.State.Checkpoint {
		if c.Color == e.Blue && c.SLO == slo && !slices.ContainsFunc(l.Readings, func(r splitterv1.SeriesReading) bool {
			return r.Color == c.Color && r.SLO == c.SLO && r.Series == c.Series
		}) {
			return green, blue, false // a live-color series gone: its counts may be missing
		}
	}
	s, t := int64(math.MinInt64), int64(math.MaxInt64)
	for _, ts := range bt {
		s, t = max(s, ts[0]), min(t, ts[len(ts)-1])
	}
	if s >= t {
		return green, blue, false
	}
	for p, ts := range bt {
		i := len(ts) - 1
		for ts[i] > s {
			i--
		}
		j := slices.IndexFunc(ts, func(x int64) bool { return x >= t })
		n, x, ok := grossWindow(bs[p], ts[i], ts[j])
		if !ok {
			return green, blue, false
		}
		blue.add(n, x, ts[i], ts[j])
	}
	for p, ts := range gt {
		i := slices.IndexFunc(ts, func(x int64) bool { return x >= s })
		j := len(ts) - 1
		for j >= 0 && ts[j] > t {
			j--
		}
		if i < 0 || j <= i {
			continue // no window of this proxy inside [S, T]: none of its counts
		}
		n, x, ok := grossWindow(gs[p], ts[i], ts[j])
		if !ok {
			return green, blue, false
		}
		green.add(n, x, ts[i], ts[j])
	}
	return green, blue, true
}

// Gross is the gross check on a look (see above).
func (e Evidence) Gross(l Look) Trip {
	a := e.State
	// While the weights move, the candidate's share was at most the
	// highest of the weights before and after (MixedWeight).
	weight := max(e.Weight, a.MixedWeight)
	if !l.OK() || !e.WatchdogOn || e.NoGross || a.CheckpointAt == nil || e.Weight <= 0 || weight >= 100 {
		return Trip{}
	}
	if a.WarmupUntil != nil && l.At.Before(a.WarmupUntil.Time) {
		return Trip{}
	}
	level := math.Log(GrossLooks/e.WatchdogAlpha()) + math.Log(float64(len(e.SLOs)))
	for _, s := range e.SLOs {
		if s.ThresholdMs > 0 {
			continue // histograms: see above
		}
		g, b, ok := e.grossCounts(l, s.Name)
		if !ok || g.rate+b.rate == 0 {
			continue
		}
		// Traffic the weights did not route (a route pinned to the
		// candidate, traffic around the VirtualService, a standby color
		// without pods) voids the argument: its mix of requests need not
		// be the weighted traffic's. Well above the weights' share (more
		// than a quarter and two points: the split of thousands of
		// requests varies by about a point), no judgement.
		w := float64(weight) / 100
		if share := g.rate / (g.rate + b.rate); share > min(0.99, 1.25*w+0.02) {
			continue
		}
		m := grossSlack * e.MaxRatio * w / (1 - w)
		q0 := m / (1 + m)
		// Without its worst proxy (a pod, or a caller's proxy for the
		// failures that reached no pod): one pod's burst (a request that
		// crashes it, retries kept on one host) is no verdict.
		x := g.bad - g.worst
		k := x + b.bad
		if k == 0 || x/k <= q0 {
			continue
		}
		llr := k * klBernoulli(x/k, q0) / Dispersion(watchdogOf(a, s.Name), a.Watchdog)
		if llr < level {
			continue
		}
		return Trip{Tripped: true, Reason: "RelativeRegression", Message: fmt.Sprintf(
			"%s failed %s on %.0f requests in its last scrapes (%.0f without its worst pod) against %.0f on %s (%.0f%% of the traffic on %s): %.0f%% of them, where even an incident both colors share gives it at most %.0f%% (likelihood ratio e^%.0f reached e^%.0f)",
			e.Green, s.Name, g.bad, x, b.bad, e.Blue, 100*w, e.Green, 100*x/k, 100*q0, llr, level)}
	}
	return Trip{}
}

// klBernoulli is the Kullback-Leibler divergence of Bernoulli(p) from
// Bernoulli(q), in nats.
func klBernoulli(p, q float64) float64 {
	kl := 0.0
	if p > 0 {
		kl += p * math.Log(p/q)
	}
	if p < 1 {
		kl += (1 - p) * math.Log((1-p)/(1-q))
	}
	return kl
}
