package e2e

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"splitter.dev/splitter/test/testbed"
)

// A person runs the controller on a laptop against a cluster with the
// documented flags alone: the Lease goes in the kubeconfig context's
// namespace (no "not running in-cluster" error), and a taken port is named
// with its flag instead of a bind error deep in the manager's start.
func TestRunLocallyWithDocumentedFlags(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "runlocal")

	// The controller's kubeconfig, with the context's namespace set as
	// `kubectl config set-context --current --namespace` would.
	cfg, err := clientcmd.LoadFromFile(tb.ControllerKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Contexts[cfg.CurrentContext].Namespace = ns
	kubeconfig := filepath.Join(t.TempDir(), "config")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}

	t.Run("a taken port names its flag", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, splitterBinary(t), "run", "--kubeconfig="+kubeconfig, "--prometheus-url="+tb.PrometheusURL,
			"--namespaces="+ns, "--metrics-bind-address="+l.Addr().String(), "--health-probe-bind-address=127.0.0.1:0").CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Fatalf("exit %v, want 2; output:\n%s", err, out)
		}
		if !strings.Contains(string(out), "--metrics-bind-address") || !strings.Contains(string(out), "in use") {
			t.Errorf("the error does not name the flag and the cause:\n%s", out)
		}
	})

	p, err := testbed.StartProcess("splitter-local-"+ns, tb.StateDir()+"/logs", splitterBinary(t), "run",
		"--kubeconfig="+kubeconfig, "--prometheus-url="+tb.PrometheusURL, "--namespaces="+ns,
		"--metrics-bind-address=127.0.0.1:0", "--health-probe-bind-address=127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("controller log %s (tail):\n%s", p.Log(), p.Tail())
		}
	})
	testbed.Eventually(t, time.Minute, 250*time.Millisecond, "the Lease in the context's namespace", func(ctx context.Context) error {
		if exited, err := p.Exited(); exited {
			t.Fatalf("splitter run exited: %v\n%s", err, p.Tail())
		}
		return tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "splitter.dev"}, &coordinationv1.Lease{})
	})
}
