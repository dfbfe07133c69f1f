package analysis

import (
	"strings"
	"testing"
	"time"
)

func TestRateWindow(t *testing.T) {
	for _, tc := range []struct {
		scrape, step, want time.Duration
	}{
		{time.Second, time.Second, 4 * time.Second},
		{15 * time.Second, 5 * time.Second, time.Minute},
		{time.Second, 30 * time.Second, 30 * time.Second},
		{0, 0, time.Minute},
		{100 * time.Millisecond, 0, 2 * time.Second},
	} {
		if got := RateWindow(tc.scrape, tc.step); got != tc.want {
			t.Errorf("RateWindow(%s, %s) = %s, want %s", tc.scrape, tc.step, got, tc.want)
		}
	}
}

// The range queries parse, and select what the counting rule counts:
// destination series of the two colors, 5xx, code 0 without DC, the
// grpc codes on other responses, and the source-only failures.
func TestRangeQueriesCountingRule(t *testing.T) {
	q := ErrorRateRangeQuery("ns", "app", []int32{14, 4}, time.Minute)
	_, leaves := shape(t, q)
	var got []string
	for _, l := range leaves {
		if !strings.HasPrefix(l.Node, "matcher destination_workload") && l.Node != "matcher __name__=" {
			got = append(got, l.Node+" "+l.Value)
		}
	}
	want := []string{
		"matcher reporter= destination", "matcher response_code=~ 5..",
		"matcher reporter= destination", "matcher response_code= 0", "matcher response_flags!~ .*DC.*",
		"matcher reporter= destination", "matcher response_code!~ 5..|0", "matcher grpc_response_status=~ 14|4",
		"matcher reporter= source", "matcher response_flags=~ .*(UH|UF|UO|NR).*",
		// requests, twice (0 * requests for the colors without errors, and the divisor)
		"matcher reporter= destination",
		"matcher reporter= source", "matcher response_flags=~ .*(UH|UF|UO|NR).*",
		"matcher reporter= destination",
		"matcher reporter= source", "matcher response_flags=~ .*(UH|UF|UO|NR).*",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("matchers:\n%s\nwant:\n%s\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), q)
	}
	if !strings.Contains(ErrorRateRangeQuery("ns", "app", nil, time.Minute), "[1m]") || strings.Contains(ErrorRateRangeQuery("ns", "app", nil, time.Minute), "grpc") {
		t.Errorf("without grpc codes: %s", ErrorRateRangeQuery("ns", "app", nil, time.Minute))
	}
	if _, err := promql.ParseExpr(LatencyP99RangeQuery("ns", "app", time.Minute)); err != nil {
		t.Error(err)
	}
}

// Hostile names stay inside their string literals: the query still
// parses and names them as one value each.
func TestRangeQueriesEscape(t *testing.T) {
	ns, w := `n"s\`, `a|p.p"}or vector(1)`
	for _, q := range []string{
		ErrorRateRangeQuery(ns, w, []int32{2}, 30*time.Second),
		LatencyP99RangeQuery(ns, w, 30*time.Second),
		WeightRangeQuery(ns, w, "green"),
	} {
		if _, err := promql.ParseExpr(q); err != nil {
			t.Errorf("does not parse: %v\n%s", err, q)
		}
	}
	_, leaves := shape(t, WeightRangeQuery(ns, w, "green"))
	if leaves[0].Value != ns || leaves[1].Value != w {
		t.Errorf("matchers %+v, want the names as they are", leaves)
	}
	_, leaves = shape(t, LatencyP99RangeQuery(ns, w, 30*time.Second))
	for _, l := range leaves {
		if l.Node == "matcher destination_workload=~" && (!l.m.Matches(w+"-blue") || l.m.Matches("ap-blue") || !l.m.Matches(w+"-green")) {
			t.Errorf("workload matcher %q does not match exactly the two colors", l.Value)
		}
	}
}
