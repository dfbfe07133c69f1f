package backtest

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/rollout"
)

// resetPod makes a pod restart at offset at: its counters start again
// from zero (series absent until their first request again).
func resetPod(rec *Recording, pod string, at time.Duration) {
	ts := model.TimeFromUnixNano(t0.Add(at).UnixNano())
	for _, ss := range rec.matrices[0][0] {
		if string(ss.Metric["pod"]) != pod {
			continue
		}
		var base model.SampleValue
		var out []model.SamplePair
		for _, p := range ss.Values {
			if p.Timestamp < ts {
				out = append(out, p)
				base = p.Value
				continue
			}
			if v := p.Value - base; v > 0 {
				out = append(out, model.SamplePair{Timestamp: p.Timestamp, Value: v})
			}
		}
		ss.Values = out
	}
}

// replacePod: from at on, the pod's series carry a new pod name (new
// series), starting from zero; the old ones end.
func replacePod(rec *Recording, pod string, at time.Duration) {
	ts := model.TimeFromUnixNano(t0.Add(at).UnixNano())
	var add model.Matrix
	for _, ss := range rec.matrices[0][0] {
		if string(ss.Metric["pod"]) != pod {
			continue
		}
		var base model.SampleValue
		var old, neu []model.SamplePair
		for _, p := range ss.Values {
			if p.Timestamp < ts {
				old = append(old, p)
				base = p.Value
				continue
			}
			if v := p.Value - base; v > 0 {
				neu = append(neu, model.SamplePair{Timestamp: p.Timestamp, Value: v})
			}
		}
		ss.Values = old
		m := ss.Metric.Clone()
		m["pod"] = model.LabelValue(pod + "-new")
		m["instance"] = "10.9.9.9"
		if len(neu) > 0 {
			add = append(add, &model.SampleStream{Metric: m, Values: neu})
		}
	}
	rec.matrices[0][0] = append(rec.matrices[0][0], add...)
}

// Claim 2: per reading, what the engine is fed of each color is at most
// what the recording holds, whatever the policy's weights, with restarts
// and replaced pods; and over a step, the shares are the policy's.
func TestThinningNeverInvents(t *testing.T) {
	for _, scrape := range []time.Duration{time.Second, 15 * time.Second} {
		rec := synthetic(recSpec{length: 16 * time.Minute, scrape: scrape, rps: 300, pods: 3, seed: 5,
			green: func(t time.Duration) float64 {
				switch {
				case t < 2*time.Minute:
					return 0
				case t < 6*time.Minute:
					return 20
				}
				return 60
			},
			bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.01), splitterv1.Green: constant(0.03)}})
		resetPod(rec, "checkout-green-1", 4*time.Minute)
		resetPod(rec, "checkout-blue-0", 5*time.Minute)
		replacePod(rec, "checkout-green-2", 7*time.Minute)
		replacePod(rec, "checkout-blue-2", 9*time.Minute)
		tl, _ := rec.timeline()
		for _, policyW := range []int32{5, 20, 40, 90} {
			src := newSource(rec, releaseMode, t0, rand.New(rand.NewPCG(3, 4)))
			src.deployments = map[string]splitterv1.Color{"checkout-blue": splitterv1.Blue, "checkout": splitterv1.Blue, "checkout-green": splitterv1.Green}
			src.timeline = tl
			src.Route(2*time.Minute, rollout.Weights{Blue: 100 - policyW, Green: policyW})
			step := time.Second
			prevT := 90 * time.Second
			prev, _ := src.Read(prevT)
			var fed, recd [2]float64
			var fedBad [2]float64
			invented := 0
			for tt := prevT + step; tt < 15*time.Minute; tt += step {
				now, _ := src.Read(tt)
				if analysis.Align(t0.Add(tt), scrape).Equal(analysis.Align(t0.Add(tt-step), scrape)) {
					continue
				}
				n, x := growthOf(prev, now)
				r := recordedGrowth(t, rec, analysis.Align(t0.Add(prevT), scrape), analysis.Align(t0.Add(tt), scrape))
				rb, rg := r["checkout-blue"], r["checkout-green"]
				if n[0] > rb || n[1] > rg {
					invented++
					if invented < 4 {
						t.Logf("w=%d at %s: fed blue %g (recorded %g), green %g (recorded %g)", policyW, tt, n[0], rb, n[1], rg)
					}
				}
				if tt > 3*time.Minute {
					fed[0] += n[0]
					fed[1] += n[1]
					fedBad[0] += x[0]
					fedBad[1] += x[1]
					recd[0] += rb
					recd[1] += rg
				}
				prev, prevT = now, tt
			}
			share := fed[1] / (fed[0] + fed[1])
			t.Logf("scrape %s policy %d%%: fed green share %.3f; kept blue %.2f green %.2f; error rates blue %.4f green %.4f", scrape, policyW, share,
				fed[0]/recd[0], fed[1]/recd[1], fedBad[0]/fed[0], fedBad[1]/fed[1])
			if invented > 0 {
				t.Errorf("scrape %s policy %d%%: %d readings fed a color more than the recording held", scrape, policyW, invented)
			}
		}
	}
}

// thinBracket moves the recorded samples by their distance from the
// recorded reading, thinned by the reading's factor; none without samples
// or when thinning would put the earlier sample above the later.
func TestThinBracket(t *testing.T) {
	b := splitterv1.Bracket{PrevAt: 1000, LastAt: 2000, PrevRequests: 90, PrevBad: 1, LastRequests: 110, LastBad: 11}
	got := thinBracket(b, [2]int64{50, 3}, 100, 5, 0.5)
	want := splitterv1.Bracket{PrevAt: 1000, LastAt: 2000, PrevRequests: 45, PrevBad: 1, LastRequests: 55, LastBad: 6}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("thinBracket = %+v, want %+v", got, want)
	}
	if got := thinBracket(splitterv1.Bracket{}, [2]int64{50, 3}, 100, 5, 0.5); got.LastAt != 0 {
		t.Errorf("no samples: %+v, want no bracket", got)
	}
}

// A recorded step shorter than estimate's stretches (a release the
// controller snapped back within seconds): the reading's own share is the
// policy's, so the replay keeps every request; a reading whose own share
// is not the policy's is still estimated.
func TestEstimateShortStep(t *testing.T) {
	var tl []rawPoint
	for i := range 45 {
		green := 0.0
		switch {
		case i >= 20 && i < 23:
			green = 20
		case i >= 30 && i < 33:
			green = 5
		}
		tl = append(tl, rawPoint{At: t0.Add(time.Duration(i+1) * time.Second), Seconds: 1,
			Requests: map[string]float64{"app-blue": 100 - green, "app-green": green}})
	}
	s := &source{rec: &Recording{Scrape: time.Second}, timeline: tl,
		deployments: map[string]splitterv1.Color{"app-blue": splitterv1.Blue, "app-green": splitterv1.Green}}
	for _, c := range []struct {
		from time.Duration
		want float64
	}{
		{20 * time.Second, 0.2}, // the reading alone: 20 of 100
		{21 * time.Second, 0.2},
		{30 * time.Second, 0.05 * 3 / 11}, // 5 of 100: not the policy's; the centred stretch's share
	} {
		got, ok := s.estimate(t0.Add(c.from), t0.Add(c.from+time.Second), 0.2)
		if !ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("estimate over +%s = %g, %v; want %g", c.from, got, ok, c.want)
		}
	}
}
