package backtest

import (
	"testing"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// BenchmarkBacktest times the replay of a 1-hour window recorded at 1 s
// (3 pods a color, 200 req/s): release mode (one release, the window read
// at every scrape for the timeline) and baseline mode (200 releases).
// Reading Prometheus is not included: it is one range query per counter
// query and hour of window.
func BenchmarkBacktest(b *testing.B) {
	hour := synthetic(recSpec{length: time.Hour, scrape: time.Second, rps: 200, pods: 3, seed: 9,
		green: func(t time.Duration) float64 {
			if t >= 30*time.Minute && t < 40*time.Minute {
				return 20
			}
			return 0
		},
		bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.002)}})
	quiet := synthetic(recSpec{length: time.Hour, scrape: time.Second, rps: 200, pods: 3, seed: 9,
		bad: map[splitterv1.Color]func(time.Duration) float64{splitterv1.Blue: constant(0.002), splitterv1.Green: constant(0.002)}})
	p := plan(b, strict)
	b.Run("release-1h-at-1s", func(b *testing.B) {
		for range b.N {
			rep, err := Release(hour, Options{Policy: "p", Plan: p, Seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(rep.Decisions)), "decisions")
		}
	})
	b.Run("baseline-1h-at-1s-200-releases", func(b *testing.B) {
		for range b.N {
			rep, err := Baseline(quiet, Options{Policy: "p", Plan: p, Seed: 1, Releases: 200})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(rep.Promoted), "promoted")
		}
	})
}
