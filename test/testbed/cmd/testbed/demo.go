package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"splitter.dev/splitter/test/testbed"
)

const demoNamespace = "shop"

// runDemo applies the samples and the hand-written blue-green objects, then
// prints the traffic split Prometheus sees. With DEMO_ONCE=1 it prints one
// settled reading and exits non-zero unless the split matches the weights.
func runDemo(ctx context.Context, tb *testbed.TestBed) error {
	samples, err := filepath.Glob("config/samples/*.yaml")
	if err != nil || len(samples) == 0 {
		return fmt.Errorf("no samples in config/samples (run from the repository root)")
	}
	files := append(samples, "test/testbed/demo/bluegreen.yaml")
	if err := testbed.ApplyFiles(ctx, tb.Client, demoNamespace, files...); err != nil {
		return err
	}
	fmt.Printf("demo: applied %s\n", strings.Join(files, ", "))
	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = testbed.WaitDeploymentsReady(readyCtx, tb.Client, demoNamespace, "checkout-blue", "checkout-green")
	cancel()
	if err != nil {
		return err
	}
	fmt.Println("demo: checkout-blue and checkout-green Ready; VirtualService checkout routes 90/10")
	fmt.Printf("demo: try  KUBECONFIG=%s kubectl -n %s get deploy,pods,virtualservices\n", tb.Kubeconfig, demoNamespace)
	fmt.Printf("demo: and  curl -s '%s/api/v1/query' --data-urlencode 'query=sum by (destination_workload) (rate(istio_requests_total{reporter=\"destination\"}[10s]))'\n", tb.PrometheusURL)

	once := os.Getenv("DEMO_ONCE") == "1"
	// Let a 10 s rate window fill with scrapes of the new pods.
	wait := 12 * time.Second
	for {
		select {
		case <-ctx.Done():
			fmt.Println("demo: stopping")
			return nil
		case <-time.After(wait):
		}
		wait = 5 * time.Second
		shares, err := printSplit(ctx, tb)
		if err != nil {
			fmt.Println("demo:", err)
			if once {
				return err
			}
			continue
		}
		if once {
			// 100 req/s over a 10 s window is ~1,000 requests: 10% ± 4 sd of a
			// binomial share is about ±4 points.
			if g := shares["checkout-green"]; math.Abs(g-10) > 4 {
				return fmt.Errorf("green's share is %.1f%%, want 10%% ± 4", g)
			}
			fmt.Println("demo: the split Prometheus sees matches the VirtualService weights")
			return nil
		}
	}
}

// printSplit prints each workload's share of requests, error rate and p99
// over the last 10 s, as reported by the destination sidecars.
func printSplit(ctx context.Context, tb *testbed.TestBed) (map[string]float64, error) {
	sel := fmt.Sprintf(`reporter="destination",destination_service_namespace=%q`, demoNamespace)
	rates, err := tb.QueryByLabel(ctx, `sum by (destination_workload) (rate(istio_requests_total{`+sel+`}[10s]))`, "destination_workload")
	if err != nil {
		return nil, err
	}
	errs, err := tb.QueryByLabel(ctx, `sum by (destination_workload) (rate(istio_requests_total{`+sel+`,response_code=~"5.."}[10s]))`, "destination_workload")
	if err != nil {
		return nil, err
	}
	p99, err := tb.QueryByLabel(ctx, `histogram_quantile(0.99, sum by (destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{`+sel+`}[10s])))`, "destination_workload")
	if err != nil {
		return nil, err
	}
	total := 0.0
	for _, r := range rates {
		total += r
	}
	if total == 0 {
		return nil, fmt.Errorf("no traffic in Prometheus yet")
	}
	names := make([]string, 0, len(rates))
	for n := range rates {
		names = append(names, n)
	}
	sort.Strings(names)
	shares := map[string]float64{}
	var parts []string
	for _, n := range names {
		shares[n] = 100 * rates[n] / total
		parts = append(parts, fmt.Sprintf("%s %5.1f%% (%5.1f req/s, %4.1f%% 5xx, p99 %4.0f ms)",
			n, shares[n], rates[n], 100*errs[n]/math.Max(rates[n], 1e-9), p99[n]))
	}
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), strings.Join(parts, "  |  "))
	return shares, nil
}
