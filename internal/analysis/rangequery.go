package analysis

import (
	"strconv"
	"strings"
	"time"
)

// Range queries over one release, for a chart (the dashboard's timeline):
// each color's error rate and p99 latency, by the counting rule of
// ReadCounters (see counters.go), so that the chart shows what the
// controller counted. Each result has one series per color Deployment,
// labelled destination_workload. Every name is escaped (WorkloadSelector).

// RateWindow is the rate() window of a chart with points step apart:
// enough scrapes for a rate, and no gaps between points.
func RateWindow(scrape, step time.Duration) time.Duration {
	if scrape <= 0 {
		scrape = 15 * time.Second
	}
	return max(4*scrape, step, 2*time.Second).Round(time.Second)
}

// ErrorRateRangeQuery is each color's share of bad requests: 5xx, or no
// response (code 0) unless the client went away (DC), or a grpc-status in
// grpcErrorCodes on a response that is neither; plus the requests the
// source proxies saw fail before reaching any pod (SourceOnlyFlags), which
// count as requests too. The three kinds of bad series are disjoint (their
// labels differ), so `or` is their union; a color without bad requests
// has a rate of 0, not no point.
func ErrorRateRangeQuery(namespace, workload string, grpcErrorCodes []int32, w time.Duration) string {
	sel := WorkloadSelector(namespace, workload+"-blue", workload+"-green")
	r := "[" + FormatWindow(w) + "]"
	dst := `istio_requests_total{reporter="destination",` + sel
	src := `istio_requests_total{reporter="source",` + sel + `,response_flags=~".*(` + strings.Join(SourceOnlyFlags, "|") + `).*"}`
	bad := []string{
		`rate(` + dst + `,response_code=~"5.."}` + r + `)`,
		`rate(` + dst + `,response_code="0",response_flags!~".*DC.*"}` + r + `)`,
	}
	if len(grpcErrorCodes) > 0 {
		codes := make([]string, len(grpcErrorCodes))
		for i, c := range grpcErrorCodes {
			codes[i] = strconv.Itoa(int(c))
		}
		bad = append(bad, `rate(`+dst+`,response_code!~"5..|0",grpc_response_status=~"`+strings.Join(codes, "|")+`"}`+r+`)`)
	}
	bad = append(bad, `rate(`+src+r+`)`)
	requests := `sum by (destination_workload) (rate(` + dst + `}` + r + `) or rate(` + src + r + `))`
	return `(sum by (destination_workload) (` + strings.Join(bad, " or ") + `) or 0 * ` + requests + `) / ` + requests
}

// LatencyP99RangeQuery is each color's p99 latency in milliseconds, from
// its destination proxies' histograms.
func LatencyP99RangeQuery(namespace, workload string, w time.Duration) string {
	sel := WorkloadSelector(namespace, workload+"-blue", workload+"-green")
	return `histogram_quantile(0.99, sum by (destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination",` +
		sel + `}[` + FormatWindow(w) + `])))`
}

// WeightRangeQuery is the weight the controller wants for one color of a
// Split (splitter_split_weight), as the controller's /metrics exports it.
func WeightRangeQuery(namespace, split, color string) string {
	return `max(splitter_split_weight{namespace="` + escapeLiteral(namespace) + `",split="` + escapeLiteral(split) + `",color="` + escapeLiteral(color) + `"})`
}
