package main

import (
	"context"
	"errors"
	"testing"

	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// fakeLock is a Lease record in memory.
type fakeLock struct {
	resourcelock.Interface
	id      string
	rec     resourcelock.LeaderElectionRecord
	updates int
}

func (f *fakeLock) Get(context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	r := f.rec
	return &r, nil, nil
}

func (f *fakeLock) Update(_ context.Context, r resourcelock.LeaderElectionRecord) error {
	f.rec = r
	f.updates++
	return nil
}

func (f *fakeLock) Identity() string { return f.id }

// client-go's release reads the Lease and then trusts the record it had
// observed before: a replica that lost the Lease while frozen released the
// new leader's. The lock refuses that write, and only that one.
func TestOwnReleaseLock(t *testing.T) {
	ctx := context.Background()
	f := &fakeLock{id: "b", rec: resourcelock.LeaderElectionRecord{HolderIdentity: "a"}}
	l := &ownReleaseLock{Interface: f}

	// b wakes up and releases: the Lease is a's now.
	if _, _, err := l.Get(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Update(ctx, resourcelock.LeaderElectionRecord{LeaseDurationSeconds: 1}); !errors.Is(err, errNotOurs) {
		t.Fatalf("releasing a's Lease: %v, want refused", err)
	}
	if f.rec.HolderIdentity != "a" || f.updates != 0 {
		t.Fatalf("a's record was written: %+v", f.rec)
	}

	// Taking over an expired Lease, renewing it, and releasing one's own
	// go through.
	if err := l.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: "b"}); err != nil {
		t.Fatalf("taking the Lease: %v", err)
	}
	if _, _, err := l.Get(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Update(ctx, resourcelock.LeaderElectionRecord{LeaseDurationSeconds: 1}); err != nil || f.rec.HolderIdentity != "" {
		t.Fatalf("releasing one's own Lease: %v, record %+v", err, f.rec)
	}
	// An empty Lease (released): releasing again is harmless.
	if err := l.Update(ctx, resourcelock.LeaderElectionRecord{LeaseDurationSeconds: 1}); err != nil {
		t.Fatalf("releasing a released Lease: %v", err)
	}
}
