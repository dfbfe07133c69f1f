package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
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

// newLeaseLock builds the Lease lock as controller-runtime would (a
// hostname_uuid identity, the pod's namespace in a cluster, a client
// timeout of half the renew deadline), wrapped in ownReleaseLock.
func newLeaseLock(cfg *rest.Config, namespace, name string, renewDeadline time.Duration) (resourcelock.Interface, error) {
	if namespace == "" {
		b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
		if err != nil {
			return nil, fmt.Errorf("the leader-election Lease's namespace: not in a cluster, set --leader-election-namespace: %w", err)
		}
		namespace = strings.TrimSpace(string(b))
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, err
	}
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), "leader-election")
	cfg.Timeout = max(renewDeadline/2, time.Second)
	core, err := corev1.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	coord, err := coordinationv1.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, namespace, name, core, coord,
		resourcelock.ResourceLockConfig{Identity: host + "_" + string(uuid.NewUUID())})
	if err != nil {
		return nil, err
	}
	return &ownReleaseLock{Interface: lock}, nil
}
