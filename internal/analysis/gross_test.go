package analysis

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// grossWorld is traffic through pods of both colors, each scraped every
// 15 s at its own phase, for the gross check's tests: rate(t) is the bad
// rate of a color at second t.
type grossWorld struct {
	rng    *rand.Rand
	rps    float64
	weight float64 // the candidate's share
	// from, when set, is when the share became weight (half that before)
	from   float64
	pods   map[splitterv1.Color][]*grossPod
	scrape float64
}

type grossPod struct {
	phase   float64
	start   float64 // a pod that starts late serves and is scraped from then
	n, x    float64
	samples []splitterv1.Sample
}

// run runs the world for `seconds` in steps of dt, sampling each pod at
// its scrapes.
func (w *grossWorld) run(seconds, dt float64, rate func(c splitterv1.Color, t float64) float64) {
	for t := dt; t <= seconds+1e-9; t += dt {
		for c, ps := range w.pods {
			share := w.weight
			if t < w.from {
				share /= 2
			}
			if c == splitterv1.Blue {
				share = 1 - w.weight
			}
			up := 0
			for _, p := range ps {
				if t >= p.start {
					up++
				}
			}
			for _, p := range ps {
				if t < p.start {
					continue
				}
				n := poisson(w.rng, w.rps*share/float64(up)*dt)
				p.n += n
				p.x += binomial(w.rng, n, rate(c, t))
				// a scrape at phase + k·scrape in (t-dt, t]
				if k := int((t - p.phase) / w.scrape); t-p.phase >= 0 && t-dt-p.phase < float64(k)*w.scrape {
					at := int64((p.phase + float64(k)*w.scrape) * 1000)
					p.samples = append(p.samples, splitterv1.Sample{At: at, Requests: int64(p.n), Bad: int64(p.x)})
				}
			}
		}
	}
}

// readings are the pods' last four samples (a reading's range) as one
// look's series.
func (w *grossWorld) readings(slo string) []splitterv1.SeriesReading {
	var out []splitterv1.SeriesReading
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for i, p := range w.pods[c] {
			s := p.samples
			if len(s) < 2 {
				continue
			}
			prev, last := s[len(s)-2], s[len(s)-1]
			out = append(out, splitterv1.SeriesReading{Color: c, SLO: slo, Series: string(c) + strconv.Itoa(i),
				Requests: last.Requests, Bad: last.Bad, Bracket: splitterv1.Bracket{Unread: len(s) < 4,
					Earlier: s[max(0, len(s)-4) : len(s)-2], PrevAt: prev.At, PrevRequests: prev.Requests, PrevBad: prev.Bad,
					LastAt: last.At, LastRequests: last.Requests, LastBad: last.Bad}})
		}
	}
	return out
}

func newGrossWorld(rng *rand.Rand, rps, weight float64, blue, green int) *grossWorld {
	w := &grossWorld{rng: rng, rps: rps, weight: weight, scrape: 15, pods: map[splitterv1.Color][]*grossPod{}}
	for c, k := range map[splitterv1.Color]int{splitterv1.Blue: blue, splitterv1.Green: green} {
		for range k {
			w.pods[c] = append(w.pods[c], &grossPod{phase: rng.Float64() * 15})
		}
	}
	return w
}

// grossEvidence is a settled release at weight w with one SLO.
func grossEvidence(weight int32, checkpoint []splitterv1.SeriesReading) Evidence {
	t := metav1.NewTime(time.Unix(0, 0))
	p := twoSLOs
	p.SLOs = p.SLOs[:1]
	return Evidence{Policy: p, Stage: Stage{Green: splitterv1.Green, Blue: splitterv1.Blue, Weight: weight},
		Timing: Timing{Scrape: 15 * time.Second}, State: &splitterv1.AnalysisStatus{BaselineAt: &t, CheckpointAt: &t, Checkpoint: checkpoint}}
}

