package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Metrics are the controller's own, served on its /metrics.
type Metrics struct {
	Phase     *prometheus.GaugeVec
	Weight    *prometheus.GaugeVec
	SnapBacks *prometheus.CounterVec
	Writes    *prometheus.CounterVec
	Verdicts  *prometheus.CounterVec
}

var allPhases = []splitterv1.Phase{
	splitterv1.PhaseIdle, splitterv1.PhasePreparing, splitterv1.PhaseShifting, splitterv1.PhaseAwaitingApproval,
	splitterv1.PhasePromoting, splitterv1.PhaseRollingBack, splitterv1.PhaseRolledBack,
}

// NewMetrics registers the metrics with controller-runtime's registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "splitter_split_phase", Help: "1 for the phase each Split is in, 0 for the others.",
		}, []string{"namespace", "split", "phase"}),
		Weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "splitter_split_weight", Help: "The weight (percent) each color should have, per Split.",
		}, []string{"namespace", "split", "color"}),
		SnapBacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "splitter_snapbacks_total", Help: "Releases snapped back to the live color, by reason.",
		}, []string{"namespace", "split", "reason"}),
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "splitter_api_writes_total",
			Help: "Writes sent to the API server, by kind of object and result: ok, conflict (refused: a lost race, a failed resourceVersion precondition or an object that already exists) or error.",
		}, []string{"kind", "result"}),
		Verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "splitter_check_verdicts_total", Help: "Check verdicts, by check and verdict.",
		}, []string{"namespace", "split", "check", "verdict"}),
	}
	metrics.Registry.MustRegister(m.Phase, m.Weight, m.SnapBacks, m.Writes, m.Verdicts)
	return m
}

func (m *Metrics) observe(s *splitterv1.Split) {
	if m == nil {
		return
	}
	for _, p := range allPhases {
		v := 0.0
		if s.Status.Phase == p {
			v = 1
		}
		m.Phase.WithLabelValues(s.Namespace, s.Name, string(p)).Set(v)
	}
	if s.Status.Live != "" {
		m.Weight.WithLabelValues(s.Namespace, s.Name, string(s.Status.Live)).Set(float64(100 - s.Status.Weight))
		m.Weight.WithLabelValues(s.Namespace, s.Name, string(s.Status.Live.Other())).Set(float64(s.Status.Weight))
	}
}

func (m *Metrics) forget(namespace, name string) {
	if m == nil {
		return
	}
	for _, vec := range []*prometheus.GaugeVec{m.Phase, m.Weight} {
		vec.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "split": name})
	}
}

// The result label of splitter_api_writes_total.
const (
	writeOK       = "ok"
	writeConflict = "conflict"
	writeError    = "error"
)

// writeResult classifies a write's outcome. A conflict is a write the API
// server refused because it lost a race: a stale resourceVersion (409
// Conflict; the routers report a failed JSON-patch precondition as one too)
// or a create of an object that already exists (409 AlreadyExists).
func writeResult(err error) string {
	switch {
	case err == nil:
		return writeOK
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		return writeConflict
	}
	return writeError
}

// wroteResult counts one write sent to the API server, by its outcome. Call
// it after the write with the write's error (mesh routers take it as their
// OnWrite).
func (m *Metrics) wroteResult(kind string, err error) {
	if m != nil {
		m.Writes.WithLabelValues(kind, writeResult(err)).Inc()
	}
}
