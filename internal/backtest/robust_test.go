package backtest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
)

func mustJSON(t *testing.T, v any) {
	t.Helper()
	if _, err := json.Marshal(v); err != nil {
		t.Errorf("report does not marshal (NaN?): %v", err)
	}
}

// The live color is green: the release goes to blue. Mirror of badRelease.
func TestLiveGreen(t *testing.T) {
	for _, weights := range []bool{false, true} {
		w := func(t time.Duration) float64 {
			if t >= 2*time.Minute && t < 4*time.Minute {
				return 90
			}
			return 100
		}
		rec := synthetic(recSpec{length: 8 * time.Minute, scrape: time.Second, rps: 200, pods: 3, seed: 1, green: w,
			bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.05), splitterv1.Green: constant(0.002)}})
		if weights {
			withWeights(rec, w, 15*time.Second, 3*time.Second)
		}
		rep, err := Release(rec, Options{Policy: "p", Plan: plan(t, strict), Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		mustJSON(t, rep)
		t.Logf("weights=%v live %s candidate %s outcome %s evidence %+v first %s", weights, rep.Live, rep.Candidate, rep.Outcome, rep.Evidence, rep.CandidateFirst.Sub(t0))
		if rep.Live != "checkout-green" || rep.Candidate != "checkout-blue" || rep.Outcome != "rolledback" {
			t.Errorf("live %s candidate %s outcome %s", rep.Live, rep.Candidate, rep.Outcome)
		}
		// The chart's recorded weight is the candidate's.
		for _, p := range rep.Timeline {
			if p.At.Sub(t0) > 3*time.Minute && p.At.Sub(t0) < 3*time.Minute+10*time.Second && (p.RecordedWeight < 5 || p.RecordedWeight > 15) {
				t.Errorf("recorded weight at %s: %.1f, want the candidate's 10", p.At.Sub(t0), p.RecordedWeight)
			}
		}
	}
}

// Odd inputs: no panics, no NaN.
func TestOddInputs(t *testing.T) {
	p := plan(t, strict)
	bad := map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.002)}
	length := 10*time.Second + 3*time.Minute + time.Minute + time.Minute
	t.Run("window exactly one release", func(t *testing.T) {
		rec := synthetic(recSpec{length: length, scrape: 15 * time.Second, rps: 100, pods: 2, seed: 1, bad: bad})
		bl, err := Baseline(rec, Options{Plan: p, Seed: 1, Releases: 200})
		if err != nil {
			// A release cut short by the window's end is not counted.
			if !strings.Contains(err.Error(), "widen it") {
				t.Fatal(err)
			}
			return
		}
		mustJSON(t, bl)
		t.Logf("releases %d every %s disjoint %d: %+v", bl.Releases, bl.Every, bl.Disjoint, bl.FalseRollbacks)
	})
	t.Run("zero requests", func(t *testing.T) {
		rec := synthetic(recSpec{length: time.Hour, scrape: 15 * time.Second, rps: 0, pods: 2, seed: 1, bad: bad})
		bl, err := Baseline(rec, Options{Plan: p, Seed: 1, Releases: 20})
		if err != nil {
			t.Fatal(err)
		}
		mustJSON(t, bl)
		t.Logf("%+v", bl)
		_, err = Release(rec, Options{Plan: p, Seed: 1})
		t.Logf("release: %v", err)
	})
	t.Run("counters flat (series exist, no growth)", func(t *testing.T) {
		var m model.Matrix
		ss := &model.SampleStream{Metric: model.Metric{"reporter": "destination", "destination_workload_namespace": "shop", "destination_workload": "checkout", "pod": "a", "response_code": "200"}}
		for at := -Lead; at < time.Hour; at += 15 * time.Second {
			ss.Values = append(ss.Values, model.SamplePair{Timestamp: model.TimeFromUnixNano(t0.Add(at).UnixNano()), Value: 5})
		}
		m = append(m, ss)
		rec := NewRecording("shop", "checkout", t0, t0.Add(time.Hour), []analysis.CounterSpec{{SLO: "availability"}}, 15*time.Second, [][]model.Matrix{{m, nil}})
		bl, err := Baseline(rec, Options{Plan: p, Seed: 1, Releases: 20})
		if err != nil {
			t.Fatal(err)
		}
		mustJSON(t, bl)
		t.Logf("%s", BaselineTable(bl))
	})
	t.Run("empty recording", func(t *testing.T) {
		rec := NewRecording("shop", "checkout", t0, t0.Add(time.Hour), []analysis.CounterSpec{{SLO: "availability"}}, 15*time.Second, [][]model.Matrix{{nil, nil}})
		bl, err := Baseline(rec, Options{Plan: p, Seed: 1, Releases: 20})
		if err != nil {
			t.Fatal(err)
		}
		mustJSON(t, bl)
		_, err = Release(rec, Options{Plan: p})
		t.Logf("release: %v", err)
	})
	for _, wrong := range []time.Duration{time.Second, 5 * time.Second, time.Minute} {
		t.Run("scrape estimate off: "+wrong.String(), func(t *testing.T) {
			rec := badRelease(1) // recorded at 1 s
			rec15 := synthetic(recSpec{length: 8 * time.Minute, scrape: 15 * time.Second, rps: 200, pods: 3, seed: 1,
				green: func(t time.Duration) float64 {
					if t >= 2*time.Minute && t < 5*time.Minute {
						return 10
					}
					return 0
				},
				bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.05)}})
			for _, r := range []*Recording{rec, rec15} {
				r.Scrape = wrong
				rep, err := Release(r, Options{Plan: p, Seed: 3})
				if err != nil {
					t.Logf("error: %v", err)
					continue
				}
				mustJSON(t, rep)
				t.Logf("outcome %s evidence %v notes %v", rep.Outcome, rep.Evidence, rep.Notes)
			}
		})
	}
}

// findRelease's "both colors had traffic from the window's start" is a
// matter of time, not of scrapes: at 60 s scrapes a window starting 2
// minutes before the release is a release window (review finding).
func TestFindReleaseCountsTimeNotScrapes(t *testing.T) {
	for _, scrape := range []time.Duration{15 * time.Second, 30 * time.Second, time.Minute} {
		rec := synthetic(recSpec{length: 10 * time.Minute, scrape: scrape, rps: 100, pods: 2, seed: 1,
			green: func(t time.Duration) float64 {
				if t >= 100*time.Second {
					return 10
				}
				return 0
			},
			bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.002)}})
		if _, err := Release(rec, Options{Plan: plan(t, strict), Seed: 1}); err != nil {
			t.Errorf("scrape %s, release 1m40s into the window: %v", scrape, err)
		}
	}
}
