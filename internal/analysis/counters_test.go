package analysis

import (
	"context"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

func reading(color splitterv1.Color, series string, n, x int64) splitterv1.SeriesReading {
	return splitterv1.SeriesReading{Color: color, SLO: "availability", Series: series, Requests: n, Bad: x}
}

// Finding 7: growth is taken per series, resets as increase() has them,
// then summed; a series new since the baseline counts from its first
// reading.
func TestGrowthPerSeries(t *testing.T) {
	g := splitterv1.Green
	for _, tc := range []struct {
		name      string
		prev, now []splitterv1.SeriesReading
		want      Count
		fresh     bool
	}{
		{"plain growth", []splitterv1.SeriesReading{reading(g, "a", 100, 1)}, []splitterv1.SeriesReading{reading(g, "a", 250, 3)}, Count{N: 150, X: 2}, false},
		// One pod restarted (1,000 -> 100 requests since), the other grew
		// by 1,000 with 30 errors: summing first gave 1/100.
		{"a restarted pod's counts are kept",
			[]splitterv1.SeriesReading{reading(g, "a", 1000, 0), reading(g, "b", 5000, 10)},
			[]splitterv1.SeriesReading{reading(g, "a", 100, 0), reading(g, "b", 6000, 40)},
			Count{N: 1100, X: 30}, false},
		// A long-lived series missing from the baseline is not a million
		// requests in one step.
		{"a series absent from the baseline counts from its first reading",
			[]splitterv1.SeriesReading{reading(g, "a", 100, 0)},
			[]splitterv1.SeriesReading{reading(g, "a", 200, 0), reading(g, "old", 1005400, 700)},
			Count{N: 100}, true},
		// Issue 18, finding 6: Istio creates a pod's 503 series at its
		// first 503. A new series of a proxy the baseline knew counts
		// from zero; one of an unknown proxy (a new pod) from its first
		// reading.
		{"a known proxy's new series counts from zero",
			[]splitterv1.SeriesReading{reading(g, "p1.200", 100, 0)},
			[]splitterv1.SeriesReading{reading(g, "p1.200", 190, 0), reading(g, "p1.503", 10, 10)},
			Count{N: 100, X: 10}, true},
		{"an unknown proxy's new series counts from its first reading",
			[]splitterv1.SeriesReading{reading(g, "p1.200", 100, 0)},
			[]splitterv1.SeriesReading{reading(g, "p1.200", 190, 0), reading(g, "p2.200", 500, 0), reading(g, "p2.503", 10, 10)},
			Count{N: 90}, true},
		{"a vanished series adds nothing", []splitterv1.SeriesReading{reading(g, "a", 100, 0), reading(g, "b", 50, 0)},
			[]splitterv1.SeriesReading{reading(g, "a", 120, 0)}, Count{N: 20}, false},
		// A review: reads can go backwards a little without a restart
		// (two Prometheus replicas, deduplicated or not, interpolate
		// different samples; a renamed threshold bucket lags its +Inf).
		// Taking the whole counter then invented 2,610 bad of 2,610.
		{"a read that went backwards is no restart", []splitterv1.SeriesReading{reading(g, "a", 2611, 2611)}, []splitterv1.SeriesReading{reading(g, "a", 2610, 2610)}, Count{}, false},
		{"bad requests going backwards alone invent nothing", []splitterv1.SeriesReading{reading(g, "a", 100, 50)}, []splitterv1.SeriesReading{reading(g, "a", 110, 5)}, Count{N: 10}, false},
		{"requests fallen by more than a tenth: a restart", []splitterv1.SeriesReading{reading(g, "a", 25_930_280, 77_000)}, []splitterv1.SeriesReading{reading(g, "a", 1200, 4)}, Count{N: 1200, X: 4}, false},
		// A pod 5 minutes old restarts; 30 s later it has counted 850.
		{"a young pod's restart", []splitterv1.SeriesReading{reading(g, "a", 1000, 2)}, []splitterv1.SeriesReading{reading(g, "a", 850, 1)}, Count{N: 850, X: 1}, false},
	} {
		c, fresh := Growth(tc.prev, tc.now)
		if got := c.Of("availability", g); got != tc.want || fresh != tc.fresh {
			t.Errorf("%s: growth %v fresh %v, want %v fresh %v", tc.name, got, fresh, tc.want, tc.fresh)
		}
	}
}

func metric(labels ...string) model.Metric {
	m := model.Metric{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[model.LabelName(labels[i])] = model.LabelValue(labels[i+1])
	}
	return m
}

// stream is a raw series with one sample at t=0 and one at t=10 s.
func stream(from, to float64, labels ...string) *model.SampleStream {
	return &model.SampleStream{Metric: metric(labels...), Values: []model.SamplePair{{Timestamp: 0, Value: model.SampleValue(from)}, {Timestamp: 10000, Value: model.SampleValue(to)}}}
}

func TestValueAt(t *testing.T) {
	s := []model.SamplePair{{Timestamp: 0, Value: 100}, {Timestamp: 10000, Value: 200}, {Timestamp: 20000, Value: 50}}
	for _, tc := range []struct {
		at   model.Time
		want float64
		ok   bool
	}{
		{-1, 0, false},     // before the series existed
		{0, 100, true},     // on a sample
		{2500, 125, true},  // interpolated
		{15000, 200, true}, // a reset in between: the value before it
		{30000, 50, true},  // after the last sample
	} {
		if v, ok := ValueAt(s, tc.at); v != tc.want || ok != tc.ok {
			t.Errorf("ValueAt(%d) = %v, %v; want %v, %v", tc.at, v, ok, tc.want, tc.ok)
		}
	}
}

// The reviewer's reproduction: both colors fail half their requests in a
// shared outage that starts at t=5 s; green's target was scraped at
// t=10 s (inside it), blue's at t=0 and t=20 s. Read at "now" (each
// series' last sample), green seems to fail alone; read at one instant,
// both carry the same share of it.
func TestReadingsAreAlignedAcrossTargets(t *testing.T) {
	g := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-green", "reporter", "destination", "pod", "g"}
	b := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-blue", "reporter", "destination", "pod", "b"}
	with := func(base []string, code string) []string {
		return append(append([]string(nil), base...), "response_code", code)
	}
	dst := model.Matrix{
		// green: 100 req/s from t=0; half fail from t=5 s: at 10 s, 1,000 requests, 250 bad.
		{Metric: metric(with(g, "200")...), Values: []model.SamplePair{{Timestamp: 0, Value: 0}, {Timestamp: 10000, Value: 750}}},
		{Metric: metric(with(g, "503")...), Values: []model.SamplePair{{Timestamp: 0, Value: 0}, {Timestamp: 10000, Value: 250}}},
		// blue: same traffic, scraped at 0 and 20 s: 2,000 requests, 750 bad.
		{Metric: metric(with(b, "200")...), Values: []model.SamplePair{{Timestamp: 0, Value: 0}, {Timestamp: 20000, Value: 1250}}},
		{Metric: metric(with(b, "503")...), Values: []model.SamplePair{{Timestamp: 0, Value: 0}, {Timestamp: 20000, Value: 750}}},
	}
	r := ClassifyAvailability(dst, nil, 10000, nil)
	var gc, bc Count
	for _, s := range r[Workload{"shop", "checkout-green"}] {
		gc = gc.Add(Count{N: s.Requests, X: s.Bad})
	}
	for _, s := range r[Workload{"shop", "checkout-blue"}] {
		bc = bc.Add(Count{N: s.Requests, X: s.Bad})
	}
	// Read at 10 s, blue is interpolated to 1,000 requests, 375 bad: the
	// same order as green's 250, not zero.
	if gc.N != 1000 || bc.N != 1000 || bc.X < 250 {
		t.Errorf("aligned at 10 s: green %v, blue %v", gc, bc)
	}
	if !strings.Contains(AvailabilityQueries(15 * time.Second)[0], "[1m]") {
		t.Errorf("query %s: want raw samples over four scrapes", AvailabilityQueries(15 * time.Second)[0])
	}
	if got := Align(time.Unix(100, 0), 15*time.Second); got != time.Unix(100, 0).Add(-16500*time.Millisecond) {
		t.Errorf("Align = %v", got)
	}
}

// The counting rule: destination counts plus source-only failures; every
// response classified once (finding 10: code 0 with a listed grpc-status
// was counted twice).
func TestClassifyAvailability(t *testing.T) {
	w := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-green", "pod", "checkout-green-1"}
	with := func(extra ...string) []string { return append(append([]string(nil), w...), extra...) }
	dst := model.Matrix{
		stream(0, 1000, with("reporter", "destination", "response_code", "200", "response_flags", "-")...),
		stream(0, 7, with("reporter", "destination", "response_code", "503", "response_flags", "-")...),
		stream(0, 3, with("reporter", "destination", "response_code", "0", "response_flags", "DC")...), // the client left: not bad
		stream(0, 2, with("reporter", "destination", "response_code", "0", "response_flags", "-", "grpc_response_status", "14")...),
		stream(0, 4, with("reporter", "destination", "response_code", "200", "grpc_response_status", "14")...),
		stream(0, 6, with("reporter", "destination", "response_code", "200", "grpc_response_status", "5")...), // NotFound: the client's
		// the same proxy and class from another source workload: summed into one series
		stream(0, 10, with("reporter", "destination", "response_code", "200", "response_flags", "-", "source_workload", "other")...),
	}
	src := model.Matrix{stream(0, 5, with("reporter", "source", "response_code", "503", "response_flags", "UH")...)}
	r := ClassifyAvailability(dst, src, 10000, []int32{2, 4, 8, 13, 14, 15})
	var total Count
	ids := map[string]bool{}
	for _, s := range r[Workload{"shop", "checkout-green"}] {
		total = total.Add(Count{N: s.Requests, X: s.Bad})
		if ids[s.ID] {
			t.Errorf("series id %s twice", s.ID)
		}
		ids[s.ID] = true
	}
	if want := (Count{N: 1037, X: 18}); total != want {
		t.Errorf("green counted %v, want %v (7 5xx + 2 code 0 + 4 grpc 14 + 5 UH at the source)", total, want)
	}
	if len(ids) != 7 {
		t.Errorf("%d series, want 7 (the two source workloads of one class summed)", len(ids))
	}
	for _, q := range AvailabilityQueries(15 * time.Second) {
		if !strings.Contains(q, `destination_workload=~".+-(blue|green)"`) {
			t.Errorf("query %s: want the color selector", q)
		}
	}
}

// Finding 6: a missing threshold bucket is an error, never "every request
// was slow"; and (issue 18) it is an error for that workload's releases
// only.
func TestClassifyLatency(t *testing.T) {
	proxy := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-green", "reporter", "destination", "pod", "p1"}
	with := func(le string) []string { return append(append([]string(nil), proxy...), "le", le) }
	r, unreadable := ClassifyLatency(model.Matrix{stream(0, 1000, with("+Inf")...), stream(0, 990, with("250.0")...)}, 10000, 250)
	if len(unreadable) != 0 {
		t.Fatal(unreadable)
	}
	if s := r[Workload{"shop", "checkout-green"}]; len(s) != 1 || s[0].Requests != 1000 || s[0].Bad != 10 {
		t.Errorf("latency series %+v, want 10 slow of 1000", s)
	}

	// Another team's workload with its own buckets (no 250): its releases
	// cannot be read, checkout's can.
	other := []string{"destination_workload_namespace", "search", "destination_workload", "search-blue", "reporter", "destination", "pod", "s1"}
	otherWith := func(le string) []string { return append(append([]string(nil), other...), "le", le) }
	r, unreadable = ClassifyLatency(model.Matrix{
		stream(0, 1000, with("+Inf")...), stream(0, 990, with("250")...),
		stream(0, 500, otherWith("+Inf")...), stream(0, 400, otherWith("300")...),
	}, 10000, 250)
	if s := r[Workload{"shop", "checkout-green"}]; len(s) != 1 || s[0].Bad != 10 {
		t.Errorf("checkout's reading %+v, want 10 slow of 1000 although search lacks the bucket", s)
	}
	if _, ok := r[Workload{"search", "search-blue"}]; ok {
		t.Errorf("search-blue was read without its threshold bucket: %+v", r)
	}
	if err := unreadable.For("search", map[splitterv1.Color]string{splitterv1.Blue: "search-blue", splitterv1.Green: "search-green"}); err == nil || !strings.Contains(err.Error(), `search/search-blue has no istio_request_duration_milliseconds_bucket{le="250"}`) {
		t.Errorf("search's release: err %v, want one naming search-blue and le=250", err)
	}
	if err := unreadable.For("shop", map[splitterv1.Color]string{splitterv1.Blue: "checkout-blue", splitterv1.Green: "checkout-green"}); err != nil {
		t.Errorf("checkout's release: %v, want no error", err)
	}
	if q := LatencyQuery(250, 15*time.Second); !strings.Contains(q, `,le=~"(250(\\.0*)?|2\\.50*[eE]\\+?0*2)|\\+Inf"}[1m]`) {
		t.Errorf("latency query %s", q)
	}
}

// A Prometheus 2 -> 3 upgrade renames the threshold bucket (250 -> 250.0)
// while +Inf keeps its name. Read at an instant after the old name's last
// sample and before the new one's first, +Inf is interpolated and the old
// bucket stands still: every request since would read as slow (a review:
// 1,885 of 3,480). The label set is unreadable at that instant instead.
func TestClassifyLatencyRenamedBucket(t *testing.T) {
	proxy := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-blue", "reporter", "destination", "pod", "p1"}
	with := func(le string) model.Metric { return metric(append(append([]string(nil), proxy...), "le", le)...) }
	samples := func(from, to, step model.Time, v0, rate float64) []model.SamplePair {
		var out []model.SamplePair
		for ts := from; ts <= to; ts += step {
			out = append(out, model.SamplePair{Timestamp: ts, Value: model.SampleValue(v0 + rate*float64(ts-from)/1000)})
		}
		return out
	}
	m := model.Matrix{
		{Metric: with("+Inf"), Values: samples(60_000, 135_000, 15_000, 1000, 80)},
		{Metric: with("250"), Values: samples(60_000, 90_000, 15_000, 997, 79.8)},      // the old name, last scraped at 90 s
		{Metric: with("250.0"), Values: samples(120_000, 135_000, 15_000, 5785, 79.8)}, // the new one, from 120 s
	}
	_, unreadable := ClassifyLatency(m, 113_500, 250)
	if err := unreadable.For("shop", map[splitterv1.Color]string{splitterv1.Blue: "checkout-blue"}); err == nil || !strings.Contains(err.Error(), "stopped while its +Inf bucket goes on") {
		t.Errorf("read between the two names: err %v, want the label set unreadable", err)
	}
	r, unreadable := ClassifyLatency(m, 125_000, 250)
	if len(unreadable) != 0 {
		t.Fatalf("read once the new name has a sample: %v", unreadable)
	}
	if s := r[Workload{"shop", "checkout-blue"}]; len(s) != 1 || s[0].Bad > 0.5*s[0].Requests/100 {
		t.Errorf("read on the new name: %+v, want a few slow", s)
	}
}

// Issue 18, finding 1: Istio exports one histogram per response code,
// caller, protocol... of a proxy. Each +Inf bucket is paired with the
// threshold bucket of its own label set, then summed per proxy; the
// review's cases read 13 of 1,010 and 1,003 of 2,000 before.
func TestClassifyLatencyPairsEachLabelSet(t *testing.T) {
	proxy := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-green", "reporter", "destination", "pod", "p1", "instance", "10.0.0.1:15020"}
	series := func(inf, fast float64, extra ...string) model.Matrix {
		base := append(append([]string(nil), proxy...), extra...)
		return model.Matrix{
			stream(0, inf, append(append([]string(nil), base...), "le", "+Inf")...),
			stream(0, fast, append(append([]string(nil), base...), "le", "250")...),
		}
	}
	for _, tc := range []struct {
		name       string
		m          model.Matrix
		wantN      float64
		wantSlow   float64
		wantSeries int
	}{
		{"per response code", append(series(1000, 997, "response_code", "200"), series(10, 10, "response_code", "503")...), 1010, 3, 1},
		{"503s first", append(series(10, 10, "response_code", "503"), series(1000, 997, "response_code", "200")...), 1010, 3, 1},
		{"two callers", append(series(1000, 997, "source_workload", "web"), series(1000, 997, "source_workload", "batch")...), 2000, 6, 1},
		{"a caller's series born later: no +Inf read yet", append(series(1000, 997, "source_workload", "web"), model.Matrix{
			stream(0, 5, append(append([]string(nil), proxy...), "source_workload", "batch", "le", "250")...)}...), 1000, 3, 1},
		// Two jobs scraping one proxy: each pairs with its own bucket. The
		// double count is the scrape configuration's (docs: the contract).
		{"one proxy, two jobs", append(series(1000, 997, "job", "a"), series(1000, 997, "job", "b")...), 2000, 6, 1},
		{"two pods", append(series(1000, 997, "response_code", "200"), model.Matrix{
			stream(0, 500, "destination_workload_namespace", "shop", "destination_workload", "checkout-green", "reporter", "destination", "pod", "p2", "le", "+Inf"),
			stream(0, 400, "destination_workload_namespace", "shop", "destination_workload", "checkout-green", "reporter", "destination", "pod", "p2", "le", "250"),
		}...), 1500, 103, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, unreadable := ClassifyLatency(tc.m, 10000, 250)
			if len(unreadable) != 0 {
				t.Fatal(unreadable)
			}
			s := r[Workload{"shop", "checkout-green"}]
			var n, slow float64
			for _, x := range s {
				n += x.Requests
				slow += x.Bad
			}
			if n != tc.wantN || slow != tc.wantSlow || len(s) != tc.wantSeries {
				t.Errorf("read %v slow of %v in %d series, want %v of %v in %d", slow, n, len(s), tc.wantSlow, tc.wantN, tc.wantSeries)
			}
		})
	}
}

