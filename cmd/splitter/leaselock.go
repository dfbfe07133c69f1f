package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/leaderelection"
	crrecorder "sigs.k8s.io/controller-runtime/pkg/recorder"
)

// errNotOurs refuses a release of a Lease another replica holds.
var errNotOurs = errors.New("not releasing the leader-election Lease: another replica holds it")

// ownReleaseLock is the leader-election Lease lock, except that it never
// writes a release (an empty holder) over another replica's record.
//
// client-go's release-on-cancel (tryRelease in tools/leaderelection) reads
// the Lease, then asks IsLeader() of the record it observed *before* that
// read. A leader that lost the Lease while it was frozen (a long GC pause,
// SIGSTOP) still believes it holds it when it wakes, so on its way out it
// wiped the new leader's record; a replica started next took the Lease at
// once while the new leader still acted: two leaders for up to the renew
// deadline, and the chaos test's takeover never came (make test, this
// session). Refusing that one write leaves the graceful hand-over (the
// holder's own release) as it was.
type ownReleaseLock struct {
	resourcelock.Interface
	mu     sync.Mutex
	holder string // the holder in the last record read
}

func (l *ownReleaseLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	rec, raw, err := l.Interface.Get(ctx)
	if err == nil && rec != nil {
		l.mu.Lock()
		l.holder = rec.HolderIdentity
		l.mu.Unlock()
	}
	return rec, raw, err
}

func (l *ownReleaseLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	l.mu.Lock()
	holder := l.holder
	l.mu.Unlock()
	if ler.HolderIdentity == "" && holder != "" && holder != l.Identity() {
		return fmt.Errorf("%w (%s)", errNotOurs, holder)
	}
	if err := l.Interface.Update(ctx, ler); err != nil {
		return err
	}
	l.mu.Lock()
	l.holder = ler.HolderIdentity
	l.mu.Unlock()
	return nil
}

// newLeaseLock is controller-runtime's Lease lock (its identity, namespace
// and client timeout), wrapped in ownReleaseLock.
func newLeaseLock(cfg *rest.Config, namespace, name string, renewDeadline time.Duration) (resourcelock.Interface, error) {
	lock, err := leaderelection.NewResourceLock(cfg, noLockEvents{}, leaderelection.Options{
		LeaderElection: true, LeaderElectionID: name, LeaderElectionNamespace: namespace, RenewDeadline: renewDeadline,
	})
	if err != nil {
		return nil, err
	}
	return &ownReleaseLock{Interface: lock}, nil
}

// noLockEvents gives the Lease lock no event recorder: it would write core
// Events, which the controller's Role (events.k8s.io only) does not grant.
type noLockEvents struct{}

func (noLockEvents) GetEventRecorderFor(string) record.EventRecorder  { return nil }
func (noLockEvents) GetEventRecorder(string) crrecorder.EventRecorder { return nil }
