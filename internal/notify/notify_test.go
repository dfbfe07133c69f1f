package notify

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

func TestEventFor(t *testing.T) {
	for _, tc := range []struct {
		reason  string
		stalled bool
		warning bool
		phase   splitterv1.Phase
		step    int32
		want    string
	}{
		{rollout.ReasonReleaseStarted, false, false, splitterv1.PhasePreparing, 0, EventReleaseStarted},
		{rollout.ReasonRetried, false, false, splitterv1.PhasePreparing, 0, EventReleaseStarted},
		{rollout.ReasonStepAdvanced, false, false, splitterv1.PhaseShifting, 1, ""},
		{rollout.ReasonStepAdvanced, false, false, splitterv1.PhaseShifting, 2, EventStepPassed},
		{rollout.ReasonStepExtended, false, true, splitterv1.PhaseShifting, 2, ""},
		{rollout.ReasonStepExtended, false, false, splitterv1.PhaseShifting, 2, ""},
		{rollout.ReasonAwaitingApproval, false, false, splitterv1.PhaseAwaitingApproval, 3, EventAwaitingApproval},
		{rollout.ReasonPaused, false, true, splitterv1.PhaseAwaitingApproval, 3, EventPaused},
		{rollout.ReasonHookFailed, false, true, splitterv1.PhaseAwaitingApproval, 3, EventPaused},
		{rollout.ReasonPausedByOperator, false, true, splitterv1.PhaseShifting, 2, EventPaused},
		{rollout.ReasonResumed, false, false, splitterv1.PhaseShifting, 2, EventResumed},
		{rollout.ReasonApproved, false, false, splitterv1.PhaseShifting, 1, EventApproved},
		{rollout.ReasonApproved, false, false, splitterv1.PhasePromoting, 0, EventPromoted},
		{rollout.ReasonPromoted, false, false, splitterv1.PhasePromoting, 0, EventPromoted},
		{rollout.ReasonPromotedByOperator, false, true, splitterv1.PhasePromoting, 0, EventPromoted},
		{rollout.ReasonCheckFailed, false, true, splitterv1.PhaseRollingBack, 0, EventRolledBack},
		{rollout.ReasonWatchdog, false, true, splitterv1.PhaseRollingBack, 0, EventRolledBack},
		{rollout.ReasonHookFailed, false, true, splitterv1.PhaseRollingBack, 0, EventRolledBack},
		{rollout.ReasonSuperseded, false, false, splitterv1.PhaseRollingBack, 0, EventRolledBack},
		{rollout.ReasonRolledBack, false, false, splitterv1.PhaseRolledBack, 0, ""},
		{rollout.ReasonStandbyEnded, false, false, splitterv1.PhaseIdle, 0, ""},
		{rollout.ReasonLiveLost, false, true, splitterv1.PhaseIdle, 0, EventPromoted},
		{rollout.ReasonStandbyLost, false, true, splitterv1.PhaseIdle, 0, rollout.ReasonStandbyLost},
		{rollout.ReasonAdopted, false, false, splitterv1.PhaseIdle, 0, ""},
		{rollout.ReasonReverted, false, false, splitterv1.PhaseIdle, 0, ""},
		{"PolicyInvalid", true, true, splitterv1.PhaseShifting, 2, EventStalled},
		{"SomethingNew", false, false, splitterv1.PhaseShifting, 2, "SomethingNew"},
	} {
		if got := EventFor(tc.reason, tc.stalled, tc.warning, tc.phase, tc.step); got != tc.want {
			t.Errorf("EventFor(%s, stalled=%v, warning=%v, %s, step %d) = %q, want %q", tc.reason, tc.stalled, tc.warning, tc.phase, tc.step, got, tc.want)
		}
	}
}

