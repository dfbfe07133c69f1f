package chaos

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// The faults a chaos run injects.
const (
	faultLeaderKill  = "leader SIGKILLed"
	faultReplicaKill = "standby replica SIGKILLed"
	faultAPIServer   = "kube-apiserver restarted"
	faultEtcd        = "etcd hung"
	faultPrometheus  = "Prometheus hung or restarted"
)

type fault struct {
	kind       string
	start, end time.Time
	takeover   time.Duration // leader kills: until another identity held the Lease
}

// faultLog is every fault injected, and what each may cost a release.
type faultLog struct {
	lease, step time.Duration

	mu     sync.Mutex
	faults []fault
}

func (l *faultLog) add(kind string, start, end time.Time, takeover time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.faults = append(l.faults, fault{kind: kind, start: start, end: end, takeover: takeover})
}

// cost is how much a fault may delay a release, beyond its own length:
// the Lease a leader that exits leaves behind, and for Prometheus a step
// whose read at its end failed (retried for one stepDuration) or whose
// extension the outage spent.
func (l *faultLog) cost(f fault) time.Duration {
	switch f.kind {
	case faultReplicaKill:
		return 0
	case faultPrometheus:
		return f.end.Sub(f.start) + 2*l.step
	default: // the leader dies, or cannot renew and exits: a lease and a start
		return f.end.Sub(f.start) + l.lease + 5*time.Second
	}
}

// allowance is the extra time the faults in [from, to] may cost a
// release, and half a minute for a loaded machine.
func (l *faultLog) allowance(from, to time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	total := 30 * time.Second
	for _, f := range l.faults {
		if f.end.After(from) && f.start.Before(to) {
			total += l.cost(f)
		}
	}
	return total
}

// allowanceCap bounds how long a lane waits for one release: generous,
// the observer applies the real bound.
func (l *faultLog) allowanceCap() time.Duration { return 10 * time.Minute }

func (l *faultLog) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.faults)
}

func (l *faultLog) counts() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := map[string]int{}
	for _, f := range l.faults {
		n[f.kind]++
	}
	var parts []string
	for _, k := range []string{faultLeaderKill, faultReplicaKill, faultAPIServer, faultEtcd, faultPrometheus} {
		parts = append(parts, fmt.Sprintf("%s %d", k, n[k]))
	}
	return strings.Join(parts, ", ")
}

func (l *faultLog) takeovers() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []time.Duration
	for _, f := range l.faults {
		if f.kind == faultLeaderKill {
			ds = append(ds, f.takeover)
		}
	}
	if len(ds) == 0 {
		return "no leader kill"
	}
	slices.Sort(ds)
	return fmt.Sprintf("median %s, worst %s over %d kills (lease %s)", ds[len(ds)/2].Round(10*time.Millisecond), ds[len(ds)-1].Round(10*time.Millisecond), len(ds), l.lease)
}