// TestGrossCheckIgnoresSharedIncidents: incidents both colors share, of
// any shape in time (100% errors for 0.2-40 s, starting anywhere), with
// pods of both colors scraped at random phases, never trip the gross
// check, whatever the weight, while the weights move (from half the
// weight to it, at a random time), and with a live-color pod started
// within the read (in the look with the samples it has): the live color's
// windows hold every candidate window.
func TestGrossCheckIgnoresSharedIncidents(t *testing.T) {
	rng := rand.New(rand.NewPCG(18, 7))
	for i := range 4000 {
		weight := []int32{10, 20, 50, 90}[i%4]
		w := newGrossWorld(rng, 200, float64(weight)/100, 1+rng.IntN(4), 1+rng.IntN(3))
		if i%3 == 0 && len(w.pods[splitterv1.Blue]) > 1 {
			w.pods[splitterv1.Blue][0].start = 20 + rng.Float64()*45 // a new live pod
		}
		e := grossEvidence(weight, nil)
		if i%8 >= 4 {
			w.from = 15 + rng.Float64()*60
			e.State.BaselineAt, e.State.MixedWeight, e.Weight = nil, weight, weight
		}
		start := 15 + rng.Float64()*45
		length := 0.2 + rng.Float64()*rng.Float64()*40
		w.run(75, 0.1, func(c splitterv1.Color, t float64) float64 {
			if t > start && t <= start+length {
				return 1
			}
			return 0.001
		})
		rs := w.readings("availability")
		if trip := e.Gross(Look{At: time.Unix(75, 0), Readings: rs}); trip.Tripped {
			t.Fatalf("case %d: a shared incident (%.1f s from %.1f s, weight %d) tripped: %s", i, length, start, weight, trip.Message)
		}
	}
}

// TestGrossCheckCatchesGrossFaults: a candidate failing 30% of its
// requests is caught, at 10-50% and 100 req/s, 3 pods a color at random
// phases, once every pod has scraped 15 s of it: at least 19 times in 20
// at 20-50%, 3 in 4 at 10% (10 requests a second on the candidate, and
// leaving out its worst pod costs a third of the evidence; the next
// scrape catches the rest).
func TestGrossCheckCatchesGrossFaults(t *testing.T) {
	rng := rand.New(rand.NewPCG(18, 8))
	for weight, least := range map[int32]int{10: 150, 20: 190, 50: 190} {
		caught := 0
		for range 200 {
			w := newGrossWorld(rng, 100, float64(weight)/100, 3, 3)
			w.run(75, 0.1, func(c splitterv1.Color, t float64) float64 {
				if c == splitterv1.Green && t > 30 {
					return 0.3
				}
				return 0.001
			})
			// every pod has scraped 15 s of the fault by then at the latest
			if trip := grossEvidence(weight, nil).Gross(Look{At: time.Unix(75, 0), Readings: w.readings("availability")}); trip.Tripped {
				caught++
			}
		}
		if caught < least {
			t.Errorf("weight %d: caught %d of 200 gross faults", weight, caught)
		}
	}
}