func TestQueueBoundsTheOutbox(t *testing.T) {
	var st splitterv1.SplitStatus
	if d := Queue(&st, splitterv1.Notification{Event: "x"}, nil); d != nil || st.NotificationSeq != 0 || st.Outbox != nil {
		t.Fatalf("no receivers: dropped %v, seq %d, outbox %v; want nothing queued", d, st.NotificationSeq, st.Outbox)
	}
	var dropped []int64
	for i := 1; i <= MaxOutbox+5; i++ {
		for _, n := range Queue(&st, splitterv1.Notification{Event: fmt.Sprint(i)}, []string{"a", "b"}) {
			dropped = append(dropped, n.Seq)
		}
		if st.NotificationSeq != int64(i) || st.Outbox[len(st.Outbox)-1].Seq != int64(i) {
			t.Fatalf("queued %d: seq %d, last %d", i, st.NotificationSeq, st.Outbox[len(st.Outbox)-1].Seq)
		}
		if len(st.Outbox) > MaxOutbox {
			t.Fatalf("outbox has %d entries, max %d", len(st.Outbox), MaxOutbox)
		}
	}
	if fmt.Sprint(dropped) != "[1 2 3 4 5]" || st.Outbox[0].Seq != 6 {
		t.Errorf("dropped %v, oldest kept %d; want the 5 oldest dropped", dropped, st.Outbox[0].Seq)
	}
	if p := st.Outbox[0].Pending; fmt.Sprint(p) != "[a b]" {
		t.Errorf("pending %v, want every receiver", p)
	}
}

func TestRemoveAndHead(t *testing.T) {
	var st splitterv1.SplitStatus
	for range 3 {
		Queue(&st, splitterv1.Notification{}, []string{"a", "b"})
	}
	if h := Head(st.Outbox); h["a"] != 1 || h["b"] != 1 {
		t.Fatalf("heads %v", h)
	}
	if !Remove(&st, 1, "a") || Remove(&st, 1, "a") || Remove(&st, 9, "a") {
		t.Fatal("Remove reported the wrong change")
	}
	if h := Head(st.Outbox); h["a"] != 2 || h["b"] != 1 {
		t.Fatalf("after a got 1: heads %v", h)
	}
	Remove(&st, 1, "b")
	if len(st.Outbox) != 2 || st.Outbox[0].Seq != 2 {
		t.Fatalf("an entry delivered to everyone stays: %+v", st.Outbox)
	}
	for _, seq := range []int64{2, 3} {
		Remove(&st, seq, "a")
		Remove(&st, seq, "b")
	}
	if st.Outbox != nil || len(Head(st.Outbox)) != 0 {
		t.Fatalf("outbox %+v, want empty", st.Outbox)
	}
}

func TestNew(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 11, 27, 21, 0, 0, 0, time.UTC))
	st := splitterv1.SplitStatus{Phase: splitterv1.PhaseRollingBack, CandidateRevision: "abc", LiveRevision: "old", Step: 1, Weight: 0}
	n, ok := New(&rollout.Transition{Reason: rollout.ReasonCheckFailed, Message: "all traffic back to blue: success-rate Fail", Warning: true}, &st, at)
	if !ok || n.Event != EventRolledBack || n.Revision != "abc" || !n.Warning || n.Step != 1 || !n.At.Equal(&at) {
		t.Errorf("rollback notification %+v", n)
	}
	st = splitterv1.SplitStatus{Phase: splitterv1.PhasePromoting, LiveRevision: "abc"}
	if n, ok := New(&rollout.Transition{Reason: rollout.ReasonPromoted}, &st, at); !ok || n.Revision != "abc" || n.Warning {
		t.Errorf("promotion notification %+v", n)
	}
	if _, ok := New(&rollout.Transition{Reason: rollout.ReasonStepExtended}, &st, at); ok {
		t.Error("StepExtended notified")
	}
	if _, ok := New(nil, &st, at); ok {
		t.Error("no transition notified")
	}
	if n, ok := New(&rollout.Transition{Reason: "PolicyInvalid", Stalled: true}, &st, at); !ok || n.Event != EventStalled || !n.Warning {
		t.Errorf("stall notification %+v", n)
	}
}
