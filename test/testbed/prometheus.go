package testbed

import (
	"context"
	"fmt"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Query runs an instant PromQL query against the test bed's Prometheus.
func (tb *TestBed) Query(ctx context.Context, query string) (model.Vector, error) {
	c, err := promapi.NewClient(promapi.Config{Address: tb.PrometheusURL})
	if err != nil {
		return nil, err
	}
	v, _, _, err := promv1.NewAPI(c).Query(ctx, query, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", query, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %q: got %s, want a vector", query, v.Type())
	}
	return vec, nil
}

// QueryByLabel runs query and maps each sample's value of label to its value.
func (tb *TestBed) QueryByLabel(ctx context.Context, query, label string) (map[string]float64, error) {
	vec, err := tb.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, s := range vec {
		out[string(s.Metric[model.LabelName(label)])] = float64(s.Value)
	}
	return out, nil
}

// PrometheusVersion is the running Prometheus' version (3.16.0, 2.42.0+ds),
// from its build information, so that tests can say what they ran on.
func (tb *TestBed) PrometheusVersion(ctx context.Context) (string, error) {
	c, err := promapi.NewClient(promapi.Config{Address: tb.PrometheusURL})
	if err != nil {
		return "", err
	}
	info, err := promv1.NewAPI(c).Buildinfo(ctx)
	if err != nil {
		return "", fmt.Errorf("Prometheus build information: %w", err)
	}
	return info.Version, nil
}
