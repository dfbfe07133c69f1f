package simulate

import (
	"strconv"

	"github.com/prometheus/common/model"
	"gonum.org/v1/gonum/stat/distuv"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/rollout"
)

// Istio-shaped export (Spec.Callers set). A destination proxy exports
// istio_requests_total and istio_request_duration_milliseconds with one
// series per label set: per caller (source_workload...), response code,
// flags, protocol. The series for a code is created at that code's first
// response: istio/proxy's source/extensions/filters/http/istio_stats/
// istio_stats.cc builds the tags in IstioStatsFilter::log from the
// finished request (response_code from its StreamInfo) and then calls
// addCounter and recordHistogram, which look the stat up with
// Stats::Utility::counterFromStatNames / histogramFromStatNames: Envoy's
// store creates a stat at its first lookup. (The version read kept the
// stats in a RotatingScope, which drops them only when a rotation interval
// is set; later versions use Envoy's stats eviction, also off unless
// configured, e.g. sidecar.istio.io/statsEvictionInterval. Istio's
// default keeps every series.) The simulator models callers and response codes (200 and 503, at
// the first availability SLO's bad rate); the latency histogram exports
// the +Inf bucket and each latency SLO's threshold bucket per label set.
// Readings go through analysis.ClassifyAvailability and ClassifyLatency,
// as the controller's do, so the simulated engine sees what a real one
// sees, series IDs included.

// simNamespace and simWorkload name the color Deployments in the
// simulated mesh.
const simNamespace = "sim"

func simWorkload(c splitterv1.Color) string { return "app-" + string(c) }

// istioSet is one label set of a pod's Istio metrics: one caller, one
// response code.
type istioSet struct {
	caller int
	code   string
	// born: Istio created the series (its first response happened).
	born     bool
	requests float64
	// slow per SLO (latency SLOs only).
	slow []float64
	// the series' labels, built once: the availability counter, and per
	// latency SLO the +Inf and threshold buckets.
	counter     model.Metric
	inf, bucket []model.Metric
}

// istioValue is one label set's value in one scrape.
type istioValue struct {
	born     bool
	requests float64
	slow     []float64
}

var istioCodes = []string{"200", "503"}

// newIstioSets are a pod's label sets, none born yet.
func (s *podSource) newIstioSets(c splitterv1.Color, pod string) []*istioSet {
	var out []*istioSet
	for caller := range s.spec.Callers {
		for _, code := range istioCodes {
			base := model.Metric{
				"destination_workload_namespace": simNamespace,
				"destination_workload":           model.LabelValue(simWorkload(c)),
				"reporter":                       "destination",
				"pod":                            model.LabelValue(pod),
				"instance":                       model.LabelValue(pod + ":15020"),
				"source_workload":                model.LabelValue("caller-" + strconv.Itoa(caller)),
				"response_code":                  model.LabelValue(code),
				"response_flags":                 "-",
			}
			set := &istioSet{caller: caller, code: code, slow: make([]float64, len(s.spec.Plan.SLOs)), counter: base,
				inf: make([]model.Metric, len(s.spec.Plan.SLOs)), bucket: make([]model.Metric, len(s.spec.Plan.SLOs))}
			for i, slo := range s.spec.Plan.SLOs {
				if slo.ThresholdMs <= 0 {
					continue
				}
				set.inf[i] = base.Clone()
				set.inf[i]["le"] = "+Inf"
				set.bucket[i] = base.Clone()
				set.bucket[i]["le"] = model.LabelValue(strconv.FormatFloat(slo.ThresholdMs, 'f', -1, 64))
			}
			out = append(out, set)
		}
	}
	return out
}

// availabilityRate is the bad rate that decides response codes: the first
// availability SLO's (other availability SLOs read the same series).
func (s *podSource) availabilityRate(rates map[string]float64) float64 {
	for _, slo := range s.spec.Plan.SLOs {
		if slo.ThresholdMs <= 0 {
			return rates[slo.Name]
		}
	}
	return 0
}

