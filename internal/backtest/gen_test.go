package backtest

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"gonum.org/v1/gonum/stat/distuv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
)

// revSpec is a recording of the user's own traffic (one Deployment, or
// colors), with pod restarts, replacements, gaps and clumped errors.
type revSpec struct {
	length, scrape time.Duration
	rps, bad       float64
	pods           int
	seed           uint64
	// deployment the pods belong to ("checkout": pre-opt-in).
	deployment string
	// restart: each pod's mean time between restarts (counters to 0, same
	// series); replace: between replacements (new series, old ends).
	restart, replace time.Duration
	// gaps: scrapes missing (Prometheus down) over [from, to).
	gaps [][2]time.Duration
	// clump: bad requests come in clumps of that many (same mean rate).
	clump int
	// incidents: the error rate is incidentRate over [from, to).
	incidents    [][2]time.Duration
	incidentRate float64
}

func (s revSpec) build() *Recording {
	rng := rand.New(rand.NewPCG(s.seed, s.seed+3))
	if s.deployment == "" {
		s.deployment = "checkout"
	}
	var dst model.Matrix
	seq := 0
	type pod struct {
		name                     string
		good, bad                float64
		ok, fail                 *model.SampleStream
		phase                    time.Duration
		nextRestart, nextReplace time.Duration
	}
	draw := func(mean time.Duration, from time.Duration) time.Duration {
		if mean <= 0 {
			return 1 << 62
		}
		return from + time.Duration(rng.ExpFloat64()*float64(mean))
	}
	newPod := func(now time.Duration) *pod {
		seq++
		name := fmt.Sprintf("%s-%d", s.deployment, seq)
		labels := func(code string) model.Metric {
			return model.Metric{"__name__": "istio_requests_total", "reporter": "destination", "destination_workload_namespace": "shop",
				"destination_workload": model.LabelValue(s.deployment), "pod": model.LabelValue(name),
				"instance": model.LabelValue("10.0.1." + strconv.Itoa(seq)), "response_code": model.LabelValue(code), "response_flags": "-"}
		}
		return &pod{name: name, ok: &model.SampleStream{Metric: labels("200")}, fail: &model.SampleStream{Metric: labels("503")},
			phase: time.Duration(rng.Int64N(int64(s.scrape))), nextRestart: draw(s.restart, now), nextReplace: draw(s.replace, now)}
	}
	flush := func(p *pod) {
		for _, ss := range []*model.SampleStream{p.ok, p.fail} {
			if len(ss.Values) > 0 {
				dst = append(dst, ss)
			}
		}
	}
	var pods []*pod
	for range s.pods {
		pods = append(pods, newPod(-Lead))
	}
	inGap := func(t time.Duration) bool {
		for _, g := range s.gaps {
			if t >= g[0] && t < g[1] {
				return true
			}
		}
		return false
	}
	clump := float64(max(1, s.clump))
	for t := -Lead; t < s.length; t += time.Second {
		for i, p := range pods {
			if t >= p.nextReplace {
				flush(p)
				pods[i] = newPod(t)
				p = pods[i]
			}
			if t >= p.nextRestart {
				p.good, p.bad = 0, 0
				p.nextRestart = draw(s.restart, t)
			}
			n := distuv.Poisson{Lambda: s.rps / float64(s.pods), Src: randSource{rng}}.Rand()
			x := 0.0
			rate := s.bad
			for _, in := range s.incidents {
				if t >= in[0] && t < in[1] {
					rate = s.incidentRate
				}
			}
			if n > 0 && rate > 0 {
				x = min(n, clump*distuv.Binomial{N: n, P: min(1, rate/clump), Src: randSource{rng}}.Rand())
			}
			p.good, p.bad = p.good+n-x, p.bad+x
			// scrapes due in (t, t+1s]
			off := (t - p.phase) % s.scrape
			if off < 0 {
				off += s.scrape
			}
			if off >= s.scrape-time.Second && !inGap(t) {
				at := t + (s.scrape - off)
				if at >= s.length {
					continue
				}
				ts := model.TimeFromUnixNano(t0.Add(at).UnixNano())
				if p.good > 0 {
					p.ok.Values = append(p.ok.Values, model.SamplePair{Timestamp: ts, Value: model.SampleValue(p.good)})
				}
				if p.bad > 0 {
					p.fail.Values = append(p.fail.Values, model.SamplePair{Timestamp: ts, Value: model.SampleValue(p.bad)})
				}
			}
		}
	}
	for _, p := range pods {
		flush(p)
	}
	slos := []analysis.CounterSpec{{SLO: "availability"}}
	rec := NewRecording("shop", "checkout", t0, t0.Add(s.length), slos, s.scrape, [][]model.Matrix{{dst, nil}})
	rec.Scrape = rec.scrapeInterval()
	return rec
}

var _ = splitterv1.Blue

// withWeights adds splitter_split_weight as Prometheus would have scraped
// the controller every `every` at phase.
func withWeights(rec *Recording, green func(time.Duration) float64, every, phase time.Duration) {
	rec.Weights = map[splitterv1.Color][]model.SamplePair{}
	for t := -Lead + phase; t < rec.To.Sub(t0); t += every {
		ts := model.TimeFromUnixNano(t0.Add(t).UnixNano())
		g := green(t)
		rec.Weights[splitterv1.Green] = append(rec.Weights[splitterv1.Green], model.SamplePair{Timestamp: ts, Value: model.SampleValue(g)})
		rec.Weights[splitterv1.Blue] = append(rec.Weights[splitterv1.Blue], model.SamplePair{Timestamp: ts, Value: model.SampleValue(100 - g)})
	}
}
