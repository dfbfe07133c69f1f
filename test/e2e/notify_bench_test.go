package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/test/testbed"
)

// watchCommits watches the namespace's Splits and returns, per
// notification seq, when the test first saw it committed in status. It
// stands for the commit instant: status keeps a notification's "at" to the
// second only, too coarse for a latency.
func watchCommits(b *testing.B, tb *testbed.TestBed, ns string) func() map[int64]time.Time {
	wc, err := client.NewWithWatch(tb.RESTConfig, client.Options{Scheme: tb.Client.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := wc.Watch(ctx, &splitterv1.SplitList{}, client.InNamespace(ns))
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[int64]time.Time{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			now := time.Now()
			s, ok := ev.Object.(*splitterv1.Split)
			if !ok {
				continue
			}
			mu.Lock()
			for _, n := range s.Status.Outbox {
				if _, ok := seen[n.Seq]; !ok {
					seen[n.Seq] = now
				}
			}
			mu.Unlock()
		}
	}()
	b.Cleanup(func() { w.Stop(); cancel(); <-done })
	return func() map[int64]time.Time {
		mu.Lock()
		defer mu.Unlock()
		out := map[int64]time.Time{}
		for k, v := range seen {
			out[k] = v
		}
		return out
	}
}

// BenchmarkNotifyLatency reports the time from a notification's commit in
// status (seen by a watch) to its arrival at a JSON webhook receiver on
// 127.0.0.1, over four healthy releases (ReleaseStarted, StepPassed,
// Promoted each: twelve notifications).
func BenchmarkNotifyLatency(b *testing.B) {
	tb := testbed.Shared(b)
	ns := tb.Namespace(b, "bench-notify")
	rcv := newNotifyReceiver(b, nil)
	pol := fastPolicy(ns, "fast", []int32{50, 100})
	pol.Spec.StepDuration = &metav1.Duration{Duration: 5 * time.Second}
	pol.Spec.Standby = &metav1.Duration{Duration: 2 * time.Second}
	notifyingPolicy(b, tb, ns, pol, map[string]string{"hook": rcv.url("webhook")},
		map[string]splitterv1.ReceiverType{"hook": splitterv1.ReceiverWebhook})
	startSplitter(b, tb, ns)
	optedIn(b, tb, ns, "fast")
	waitPhase(b, tb, ns, splitterv1.PhaseIdle, 3*time.Minute, readyCondition)
	commits := watchCommits(b, tb, ns)

	const releases = 4
	for i := range releases {
		release(b, tb, ns, fmt.Sprintf("example.com/app:%d", i+2), nil)
		waitPhase(b, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
		waitPhase(b, tb, ns, splitterv1.PhaseIdle, time.Minute, nil)
	}
	waitOutboxDrained(b, tb, ns, 3*releases)
	committed := commits()
	var ds []time.Duration
	firsts := map[string]bool{}
	for _, a := range rcv.at("webhook") {
		if firsts[a.id] {
			continue
		}
		firsts[a.id] = true
		if at, ok := committed[a.payload.Seq]; ok {
			ds = append(ds, max(a.at.Sub(at), 0))
		}
	}
	if len(ds) == 0 {
		b.Fatal("no latency measured")
	}
	b.ReportMetric(float64(median(ds).Microseconds())/1000, "commit-to-receiver-median-ms")
	b.ReportMetric(float64(worst(ds).Microseconds())/1000, "commit-to-receiver-worst-ms")
	b.ReportMetric(float64(len(ds)), "notifications")
}

// BenchmarkNotifySnapBack reports the snap-back of a faulty release (30%
// errors, threshold checks, 5 s steps) with two receivers that hang
// forever (every request held open until the controller's 10 s timeout)
// and with none, runs alternating: the time from the fault reaching
// Prometheus to the VirtualService at 100% live, and from the failing
// verdict to the snap-back write (the controller's log).
func BenchmarkNotifySnapBack(b *testing.B) {
	tb := testbed.Shared(b)
	const runs = 3
	gross := map[string][]time.Duration{}
	toWrite := map[string][]time.Duration{}
	for i := range runs {
		for _, variant := range []string{"none", "hanging"} {
			ns := tb.Namespace(b, fmt.Sprintf("bench-nsnap-%s-%d", variant, i))
			pol := fastPolicy(ns, "fast", []int32{20, 100})
			pol.Spec.StepDuration = &metav1.Duration{Duration: 5 * time.Second}
			if variant == "hanging" {
				rcv := newNotifyReceiver(b, func(notifyArrival, int) int { return 0 })
				notifyingPolicy(b, tb, ns, pol,
					map[string]string{"webhook": rcv.url("webhook"), "slack": rcv.url("slack")},
					map[string]splitterv1.ReceiverType{"webhook": splitterv1.ReceiverWebhook, "slack": splitterv1.ReceiverSlack})
			} else {
				tb.Create(b, pol)
			}
			ctrl := startSplitter(b, tb, ns)
			optedIn(b, tb, ns, "fast")
			waitPhase(b, tb, ns, splitterv1.PhaseIdle, 3*time.Minute, readyCondition)
			start := time.Now()
			release(b, tb, ns, "example.com/app:bad", map[string]string{"meshsim.splitter.dev/error-rate": "0.3"})
			d, err := faultToSnapBack(tb, ns, start, 2*time.Minute)
			if err != nil {
				b.Fatalf("%s run %d: %v", variant, i, err)
			}
			gross[variant] = append(gross[variant], d)
			if variant == "hanging" {
				s := waitPhase(b, tb, ns, splitterv1.PhaseRolledBack, time.Minute, nil)
				if s.Status.NotificationSeq < 2 || len(s.Status.Outbox) == 0 {
					b.Fatalf("hanging receivers: notificationSeq %d, outbox %d entries; want the rollback queued and undelivered", s.Status.NotificationSeq, len(s.Status.Outbox))
				}
			}
			ctrl.Stop(5 * time.Second)
			if d, ok := failToWrite(ctrl.Log()); ok {
				toWrite[variant] = append(toWrite[variant], d)
			}
		}
	}
	for _, variant := range []string{"none", "hanging"} {
		b.ReportMetric(median(gross[variant]).Seconds(), "fault-to-snapback-"+variant+"-median-s")
		b.ReportMetric(worst(gross[variant]).Seconds(), "fault-to-snapback-"+variant+"-worst-s")
		if ds := toWrite[variant]; len(ds) > 0 {
			b.ReportMetric(float64(median(ds).Microseconds())/1000, "verdict-to-write-"+variant+"-median-ms")
			b.ReportMetric(float64(worst(ds).Microseconds())/1000, "verdict-to-write-"+variant+"-worst-ms")
		}
	}
}
