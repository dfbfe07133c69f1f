package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

func TestWeights(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   splitterv1.SplitStatus
		want map[string]int32
	}{
		{"new", splitterv1.SplitStatus{}, map[string]int32{"blue": 100, "green": 0}},
		{"idle on green", splitterv1.SplitStatus{Phase: splitterv1.PhaseIdle, Live: splitterv1.Green, Weight: 100}, map[string]int32{"blue": 0, "green": 100}},
		{"shifting", shifting(), map[string]int32{"blue": 75, "green": 25}},
		{"rolled back", rolledBack(0), map[string]int32{"blue": 100, "green": 0}},
		{"blue candidate", splitterv1.SplitStatus{Phase: splitterv1.PhaseAwaitingApproval, Live: splitterv1.Green, Candidate: splitterv1.Blue, Weight: 50}, map[string]int32{"blue": 50, "green": 50}},
	} {
		if got := Weights(tc.st); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestWindow(t *testing.T) {
	from, to := Window(split("b", "app", shifting()), t0)
	if !from.Equal(t0.Add(-5*time.Minute-30*time.Second)) || !to.Equal(t0) {
		t.Errorf("a release in progress: %s..%s", from, to)
	}
	from, to = Window(split("b", "app", rolledBack(-time.Hour)), t0)
	if !from.Equal(t0.Add(-62*time.Minute-30*time.Second)) || !to.Equal(t0.Add(-time.Hour+30*time.Second)) {
		t.Errorf("the last release: %s..%s", from, to)
	}
}

func TestMarkersAndEventWeights(t *testing.T) {
	s := split("b", "app", rolledBack(0))
	s.Status.Actions = []splitterv1.Action{{Verb: "pause", By: "alice", At: mt(-90 * time.Second)}}
	s.Status.Checks = []splitterv1.CheckResult{{Name: "availability", Verdict: splitterv1.VerdictFail, Value: "0.7", Bound: ">= 0.995", Step: 1, EvaluatedAt: mt(-time.Second)}}
	evs := []Event{
		{Reason: "StepAdvanced", Note: "step 1/2: green gets 20%", At: t0.Add(-100 * time.Second)},
		{Reason: "WatchdogTripped", Note: "availability", At: t0.Add(-time.Second), Warning: true},
		{Reason: "StepAdvanced", Note: "step 1/2: green gets 20%", At: t0.Add(-time.Hour)}, // before the window
	}
	from, to := t0.Add(-3*time.Minute), t0.Add(time.Minute)
	var kinds []string
	for _, m := range Markers(s, evs, from, to) {
		kinds = append(kinds, m.Kind)
	}
	want := []string{"start", "step", "action", "verdict", "fault", "snapback"}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("markers %v, want %v", kinds, want)
	}
	ws := EventWeights(s, evs, from, to)
	var vs []float64
	for _, p := range ws {
		vs = append(vs, p.V)
	}
	// 20 before the window (the last change before it), 0 at the
	// release's start, 20 at its step, 0 at the snap-back, to the end.
	if !reflect.DeepEqual(vs, []float64{20, 0, 20, 0, 0}) || ws[0].T != ms(from) || ws[len(ws)-1].T != ms(to) {
		t.Errorf("weights %+v", ws)
	}
	if EventWeights(split("b", "app", splitterv1.SplitStatus{}), nil, from, to) != nil {
		t.Error("weights without anything that happened")
	}
}

// BuildTimeline against a Prometheus that answers query_range: series
// split by colour, the weight taken from splitter_split_weight, NaN
// points (0/0) left out, a failed query named in Problem.
func TestBuildTimelineFromPrometheus(t *testing.T) {
	var queries []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		q := r.Form.Get("query")
		mu.Lock()
		queries = append(queries, q)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasPrefix(q, "max(splitter_split_weight"):
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1000,"0"],[1010,"20"]]}]}}`)
		case strings.Contains(q, "histogram_quantile"):
			http.Error(w, `{"status":"error","errorType":"execution","error":"boom"}`, http.StatusUnprocessableEntity)
		default:
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"matrix","result":[`+
				`{"metric":{"destination_workload":"app-blue"},"values":[[1000,"0"],[1010,"0.01"]]},`+
				`{"metric":{"destination_workload":"app-green"},"values":[[1000,"NaN"],[1010,"0.3"]]}]}}`)
		}
	}))
	defer srv.Close()
	c, err := promapi.NewClient(promapi.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	s := split("b", "app", shifting())
	tl := BuildTimeline(context.Background(), promv1.NewAPI(c), time.Second, s, nil, t0.Add(-time.Minute), t0)
	if tl.WeightSource != "prometheus" || len(tl.Weight) != 2 || tl.Weight[1] != (Point{T: 1010000, V: 20}) {
		t.Errorf("weight %s %+v", tl.WeightSource, tl.Weight)
	}
	if len(tl.ErrorRate["blue"]) != 2 || len(tl.ErrorRate["green"]) != 1 || tl.ErrorRate["green"][0].V != 0.3 {
		t.Errorf("error rates %+v", tl.ErrorRate)
	}
	if !strings.Contains(tl.Problem, "latencyP99") || len(tl.LatencyP99) != 0 {
		t.Errorf("problem %q, latency %+v", tl.Problem, tl.LatencyP99)
	}
	if len(queries) != 3 || !strings.Contains(tl.Queries["errorRate"], `destination_workload=~"app-blue|app-green"`) || !strings.Contains(tl.Queries["errorRate"], "[4s]") {
		t.Errorf("queries %q", tl.Queries)
	}
}