// Prometheus 3 rewrites a classic histogram's `le` on ingestion (250 is
// stored as 250.0, 1800000 as 1.8e+06); Prometheus 2 keeps the target's
// spelling. The threshold's bucket is found by value under either, and
// the query's matcher takes every spelling of the value and no other
// bucket's.
func TestLatencyBucketMatchedByValue(t *testing.T) {
	proxy := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-green", "reporter", "destination", "pod", "p1"}
	with := func(le string) []string { return append(append([]string(nil), proxy...), "le", le) }
	// sampled is a series with samples from t=0 to t=last (ms).
	sampled := func(last model.Time, v float64, le string) *model.SampleStream {
		return &model.SampleStream{Metric: metric(with(le)...), Values: []model.SamplePair{{Timestamp: 0, Value: model.SampleValue(v)}, {Timestamp: last, Value: model.SampleValue(v)}}}
	}
	for _, tc := range []struct {
		name      string
		threshold float64
		buckets   model.Matrix // besides +Inf at 1000
		wantBad   float64
	}{
		{"Prometheus 2, integer", 250, model.Matrix{stream(0, 990, with("250")...), stream(0, 995, with("500")...)}, 10},
		{"Prometheus 3, integer", 250, model.Matrix{stream(0, 990, with("250.0")...), stream(0, 995, with("500.0")...)}, 10},
		{"Prometheus 3, exponent", 1800000, model.Matrix{stream(0, 999, with("1.8e+06")...), stream(0, 990, with("600000.0")...)}, 1},
		{"Prometheus 2, Go's %g", 3600000, model.Matrix{stream(0, 999, with("1.8e+06")...), stream(0, 1000, with("3.6e+06")...)}, 0},
		{"fraction", 0.5, model.Matrix{stream(0, 100, with("0.5")...), stream(0, 200, with("1.0")...)}, 900},
		{"uppercase exponent", 250, model.Matrix{stream(0, 990, with("2.5E2")...)}, 10},
		// Upgraded from 2 to 3 within the window: the series still
		// scraped stands, whichever order they come in.
		{"two spellings of one bucket", 250, model.Matrix{sampled(5000, 900, "250"), sampled(10000, 990, "250.0")}, 10},
		{"two spellings, newer first", 250, model.Matrix{sampled(10000, 990, "250.0"), sampled(5000, 900, "250")}, 10},
		{"an unparsable le is no bucket", 250, model.Matrix{stream(0, 990, with("250")...), stream(0, 0, with("fast")...)}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := append(model.Matrix{stream(0, 1000, with("+Inf")...)}, tc.buckets...)
			r, unreadable := ClassifyLatency(m, 10000, tc.threshold)
			if len(unreadable) != 0 {
				t.Fatal(unreadable)
			}
			if s := r[Workload{"shop", "checkout-green"}]; len(s) != 1 || s[0].Requests != 1000 || s[0].Bad != tc.wantBad {
				t.Errorf("latency series %+v, want %v slow of 1000", s, tc.wantBad)
			}
		})
	}

	// The matcher, anchored as Prometheus anchors it, against the
	// spellings of Istio's buckets: Prometheus 3's own normaliser, Go's
	// %g (Prometheus 2 storing a Go or Envoy target's), the decimal form.
	spell := func(b float64) []string {
		return []string{labels.FormatOpenMetricsFloat(b), strconv.FormatFloat(b, 'g', -1, 64), strconv.FormatFloat(b, 'f', -1, 64), strconv.FormatFloat(b, 'e', -1, 64)}
	}
	for _, threshold := range IstioBuckets {
		re := regexp.MustCompile(`^(?:` + LeRegexp(threshold) + `)$`)
		for _, b := range IstioBuckets {
			for _, le := range spell(b) {
				if got, want := re.MatchString(le), b == threshold; got != want {
					t.Errorf("LeRegexp(%v) = %s matches le=%q: %v, want %v", threshold, re, le, got, want)
				}
			}
		}
	}
}

