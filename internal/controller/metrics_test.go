package controller

import (
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

func TestGaugesOf(t *testing.T) {
	at := func(sec int64) *metav1.Time { t := metav1.NewTime(time.Unix(sec, 500e6)); return &t }
	stalled := func(status metav1.ConditionStatus, reason string) []metav1.Condition {
		return []metav1.Condition{{Type: rollout.ConditionReady, Status: metav1.ConditionFalse, Reason: "Other"},
			{Type: rollout.ConditionStalled, Status: status, Reason: reason}}
	}
	for _, tc := range []struct {
		name   string
		status splitterv1.SplitStatus
		want   splitGauges
	}{
		{"new Split, no status", splitterv1.SplitStatus{}, splitGauges{}},
		{"shifting, step held", splitterv1.SplitStatus{Phase: splitterv1.PhaseShifting, StepStartedAt: at(1000), PhaseStartedAt: at(900)},
			splitGauges{stepStarted: 1000.5}},
		{"shifting, weights not applied yet", splitterv1.SplitStatus{Phase: splitterv1.PhaseShifting, PhaseStartedAt: at(900)},
			splitGauges{}},
		{"awaiting approval: the gate waits since the phase began", splitterv1.SplitStatus{
			Phase: splitterv1.PhaseAwaitingApproval, Gate: "abc/1/promotion", PhaseStartedAt: at(2000), StepStartedAt: at(1500)},
			splitGauges{stepStarted: 1500.5, gateWaitingSince: 2000.5}},
		{"awaiting approval without a start time", splitterv1.SplitStatus{Phase: splitterv1.PhaseAwaitingApproval}, splitGauges{}},
		{"stalled", splitterv1.SplitStatus{Phase: splitterv1.PhaseIdle, Conditions: stalled(metav1.ConditionTrue, "PolicyNotFound")},
			splitGauges{stalled: true, stalledReason: "PolicyNotFound"}},
		{"Stalled=False is not stalled", splitterv1.SplitStatus{Conditions: stalled(metav1.ConditionFalse, "Progressing")}, splitGauges{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gaugesOf(&tc.status); got != tc.want {
				t.Errorf("gaugesOf = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func testSplit(ns, name string, st splitterv1.SplitStatus) splitterv1.Split {
	return splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Status: st}
}

// series lists a registry's series as "name{label=value,...} value", sorted
// (labels in name order).
func series(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var vals []string
			for _, l := range m.GetLabel() {
				vals = append(vals, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out = append(out, mf.GetName()+"{"+strings.Join(vals, ",")+"} "+strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	sort.Strings(out)
	return out
}

func TestMetricsSeriesFollowSplits(t *testing.T) {
	m := newMetrics()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.Collectors()...)
	stalledCond := func(reason string) []metav1.Condition {
		return []metav1.Condition{{Type: rollout.ConditionStalled, Status: metav1.ConditionTrue, Reason: reason}}
	}
	gate := metav1.NewTime(time.Unix(100, 0))
	a := testSplit("shop", "checkout", splitterv1.SplitStatus{Phase: splitterv1.PhaseAwaitingApproval, Live: splitterv1.Blue, Weight: 25, PhaseStartedAt: &gate})
	b := testSplit("shop", "cart", splitterv1.SplitStatus{Phase: splitterv1.PhaseIdle, Live: splitterv1.Green, Conditions: stalledCond("ServiceNotFound")})
	m.observeAll([]splitterv1.Split{a, b})
	m.SnapBacks.WithLabelValues("shop", "cart", "CheckFailed").Inc()
	m.Verdicts.WithLabelValues("shop", "checkout", "success-rate", "Pass").Inc()
	m.wroteResult("Split", nil)

	got := series(t, reg)
	for _, want := range []string{
		"splitter_split_phase{namespace=shop,phase=AwaitingApproval,split=checkout} 1",
		"splitter_split_phase{namespace=shop,phase=Shifting,split=checkout} 0",
		"splitter_split_weight{color=blue,namespace=shop,split=checkout} 75",
		"splitter_split_weight{color=green,namespace=shop,split=checkout} 25",
		"splitter_split_gate_waiting_since_timestamp_seconds{namespace=shop,split=checkout} 100",
		"splitter_split_step_started_timestamp_seconds{namespace=shop,split=checkout} 0",
		"splitter_split_stalled{namespace=shop,reason=,split=checkout} 0",
		"splitter_split_stalled{namespace=shop,reason=ServiceNotFound,split=cart} 1",
		"splitter_snapbacks_total{namespace=shop,reason=CheckFailed,split=cart} 1",
		"splitter_api_writes_total{kind=Split,result=ok} 1",
	} {
		if !contains(got, want) {
			t.Errorf("missing %s in\n%s", want, strings.Join(got, "\n"))
		}
	}

	// A fix replaces the stalled series (one per Split); cart disappears
	// from the list (deleted without a finalize): all its series go,
	// counters included; the writes (no Split label) stay.
	b.Status.Conditions = stalledCond("PolicyInvalid")
	m.observe(&b)
	if got := series(t, reg); !contains(got, "splitter_split_stalled{namespace=shop,reason=PolicyInvalid,split=cart} 1") || contains(got, "splitter_split_stalled{namespace=shop,reason=ServiceNotFound,split=cart} 1") {
		t.Errorf("a new stalled reason should replace the old series:\n%s", strings.Join(got, "\n"))
	}
	m.observeAll([]splitterv1.Split{a})
	for _, s := range series(t, reg) {
		if strings.Contains(s, "split=cart") {
			t.Errorf("series of a deleted Split left: %s", s)
		}
	}
	if !contains(series(t, reg), "splitter_api_writes_total{kind=Split,result=ok} 1") {
		t.Error("writes lost")
	}

	// A Split being deleted counts as gone; forget removes the rest.
	now := metav1.Now()
	a.DeletionTimestamp = &now
	m.observeAll([]splitterv1.Split{a})
	m.forget("shop", "checkout")
	for _, s := range series(t, reg) {
		if strings.Contains(s, "namespace=shop") {
			t.Errorf("series left after forget: %s", s)
		}
	}
}

func TestSwept(t *testing.T) {
	m := newMetrics()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.Collectors()...)
	start := time.Now().Add(-2 * time.Second)
	m.swept(start, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, mf := range mfs {
		switch mf.GetName() {
		case "splitter_watchdog_sweep_duration_seconds":
			found++
			if h := mf.GetMetric()[0].GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() < 2 {
				t.Errorf("sweep duration: %d sweeps, sum %v s; want 1 sweep of at least 2 s", h.GetSampleCount(), h.GetSampleSum())
			}
		case "splitter_watchdog_last_sweep_timestamp_seconds":
			found++
			if last := mf.GetMetric()[0].GetGauge().GetValue(); last < float64(start.Unix()) {
				t.Errorf("last sweep %v before the sweep's start %v", last, start.Unix())
			}
		}
	}
	if found != 2 {
		t.Errorf("found %d of the 2 sweep metrics", found)
	}
	var nilMetrics *Metrics // a reconciler without metrics
	nilMetrics.swept(start, nil)
	nilMetrics.observeAll(nil)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