// TestGrossCheckNeedsTheLiveColorsCounts: the cases where the window
// argument does not hold give no trip, on readings that trip otherwise.
func TestGrossCheckNeedsTheLiveColorsCounts(t *testing.T) {
	at := func(s int64) int64 { return s * 1000 }
	series := func(c splitterv1.Color, id string, b splitterv1.Bracket) splitterv1.SeriesReading {
		return splitterv1.SeriesReading{Color: c, SLO: "availability", Series: id, Requests: b.LastRequests, Bad: b.LastBad, Bracket: b}
	}
	blue := series(splitterv1.Blue, "b.200", splitterv1.Bracket{Earlier: []splitterv1.Sample{{At: at(0)}}, PrevAt: at(15), PrevRequests: 2400, LastAt: at(30), LastRequests: 4800, LastBad: 2})
	green200 := series(splitterv1.Green, "g.200", splitterv1.Bracket{Earlier: []splitterv1.Sample{{At: at(0)}}, PrevAt: at(15), PrevRequests: 300, LastAt: at(30), LastRequests: 510})
	// green's 503s, born with the fault: one sample, zero before it
	green503 := series(splitterv1.Green, "g.503", splitterv1.Bracket{PrevAt: NoSample, LastAt: at(30), LastRequests: 90, LastBad: 90, Born: true})
	// a second green pod, as bad (the check leaves out the worst pod)
	other200, other503 := green200, green503
	other200.Series, other503.Series = "h.200", "h.503"
	look := []splitterv1.SeriesReading{blue, green200, green503, other200, other503}
	settledAt := metav1.NewTime(time.Unix(0, 0))
	if trip := grossEvidence(20, nil).Gross(Look{At: time.Unix(31, 0), Readings: look}); !trip.Tripped {
		t.Fatalf("90 of 600 requests failed on each of two green pods against 2 of 4,800 blue ones: no trip")
	} else if !strings.Contains(trip.Message, "availability") {
		t.Errorf("message %q does not name the SLO", trip.Message)
	}
	cases := []struct {
		name   string
		look   func() []splitterv1.SeriesReading
		change func(e *Evidence)
	}{
		{"the 503 series not known to be born", func() []splitterv1.SeriesReading {
			g, h := green503, other503
			g.Bracket.Born, h.Bracket.Born = false, false
			return []splitterv1.SeriesReading{blue, green200, g, other200, h}
		}, nil},
		{"the bad requests on one candidate pod only", func() []splitterv1.SeriesReading {
			return []splitterv1.SeriesReading{blue, green200, green503, other200}
		}, nil},
		{"the live color with almost none of the traffic the weights give it", func() []splitterv1.SeriesReading {
			b := blue
			b.Bracket.Earlier, b.Bracket.PrevRequests, b.Bracket.LastRequests = []splitterv1.Sample{{At: at(0)}}, 12, 24
			return []splitterv1.SeriesReading{b, green200, green503, other200, other503}
		}, nil},
		{"a route pinned to the candidate (its share well above the weights')", func() []splitterv1.SeriesReading {
			g, h := green200, other200
			g.Bracket.PrevRequests, g.Bracket.LastRequests = 2*g.Bracket.PrevRequests, 2*g.Bracket.LastRequests
			h.Bracket.PrevRequests, h.Bracket.LastRequests = 2*h.Bracket.PrevRequests, 2*h.Bracket.LastRequests
			return []splitterv1.SeriesReading{blue, g, green503, h, other503}
		}, nil},
		{"a latency SLO (histograms flush late)", func() []splitterv1.SeriesReading {
			var out []splitterv1.SeriesReading
			for _, r := range look {
				r.SLO = "latency"
				out = append(out, r)
			}
			return out
		}, func(e *Evidence) { e.SLOs = []SLO{{Name: "latency", Objective: 0.99, ThresholdMs: 250}} }},
		{"the 503 series in the checkpoint (not born, whatever its samples)", func() []splitterv1.SeriesReading { return look },
			func(e *Evidence) {
				e.State.Checkpoint = []splitterv1.SeriesReading{blue, green503, other503}
			}},
		{"a live-color series of the checkpoint gone", func() []splitterv1.SeriesReading { return look },
			func(e *Evidence) {
				e.State.Checkpoint = []splitterv1.SeriesReading{{Color: splitterv1.Blue, SLO: "availability", Series: "b2.200"}}
			}},
		{"a live-color sum not sampled together", func() []splitterv1.SeriesReading {
			b := blue
			b.Bracket.Inexact = true
			return []splitterv1.SeriesReading{b, green200, green503, other200, other503}
		}, nil},
		{"weights moving to 100%", func() []splitterv1.SeriesReading { return look }, func(e *Evidence) { e.State.BaselineAt, e.State.MixedWeight = nil, 100 }},
		{"warming up", func() []splitterv1.SeriesReading { return look }, func(e *Evidence) {
			u := metav1.NewTime(time.Unix(60, 0))
			e.State.WarmupUntil = &u
		}},
		{"all the traffic on the candidate", func() []splitterv1.SeriesReading { return look }, func(e *Evidence) { e.Weight = 100 }},
		{"the watchdog off", func() []splitterv1.SeriesReading { return look }, func(e *Evidence) { e.WatchdogOn = false }},
		{"the live color's last sample before the candidate's window", func() []splitterv1.SeriesReading {
			b := blue
			b.Bracket = splitterv1.Bracket{PrevAt: at(0), LastAt: at(15), LastRequests: 2400, LastBad: 1}
			return []splitterv1.SeriesReading{b, green200, green503, other200, other503}
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := grossEvidence(20, nil)
			e.State.BaselineAt = &settledAt
			if c.change != nil {
				c.change(&e)
			}
			if trip := e.Gross(Look{At: time.Unix(31, 0), Readings: c.look()}); trip.Tripped {
				t.Errorf("tripped: %s", trip.Message)
			}
		})
	}
}