// fakeAPI answers instant queries from a table; other methods panic.
type fakeAPI struct {
	promv1.API
	answer   func(q string) (model.Value, promv1.Warnings, error)
	queries  []string
	lastTime time.Time
}

func (f *fakeAPI) Query(_ context.Context, q string, ts time.Time, _ ...promv1.Option) (model.Value, promv1.Warnings, promv1.Infos, error) {
	f.queries = append(f.queries, q)
	f.lastTime = ts
	v, w, err := f.answer(q)
	return v, w, nil, err
}

// Finding 7: warnings mean partial data: the read is an error, never a
// count.
func TestReadCountersRefusesPartialData(t *testing.T) {
	api := &fakeAPI{answer: func(string) (model.Value, promv1.Warnings, error) {
		return model.Matrix{}, promv1.Warnings{"remote read: store 2 unavailable"}, nil
	}}
	_, _, err := Evaluator{API: api}.ReadCounters(context.Background(), CounterSpec{SLO: "availability"}, time.Now(), 15*time.Second)
	if err == nil || !strings.Contains(err.Error(), "partial data") {
		t.Errorf("err %v, want partial data", err)
	}
	now := time.Unix(1000, 0)
	api.answer = func(q string) (model.Value, promv1.Warnings, error) {
		if strings.Contains(q, `reporter="source"`) {
			return model.Matrix{}, nil, nil
		}
		return model.Matrix{{Metric: metric("destination_workload_namespace", "shop", "destination_workload", "checkout-blue", "reporter", "destination", "response_code", "200"),
			Values: []model.SamplePair{{Timestamp: model.TimeFromUnix(970), Value: 100}, {Timestamp: model.TimeFromUnix(990), Value: 300}}}}, nil, nil
	}
	r, _, err := Evaluator{API: api}.ReadCounters(context.Background(), CounterSpec{SLO: "availability"}, now, 15*time.Second)
	got := r.For("availability", "shop", map[splitterv1.Color]string{splitterv1.Blue: "checkout-blue"}, nil)
	// Read at 1000 - 16.5 s = 983.5 s: 100 + 13.5/20 x 200 = 235.
	if err != nil || len(got) != 1 || got[0].Requests != 235 || !api.lastTime.Equal(now) {
		t.Errorf("clean read: %+v, %v", got, err)
	}
}

