package analysis

import (
	"context"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

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
		{"a vanished series adds nothing", []splitterv1.SeriesReading{reading(g, "a", 100, 0), reading(g, "b", 50, 0)},
			[]splitterv1.SeriesReading{reading(g, "a", 120, 0)}, Count{N: 20}, false},
		{"only the bad counter reset", []splitterv1.SeriesReading{reading(g, "a", 100, 50)}, []splitterv1.SeriesReading{reading(g, "a", 110, 5)}, Count{N: 110, X: 5}, false},
	} {
		c, fresh := Growth(tc.prev, tc.now)
		if got := c.Of("availability", g); got != tc.want || fresh != tc.fresh {
			t.Errorf("%s: growth %v fresh %v, want %v fresh %v", tc.name, got, fresh, tc.want, tc.fresh)
		}
	}
}

func sample(v float64, labels ...string) *model.Sample {
	m := model.Metric{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[model.LabelName(labels[i])] = model.LabelValue(labels[i+1])
	}
	return &model.Sample{Metric: m, Value: model.SampleValue(v)}
}

// The counting rule: destination counts plus source-only failures; every
// response classified once (finding 10: code 0 with a listed grpc-status
// was counted twice).
func TestClassifyAvailability(t *testing.T) {
	w := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-green", "pod", "checkout-green-1"}
	with := func(extra ...string) []string { return append(append([]string(nil), w...), extra...) }
	dst := model.Vector{
		sample(1000, with("reporter", "destination", "response_code", "200", "response_flags", "-")...),
		sample(7, with("reporter", "destination", "response_code", "503", "response_flags", "-")...),
		sample(3, with("reporter", "destination", "response_code", "0", "response_flags", "DC")...), // the client left: not bad
		sample(2, with("reporter", "destination", "response_code", "0", "response_flags", "-", "grpc_response_status", "14")...),
		sample(4, with("reporter", "destination", "response_code", "200", "grpc_response_status", "14")...),
		sample(6, with("reporter", "destination", "response_code", "200", "grpc_response_status", "5")...), // NotFound: the client's
	}
	src := model.Vector{sample(5, with("reporter", "source", "response_code", "503", "response_flags", "UH")...)}
	r := ClassifyAvailability(dst, src, []int32{2, 4, 8, 13, 14, 15})
	var total Count
	for _, s := range r[Workload{"shop", "checkout-green"}] {
		total = total.Add(Count{N: s.Requests, X: s.Bad})
	}
	if want := (Count{N: 1027, X: 18}); total != want {
		t.Errorf("green counted %v, want %v (7 5xx + 2 code 0 + 4 grpc 14 + 5 UH at the source)", total, want)
	}
	ids := map[string]bool{}
	for _, s := range r[Workload{"shop", "checkout-green"}] {
		if ids[s.ID] {
			t.Errorf("series id %s twice", s.ID)
		}
		ids[s.ID] = true
	}
	for _, q := range AvailabilityQueries() {
		if !strings.Contains(q, `destination_workload=~".+-(blue|green)"`) || !strings.Contains(q, "pod") {
			t.Errorf("query %s: want the color selector and per-pod series", q)
		}
	}
}

// Finding 6: a missing threshold bucket is an error, never "every request
// was slow".
func TestClassifyLatency(t *testing.T) {
	proxy := []string{"destination_workload_namespace", "shop", "destination_workload", "checkout-green", "reporter", "destination", "pod", "p1"}
	with := func(le string) []string { return append(append([]string(nil), proxy...), "le", le) }
	v := model.Vector{sample(1000, with("+Inf")...), sample(990, with("250.0")...)}
	r, err := ClassifyLatency(v, 250)
	if err != nil {
		t.Fatal(err)
	}
	if s := r[Workload{"shop", "checkout-green"}]; len(s) != 1 || s[0].Requests != 1000 || s[0].Bad != 10 {
		t.Errorf("latency series %+v, want 10 slow of 1000", s)
	}
	_, err = ClassifyLatency(model.Vector{sample(1000, with("+Inf")...), sample(990, with("300")...)}, 250)
	if err == nil || !strings.Contains(err.Error(), `le="250"`) {
		t.Errorf("missing bucket: err %v, want one naming le=250", err)
	}
	if !strings.Contains(LatencyQuery(250), `le=~"250(\\.0+)?|\\+Inf"`) {
		t.Errorf("latency query %s", LatencyQuery(250))
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
		return model.Vector{}, promv1.Warnings{"remote read: store 2 unavailable"}, nil
	}}
	_, err := Evaluator{API: api}.ReadCounters(context.Background(), CounterSpec{SLO: "availability"}, time.Now())
	if err == nil || !strings.Contains(err.Error(), "partial data") {
		t.Errorf("err %v, want partial data", err)
	}
	api.answer = func(string) (model.Value, promv1.Warnings, error) {
		return model.Vector{sample(5, "destination_workload_namespace", "shop", "destination_workload", "checkout-blue", "reporter", "destination", "response_code", "200")}, nil, nil
	}
	r, err := Evaluator{API: api}.ReadCounters(context.Background(), CounterSpec{SLO: "availability"}, time.Now())
	if err != nil || len(r.For("availability", "shop", map[splitterv1.Color]string{splitterv1.Blue: "checkout-blue"})) != 2 {
		t.Errorf("clean read: %v, %v", r, err)
	}
}
