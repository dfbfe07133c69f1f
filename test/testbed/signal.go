package testbed

import (
	"fmt"
	"syscall"
)

// SignalProcess sends sig to the test bed's process named name (etcd,
// kube-apiserver, prometheus, ...): SIGSTOP and SIGCONT make a part hang
// and come back, as when a node stalls. Stop still ends a stopped
// process: SIGKILL works on it.
func (tb *TestBed) SignalProcess(name string, sig syscall.Signal) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, p := range tb.procs {
		if p.name == name {
			return syscall.Kill(p.PID(), sig)
		}
	}
	return fmt.Errorf("no test bed process named %q", name)
}