// A review's case: a day-old pod's sidecar restarts at 100 s and only one
// of its label sets comes back at once. The others still sit in the range
// selector's answer with their old values; summed with the restarted one
// they made the restart's chunk count 864 requests again (and lose the
// 2,000 made since). A series gone from its proxy's later scrape is left
// out of the sum, so the chunk is what the restarted set counted.
func TestRestartWithLabelSetsLeftBehind(t *testing.T) {
	pod := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-blue", "reporter", "destination", "pod", "p1", "instance", "10.0.0.1:15020"}
	series := func(caller, code string, pairs ...model.SamplePair) *model.SampleStream {
		return &model.SampleStream{Metric: metric(append(append([]string(nil), pod...), "source_workload", caller, "response_code", code)...), Values: pairs}
	}
	sp := func(ts model.Time, v float64) model.SamplePair {
		return model.SamplePair{Timestamp: ts, Value: model.SampleValue(v)}
	}
	// Scrapes every 15 s at 45, 60, 75, 90 (before the restart), 105 and 120 (after).
	m := model.Matrix{
		series("frontend", "200", sp(45_000, 8_640_000), sp(60_000, 8_641_500), sp(75_000, 8_643_000), sp(90_000, 8_644_500), sp(105_000, 500), sp(120_000, 2_000)),
		series("batch", "200", sp(45_000, 864), sp(60_000, 864), sp(75_000, 864), sp(90_000, 864)),                // not used since the restart
		series("frontend", "503", sp(45_000, 25_920), sp(60_000, 25_920), sp(75_000, 25_920), sp(90_000, 25_920)), // likewise
	}
	read := func(at model.Time) []splitterv1.SeriesReading {
		return ClassifyAvailability(m, nil, at, nil).For("availability", "shop", map[splitterv1.Color]string{splitterv1.Blue: "checkout-blue"}, nil)
	}
	before, after := read(80_000), read(110_000)
	if len(after) != 1 {
		t.Fatalf("after the restart %d series read, want only the one the restarted proxy still exports: %+v", len(after), after)
	}
	c, _ := Growth(before, after)
	// 500 + (2,000 - 500) x 5/15 = 1,000 requests since the restart.
	if got := c.Of("availability", splitterv1.Blue); got.N != 1000 || got.X != 0 {
		t.Errorf("the restart's chunk: %v, want 1000 requests, 0 bad", got)
	}
}

