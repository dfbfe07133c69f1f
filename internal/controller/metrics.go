package controller

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// Metrics are the controller's own, served on its /metrics. Per-Split
// series carry namespace and split and at most one small enum (phase,
// color, reason, check, verdict): their number grows with the Splits, not
// with releases or time, and a deleted Split's series are removed.
type Metrics struct {
	Phase     *prometheus.GaugeVec
	Weight    *prometheus.GaugeVec
	SnapBacks *prometheus.CounterVec
	Writes    *prometheus.CounterVec
	Verdicts  *prometheus.CounterVec

	// StepStarted is status.stepStartedAt, GateWaitingSince when the Split
	// entered AwaitingApproval (0 for none); Stalled is 1 while the Stalled
	// condition is True, with its reason.
	StepStarted      *prometheus.GaugeVec
	GateWaitingSince *prometheus.GaugeVec
	Stalled          *prometheus.GaugeVec

	// SweepDuration and LastSweep time the watchdog's sweeps: only the
	// leader sweeps, a standby replica exports 0 as its last sweep.
	SweepDuration prometheus.Histogram
	LastSweep     prometheus.Gauge

	mu sync.Mutex
	// splits are the Splits with series, each with the stalled reason its
	// Stalled series carries (a reason change replaces the series).
	splits map[types.NamespacedName]string
}

var allPhases = []splitterv1.Phase{
	splitterv1.PhaseIdle, splitterv1.PhasePreparing, splitterv1.PhaseShifting, splitterv1.PhaseAwaitingApproval,
	splitterv1.PhasePromoting, splitterv1.PhaseRollingBack, splitterv1.PhaseRolledBack,
}

// NewMetrics registers the metrics with controller-runtime's registry.
func NewMetrics() *Metrics {
	m := newMetrics()
	metrics.Registry.MustRegister(m.Collectors()...)
	return m
}

func newMetrics() *Metrics {
	perSplit := []string{"namespace", "split"}
	return &Metrics{
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
		StepStarted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "splitter_split_step_started_timestamp_seconds",
			Help: "When the current step's weights were applied (status.stepStartedAt), Unix seconds; 0 when no step is held.",
		}, perSplit),
		GateWaitingSince: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "splitter_split_gate_waiting_since_timestamp_seconds",
			Help: "When the Split entered AwaitingApproval, waiting for the gate in status.gate, Unix seconds; 0 when no gate waits.",
		}, perSplit),
		Stalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "splitter_split_stalled",
			Help: "1 while the Split's Stalled condition is True (a problem only the user can fix), with the condition's reason; 0 with reason=\"\" otherwise.",
		}, []string{"namespace", "split", "reason"}),
		SweepDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "splitter_watchdog_sweep_duration_seconds",
			Help:    "How long one watchdog sweep over the active releases took.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
		LastSweep: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "splitter_watchdog_last_sweep_timestamp_seconds",
			Help: "When the last watchdog sweep that could list the Splits ended, Unix seconds; 0 before the first (and on a replica that is not the leader).",
		}),
	}
}

// Collectors are every metric m exports, for a registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.Phase, m.Weight, m.SnapBacks, m.Writes, m.Verdicts,
		m.StepStarted, m.GateWaitingSince, m.Stalled, m.SweepDuration, m.LastSweep,
	}
}

// splitGauges are the per-Split gauges read from a status.
type splitGauges struct {
	stepStarted, gateWaitingSince float64 // Unix seconds, 0 for none
	stalled                       bool
	stalledReason                 string // "" when not stalled
}

func gaugesOf(s *splitterv1.SplitStatus) splitGauges {
	g := splitGauges{stepStarted: unixSeconds(s.StepStartedAt)}
	if s.Phase == splitterv1.PhaseAwaitingApproval {
		g.gateWaitingSince = unixSeconds(s.PhaseStartedAt)
	}
	if c := meta.FindStatusCondition(s.Conditions, rollout.ConditionStalled); c != nil && c.Status == metav1.ConditionTrue {
		g.stalled, g.stalledReason = true, c.Reason
	}
	return g
}

func unixSeconds(t *metav1.Time) float64 {
	if t == nil || t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *Metrics) observe(s *splitterv1.Split) {
	if m == nil {
		return
	}
	for _, p := range allPhases {
		m.Phase.WithLabelValues(s.Namespace, s.Name, string(p)).Set(boolFloat(s.Status.Phase == p))
	}
	if s.Status.Live != "" {
		m.Weight.WithLabelValues(s.Namespace, s.Name, string(s.Status.Live)).Set(float64(100 - s.Status.Weight))
		m.Weight.WithLabelValues(s.Namespace, s.Name, string(s.Status.Live.Other())).Set(float64(s.Status.Weight))
	}
	g := gaugesOf(&s.Status)
	m.StepStarted.WithLabelValues(s.Namespace, s.Name).Set(g.stepStarted)
	m.GateWaitingSince.WithLabelValues(s.Namespace, s.Name).Set(g.gateWaitingSince)

	key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.splits[key]; ok && old != g.stalledReason {
		m.Stalled.DeleteLabelValues(s.Namespace, s.Name, old)
	}
	m.Stalled.WithLabelValues(s.Namespace, s.Name, g.stalledReason).Set(boolFloat(g.stalled))
	if m.splits == nil {
		m.splits = map[types.NamespacedName]string{}
	}
	m.splits[key] = g.stalledReason
}

// forget removes every series of a Split that is gone, counters included:
// Splits come and go, their series must not pile up.
func (m *Metrics) forget(namespace, name string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.splits, types.NamespacedName{Namespace: namespace, Name: name})
	m.mu.Unlock()
	match := prometheus.Labels{"namespace": namespace, "split": name}
	for _, vec := range []*prometheus.GaugeVec{m.Phase, m.Weight, m.StepStarted, m.GateWaitingSince, m.Stalled} {
		vec.DeletePartialMatch(match)
	}
	for _, vec := range []*prometheus.CounterVec{m.SnapBacks, m.Verdicts} {
		vec.DeletePartialMatch(match)
	}
}

// observeAll refreshes every Split's series from a full list (the
// watchdog's, once per sweep): status written by paths that do not
// observe (a stall) shows within a sweep, and Splits gone (or being
// deleted) without a finalize lose their series.
func (m *Metrics) observeAll(splits []splitterv1.Split) {
	if m == nil {
		return
	}
	present := make(map[types.NamespacedName]bool, len(splits))
	for i := range splits {
		s := &splits[i]
		if !s.DeletionTimestamp.IsZero() {
			continue
		}
		present[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = true
		m.observe(s)
	}
	m.mu.Lock()
	var gone []types.NamespacedName
	for key := range m.splits {
		if !present[key] {
			gone = append(gone, key)
		}
	}
	m.mu.Unlock()
	for _, key := range gone {
		m.forget(key.Namespace, key.Name)
	}
}

// swept records a watchdog sweep that listed splits, started at start.
func (m *Metrics) swept(start time.Time, splits []splitterv1.Split) {
	if m == nil {
		return
	}
	m.observeAll(splits)
	end := time.Now()
	m.SweepDuration.Observe(end.Sub(start).Seconds())
	m.LastSweep.Set(float64(end.UnixNano()) / 1e9)
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
