package chaos

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/test/testbed"
)

// Two replicas with leader election, mid-step:
//   - the leader hangs (SIGSTOP, as a frozen node or a long GC pause would
//     make it): the other takes the Lease over and acts; when the old
//     leader wakes up, none of its writes to an object is accepted after
//     the new leader's write of that object (each carries a precondition),
//     and it exits once it sees the Lease lost;
//   - the new leader is SIGKILLed: the first takes over again, and the
//     release goes on from its status to promotion.
func TestLeaderFailover(t *testing.T) {
	tb := testbed.Shared(t)
	if tb.AuditLog() == "" {
		t.Skip("needs the audit log (TESTBED_AUDIT=1) to tell the replicas' writes apart")
	}
	const lease = 4 * time.Second
	rs := startReplicas(t, tb, 2, lease, 7)
	rs.setRestart(false) // this test decides who runs

	ns := tb.Namespace(t, "failover")
	pol := chaosPolicy(ns, tb.ScrapeInterval())
	pol.Spec.Steps = []int32{20, 50, 100}
	pol.Spec.StepDuration.Duration = 30 * time.Second
	pol.Spec.MaxExtensions = ptr.To(int32(3))
	tb.Create(t, pol)
	tb.Create(t, appService(ns))
	tb.Create(t, appDeployment(ns))
	waitSplit(t, tb, ns, 2*time.Minute, func(s *splitterv1.Split) bool { return s.Status.Phase == splitterv1.PhaseIdle })
	done := make(chan error, 1)
	go func() { done <- releaseAndWait(tb, ns, "chaos.example/app:failover", kindHealthy, 10*time.Minute) }()
	waitSplit(t, tb, ns, 2*time.Minute, func(s *splitterv1.Split) bool {
		return s.Status.Phase == splitterv1.PhaseShifting && s.Status.Step == 1 && s.Status.StepStartedAt != nil
	})

	// 1. The leader hangs.
	old := waitLeader(t, rs)
	other := rs.other(old)
	holder := waitHolder(tb)
	stopped := time.Now()
	if err := syscall.Kill(old.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	takeover := rs.waitTakeover(tb, holder, stopped)
	t.Logf("%s hung: %s held the Lease %s later (lease %s)", old.user, other.user, takeover.Round(10*time.Millisecond), lease)
	// The new leader's first accepted write: the release moves on.
	testbed.Eventually(t, 2*time.Minute, 250*time.Millisecond, other.user+"'s first accepted write", func(context.Context) error {
		events, err := tb.AuditEvents(stopped)
		if err != nil {
			return err
		}
		for _, e := range events {
			if e.User == other.user && e.Code >= 200 && e.Code < 300 {
				return nil
			}
		}
		return fmt.Errorf("none yet")
	})
	if err := syscall.Kill(old.pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The old leader wakes up; it must see the Lease lost and exit.
	testbed.Eventually(t, 20*lease, 250*time.Millisecond, old.user+" exits after losing the Lease", func(context.Context) error {
		if exited, _ := old.proc.Exited(); !exited {
			return fmt.Errorf("still running")
		}
		return nil
	})
	// Per object: once the new leader has written an object, no write of
	// the old leader's to it may be accepted (each carries a precondition
	// the new leader's write invalidated). A write to an object the new
	// leader has not written yet may be: it repeats the status's decision.
	events, err := tb.AuditEvents(stopped)
	if err != nil {
		t.Fatal(err)
	}
	newFirst := map[string]time.Time{}
	refused, accepted := 0, 0
	for _, e := range events {
		if e.Namespace != ns {
			// The replicas watch every namespace: another test's
			// namespaces being deleted meanwhile are finalized by whoever
			// leads, on state read after the takeover.
			continue
		}
		key := e.Resource + " " + e.Namespace + "/" + e.Name
		switch {
		case e.User == other.user && e.Code >= 200 && e.Code < 300:
			if _, ok := newFirst[key]; !ok {
				newFirst[key] = e.Time
			}
		case e.User == old.user && e.Code >= 200 && e.Code < 300:
			accepted++
			if first, ok := newFirst[key]; ok && !e.Time.Before(first) {
				t.Errorf("the old leader's %s of %s was accepted at %s, after the new leader's write of it at %s",
					e.Verb, key, e.Time.Format(time.RFC3339Nano), first.Format(time.RFC3339Nano))
			}
		case e.User == old.user && e.Code >= 400:
			refused++
		}
	}
	t.Logf("after waking up, the old leader sent %d writes that were refused and %d that were accepted (to objects the new leader had not written)", refused, accepted)

	// 2. The new leader is killed; the first, restarted, takes over.
	if err := rs.start(old); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, rs)
	holder = waitHolder(tb)
	killed := time.Now()
	other.kill()
	takeover = rs.waitTakeover(tb, holder, killed)
	t.Logf("%s SIGKILLed: another identity held the Lease %s later", other.user, takeover.Round(10*time.Millisecond))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := &splitterv1.Split{}
	if err := tb.Client.Get(context.Background(), clientKey(ns), s); err != nil {
		t.Fatal(err)
	}
	if h := s.Status.History; len(h) == 0 || h[0].Outcome != splitterv1.OutcomePromoted {
		t.Errorf("the healthy release through two failovers ended %+v, want Promoted", h)
	}
}

func waitLeader(t *testing.T, rs *replicaSet) *replica {
	t.Helper()
	var l *replica
	testbed.Eventually(t, time.Minute, 100*time.Millisecond, "a leader", func(context.Context) error {
		if l = rs.leader(); l == nil {
			return fmt.Errorf("no replica leads")
		}
		return nil
	})
	return l
}