// Brackets: each series' last two samples, summed over the series of one
// proxy scraped together (a label set born in the last scrape counts zero
// at the one before), none across a reset or samples taken apart.
func TestBrackets(t *testing.T) {
	w := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-green", "pod", "checkout-green-1", "reporter", "destination", "response_flags", "-"}
	with := func(extra ...string) []string { return append(append([]string(nil), w...), extra...) }
	ok := stream(100, 1000, with("response_code", "200")...)
	bad := stream(1, 7, with("response_code", "503")...)
	born := &model.SampleStream{Metric: metric(with("response_code", "200", "source_workload", "new")...), Values: []model.SamplePair{{Timestamp: 10000, Value: 4}}}
	sum := func(at model.Time) splitterv1.Bracket {
		var got splitterv1.Bracket
		for _, s := range ClassifyAvailability(model.Matrix{ok, bad, born}, nil, at, nil)[Workload{"shop", "checkout-green"}] {
			if got.LastAt == 0 {
				got = s.Bracket
				continue
			}
			got = addBrackets(got, s.Bracket)
			got.Partial = got.Partial || s.Bracket.Partial
		}
		return got
	}
	// Read at 10 s, the born label set is summed into its class's series.
	if got, want := sum(10000), (splitterv1.Bracket{PrevAt: 0, LastAt: 10000, PrevRequests: 101, PrevBad: 1, LastRequests: 1011, LastBad: 7, BornAfter: NoSample}); !reflect.DeepEqual(got, want) {
		t.Errorf("brackets summed to %+v, want %+v", got, want)
	}
	// Read at 5 s, before its first sample: read as zero (its proxy was
	// read then), its samples in the bracket.
	if got, want := sum(5000), (splitterv1.Bracket{PrevAt: 0, LastAt: 10000, PrevRequests: 101, PrevBad: 1, LastRequests: 1011, LastBad: 7, BornAfter: NoSample}); !reflect.DeepEqual(got, want) {
		t.Errorf("brackets summed to %+v, want %+v", got, want)
	}
	var zero bool
	for _, s := range ClassifyAvailability(model.Matrix{ok, bad, born}, nil, 5000, nil)[Workload{"shop", "checkout-green"}] {
		zero = zero || s.Requests == 0
	}
	if zero {
		t.Errorf("the born label set changed the reading's counts at 5 s")
	}
	// A new pod's series (a proxy not read at 5 s) is left out: partial.
	pod := &model.SampleStream{Metric: metric(append(with("response_code", "200"), "pod", "checkout-green-2")...), Values: []model.SamplePair{{Timestamp: 10000, Value: 9}}}
	for _, s := range ClassifyAvailability(model.Matrix{ok, bad, pod}, nil, 5000, nil)[Workload{"shop", "checkout-green"}] {
		if !s.Bracket.Partial {
			t.Errorf("series %s: a new pod left out, bracket not partial", s.ID)
		}
	}
	reset := []model.SamplePair{{Timestamp: 0, Value: 50}, {Timestamp: 10000, Value: 3}}
	if b := BracketOf(reset, false); b.LastAt != 0 {
		t.Errorf("a reset between the last two samples: bracket %+v, want none", b)
	}
	apart := splitterv1.Bracket{PrevAt: 0, LastAt: 10000}
	if b := addBrackets(apart, splitterv1.Bracket{PrevAt: 0, LastAt: 9000}); b.LastAt != 0 {
		t.Errorf("samples taken at different instants summed: %+v, want no bracket", b)
	}
	// Latency: a label set born after the instant (the proxy's first 503)
	// on a proxy read then adds nothing to the reading and its samples to
	// the proxy's bracket.
	lat := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-green", "reporter", "destination", "pod", "p1"}
	le := func(code, v string) []string {
		return append(append([]string(nil), lat...), "response_code", code, "le", v)
	}
	late := func(v float64, labels ...string) *model.SampleStream {
		return &model.SampleStream{Metric: metric(labels...), Values: []model.SamplePair{{Timestamp: 10000, Value: model.SampleValue(v)}}}
	}
	lr, unreadable := ClassifyLatency(model.Matrix{stream(0, 1000, le("200", "+Inf")...), stream(0, 990, le("200", "250")...),
		late(40, le("503", "+Inf")...), late(10, le("503", "250")...)}, 5000, 250)
	if len(unreadable) != 0 {
		t.Fatal(unreadable)
	}
	if s := lr[Workload{"shop", "checkout-green"}]; len(s) != 1 || s[0].Requests != 500 || s[0].Bad != 5 ||
		!reflect.DeepEqual(s[0].Bracket, splitterv1.Bracket{PrevAt: 0, LastAt: 10000, LastRequests: 1040, LastBad: 40, BornAfter: NoSample}) {
		t.Errorf("latency reading %+v, want 5 slow of 500 and a bracket of 40 slow of 1,040 at 10 s", s)
	}
	inf := []model.SamplePair{{Timestamp: 0, Value: 100}, {Timestamp: 10000, Value: 300}}
	fast := []model.SamplePair{{Timestamp: 0, Value: 90}, {Timestamp: 10000, Value: 280}}
	if b := latencyBracket(inf, fast); !reflect.DeepEqual(b, splitterv1.Bracket{PrevAt: 0, LastAt: 10000, PrevRequests: 100, PrevBad: 10, LastRequests: 300, LastBad: 20}) {
		t.Errorf("latency bracket %+v", b)
	}
}

