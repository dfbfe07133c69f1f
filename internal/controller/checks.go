package controller

import (
	"context"
	"sync"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
)

// CheckRunner evaluates a step's checks. Failures are verdicts, never errors.
type CheckRunner interface {
	Run(ctx context.Context, address string, checks []analysis.Check, vars analysis.Vars, now time.Time) []analysis.Result
}

// PrometheusChecks runs checks against Prometheus: the policy's address, or
// the controller's default. One HTTP client per address is kept.
type PrometheusChecks struct {
	Default string
	Timeout time.Duration

	mu      sync.Mutex
	clients map[string]promv1.API
}

func (p *PrometheusChecks) api(address string) (promv1.API, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if api, ok := p.clients[address]; ok {
		return api, nil
	}
	c, err := promapi.NewClient(promapi.Config{Address: address})
	if err != nil {
		return nil, err
	}
	if p.clients == nil {
		p.clients = map[string]promv1.API{}
	}
	p.clients[address] = promv1.NewAPI(c)
	return p.clients[address], nil
}

// Run evaluates every check concurrently.
func (p *PrometheusChecks) Run(ctx context.Context, address string, checks []analysis.Check, vars analysis.Vars, now time.Time) []analysis.Result {
	if address == "" {
		address = p.Default
	}
	out := make([]analysis.Result, len(checks))
	api, err := p.api(address)
	if err != nil || address == "" {
		msg := "no Prometheus address: set --prometheus-url or the policy's prometheus.address"
		if err != nil {
			msg = "Prometheus client: " + err.Error()
		}
		for i, c := range checks {
			out[i] = analysis.Result{Name: c.Name, Bound: c.Bound(), Verdict: splitterv1.VerdictError, Message: msg}
		}
		return out
	}
	ev := analysis.Evaluator{API: api, Timeout: p.Timeout}
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = ev.Evaluate(ctx, c, vars, now)
		}()
	}
	wg.Wait()
	return out
}

// CounterReader reads the cumulative request counters of the colors.
type CounterReader interface {
	Counters(ctx context.Context, address, namespace string, workloads map[splitterv1.Color]string, specs []analysis.CounterSpec, now time.Time) ([]splitterv1.CountSnapshot, error)
}

// Counters reads the colors' counters from Prometheus.
func (p *PrometheusChecks) Counters(ctx context.Context, address, namespace string, workloads map[splitterv1.Color]string, specs []analysis.CounterSpec, now time.Time) ([]splitterv1.CountSnapshot, error) {
	if address == "" {
		address = p.Default
	}
	api, err := p.api(address)
	if err != nil {
		return nil, err
	}
	return analysis.Evaluator{API: api, Timeout: p.Timeout}.Counters(ctx, namespace, workloads, specs, now)
}
