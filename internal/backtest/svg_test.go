package backtest

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite golden files")

var svgStart = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// svgTimeline is n points a second apart from svgStart: rps requests a
// second split by green's weight, each color failing at its rate.
func svgTimeline(n int, rps float64, policy, recorded func(i int) float64, rate func(c splitterv1.Color, i int) float64, slos ...string) []Point {
	tl := make([]Point, n)
	for i := range tl {
		w := recorded(i)
		req := map[splitterv1.Color]float64{
			splitterv1.Blue:  rps * (100 - w) / 100,
			splitterv1.Green: rps * w / 100,
		}
		bad := map[string]map[splitterv1.Color]float64{}
		for k, slo := range slos {
			// Each further SLO fails half as often as the one before.
			bad[slo] = map[splitterv1.Color]float64{}
			for c, r := range req {
				bad[slo][c] = r * rate(c, i) / float64(int(1)<<k)
			}
		}
		tl[i] = Point{
			At:             svgStart.Add(time.Duration(i+1) * time.Second),
			Seconds:        1,
			Requests:       req,
			Bad:            bad,
			PolicyWeight:   policy(i),
			RecordedWeight: w,
		}
	}
	return tl
}

// svgDecision is a decision at svgStart+at, its After counted from origin.
func svgDecision(origin, at time.Duration, phase splitterv1.Phase, step, weight int32, reason, msg string) Decision {
	return Decision{
		At:      svgStart.Add(at),
		After:   Offset(at - origin),
		Phase:   phase,
		Step:    step,
		Weight:  weight,
		Reason:  reason,
		Message: msg,
	}
}

func svgRolledBack() *Report {
	// Green gets 10% from 10s; it fails 20% of its requests from 60s; the
	// policy rolls back at 75s while the recording kept 10% until 200s.
	tl := svgTimeline(300, 200,
		func(i int) float64 {
			if i >= 10 && i < 75 {
				return 10
			}
			return 0
		},
		func(i int) float64 {
			if i >= 10 && i < 200 {
				return 10
			}
			return 0
		},
		func(c splitterv1.Color, i int) float64 {
			if c == splitterv1.Green && i >= 60 {
				return 0.2
			}
			return 0.005
		}, "availability", "latency")
	rollback := svgDecision(10*time.Second, 75*time.Second, splitterv1.PhaseRollingBack, 1, 0, "CheckFailed", "availability: 20.1% bad > 1%")
	return &Report{
		Window: Window{Policy: "strict", Namespace: "shop", Workload: "checkout",
			From: svgStart, To: svgStart.Add(300 * time.Second), ScrapeInterval: "15s", Seed: 1},
		Live: "checkout-blue", Candidate: "checkout-green",
		CandidateFirst: svgStart.Add(10 * time.Second), CandidateLast: svgStart.Add(200 * time.Second),
		Outcome: "rolledback",
		Decided: &rollback,
		Decisions: []Decision{
			svgDecision(10*time.Second, 9*time.Second, splitterv1.PhaseShifting, 1, 10, "StepStarted", "step 1: 10%"),
			svgDecision(10*time.Second, 40*time.Second, splitterv1.PhaseShifting, 1, 10, "ChecksInconclusive", "not enough requests"),
			rollback,
			svgDecision(10*time.Second, 80*time.Second, splitterv1.PhaseRolledBack, 1, 0, "RolledBack", ""),
		},
		Timeline: tl,
	}
}

func svgPromoted() *Report {
	steps := []struct {
		from   int
		weight float64
	}{{0, 0}, {5, 10}, {65, 50}, {125, 100}}
	weight := func(i int) float64 {
		w := 0.0
		for _, s := range steps {
			if i >= s.from {
				w = s.weight
			}
		}
		return w
	}
	tl := svgTimeline(180, 100, weight, weight,
		func(c splitterv1.Color, i int) float64 { return 0.001 * float64(1+i%3) }, "availability")
	var ds []Decision
	for k, s := range steps[1:] {
		ds = append(ds, svgDecision(6*time.Second, time.Duration(s.from)*time.Second, splitterv1.PhaseShifting, int32(k+1), int32(s.weight), "StepStarted", ""))
	}
	promote := svgDecision(6*time.Second, 125*time.Second, splitterv1.PhasePromoting, 3, 100, "ChecksPassed", "all checks passed")
	ds = append(ds, promote)
	return &Report{
		Window: Window{Policy: "loose", Namespace: "shop", Workload: "cart"},
		Live:   "cart-v1", Candidate: "cart-v2",
		CandidateFirst: svgStart.Add(6 * time.Second),
		Outcome:        "promoted",
		Decided:        &promote,
		Decisions:      ds,
		Timeline:       tl,
	}
}