// A source-reporter series is the calling pod's, born at its first
// failure to a color. A caller that already failed to green is a proxy
// the checkpoint knows when its first failure to blue appears: that
// series counts from zero, as green's would (a review found blue's
// skipped, so an incident both colors shared counted for green only).
func TestCallerKnownAcrossColors(t *testing.T) {
	src := func(w string, v float64) *model.SampleStream {
		return &model.SampleStream{Metric: metric("destination_workload_namespace", "shop", "destination_workload", w, "reporter", "source",
			"pod", "frontend-1", "instance", "10.0.0.7:15090", "source_workload", "frontend", "response_code", "503", "response_flags", "UF"),
			Values: []model.SamplePair{{Timestamp: 0, Value: model.SampleValue(v)}, {Timestamp: 10000, Value: model.SampleValue(v)}}}
	}
	dst := func(w string, n float64) *model.SampleStream {
		return &model.SampleStream{Metric: metric("destination_workload_namespace", "shop", "destination_workload", w, "reporter", "destination",
			"pod", w+"-1", "instance", w+"-1", "response_code", "200", "response_flags", "-"),
			Values: []model.SamplePair{{Timestamp: 0, Value: model.SampleValue(n)}, {Timestamp: 10000, Value: model.SampleValue(n)}}}
	}
	colors := map[splitterv1.Color]string{splitterv1.Green: "checkout-green", splitterv1.Blue: "checkout-blue"}
	read := func(src ...*model.SampleStream) []splitterv1.SeriesReading {
		return ClassifyAvailability(model.Matrix{dst("checkout-green", 1000), dst("checkout-blue", 4000)}, model.Matrix(src), 5000, nil).For("availability", "shop", colors, nil)
	}
	prev := read(src("checkout-green", 3))
	now := read(src("checkout-green", 13), src("checkout-blue", 40))
	chunk, _ := Growth(prev, now)
	if g, b := chunk.Of("availability", splitterv1.Green), chunk.Of("availability", splitterv1.Blue); g.X != 10 || b.X != 40 {
		t.Errorf("the caller's failures grew green by %v and blue by %v, want 10 and 40 (blue's first series from zero)", g.X, b.X)
	}
}

