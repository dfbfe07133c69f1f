package controller

import (
	"testing"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// The gross check looks when the next scrape of any series read is due to
// have landed: the earliest last sample plus whole scrapes past now, plus
// the time to store it.
func TestNextLanding(t *testing.T) {
	now := time.UnixMilli(100_000)
	reading := func(lastAt ...int64) []splitterv1.SeriesReading {
		var out []splitterv1.SeriesReading
		for _, at := range lastAt {
			out = append(out, splitterv1.SeriesReading{Bracket: splitterv1.Bracket{LastAt: at}})
		}
		return out
	}
	for _, c := range []struct {
		name string
		read []splitterv1.SeriesReading
		want int64 // ms; 0: none
	}{
		{"one target", reading(95_000), 110_000 + landingLag.Milliseconds()},
		{"the earliest due of several", reading(95_000, 89_000), 104_000 + landingLag.Milliseconds()},
		{"a target that stopped: its next phase after now", reading(40_000), 115_000 + landingLag.Milliseconds()},
		{"no samples", reading(0), 0},
	} {
		got := nextLanding(c.read, 15*time.Second, now)
		if c.want == 0 && !got.IsZero() || c.want != 0 && got.UnixMilli() != c.want {
			t.Errorf("%s: %v, want %d ms", c.name, got, c.want)
		}
	}
}
