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
	start, end time.Time // a leader kill ends when another identity holds the Lease
}

// faultLog is every fault injected, and what each may cost a release.
type faultLog struct {
	lease, step time.Duration

	mu     sync.Mutex
	faults []fault
}

func (l *faultLog) add(kind string, start, end time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.faults = append(l.faults, fault{kind: kind, start: start, end: end})
}

// tail is how long a fault's effects outlast it: for the leader's death,
// an API server restart or etcd hanging, a Lease (a leader that cannot
// renew exits and is replaced) and a start; for Prometheus, a step whose
// read at its end failed (retried for one stepDuration) or whose
// extension the outage spent. A standby replica's death costs nothing.
func (l *faultLog) tail(f fault) time.Duration {
	switch f.kind {
	case faultReplicaKill:
		return 0
	case faultPrometheus:
		return 2 * l.step
	default:
		return l.lease + 5*time.Second
	}
}

// faulted measures how much of [from, to] the faults and their tails
// covered (the union of their windows, so overlapping faults count once),
// with half a minute for a loaded machine. A release's time outside them
// must stay within its policy's bound.
func (l *faultLog) faulted(from, to time.Time) time.Duration {
	l.mu.Lock()
	var spans [][2]time.Time
	for _, f := range l.faults {
		if t := l.tail(f); t > 0 || f.end.After(f.start) {
			spans = append(spans, [2]time.Time{f.start, f.end.Add(t)})
		}
	}
	l.mu.Unlock()
	return 30*time.Second + covered(spans, from, to)
}

// covered is the length of the union of spans within [from, to].
func covered(spans [][2]time.Time, from, to time.Time) time.Duration {
	slices.SortFunc(spans, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	var total time.Duration
	cur := from
	for _, s := range spans {
		start, end := maxTime(s[0], cur), minTime(s[1], to)
		if end.After(start) {
			total += end.Sub(start)
			cur = end
		}
	}
	return total
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// waitCap bounds how long a lane waits for one release: generous, the
// observer applies the real bound.
func (l *faultLog) waitCap() time.Duration { return 10 * time.Minute }

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
			ds = append(ds, f.end.Sub(f.start))
		}
	}
	if len(ds) == 0 {
		return "no leader kill"
	}
	slices.Sort(ds)
	return fmt.Sprintf("median %s, worst %s over %d kills (lease %s)", ds[len(ds)/2].Round(10*time.Millisecond), ds[len(ds)-1].Round(10*time.Millisecond), len(ds), l.lease)
}