// A color's evidence leaves out the pods known to run another revision
// of the color: a pod of its previous revision still reached (stale
// endpoints, a rolling update's old pods) is not the release's, whatever
// it serves. Everything else counts: a source series (no pod reached), a
// pod of a ReplicaSet not known, a name that could be either.
func TestEvidenceOfTheRevisionsPods(t *testing.T) {
	series := func(reporter, w, pod, code string, n float64) *model.SampleStream {
		return &model.SampleStream{Metric: metric("destination_workload_namespace", "shop", "destination_workload", w, "reporter", reporter,
			"pod", pod, "instance", pod+":15020", "response_code", code, "response_flags", "-"),
			Values: []model.SamplePair{{Timestamp: 0, Value: 0}, {Timestamp: 10000, Value: model.SampleValue(n)}}}
	}
	dst := model.Matrix{
		series("destination", "checkout-green", "checkout-green-5c9d7b-x7k2p", "200", 1000),
		series("destination", "checkout-green", "checkout-green-5c9d7b-q4w9z", "503", 2),
		series("destination", "checkout-green", "checkout-green-6f4a1c-m3n8b", "503", 400), // the previous revision's pod
		series("destination", "checkout-green", "checkout-green-6f4a1c-m3n8b", "200", 600),
		series("destination", "checkout-blue", "checkout-blue-7f6b8-a1b2c", "200", 4000),
		series("destination", "checkout-blue", "checkout-blue-7f6b8-a1b2c", "503", 4),
	}
	src := model.Matrix{
		{Metric: metric("destination_workload_namespace", "shop", "destination_workload", "checkout-green", "reporter", "source",
			"pod", "frontend-1", "instance", "10.0.0.7:15090", "response_code", "503", "response_flags", "UF"),
			Values: []model.SamplePair{{Timestamp: 0, Value: 0}, {Timestamp: 10000, Value: 3}}},
	}
	colors := map[splitterv1.Color]string{splitterv1.Green: "checkout-green", splitterv1.Blue: "checkout-blue"}
	count := func(rs Revisions) map[splitterv1.Color][2]int64 {
		out := map[splitterv1.Color][2]int64{}
		for _, r := range ClassifyAvailability(dst, src, 10000, nil).For("availability", "shop", colors, rs) {
			out[r.Color] = [2]int64{out[r.Color][0] + r.Requests, out[r.Color][1] + r.Bad}
		}
		return out
	}
	all := map[splitterv1.Color][2]int64{splitterv1.Green: {2005, 405}, splitterv1.Blue: {4004, 4}}
	for _, tc := range []struct {
		name string
		rs   Revisions
		want map[splitterv1.Color][2]int64
	}{
		{"ReplicaSets not known: every pod", nil, all},
		{"the previous revision's pod left out; failures before a pod counted", Revisions{
			splitterv1.Green: {Own: []string{"checkout-green-5c9d7b"}, Other: []string{"checkout-green-6f4a1c"}},
			splitterv1.Blue:  {Own: []string{"checkout-blue-7f6b8"}},
		}, map[splitterv1.Color][2]int64{splitterv1.Green: {1005, 5}, splitterv1.Blue: {4004, 4}}},
		{"the release's own ReplicaSet not known yet: only the other revision's pods go", Revisions{
			splitterv1.Green: {Other: []string{"checkout-green-6f4a1c"}},
		}, map[splitterv1.Color][2]int64{splitterv1.Green: {1005, 5}, splitterv1.Blue: {4004, 4}}},
		{"a ReplicaSet whose name only starts like a pod's prefix", Revisions{
			splitterv1.Green: {Own: []string{"checkout-green-5c9d7b"}, Other: []string{"checkout-green-6f4a"}},
		}, all},
		{"a pod label that names no pod of either: counted", Revisions{
			splitterv1.Green: {Own: []string{"checkout-green-0000"}, Other: []string{"checkout-green-1111"}},
		}, all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := count(tc.rs); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("counted %v, want %v", got, tc.want)
			}
		})
	}
}

