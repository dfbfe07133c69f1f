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