// A new pod's series (its proxy not read at the reading's instant) reach
// the gross check with their samples, and nothing else: Growth and the
// checkpoint leave them out, so the gates and the watchdog's tests still
// count the pod from its first reading. Its samples alone trip the gross
// check on a gross fault (a candidate failing 30% from its first request,
// as the test bed's gross-watchdog benchmark has it).
func TestNewPodsSamplesForTheGrossCheckAlone(t *testing.T) {
	series := func(workload, pod, code string, values ...float64) *model.SampleStream {
		s := &model.SampleStream{Metric: metric("destination_workload_namespace", "shop", "destination_workload", workload, "pod", pod,
			"reporter", "destination", "response_code", code, "response_flags", "-")}
		for i, v := range values {
			if v >= 0 {
				s.Values = append(s.Values, model.SamplePair{Timestamp: model.Time(15000 * i), Value: model.SampleValue(v)})
			}
		}
		return s
	}
	// Samples at 0, 15, 30 and 45 s; read at 20 s: the green pod's first
	// sample is at 30 s.
	m := model.Matrix{
		series("app-blue", "app-blue-1", "200", 0, 2400, 4800, 7200),
		series("app-green", "app-green-1", "200", -1, -1, 200, 410),
		series("app-green", "app-green-1", "500", -1, -1, 90, 180),
		series("app-green", "app-green-2", "200", -1, -1, 200, 410),
		series("app-green", "app-green-2", "500", -1, -1, 90, 180),
	}
	reading := ClassifyAvailability(m, nil, 20000, nil)
	rs := reading.For("availability", "shop", map[splitterv1.Color]string{splitterv1.Blue: "app-blue", splitterv1.Green: "app-green"}, nil)
	var unread int
	for _, r := range rs {
		if r.Color == splitterv1.Green {
			if !r.Bracket.Unread || r.Requests != 0 {
				t.Errorf("green series %s: %+v, want Unread and no requests", r.Series, r)
			}
			unread++
		}
	}
	if unread != 4 {
		t.Fatalf("%d green series, want the new pods' 4 (their samples carried)", unread)
	}
	c, _ := Growth(nil, rs)
	if g := c.Of("availability", splitterv1.Green); g.N != 0 {
		t.Errorf("Growth counted the unread series: %v", g)
	}
	e := grossEvidence(20, nil)
	e.State.CheckpointAt = nil
	e.Observe(Look{At: time.Unix(46, 0), Readings: rs})
	for _, r := range e.State.Checkpoint {
		if r.Bracket.Unread || r.Color == splitterv1.Green {
			t.Errorf("the checkpoint keeps %+v", r)
		}
	}
	if trip := e.Gross(Look{At: time.Unix(46, 0), Readings: rs}); !trip.Tripped {
		t.Errorf("90 of 300 requests failed on each new green pod between its samples, 0 of 2,400 on blue: no trip")
	}
	if trip, _ := e.Observe(Look{At: time.Unix(46, 0), Readings: rs}); !trip.Tripped {
		t.Errorf("the reconcile's look does not trip on the same samples")
	}
}

// A target that exports many pods (a federation; the test bed's mesh
// simulator) scraped a new pod's target before its first sample: its
// series were absent then, so their first sample counts from zero there,
// and the gross check judges a new pod's first scrape. Where each pod is
// its own target (Istio's usual scrape), that is not known: the first
// sample alone gives no window.
func TestNewPodsFirstSampleOnASharedTarget(t *testing.T) {
	for _, shared := range []bool{true, false} {
		series := func(workload, pod, code string, values ...float64) *model.SampleStream {
			instance := pod + ":15020"
			if shared {
				instance = "meshsim:9090"
			}
			s := &model.SampleStream{Metric: metric("destination_workload_namespace", "shop", "destination_workload", workload, "pod", pod,
				"reporter", "destination", "response_code", code, "response_flags", "-", "job", "istio", "instance", instance)}
			for i, v := range values {
				if v >= 0 {
					s.Values = append(s.Values, model.SamplePair{Timestamp: model.Time(15000 * i), Value: model.SampleValue(v)})
				}
			}
			return s
		}
		m := model.Matrix{
			series("app-blue", "app-blue-1", "200", 0, 2400, 4800),
			series("app-green", "app-green-1", "200", -1, -1, 210),
			series("app-green", "app-green-1", "500", -1, -1, 90),
			series("app-green", "app-green-2", "200", -1, -1, 210),
			series("app-green", "app-green-2", "500", -1, -1, 90),
		}
		rs := ClassifyAvailability(m, nil, 10000, nil).For("availability", "shop", map[splitterv1.Color]string{splitterv1.Blue: "app-blue", splitterv1.Green: "app-green"}, nil)
		e := grossEvidence(20, nil)
		if trip := e.Gross(Look{At: time.Unix(31, 0), Readings: rs}); trip.Tripped != shared {
			t.Errorf("one target for all pods %v: tripped %v on the new pod's first sample (%s)", shared, trip.Tripped, trip.Message)
		}
	}
}

