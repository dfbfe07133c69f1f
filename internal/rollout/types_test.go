package rollout

import (
	"testing"

	"k8s.io/utils/ptr"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

func TestWorkloadReplicas(t *testing.T) {
	for _, tc := range []struct {
		name             string
		user, remembered *int32
		want             int32
	}{
		{"opt-in: the user's count", ptr.To(int32(3)), nil, 3},
		{"scaled down by splitter: the remembered count", ptr.To(int32(0)), ptr.To(int32(3)), 3},
		{"kubectl scale after opt-in wins", ptr.To(int32(5)), ptr.To(int32(3)), 5},
		{"nothing known", nil, nil, 1},
	} {
		if got := WorkloadReplicas(tc.user, tc.remembered); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestWatched(t *testing.T) {
	for _, tc := range []struct {
		phase       splitterv1.Phase
		green, blue splitterv1.Color
		ok          bool
	}{
		{splitterv1.PhaseShifting, splitterv1.Green, splitterv1.Blue, true},
		{splitterv1.PhaseAwaitingApproval, splitterv1.Green, splitterv1.Blue, true},
		{splitterv1.PhasePromoting, splitterv1.Blue, splitterv1.Green, true},
		{splitterv1.PhaseIdle, "", "", false},
		{splitterv1.PhaseRolledBack, "", "", false},
	} {
		s := splitterv1.SplitStatus{Phase: tc.phase, Live: splitterv1.Blue, Candidate: splitterv1.Green}
		if tc.phase == splitterv1.PhasePromoting {
			// After promotion blue is the new live color, green stands by.
			s.Candidate, s.Standby = "", splitterv1.Green
		}
		g, b, ok := Watched(s)
		if g != tc.green || b != tc.blue || ok != tc.ok {
			t.Errorf("%s: (%s, %s, %v), want (%s, %s, %v)", tc.phase, g, b, ok, tc.green, tc.blue, tc.ok)
		}
	}
}
