package testbed

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeconfigAs writes a kubeconfig for a new identity, user (a client
// certificate in system:masters), and returns its path: two controller
// replicas with their own users are told apart in the audit log.
func (tb *TestBed) KubeconfigAs(user string) (string, error) {
	tb.mu.Lock()
	tb.certSerial++
	serial := tb.certSerial
	tb.mu.Unlock()
	c, err := tb.pki.clientCertFor(serial, user)
	if err != nil {
		return "", fmt.Errorf("client certificate for %s: %w", user, err)
	}
	path := filepath.Join(tb.cfg.StateDir, user+".kubeconfig")
	return path, tb.pki.writeKubeconfig(path, tb.apiHost, c)
}

// Restart stops the test bed's process named name (SIGKILL when kill,
// else SIGTERM with a grace period) and starts it again with the same
// binary, flags and ports, then waits until it is ready again. Its data
// stays: kube-apiserver restarted keeps every object in etcd, Prometheus
// replays its write-ahead log. Supported: kube-apiserver, prometheus.
func (tb *TestBed) Restart(ctx context.Context, name string, kill bool) error {
	var ready func(context.Context) error
	switch name {
	case "kube-apiserver":
		cfg, err := clientcmd.BuildConfigFromFlags("", tb.Kubeconfig)
		if err != nil {
			return err
		}
		tlsConfig, err := rest.TLSConfigFor(cfg)
		if err != nil {
			return err
		}
		ready = httpOK(tb.apiHost+"/readyz", tlsConfig)
	case "prometheus":
		ready = httpOK(tb.PrometheusURL+"/-/ready", nil)
	default:
		return fmt.Errorf("restarting %q is not supported", name)
	}
	tb.mu.Lock()
	idx := -1
	for i, p := range tb.procs {
		if p.name == name {
			idx = i
		}
	}
	if idx < 0 || tb.stopped {
		tb.mu.Unlock()
		return fmt.Errorf("no running test bed process named %q", name)
	}
	old := tb.procs[idx]
	tb.mu.Unlock()

	if kill {
		old.Kill()
	} else {
		old.Stop(10 * time.Second)
	}
	p, err := StartProcess(name, filepath.Join(tb.cfg.StateDir, "logs"), old.cmd.Path, old.cmd.Args[1:]...)
	if err != nil {
		return err
	}
	tb.mu.Lock()
	if tb.stopped { // Stop ran meanwhile: it did not see p
		tb.mu.Unlock()
		p.Stop(5 * time.Second)
		return fmt.Errorf("the test bed stopped while %s restarted", name)
	}
	tb.procs[idx] = p
	tb.mu.Unlock()
	return waitFor(withTimeout(ctx, 90*time.Second), p, name+" ready after a restart", ready)
}
