package backtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"gonum.org/v1/gonum/stat/distuv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
	"splitter.dev/splitter/internal/simulate"
)

// recSpec describes a synthetic recording: what Prometheus would hold for
// a workload whose pods served rps, split by the given weights, each color
// failing at its rate. Pods are scraped at their own phases.
type recSpec struct {
	length, scrape time.Duration
	rps            float64
	pods           int
	// green is green's weight (percent) at an offset; nil: no release.
	green func(t time.Duration) float64
	// bad is each color's error rate at an offset.
	bad  map[splitterv1.Color]func(t time.Duration) float64
	seed uint64
}

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func constant(x float64) func(time.Duration) float64 { return func(time.Duration) float64 { return x } }

// synthetic makes the recording; from is t0, and the samples begin Lead
// before it.
func synthetic(s recSpec) *Recording {
	rng := rand.New(rand.NewPCG(s.seed, s.seed+1))
	slos := []analysis.CounterSpec{{SLO: "availability"}}
	var dst model.Matrix
	start := -Lead
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		for pod := range s.pods {
			phase := time.Duration(rng.Int64N(int64(s.scrape)))
			labels := func(code string) model.Metric {
				return model.Metric{"__name__": "istio_requests_total", "reporter": "destination", "destination_workload_namespace": "shop",
					"destination_workload": model.LabelValue("checkout-" + string(c)), "pod": model.LabelValue(fmt.Sprintf("checkout-%s-%d", c, pod)),
					"instance": model.LabelValue("10.0.0." + strconv.Itoa(pod)), "response_code": model.LabelValue(code), "response_flags": "-"}
			}
			ok, fail := &model.SampleStream{Metric: labels("200")}, &model.SampleStream{Metric: labels("503")}
			var good, bad float64
			next := start + phase
			for t := start; t < s.length; t += time.Second {
				w := 0.0
				if s.green != nil {
					w = s.green(t)
				}
				if c == splitterv1.Blue {
					w = 100 - w
				}
				if mean := s.rps * w / 100 / float64(s.pods); mean > 0 {
					n := distuv.Poisson{Lambda: mean, Src: randSource{rng}}.Rand()
					x := 0.0
					if p := s.bad[c](t); p > 0 && n > 0 {
						x = distuv.Binomial{N: n, P: p, Src: randSource{rng}}.Rand()
					}
					good, bad = good+n-x, bad+x
				}
				for ; next <= t+time.Second && next < s.length; next += s.scrape {
					ts := model.TimeFromUnixNano(t0.Add(next).UnixNano())
					// A series exists from its first request on.
					if good > 0 {
						ok.Values = append(ok.Values, model.SamplePair{Timestamp: ts, Value: model.SampleValue(good)})
					}
					if bad > 0 {
						fail.Values = append(fail.Values, model.SamplePair{Timestamp: ts, Value: model.SampleValue(bad)})
					}
				}
			}
			for _, ss := range []*model.SampleStream{ok, fail} {
				if len(ss.Values) > 0 {
					dst = append(dst, ss)
				}
			}
		}
	}
	return NewRecording("shop", "checkout", t0, t0.Add(s.length), slos, s.scrape, [][]model.Matrix{{dst, nil}})
}

func plan(t testing.TB, spec string) *policy.Plan {
	t.Helper()
	doc := "apiVersion: splitter.dev/v1alpha1\nkind: SplitPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n" + spec
	_, findings, plans := policy.LintPlans([]byte(doc))
	if len(findings) > 0 || len(plans) != 1 {
		t.Fatalf("policy: %v", findings)
	}
	return plans[0].Plan
}

const strict = `  steps: [10, 50, 100]
  stepDuration: 1m
  slos: [{name: availability, objective: "99.5"}]
  standby: 1m
`

// loose tolerates a candidate ten times worse than the live color.
const loose = `  steps: [10, 50, 100]
  stepDuration: 1m
  slos: [{name: availability, objective: "90"}]
  compare: {maxRatio: "15", failRatio: "20"}
  standby: 1m
`

// A recorded release: 10% to green from 2 minutes in, and the live
// controller snapped back 2 minutes later; green failed 5% of requests.
func badRelease(seed uint64) *Recording {
	return synthetic(recSpec{length: 8 * time.Minute, scrape: time.Second, rps: 200, pods: 3, seed: seed,
		green: func(t time.Duration) float64 {
			if t >= 2*time.Minute && t < 4*time.Minute {
				return 10
			}
			return 0
		},
		bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.05)}})
}

