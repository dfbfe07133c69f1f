package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/test/meshsim"
	"splitter.dev/splitter/test/testbed"
)

// Every VirtualService and DestinationRule version splitter writes through
// a release passes Istio's own validation (run by the mesh simulator, as
// istiod's webhook would run it), without a warning.
func TestSplitterWritesWhatIstioAdmits(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "istio-valid")
	tb.Create(t, fastPolicy(ns, "fast", []int32{20, 50, 100}))
	startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
	release(t, tb, ns, "example.com/app:2", nil)
	waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, time.Minute, readyCondition)

	// The test wrote no VirtualService or DestinationRule here: every
	// version judged in ns is splitter's. Wait for the stored ones to be
	// judged, so the assertion covers the last write.
	var mine []meshsim.Verdict
	testbed.Eventually(t, 30*time.Second, 250*time.Millisecond, "the stored versions judged", func(ctx context.Context) error {
		vs := &networkingv1.VirtualService{}
		if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, vs); err != nil {
			return err
		}
		var drs networkingv1.DestinationRuleList
		if err := tb.Client.List(ctx, &drs, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(drs.Items) != 1 {
			return fmt.Errorf("%d DestinationRules in %s, want 1", len(drs.Items), ns)
		}
		dr := drs.Items[0]
		mine = nil
		seen := map[string]bool{}
		for _, v := range tb.MeshSim.Verdicts() {
			if v.Namespace == ns {
				mine = append(mine, v)
				seen[v.Kind+"@"+v.ResourceVersion] = true
			}
		}
		if !seen["VirtualService@"+vs.ResourceVersion] || !seen["DestinationRule@"+dr.ResourceVersion] {
			return fmt.Errorf("VirtualService@%s or DestinationRule@%s not judged yet", vs.ResourceVersion, dr.ResourceVersion)
		}
		return nil
	})
	vsVersions := 0
	for _, v := range mine {
		if v.Err != "" || len(v.Warnings) > 0 {
			t.Errorf("Istio's validation: %s", v)
		}
		if v.Kind == "VirtualService" {
			vsVersions++
		}
	}
	// At least blue 100, green 20, 50 and 100: otherwise the check above
	// saw too little to mean anything.
	if vsVersions < 4 {
		t.Errorf("%d VirtualService versions judged, want at least 4: %v", vsVersions, mine)
	}
	t.Logf("%d versions judged, none refused: %v", len(mine), mine)
}
