package backtest

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// dropSamples removes every sample in [from, to) (Prometheus down).
func dropSamples(rec *Recording, from, to time.Duration) {
	a, b := model.TimeFromUnixNano(t0.Add(from).UnixNano()), model.TimeFromUnixNano(t0.Add(to).UnixNano())
	for _, ss := range rec.matrices[0][0] {
		var out []model.SamplePair
		for _, p := range ss.Values {
			if p.Timestamp < a || p.Timestamp >= b {
				out = append(out, p)
			}
		}
		ss.Values = out
	}
}

// Release mode over pod restarts, replacements and a scrape gap: the
// outcome and the evidence match the clean recording's.
func TestReleaseChurn(t *testing.T) {
	for _, scrape := range []time.Duration{time.Second, 15 * time.Second} {
		mk := func() *Recording {
			return synthetic(recSpec{length: 12 * time.Minute, scrape: scrape, rps: 300, pods: 3, seed: 1,
				green: func(t time.Duration) float64 {
					if t >= 2*time.Minute {
						return 10
					}
					return 0
				},
				bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.03)}})
		}
		clean := mk()
		churn := mk()
		resetPod(churn, "checkout-green-0", 2*time.Minute+40*time.Second)
		resetPod(churn, "checkout-blue-1", 2*time.Minute+50*time.Second)
		replacePod(churn, "checkout-green-1", 3*time.Minute)
		replacePod(churn, "checkout-blue-2", 3*time.Minute+10*time.Second)
		dropSamples(churn, 3*time.Minute+20*time.Second, 4*time.Minute)
		for name, rec := range map[string]*Recording{"clean": clean, "churn": churn} {
			rep, err := Release(rec, Options{Plan: plan(t, strict), Seed: 7})
			if err != nil {
				t.Fatal(err)
			}
			mustJSON(t, rep)
			var at string
			if rep.Decided != nil {
				at = rep.Decided.After.String() + " " + rep.Decided.Message
			}
			t.Logf("scrape %s %s: %s %s evidence %+v", scrape, name, rep.Outcome, at, rep.Evidence)
			if rep.Outcome != "rolledback" {
				t.Errorf("%s: %s", name, rep.Outcome)
			}
		}
	}
}