func TestReleaseModeDecides(t *testing.T) {
	for _, tc := range []struct {
		name, policy string
		want         string
	}{
		{"strict policy rolls back on the 10% step", strict, "rolledback"},
		{"loose policy does not roll back", loose, "undecided"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := badRelease(1)
			rep, err := Release(rec, Options{Policy: "p", Plan: plan(t, tc.policy), Seed: 7})
			if err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + Table(rep))
			if rep.Outcome != tc.want {
				t.Fatalf("outcome %s, want %s\n%s", rep.Outcome, tc.want, Table(rep))
			}
			if rep.Live != "checkout-blue" || rep.Candidate != "checkout-green" {
				t.Errorf("live %s, candidate %s", rep.Live, rep.Candidate)
			}
			if got := rep.CandidateFirst.Sub(t0); got < 2*time.Minute-time.Second || got > 2*time.Minute+time.Second {
				t.Errorf("the recorded first step estimated at +%s, want +2m (within a scrape)", got)
			}
			if tc.want == "rolledback" {
				d := rep.Decided
				if d == nil || d.Weight != 10 || d.Step != 1 {
					t.Fatalf("decided %+v, want a rollback on step 1 (10%%)", d)
				}
				if after := time.Duration(d.After); after <= 0 || after > 2*time.Minute {
					t.Errorf("rolled back %s after the first traffic: want within the recorded step", after)
				}
				if !strings.Contains(d.Message, "availability") || len(d.Counts) != 2 {
					t.Errorf("the decision does not say which check failed on what counts: %s %+v", d.Message, d.Counts)
				}
			} else if !strings.Contains(strings.Join(rep.Notes, "\n"), "no traffic after") {
				t.Errorf("undecided without saying the recording ended: %v", rep.Notes)
			}
			for _, e := range rep.Evidence {
				if e.Weight == 10 && e.Kept < 0.99 {
					t.Errorf("kept %.2f of the 10%% step's requests: the policy's weight is the recorded one", e.Kept)
				}
			}
		})
	}
}

// The policy's weights differ from the recorded ones: counts are thinned,
// never invented.
func TestReleaseModeThinsToThePolicysWeights(t *testing.T) {
	rec := synthetic(recSpec{length: 8 * time.Minute, scrape: time.Second, rps: 2000, pods: 3, seed: 3,
		green: func(t time.Duration) float64 {
			if t >= 2*time.Minute {
				return 20
			}
			return 0
		},
		bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.002)}})
	rep, err := Release(rec, Options{Policy: "p", Plan: plan(t, "  steps: [5, 40, 100]\n  stepDuration: 1m\n  slos: [{name: availability, objective: \"99.5\"}]\n"), Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	kept := map[int32]float64{}
	for _, e := range rep.Evidence {
		kept[e.Weight] = e.Kept
	}
	// At 5% (recorded 20%): blue cannot have 95% of the recorded total
	// (it had 80%), so both colors keep 80/95 of their shares: blue all
	// of its requests, green 0.05*80/95 of the total.
	if k := kept[5]; k < 0.82 || k > 0.86 {
		t.Errorf("5%% step kept %.3f of the requests, want about 0.84\n%s", k, Table(rep))
	}
	// At 40% (recorded 20%): green keeps all, blue 0.6*0.2/0.4: half the total.
	if k := kept[40]; k < 0.45 || k > 0.55 {
		t.Errorf("40%% step kept %.3f of the requests, want about 0.5\n%s", k, Table(rep))
	}
	if rep.Outcome == "rolledback" {
		t.Errorf("a healthy release rolled back:\n%s", Table(rep))
	}
}

func TestReleaseModeErrors(t *testing.T) {
	noRelease := synthetic(recSpec{length: 5 * time.Minute, scrape: time.Second, rps: 50, pods: 2, seed: 1,
		bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.01), splitterv1.Green: constant(0.01)}})
	_, err := Release(noRelease, Options{Plan: plan(t, strict)})
	if !errors.Is(err, ErrNoRelease) || !strings.Contains(err.Error(), "--baseline-only") {
		t.Errorf("no release: %v", err)
	}
	during := synthetic(recSpec{length: 5 * time.Minute, scrape: time.Second, rps: 50, pods: 2, seed: 1, green: constant(10),
		bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.01), splitterv1.Green: constant(0.01)}})
	if _, err := Release(during, Options{Plan: plan(t, strict)}); err == nil || !strings.Contains(err.Error(), "start the window before the release") {
		t.Errorf("window starting mid-release: %v", err)
	}
}

