package backtest

import (
	"context"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// fakeProm answers a range selector at ts with the samples in
// [ts-chunk, ts] (closed: Prometheus 2) or (ts-chunk, ts] (Prometheus 3).
type fakeProm struct {
	promv1.API
	series  model.Matrix
	chunk   time.Duration
	closed  bool
	queries int
}

func (f *fakeProm) Query(_ context.Context, _ string, ts time.Time, _ ...promv1.Option) (model.Value, promv1.Warnings, promv1.Infos, error) {
	f.queries++
	lo, hi := model.TimeFromUnixNano(ts.Add(-f.chunk).UnixNano()), model.TimeFromUnixNano(ts.UnixNano())
	var out model.Matrix
	for _, ss := range f.series {
		var vs []model.SamplePair
		for _, p := range ss.Values {
			if p.Timestamp > hi || p.Timestamp < lo || (!f.closed && p.Timestamp == lo) {
				continue
			}
			vs = append(vs, p)
		}
		if len(vs) > 0 {
			out = append(out, &model.SampleStream{Metric: ss.Metric, Values: vs})
		}
	}
	return out, nil, nil, nil
}

func TestReadRangeChunks(t *testing.T) {
	var ss model.SampleStream
	ss.Metric = model.Metric{"__name__": "x", "pod": "a"}
	from := t0
	to := t0.Add(2*time.Hour + 17*time.Minute + 30*time.Second)
	// samples every 15 s, some exactly on chunk edges
	for at := from; !at.After(to); at = at.Add(15 * time.Second) {
		ss.Values = append(ss.Values, model.SamplePair{Timestamp: model.TimeFromUnixNano(at.UnixNano()), Value: model.SampleValue(at.Sub(from).Seconds())})
	}
	for _, closed := range []bool{true, false} {
		for _, chunk := range []time.Duration{time.Hour, 7 * time.Minute, 15 * time.Second} {
			f := &fakeProm{series: model.Matrix{&ss}, chunk: chunk, closed: closed}
			m, err := readRange(context.Background(), f, "x[1h]", from, to, chunk)
			if err != nil {
				t.Fatal(err)
			}
			want := len(ss.Values) - 1 // the sample at `from` is outside (from, to]
			if closed {
				want++
			}
			if len(m) != 1 || len(m[0].Values) != want {
				t.Errorf("closed=%v chunk %s: %d samples, want %d", closed, chunk, len(m[0].Values), want)
			}
			for i := 1; i < len(m[0].Values); i++ {
				if m[0].Values[i].Timestamp <= m[0].Values[i-1].Timestamp {
					t.Fatalf("out of order")
				}
			}
		}
	}
}