// The API server cuts a generateName longer than 58 characters before
// adding its 5 random ones: a long workload's pods have no "-" after
// their ReplicaSet's name (a review: every pod of such a workload was
// dropped), and two ReplicaSets that share the first 57 characters share
// their pods' prefix, so such a pod counts.
func TestPodOfLongNames(t *testing.T) {
	long := "payments-settlement-reconciliation-worker-green" // 47 characters
	own, other := long+"-5d8f9c7b64", long+"-7b6c5d4f3a"      // 58 characters each
	pod := func(rs string) string { return (rs + "-")[:min(58, len(rs)+1)] + "xfz57" }
	short := ReplicaSets{Own: []string{"web-green-5d8f9"}, Other: []string{"web-green-7b6c5"}}
	for _, tc := range []struct {
		name string
		rs   ReplicaSets
		pod  string
		want bool
	}{
		{"short name, own", short, "web-green-5d8f9-xfz57", true},
		{"short name, other", short, "web-green-7b6c5-xfz57", false},
		{"long name, own", ReplicaSets{Own: []string{own}, Other: []string{other}}, pod(own), true},
		{"long name, other", ReplicaSets{Own: []string{own}, Other: []string{other}}, pod(other), false},
		// Longer names (a 50-character workload): the hashes are cut too.
		{"a prefix both share: counted", ReplicaSets{Own: []string{own + "ab"}, Other: []string{own + "cd"}}, pod(own + "ab"), true},
	} {
		got := Revisions{splitterv1.Green: tc.rs}.Counts(splitterv1.Green, tc.pod)
		if got != tc.want {
			t.Errorf("%s: pod %s counts %v, want %v", tc.name, tc.pod, got, tc.want)
		}
	}
	if p := pod(own); len(p) != 63 || strings.Contains(p[len(own):], "-") {
		t.Fatalf("the test's own pod name %q is not what the API server makes", p)
	}
}