func TestBaselineMode(t *testing.T) {
	rec := synthetic(recSpec{length: time.Hour, scrape: 15 * time.Second, rps: 100, pods: 3, seed: 5,
		bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.002)}})
	opt := Options{Policy: "p", Plan: plan(t, strict), Seed: 11, Releases: 60}
	rep, err := Baseline(rec, opt)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Promoted+rep.Paused+rep.RolledBack+rep.Unfinished != rep.Releases || rep.Releases != 60 {
		t.Fatalf("outcomes do not add up: %+v", rep)
	}
	// alpha is 1%: a handful at most of 60 identical-color releases. (At
	// 100 req/s and 15 s scrapes, a 1-minute 10% step often lacks the
	// evidence and pauses: TestBaselineAgreesWithSimulate compares those.)
	if rep.RolledBack > 3 || rep.Promoted < 20 {
		t.Errorf("identical colors: promoted %d, rolled back %d of %d\n%s", rep.Promoted, rep.RolledBack, rep.Releases, BaselineTable(rep))
	}
	if r := rep.Traffic.RPS; r < 95 || r > 105 {
		t.Errorf("measured %.1f req/s, want about 100", r)
	}
	if r := rep.Traffic.BadRate["availability"]; r < 0.0015 || r > 0.0025 {
		t.Errorf("measured %.4f bad, want about 0.002", r)
	}
	// Releases take 3-9 minutes (promoted with standby, or paused at the
	// drive's end): an hour holds 6 to 20 of them side by side.
	if rep.Disjoint < 6 || rep.Disjoint > 20 {
		t.Errorf("disjoint %d (mean course %s)", rep.Disjoint, rep.Length)
	}
	again, _ := Baseline(rec, opt)
	if again.RolledBack != rep.RolledBack || again.Promoted != rep.Promoted {
		t.Errorf("same seed, other outcome: %+v vs %+v", again, rep)
	}
	short := synthetic(recSpec{length: 2 * time.Minute, scrape: 15 * time.Second, rps: 100, pods: 3, seed: 5,
		bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.002)}})
	if _, err := Baseline(short, opt); err == nil || !strings.Contains(err.Error(), "shorter than one release") {
		t.Errorf("short window: %v", err)
	}
}

// Baseline mode over a recording of Poisson traffic and the model behind
// `policy simulate` for the same traffic agree: both count releases between
// identical colors.
func TestBaselineAgreesWithSimulate(t *testing.T) {
	for _, tc := range []struct {
		rps    float64
		scrape time.Duration
	}{{300, 15 * time.Second}, {100, 15 * time.Second}, {50, time.Second}} {
		t.Run(fmt.Sprintf("%g rps, %s", tc.rps, tc.scrape), func(t *testing.T) {
			rec := synthetic(recSpec{length: 2 * time.Hour, scrape: tc.scrape, rps: tc.rps, pods: 3, seed: 21,
				bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.002)}})
			p := plan(t, strict)
			bl, err := Baseline(rec, Options{Policy: "p", Plan: p, Seed: 5, Releases: 150})
			if err != nil {
				t.Fatal(err)
			}
			sim := simulate.RunN(simulate.NewSpec(p, simulate.Traffic{RPS: tc.rps, ErrorRate: 0.002, Scrape: tc.scrape}, 1), 300, 9)
			t.Logf("baseline: promoted %d, paused %d, rolled back %d of %d; simulate: %s", bl.Promoted, bl.Paused, bl.RolledBack, bl.Releases, sim)
			// Promoted shares within both 95% intervals' reach; the
			// baseline's releases overlap (they share one recording), so
			// its interval counts the disjoint ones.
			ps := share(bl.Promoted, bl.Releases, bl.Disjoint)
			blo, bhi := ps.Low, ps.High
			slo, shi := simulate.Wilson(sim.Outcomes["promoted"], sim.N)
			if bhi < slo || shi < blo {
				t.Errorf("promoted: baseline %.2f [%.2f, %.2f], simulate %.2f [%.2f, %.2f]", float64(bl.Promoted)/float64(bl.Releases), blo, bhi, sim.Share("promoted"), slo, shi)
			}
			if bl.FalseRollbacks.Share > 0.03 || sim.Share("rolledback") > 0.03 {
				t.Errorf("false rollbacks: baseline %.3f, simulate %.3f", bl.FalseRollbacks.Share, sim.Share("rolledback"))
			}
		})
	}
}

func TestOffset(t *testing.T) {
	for d, want := range map[time.Duration]string{42 * time.Second: "00:00:42", 61*time.Minute + 500*time.Millisecond: "01:01:01", -3 * time.Second: "-00:00:03"} {
		o := Offset(d)
		if got := o.String(); got != want {
			t.Errorf("%s: %s, want %s", d, got, want)
		}
		var back Offset
		if err := back.UnmarshalText([]byte(want)); err != nil || time.Duration(back) != d.Round(time.Second) {
			t.Errorf("%s: read back %s (%v)", want, time.Duration(back), err)
		}
	}
}

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{"15d": 15 * 24 * time.Hour, "1d or 500MiB": 24 * time.Hour, "10GiB": 0} {
		got, ok := parseRetention(in)
		if got != want || ok != (want > 0) {
			t.Errorf("%q: %s %v", in, got, ok)
		}
	}
}