func svgEscaping() *Report {
	r := svgPromoted()
	r.Policy = `p<&">`
	r.Namespace = `ns&co`
	r.Workload = `w<script>"x"</script>`
	r.Live = `blue<1>`
	r.Candidate = `green&"2"`
	for i := range r.Timeline {
		p := &r.Timeline[i]
		p.Bad[`slo<&>`] = p.Bad["availability"]
		delete(p.Bad, "availability")
	}
	r.Decided.Reason = `Reason<&>`
	r.Decisions[len(r.Decisions)-1].Reason = `Reason<&>`
	return r
}

func svgEdgeCases() *Report {
	// One point, nothing bad, decisions before and after it.
	tl := svgTimeline(1, 10, func(int) float64 { return 10 }, func(int) float64 { return 10 },
		func(splitterv1.Color, int) float64 { return 0 }, "availability")
	return &Report{
		Window: Window{Policy: "strict", Namespace: "shop", Workload: "checkout"},
		Live:   "a", Candidate: "b",
		CandidateFirst: svgStart,
		Outcome:        "undecided",
		Decisions: []Decision{
			svgDecision(0, -time.Hour, splitterv1.PhaseRollingBack, 1, 0, "CheckFailed", ""),
			svgDecision(0, time.Hour, splitterv1.PhasePromoting, 1, 100, "ChecksPassed", ""),
		},
		Timeline: tl,
	}
}

// svgMarker matches a rollback's marker line.
var svgMarker = regexp.MustCompile(`<line class="marker"[^>]*stroke="` + svgRed + `"`)