// bornIn trusts a target that exports many pods to have scraped them
// together only when every series sits on its instants without a gap: a
// federation that keeps each pod's timestamps, or one that missed a pod in
// a scrape, is judged per pod (a review found both reading a pod's whole
// counter as new: 34 of 50 and 30 of 30 healthy releases tripped).
func TestBornInASharedTarget(t *testing.T) {
	s := func(pod, code string, at ...int64) *model.SampleStream {
		st := &model.SampleStream{Metric: metric("destination_workload_namespace", "shop", "destination_workload", "app-green", "pod", pod,
			"reporter", "destination", "response_code", code, "job", "federate", "instance", "prom-a:9090")}
		for i, a := range at {
			st.Values = append(st.Values, model.SamplePair{Timestamp: model.Time(a), Value: model.SampleValue(1000 + i)})
		}
		return st
	}
	for _, c := range []struct {
		name string
		m    model.Matrix
		want []int64
	}{
		{"scraped together: a new pod and a new code born at the scrape before", model.Matrix{
			s("p1", "200", 0, 15000, 30000), s("p1", "503", 30000), s("p2", "200", 15000, 30000)},
			[]int64{NoSample, 15000, 0}},
		{"each pod's own timestamps: per pod", model.Matrix{
			s("p1", "200", 0, 15000, 30000), s("p2", "200", 5000, 20000, 35000), s("p2", "503", 35000)},
			[]int64{NoSample, NoSample, 20000}},
		{"a pod missed in a scrape: per pod", model.Matrix{
			s("p1", "200", 0, 15000, 30000, 45000), s("p2", "200", 0, 30000, 45000), s("p2", "503", 45000)},
			[]int64{NoSample, NoSample, 30000}},
	} {
		if got := bornIn(c.m); !slices.Equal(got, c.want) {
			t.Errorf("%s: born after %v, want %v", c.name, got, c.want)
		}
	}
}

// A series the look has only as Unread (a pod a federation missed for a
// few scrapes lags the reading's instant) keeps its reading in the
// checkpoint: it stays known, so the gross check does not take its whole
// counter for a new series (a review: 200 of 200 healthy releases tripped
// when two pods an hour old missed four scrapes).
func TestCheckpointKeepsAnUnreadSeries(t *testing.T) {
	old := splitterv1.SeriesReading{Color: splitterv1.Green, SLO: "availability", Series: "g.200", Requests: 24000, Bad: 30}
	e := grossEvidence(20, []splitterv1.SeriesReading{old})
	now := old
	now.Requests, now.Bad, now.Bracket = 0, 0, splitterv1.Bracket{PrevAt: 60000, LastAt: 75000, PrevRequests: 24500, LastRequests: 24800, Unread: true}
	blue := splitterv1.SeriesReading{Color: splitterv1.Blue, SLO: "availability", Series: "b.200", Requests: 9000}
	e.Fold(Look{At: time.Unix(80, 0), Readings: []splitterv1.SeriesReading{blue, now}})
	var kept bool
	for _, c := range e.State.Checkpoint {
		if c.Series == old.Series {
			kept = c.Requests == old.Requests && !c.Bracket.Unread
		}
	}
	if !kept {
		t.Errorf("checkpoint %+v: want g.200's earlier reading kept", e.State.Checkpoint)
	}
}
