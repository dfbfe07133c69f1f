package simulate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"
	"time"

	"splitter.dev/splitter/internal/policy"
)

// samplePlan is the README's recommended policy, as shipped.
func samplePlan(t testing.TB, standby time.Duration) *policy.Plan {
	t.Helper()
	data, err := os.ReadFile("../../config/samples/15-splitpolicy-slos.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, findings, plans := policy.LintPlans(data)
	if len(findings) > 0 || len(plans) != 1 {
		t.Fatalf("sample policy: %v", findings)
	}
	plans[0].Plan.Standby = standby
	return plans[0].Plan
}

// The command's model of the recommended policy at 100 req/s, 0.1%
// errors and 0.3% slow requests is the Monte-Carlo's (BenchmarkMonteCarlo
// and the README's figures): same Spec, so the same seed gives the same
// figures.
func TestNewSpecIsTheMonteCarlos(t *testing.T) {
	tr := Traffic{RPS: 100, ErrorRate: baseErrors, SlowRate: baseSlow}
	for _, scrape := range []time.Duration{15 * time.Second, 30 * time.Second, time.Minute} {
		tr.Scrape = scrape
		for _, i := range []int{0, 1, 6} { // green = blue, 1.3x, 5x regression
			sc := mcScenarios[i]
			got := NewSpec(samplePlan(t, time.Hour), tr, sc.greenTimes)
			want := mcSpec(sc, scrape, time.Hour)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s, scrape %s:\n got %+v\nwant %+v\n plan %+v\nwant %+v", sc.name, scrape, got, want, *got.Plan, *want.Plan)
			}
		}
	}
}

// BenchmarkSimulate prints how long `splitter policy simulate` takes for
// 2,000 healthy releases of the recommended policy (as shipped, standby
// 10m) at 100 req/s and 15 s scrapes (target: under 5 s).
func BenchmarkSimulate(b *testing.B) {
	spec := NewSpec(samplePlan(b, 10*time.Minute), Traffic{RPS: 100, ErrorRate: baseErrors, SlowRate: baseSlow, Scrape: 15 * time.Second}, 1)
	for range b.N {
		start := time.Now()
		tl := RunN(spec, 2000, 300)
		line := fmt.Sprintf("simulate, recommended policy, 100 req/s, scrape 15s: %s in %.1f s", tl, time.Since(start).Seconds())
		b.Log(line)
		fmt.Println(line)
	}
}

// Stopping a release at its final outcome changes how long it is
// simulated, never how it ends.
func TestStopAtEndKeepsOutcomes(t *testing.T) {
	for _, times := range []float64{1, 5} {
		spec := NewSpec(samplePlan(t, 10*time.Minute), Traffic{RPS: 100, ErrorRate: baseErrors, SlowRate: baseSlow, Scrape: 15 * time.Second}, times)
		for i := range uint64(20) {
			full := Run(spec, rand.New(rand.NewPCG(i, i+1)))
			spec.StopAtEnd = true
			short := Run(spec, rand.New(rand.NewPCG(i, i+1)))
			spec.StopAtEnd = false
			if full.Outcome() != short.Outcome() || full.Ended != short.Ended {
				t.Errorf("%gx, seed %d: full %s at %s, stopped %s at %s", times, i, full.Outcome(), full.Ended, short.Outcome(), short.Ended)
			}
		}
	}
}

func TestLatencySlowShare(t *testing.T) {
	l := Latency{P50: 50 * time.Millisecond, P99: 200 * time.Millisecond}
	for _, tc := range []struct {
		threshold time.Duration
		want      float64
	}{{200 * time.Millisecond, 0.01}, {50 * time.Millisecond, 0.5}, {time.Second, 0}, {time.Millisecond, 1}} {
		if got := l.SlowShare(tc.threshold); math.Abs(got-tc.want) > 1e-4 {
			t.Errorf("over %s: %.6f, want %.6f", tc.threshold, got, tc.want)
		}
	}
	// NewSpec takes each latency SLO's share from SlowBySLO.
	plan := samplePlan(t, time.Minute)
	tr := Traffic{RPS: 100, ErrorRate: 0.001, SlowRate: 0.5, SlowBySLO: l.SlowBySLO(plan.SLOs), Scrape: 15 * time.Second}
	spec := NewSpec(plan, tr, 2)
	for _, slo := range plan.SLOs {
		if slo.ThresholdMs == 0 {
			continue
		}
		want := 2 * l.SlowShare(time.Duration(slo.ThresholdMs*float64(time.Millisecond)))
		if got := spec.Bad[CandidateRevision][slo.Name]; math.Abs(got-want) > 1e-12 {
			t.Errorf("%s: candidate slow %.6f, want %.6f", slo.Name, got, want)
		}
	}
}
