package chaos

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"splitter.dev/splitter/test/testbed"
)

// leaseNamespace holds the replicas' leader-election Lease.
const leaseNamespace = "splitter-system"

// replica is one `splitter run`, restarted whenever it ends, as a
// Deployment's pod would be.
type replica struct {
	user, kubeconfig, metrics string
	args                      []string

	mu       sync.Mutex
	proc     *testbed.Process
	starts   int
	stopping bool
}

// replicaSet is the controller's replicas, with one Lease.
type replicaSet struct {
	t     testing.TB
	tb    *testbed.TestBed
	lease time.Duration
	all   []*replica
	done  sync.WaitGroup

	mu         sync.Mutex
	rng        *rand.Rand // restart delays
	restartOff bool       // a test starts replicas itself (rs.start)
}

// startReplicas starts n replicas watching every namespace, each with its
// own identity (user splitter-<letter>) so the audit log tells their
// writes apart. They are stopped when the test ends.
func startReplicas(t testing.TB, tb *testbed.TestBed, n int, lease time.Duration, seed uint64) *replicaSet {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: leaseNamespace}}
	if err := tb.Client.Create(context.Background(), ns); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	rs := &replicaSet{t: t, tb: tb, lease: lease, rng: rand.New(rand.NewPCG(seed, 2))}
	for i := range n {
		user := fmt.Sprintf("splitter-%c", 'a'+i)
		kc, err := tb.KubeconfigAs(user)
		if err != nil {
			t.Fatal(err)
		}
		port, err := testbed.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		r := &replica{user: user, kubeconfig: kc, metrics: fmt.Sprintf("127.0.0.1:%d", port)}
		r.args = []string{"run",
			"--kubeconfig=" + kc,
			"--prometheus-url=" + tb.PrometheusURL,
			"--leader-election-namespace=" + leaseNamespace,
			"--leader-election-lease-duration=" + lease.String(),
			"--leader-election-renew-deadline=" + (lease * 3 / 4).String(),
			"--leader-election-retry-period=" + (lease / 4).String(),
			"--metrics-bind-address=" + r.metrics,
			"--health-probe-bind-address=127.0.0.1:0",
			"--query-timeout=3s",
			"--scrape-interval=" + tb.ScrapeInterval().String(),
		}
		if err := rs.start(r); err != nil {
			t.Fatal(err)
		}
		rs.all = append(rs.all, r)
		rs.done.Add(1)
		go rs.supervise(r)
	}
	t.Cleanup(rs.stop)
	return rs
}

func (rs *replicaSet) start(r *replica) error {
	p, err := testbed.StartProcess(r.user, rs.tb.StateDir()+"/logs", testbed.SplitterBinary(rs.t), r.args...)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.proc = p
	r.starts++
	r.mu.Unlock()
	return nil
}

// supervise restarts r whenever it ends (killed, or exiting because it
// lost the Lease), after a random delay of up to a second and a half.
func (rs *replicaSet) supervise(r *replica) {
	defer rs.done.Done()
	for {
		r.mu.Lock()
		p, stopping := r.proc, r.stopping
		r.mu.Unlock()
		if stopping {
			return
		}
		rs.mu.Lock()
		off := rs.restartOff
		rs.mu.Unlock()
		if done, _ := p.Exited(); !done || off {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		rs.mu.Lock()
		delay := time.Duration(rs.rng.Int64N(int64(1500 * time.Millisecond)))
		rs.mu.Unlock()
		time.Sleep(delay)
		r.mu.Lock()
		stopping = r.stopping
		r.mu.Unlock()
		if stopping {
			return
		}
		if err := rs.start(r); err != nil {
			rs.t.Errorf("restarting %s: %v", r.user, err)
			return
		}
	}
}

func (rs *replicaSet) stop() {
	for _, r := range rs.all {
		r.mu.Lock()
		r.stopping = true
		p := r.proc
		r.mu.Unlock()
		p.Stop(5 * time.Second)
	}
	rs.done.Wait()
	for _, r := range rs.all { // one a supervisor started as it was told to stop
		r.mu.Lock()
		p := r.proc
		r.mu.Unlock()
		p.Stop(5 * time.Second)
	}
	if rs.t.Failed() {
		for _, r := range rs.all {
			rs.t.Logf("%s's log: %s", r.user, r.proc.Log())
		}
	}
}

// leader is the replica whose /metrics says it leads, or nil.
func (rs *replicaSet) leader() *replica {
	for _, r := range rs.all {
		if r.isLeader() {
			return r
		}
	}
	return nil
}

func (r *replica) isLeader() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "leader_election_master_status{") && strings.HasSuffix(line, " 1") {
			return true
		}
	}
	return false
}

func (r *replica) kill() {
	r.mu.Lock()
	p := r.proc
	r.mu.Unlock()
	p.Kill()
}

// waitTakeover waits until another identity than holder holds the Lease
// and returns how long after since that was.
func (rs *replicaSet) waitTakeover(tb *testbed.TestBed, holder string, since time.Time) time.Duration {
	deadline := since.Add(20 * rs.lease)
	for time.Now().Before(deadline) {
		if h := leaseHolder(tb); h != "" && h != holder {
			return time.Since(since)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rs.t.Errorf("no replica took the Lease over within %s of the leader's kill", 20*rs.lease)
	return time.Since(since)
}

// killOther SIGKILLs a replica that does not lead (any, when none does).
func (rs *replicaSet) killOther() {
	rs.mu.Lock()
	i := rs.rng.IntN(len(rs.all))
	rs.mu.Unlock()
	for k := range rs.all {
		r := rs.all[(i+k)%len(rs.all)]
		if !r.isLeader() {
			r.kill()
			return
		}
	}
}

func (rs *replicaSet) restarts() int {
	n := 0
	for _, r := range rs.all {
		r.mu.Lock()
		n += r.starts - 1
		r.mu.Unlock()
	}
	return n
}

// setRestart turns the supervisors' restarts on or off.
func (rs *replicaSet) setRestart(on bool) {
	rs.mu.Lock()
	rs.restartOff = !on
	rs.mu.Unlock()
}

// waitHolder reads the Lease's holder, retrying for a few seconds (the API
// server may be restarting); "" when it could not.
func waitHolder(tb *testbed.TestBed) string {
	for range 20 {
		if h := leaseHolder(tb); h != "" {
			return h
		}
		time.Sleep(250 * time.Millisecond)
	}
	return ""
}

// leaseHolder is the Lease's holder identity ("" when unknown).
func leaseHolder(tb *testbed.TestBed) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l := &coordinationv1.Lease{}
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: leaseNamespace, Name: "splitter.dev"}, l); err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// other is a replica that is not r.
func (rs *replicaSet) other(r *replica) *replica {
	for _, x := range rs.all {
		if x != r {
			return x
		}
	}
	return nil
}

func (r *replica) pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.PID()
}
