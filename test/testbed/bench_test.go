package testbed

import (
	"context"
	"os"
	"sort"
	"testing"
	"time"
)

// BenchmarkTestBedStart reports (never asserts) the warm start time of the
// whole test bed, from nothing to ready for tests, and the resident memory
// of each of its processes after 15 s of simulated traffic on the last run.
// Run with `make bench` (-benchtime 5x gives five starts).
func BenchmarkTestBedStart(b *testing.B) {
	cfg, err := ConfigFromEnv()
	if err != nil {
		b.Skip(err)
	}
	var starts []time.Duration
	for i := 0; i < b.N; i++ {
		cfg.StateDir = b.TempDir()
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		tb, err := Start(ctx, cfg)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		starts = append(starts, time.Since(t0))
		if i == b.N-1 {
			b.StopTimer()
			time.Sleep(15 * time.Second)
			total := 0
			pids := tb.PIDs()
			names := make([]string, 0, len(pids))
			for n := range pids {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				kb := RSSKiB(pids[n])
				total += kb
				b.ReportMetric(float64(kb)/1024, n+"-MiB")
			}
			self := RSSKiB(os.Getpid())
			b.ReportMetric(float64(self)/1024, "benchmark+meshsim-MiB")
			b.ReportMetric(float64(total+self)/1024, "total-MiB")
			b.StartTimer()
		}
		tb.Stop()
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	b.ReportMetric(starts[len(starts)/2].Seconds(), "median-start-s")
	b.ReportMetric(starts[len(starts)-1].Seconds(), "worst-start-s")
}