func TestSVG(t *testing.T) {
	for _, tc := range []struct {
		name   string
		report *Report
		want   []string
		absent []string
		red    bool
	}{{
		name:   "rolledback",
		report: svgRolledBack(),
		want: []string{
			"splitter policy backtest: strict on shop/checkout",
			"00:00:00 = 2026-11-20 10:00:10 UTC",
			"outcome: rolledback \u2014 RollingBack at 00:01:05 on step 1 (0%)",
			"policy weight (checkout-green)", "recorded weight",
			"availability checkout-blue", "availability checkout-green", "latency checkout-green",
			"(%, 5-point pooled)",
			"CheckFailed 00:01:05", "StepStarted -00:00:01",
			"00:04:00",
		},
		red: true,
	}, {
		name:   "promoted",
		report: svgPromoted(),
		want: []string{
			"splitter policy backtest: loose on shop/cart",
			"outcome: promoted \u2014 Promoting at 00:01:59 on step 3 (100%)",
			"ChecksPassed 00:01:59", `stroke="` + svgDarkGreen + `"`,
		},
		absent: []string{"no data"},
	}, {
		name:   "empty",
		report: &Report{Window: Window{Policy: "strict", Namespace: "shop", Workload: "checkout"}, Outcome: "undecided"},
		want:   []string{"no data", "outcome: undecided"},
		absent: []string{`class="marker"`},
	}, {
		name:   "escaping",
		report: svgEscaping(),
		want: []string{
			"p&lt;&amp;&#34;&gt; on ns&amp;co/w&lt;script&gt;&#34;x&#34;&lt;/script&gt;",
			"slo&lt;&amp;&gt; blue&lt;1&gt;", "slo&lt;&amp;&gt; green&amp;&#34;2&#34;",
			"policy weight (green&amp;&#34;2&#34;)",
			"Reason&lt;&amp;&gt; 00:01:59",
		},
		absent: []string{"<script>", `p<&">`, "ns&co", "<1>"},
	}, {
		name:   "edge",
		report: svgEdgeCases(),
		want:   []string{"availability a", "<circle"},
		absent: []string{`class="marker"`, "no data", "NaN", "Inf"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := SVG(tc.report)
			svgParse(t, got)
			if again := SVG(tc.report); !bytes.Equal(got, again) {
				t.Error("output differs between two calls")
			}
			s := string(got)
			for _, w := range tc.want {
				if !strings.Contains(s, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(s, a) {
					t.Errorf("output contains %q", a)
				}
			}
			if red := svgMarker.MatchString(s); red != tc.red {
				t.Errorf("red marker: got %v, want %v", red, tc.red)
			}
			if !strings.Contains(s, `viewBox="0 0 960 540"`) {
				t.Error("no 960x540 viewBox")
			}
			if strings.Contains(s, "<script") || strings.Contains(s, "href") || strings.Contains(s, "@import") {
				t.Error("output is not self-contained")
			}
			svgGolden(t, filepath.Join("testdata", tc.name+".svg"), got)
		})
	}
}

// TestSVGDegenerate feeds data no real report holds: it must not panic
// and must still be well-formed.
func TestSVGDegenerate(t *testing.T) {
	nan := math.NaN()
	for name, r := range map[string]*Report{
		"nil":     nil,
		"zero":    {},
		"no maps": {Timeline: []Point{{At: svgStart}, {At: svgStart.Add(time.Second)}}},
		"nan": {Timeline: []Point{{
			At: svgStart, PolicyWeight: nan, RecordedWeight: math.Inf(1),
			Requests: map[splitterv1.Color]float64{splitterv1.Blue: math.Inf(1), splitterv1.Green: 1},
			Bad:      map[string]map[splitterv1.Color]float64{"a": {splitterv1.Blue: nan, splitterv1.Green: math.Inf(1)}},
		}, {At: svgStart.Add(time.Second), PolicyWeight: -5, RecordedWeight: 150}}},
		"unsorted": {CandidateFirst: svgStart, Timeline: []Point{{At: svgStart.Add(time.Minute)}, {At: svgStart}},
			Decided:   &Decision{At: svgStart.Add(30 * time.Second), Phase: splitterv1.PhasePromoting},
			Decisions: []Decision{{At: svgStart.Add(30 * time.Second), Phase: splitterv1.PhaseShifting}}},
		"long": {CandidateFirst: svgStart.Add(-400 * 24 * time.Hour), Timeline: []Point{{At: svgStart}, {At: svgStart.Add(900 * 24 * time.Hour)}}},
	} {
		t.Run(name, func(t *testing.T) {
			got := SVG(r)
			svgParse(t, got)
			if s := string(got); strings.Contains(s, "NaN") || strings.Contains(s, "Inf") {
				t.Errorf("output holds a non-number:\n%s", s)
			}
		})
	}
}

// TestSVGLabels checks that many decisions do not pile up their labels:
// grey ones are dropped, the deciding one is kept.
func TestSVGLabels(t *testing.T) {
	r := svgRolledBack()
	var ds []Decision
	for i := 1; i <= 40; i++ {
		ds = append(ds, svgDecision(10*time.Second, time.Duration(i)*time.Second, splitterv1.PhaseShifting, 1, 10, "ChecksInconclusive", ""))
	}
	r.Decisions = append(ds, *r.Decided)
	s := string(SVG(r))
	if n := strings.Count(s, `class="marker"`); n != 41 {
		t.Errorf("%d markers, want 41", n)
	}
	if n := strings.Count(s, `class="label"`); n != 1 {
		t.Errorf("%d labels, want 1 (the rollback)", n)
	}
	if !strings.Contains(s, "CheckFailed 00:01:05") {
		t.Error("the deciding decision is not labelled")
	}
}

func TestSVGNiceScale(t *testing.T) {
	for _, tc := range []struct {
		max, top, step float64
		dec            int
	}{
		{1, 1, 0.2, 1},
		{20.5, 25, 5, 0},
		{23, 25, 5, 0},
		{100, 100, 20, 0},
		{12, 12.5, 2.5, 1},
		{3.3, 4, 1, 0},
		{0.7, 0.8, 0.2, 1},
		{0.45, 0.5, 0.1, 1},
		{1.1, 1.25, 0.25, 2},
	} {
		top, step, dec := svgNiceScale(tc.max)
		if math.Abs(top-tc.top) > 1e-9 || math.Abs(step-tc.step) > 1e-9 || dec != tc.dec {
			t.Errorf("svgNiceScale(%v) = %v, %v, %d; want %v, %v, %d", tc.max, top, step, dec, tc.top, tc.step, tc.dec)
		}
	}
}

func svgParse(t *testing.T, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
	}
}

func svgGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update to rewrite it)", path)
	}
	if len(got) > 60<<10 {
		t.Errorf("%s is %d bytes, want at most 60 KiB", path, len(got))
	}
}
