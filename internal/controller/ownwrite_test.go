package controller

import (
	"context"
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
)

// A pass waits only while the cache holds exactly the version this
// replica's last status write replaced, and not past ownWriteWait.
func TestCacheBehindOwnWrite(t *testing.T) {
	now := time.Unix(1000, 0)
	r := &SplitReconciler{Now: func() time.Time { return now }}
	key := client.ObjectKey{Namespace: "shop", Name: "web"}
	if r.cacheBehindOwnWrite(key, "10") {
		t.Fatal("no write yet: not behind")
	}
	r.ownWrites.Store(key, ownWrite{replaced: "10", at: now})
	if !r.cacheBehindOwnWrite(key, "10") {
		t.Error("the cache holds the version our write replaced: behind")
	}
	if r.cacheBehindOwnWrite(key, "12") {
		t.Error("a newer version (ours or another writer's): not behind")
	}
	if r.cacheBehindOwnWrite(key, "10") {
		t.Error("once a newer version was seen, the entry is gone")
	}
	r.ownWrites.Store(key, ownWrite{replaced: "20", at: now.Add(-ownWriteWait)})
	if r.cacheBehindOwnWrite(key, "20") {
		t.Error("past ownWriteWait the pass runs anyway")
	}
}

// A Deployment spec write is skipped only while the cache holds the very
// object and generation this replica's last write replaced: a Deployment
// deleted and created again (generation 1 again, another UID) is written
// at once (e2e: the skip held a re-created color's new template back
// until the progress deadline).
func TestSpecWriteSkippedOnlyForTheSameObject(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := appsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-green", UID: "first", Generation: 1}}
	r := &SplitReconciler{Client: fake.NewClientBuilder().WithScheme(scheme).WithObjects(d).Build(), Now: time.Now}
	stale := d.DeepCopy()
	if sent, err := r.patchSpec(context.Background(), d.DeepCopy(), "/spec/replicas", 3); !sent || err != nil {
		t.Fatalf("first write: sent %v, %v", sent, err)
	}
	if sent, err := r.patchSpec(context.Background(), stale, "/spec/replicas", 3); sent || err != nil {
		t.Fatalf("the cache still at the generation the write replaced: sent %v (%v), want skipped", sent, err)
	}
	again := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-green", UID: "second", Generation: 1}}
	if sent, _ := r.patchSpec(context.Background(), again, "/spec/replicas", 3); !sent {
		t.Fatal("a Deployment created again at generation 1: skipped, want written")
	}
}

// A color Deployment's ReplicaSets sorted by revision: only those it
// controls, by their revision label.
func TestByRevision(t *testing.T) {
	owned := func(name, owner, revision string) metav1.PartialObjectMetadata {
		m := metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"splitter.dev/revision": revision}}}
		if owner != "" {
			yes := true
			m.OwnerReferences = []metav1.OwnerReference{{Kind: "Deployment", Name: owner, Controller: &yes}}
		}
		return m
	}
	items := []metav1.PartialObjectMetadata{
		owned("web-green-b2", "web-green", "r2"),
		owned("web-green-a1", "web-green", "r1"),
		owned("web-green-c3", "web-green", "r3"),
		owned("web-blue-a1", "web-blue", "r1"), // another color's
		owned("web-green-x", "", "r1"),         // an orphan
	}
	got := byRevision(items, "web-green", "r2")
	if !reflect.DeepEqual(got.Own, []string{"web-green-b2"}) || !reflect.DeepEqual(got.Other, []string{"web-green-a1", "web-green-c3"}) {
		t.Errorf("own %v other %v", got.Own, got.Other)
	}
}

// Evidence alone is held in memory until rollout.StatusWriteDue: the
// passes decide on it, a restart (a new reconciler) and a status someone
// else wrote fall back to the status as written, and anything else is
// written at once with the held evidence.
func TestEvidenceHeldUntilWriteDue(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := splitterv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { v := metav1.NewTime(t0.Add(d)); return &v }
	split := &splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "u1"},
		Status: splitterv1.SplitStatus{Phase: splitterv1.PhaseShifting, Step: 1, Analysis: &splitterv1.AnalysisStatus{CheckpointAt: at(0)}}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(split).WithStatusSubresource(split).Build()
	now := t0
	r := &SplitReconciler{Client: c, ScrapeInterval: 15 * time.Second, Now: func() time.Time { return now }}
	ctx := context.Background()
	read := func() *splitterv1.Split {
		t.Helper()
		s := &splitterv1.Split{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(split), s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	checkpointAt := func(st splitterv1.SplitStatus) time.Duration { return st.Analysis.CheckpointAt.Sub(t0) }

	// A checkpoint 30 s on: held, not written.
	now = t0.Add(30 * time.Second)
	next := *read().Status.DeepCopy()
	next.Analysis.CheckpointAt = at(30 * time.Second)
	if err := r.patchStatus(ctx, read(), next); err != nil {
		t.Fatal(err)
	}
	if got := checkpointAt(read().Status); got != 0 {
		t.Fatalf("evidence alone written after 30 s (checkpoint at +%s)", got)
	}
	if got := checkpointAt(r.heldStatus(read())); got != 30*time.Second {
		t.Errorf("the pass decides on the checkpoint at +%s, want the held +30s", got)
	}
	if got := checkpointAt((&SplitReconciler{}).heldStatus(read())); got != 0 {
		t.Errorf("after a restart the pass decides on +%s, want the written +0s", got)
	}
	other := read()
	other.Status.Analysis.CheckpointAt = at(time.Second)
	if got := checkpointAt(r.heldStatus(other)); got != time.Second {
		t.Errorf("over evidence someone else wrote the pass decides on +%s, want theirs (+1s)", got)
	}

	// A transition carries the held evidence at once.
	next = r.heldStatus(read())
	next.Step = 2
	if err := r.patchStatus(ctx, read(), next); err != nil {
		t.Fatal(err)
	}
	if s := read(); s.Status.Step != 2 || checkpointAt(s.Status) != 30*time.Second {
		t.Fatalf("a transition wrote step %d with the checkpoint at +%s, want step 2 at +30s", s.Status.Step, checkpointAt(s.Status))
	}

	// Evidence alone once the written checkpoint is EvidenceWriteEvery old.
	every := analysis.Timing{Scrape: r.ScrapeInterval}.EvidenceWriteEvery()
	for _, d := range []time.Duration{every - time.Second, every + 30*time.Second} {
		now = t0.Add(d)
		next = r.heldStatus(read())
		next.Analysis.CheckpointAt = at(d)
		if err := r.patchStatus(ctx, read(), next); err != nil {
			t.Fatal(err)
		}
	}
	if got := checkpointAt(read().Status); got != every+30*time.Second {
		t.Errorf("written checkpoint at +%s, want +%s (its evidence was %s old)", got, every+30*time.Second, every)
	}
}