// advanceIstio grows one pod's label sets by perPod requests on average,
// split among the callers, extra being a shared incident's error rate.
func (s *podSource) advanceIstio(p *simPod, perPod float64, rates map[string]float64, extra float64) {
	q503 := 1 - (1-s.availabilityRate(rates))*(1-extra)
	k := float64(max(1, s.spec.Clump))
	for caller, share := range s.spec.Callers {
		n := poissonDraw(s.rng, perPod*share)
		if n == 0 {
			continue
		}
		bad := 0.0
		if q503 > 0 {
			bad = min(n, k*distuv.Binomial{N: n, P: q503 / k, Src: randSource{s.rng}}.Rand())
		}
		for _, set := range p.istio {
			if set.caller != caller {
				continue
			}
			m := n - bad
			if set.code == "503" {
				m = bad
			}
			if m == 0 {
				continue
			}
			set.born = true
			set.requests += m
			for i, slo := range s.spec.Plan.SLOs {
				if slo.ThresholdMs <= 0 {
					continue
				}
				if q := 1 - (1-rates[slo.Name])*(1-extra); q > 0 {
					set.slow[i] += distuv.Binomial{N: m, P: q, Src: randSource{s.rng}}.Rand()
				}
			}
		}
	}
}

// snapshotIstio is the pod's label sets as a scrape sees them.
func snapshotIstio(p *simPod) []istioValue {
	out := make([]istioValue, len(p.istio))
	for i, set := range p.istio {
		if set.born {
			out[i] = istioValue{born: true, requests: set.requests, slow: append([]float64(nil), set.slow...)}
		}
	}
	return out
}

// restartIstio is Envoy restarting: every stat gone until its next use.
func restartIstio(p *simPod) {
	for _, set := range p.istio {
		set.born, set.requests = false, 0
		clear(set.slow)
	}
}

// readIstio reads every pod's samples as Prometheus would return them (a
// series only from the scrape that first saw it) through the controller's
// classifiers, at the aligned instant at.
func (s *podSource) readIstio(at model.Time) rollout.Counters {
	out := rollout.Counters{}
	for si, slo := range s.spec.Plan.SLOs {
		var m model.Matrix
		for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
			for _, p := range s.pods[c] {
				for j, set := range p.istio {
					var req, slow []model.SamplePair
					for _, x := range p.samples {
						if j >= len(x.istio) || !x.istio[j].born {
							continue
						}
						ts := model.Time(x.at.Milliseconds())
						req = append(req, model.SamplePair{Timestamp: ts, Value: model.SampleValue(x.istio[j].requests)})
						if slo.ThresholdMs > 0 {
							slow = append(slow, model.SamplePair{Timestamp: ts, Value: model.SampleValue(x.istio[j].requests - x.istio[j].slow[si])})
						}
					}
					if len(req) == 0 {
						continue
					}
					if slo.ThresholdMs <= 0 {
						m = append(m, &model.SampleStream{Metric: set.counter, Values: req})
						continue
					}
					m = append(m, &model.SampleStream{Metric: set.inf[si], Values: req}, &model.SampleStream{Metric: set.bucket[si], Values: slow})
				}
			}
		}
		var r analysis.Reading
		if slo.ThresholdMs <= 0 {
			r = analysis.ClassifyAvailability(m, nil, at, slo.GRPCErrorCodes)
		} else {
			var unreadable analysis.Unreadable
			if r, unreadable = analysis.ClassifyLatency(m, at, slo.ThresholdMs); len(unreadable) > 0 {
				panic("simulate: a simulated proxy lacks its threshold bucket")
			}
		}
		out = append(out, r.For(slo.Name, simNamespace, map[splitterv1.Color]string{splitterv1.Blue: simWorkload(splitterv1.Blue), splitterv1.Green: simWorkload(splitterv1.Green)}, nil)...)
	}
	return out
}
