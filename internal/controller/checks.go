package controller

import (
	"context"
	"fmt"
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
	// CounterTTL is how long one reading of the counters serves every
	// Split; keep it under the scrape interval.
	CounterTTL time.Duration
	// Scrape is Prometheus' scrape interval: counters are read at one
	// instant a scrape (and a margin) in the past (analysis.Align).
	Scrape time.Duration

	mu       sync.Mutex
	clients  map[string]promv1.API
	counters map[counterCacheKey]*counterCacheEntry
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

// CounterReader reads the colors' counter series, less the pods known to run
// another revision of their color (see analysis.Revisions). A failed,
// timed-out or partial read is an error: the engine counts it as Error for
// that look.
type CounterReader interface {
	Counters(ctx context.Context, address, namespace string, workloads map[splitterv1.Color]string, revision analysis.Revisions, specs []analysis.CounterSpec, now time.Time) ([]splitterv1.SeriesReading, error)
}

type counterCacheKey struct {
	address string
	spec    string
}

type counterCacheEntry struct {
	at         time.Time
	reading    analysis.Reading
	unreadable analysis.Unreadable
	mu         sync.Mutex
}

// Counters reads the colors' counter series from Prometheus. Readings of
// every color in the cluster are shared for CounterTTL: a hundred releases
// looked at every scrape cost a few queries, not hundreds.
func (p *PrometheusChecks) Counters(ctx context.Context, address, namespace string, workloads map[splitterv1.Color]string, revision analysis.Revisions, specs []analysis.CounterSpec, now time.Time) ([]splitterv1.SeriesReading, error) {
	if address == "" {
		address = p.Default
	}
	api, err := p.api(address)
	if err != nil {
		return nil, err
	}
	out := []splitterv1.SeriesReading{}
	for _, spec := range specs {
		key := counterCacheKey{address, fmt.Sprintf("%s/%g/%v", spec.SLO, spec.ThresholdMs, spec.GRPCErrorCodes)}
		p.mu.Lock()
		if p.counters == nil {
			p.counters = map[counterCacheKey]*counterCacheEntry{}
		}
		entry := p.counters[key]
		if entry == nil {
			entry = &counterCacheEntry{}
			p.counters[key] = entry
		}
		p.mu.Unlock()

		entry.mu.Lock()
		if entry.reading == nil || time.Since(entry.at) > p.CounterTTL {
			reading, unreadable, err := analysis.Evaluator{API: api, Timeout: p.Timeout}.ReadCounters(ctx, spec, now, p.Scrape)
			if err != nil {
				entry.mu.Unlock()
				return nil, fmt.Errorf("%s counters: %w", spec.SLO, err)
			}
			entry.reading, entry.unreadable, entry.at = reading, unreadable, time.Now()
		}
		reading, unreadable := entry.reading, entry.unreadable
		entry.mu.Unlock()
		if err := unreadable.For(namespace, workloads); err != nil {
			return nil, fmt.Errorf("%s counters: %w", spec.SLO, err)
		}
		out = append(out, reading.For(spec.SLO, namespace, workloads, revision)...)
	}
	return out, nil
}
