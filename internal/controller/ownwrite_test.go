package controller

import (
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
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
