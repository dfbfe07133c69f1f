// Package testbed builds a real local cluster for tests and the demo: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler built from Go
// modules, kwok for fake nodes and pods, the Istio and splitter CRDs, a
// Prometheus (3.x from its Go module, or Debian's 2.42), and the mesh
// simulator in-process. Every server listens on 127.0.0.1 on a free port,
// and every child process dies with the test bed.
package testbed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	istionetworking "istio.io/client-go/pkg/apis/networking/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/test/meshsim"
)

// Config says where the test bed's parts are. ConfigFromEnv fills it from
// the TESTBED_* variables the Makefile exports.
type Config struct {
	Etcd, KubeAPIServer, KubeControllerManager, KubeScheduler, Kwok, Prometheus string // binaries
	KwokStages                                                                  string // directory of kwok Stage YAML files
	IstioCRDs                                                                   string // the istio.io/api module's customresourcedefinitions.gen.yaml
	CRDs                                                                        string // directory of splitter's CRDs (deploy/crds)
	// PrometheusLegacy is a second Prometheus binary (Debian's 2.42) that
	// tests may start a test bed on, as Prometheus; empty if there is none.
	// ConfigFromEnv reads TESTBED_PROMETHEUS_LEGACY.
	PrometheusLegacy string

	// APIServerArgs are more kube-apiserver flags, e.g. --watch-cache=false.
	APIServerArgs []string

	// StateDir holds data, certificates, logs and the kubeconfig. It is
	// created if missing and never removed by Stop (logs stay for a look).
	StateDir string

	// ScrapeInterval is Prometheus' scrape (and rule evaluation) interval.
	// Default 1s, for fast tests; real clusters scrape every 15-60 s.
	// ConfigFromEnv reads TESTBED_SCRAPE_INTERVAL (a Go duration: 15s).
	ScrapeInterval time.Duration
	// Audit makes kube-apiserver keep an audit log of the writes to the
	// kinds splitter writes (AuditEvents, AuditWrites). ConfigFromEnv turns
	// it on unless TESTBED_AUDIT=0.
	Audit bool
	// MeshSim configures the traffic simulator.
	MeshSim meshsim.Options

	// Progress receives one line per start-up stage; nil discards them.
	Progress io.Writer
}

// ConfigFromEnv reads the TESTBED_* variables set by the Makefile. It fails
// with the list of missing variables when the Makefile did not run. Besides
// the tools' paths: TESTBED_STATE (the state directory),
// TESTBED_SCRAPE_INTERVAL (default 1s), TESTBED_AUDIT (default on) and
// TESTBED_PROMETHEUS_LEGACY (optional).
func ConfigFromEnv() (Config, error) {
	vars := map[string]*string{}
	var c Config
	vars["TESTBED_ETCD"] = &c.Etcd
	vars["TESTBED_KUBE_APISERVER"] = &c.KubeAPIServer
	vars["TESTBED_KUBE_CONTROLLER_MANAGER"] = &c.KubeControllerManager
	vars["TESTBED_KUBE_SCHEDULER"] = &c.KubeScheduler
	vars["TESTBED_KWOK"] = &c.Kwok
	vars["TESTBED_KWOK_STAGES"] = &c.KwokStages
	vars["TESTBED_PROMETHEUS"] = &c.Prometheus
	vars["TESTBED_ISTIO_CRDS"] = &c.IstioCRDs
	vars["TESTBED_CRDS"] = &c.CRDs
	var missing []string
	for name, dst := range vars {
		*dst = os.Getenv(name)
		if *dst == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return c, fmt.Errorf("test bed not configured: %s unset (run through `make`, which builds the tools and sets them)", strings.Join(missing, ", "))
	}
	c.StateDir = os.Getenv("TESTBED_STATE")
	c.PrometheusLegacy = os.Getenv("TESTBED_PROMETHEUS_LEGACY")
	if v := os.Getenv("TESTBED_SCRAPE_INTERVAL"); v != "" {
		d, err := ParseScrapeInterval(v)
		if err != nil {
			return c, fmt.Errorf("TESTBED_SCRAPE_INTERVAL: %w", err)
		}
		c.ScrapeInterval = d
	}
	c.Audit = true
	if v := os.Getenv("TESTBED_AUDIT"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("TESTBED_AUDIT=%q: want 1 or 0", v)
		}
		c.Audit = on
	}
	return c, nil
}

// ParseScrapeInterval parses a Go duration (15s, 1m, 500ms) into a scrape
// interval Prometheus accepts: positive and whole milliseconds.
func ParseScrapeInterval(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	if d <= 0 || d%time.Millisecond != 0 {
		return 0, fmt.Errorf("%s: want a positive whole number of milliseconds", d)
	}
	return d, nil
}

// Scheme has the types the test bed and its users need: core Kubernetes,
// CRDs, Istio networking and splitter.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, istionetworking.AddToScheme, splitterv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// TestBed is a running local cluster.
type TestBed struct {
	cfg Config

	// Kubeconfig is the admin kubeconfig's path (user AdminUser).
	Kubeconfig string
	// ControllerKubeconfig is a kubeconfig for a splitter controller, with
	// its own identity (user ControllerUser, also in system:masters), so
	// that the audit log tells its requests from the tests' and the other
	// components' (which all use Kubeconfig).
	ControllerKubeconfig string
	// RESTConfig is the admin config for the API server.
	RESTConfig *rest.Config
	// Client is a controller-runtime client with Scheme.
	Client client.Client
	// PrometheusURL is Prometheus' base URL.
	PrometheusURL string
	// MeshSim is the running simulator; MeshSimURL serves its /metrics.
	MeshSim    *meshsim.Simulator
	MeshSimURL string

	mu         sync.Mutex
	procs      []*Process // in start order
	stopMesh   context.CancelFunc
	meshDone   chan struct{}
	targetsDir string
	auditLog   string
	stopped    bool
	pki        *pki   // KubeconfigAs issues more client certificates
	apiHost    string // the API server's URL
	certSerial int64  // the last serial issued
}

// NodeName is the kwok node every pod lands on.
const NodeName = "kwok-node-0"

// Start brings the test bed up. On error it tears down what it started.
// ctx bounds start-up only; the test bed runs until Stop.
//
// A start that failed because a child could not bind its port is tried
// again (three times in all) on new ports: FreePort releases a port before
// the child binds it, and test packages run side by side (make test runs
// e2e, chaos and monitoring/live at once) can pick the same one. That
// happened on a fresh machine's first make test: Prometheus "bind: address
// already in use", and the whole e2e package failed.
func Start(ctx context.Context, cfg Config) (tb *TestBed, err error) {
	for try := 1; ; try++ {
		tb, err = start(ctx, cfg)
		if err == nil || try == 3 || ctx.Err() != nil || !strings.Contains(err.Error(), "address already in use") {
			return tb, err
		}
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "testbed: a port was taken meanwhile (%s); starting again on new ports\n", clashLine(err))
		}
	}
}

// clashLine is the line of a start-up error that says which port clashed.
func clashLine(err error) string {
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.Contains(line, "address already in use") {
			return strings.TrimSpace(line)
		}
	}
	return err.Error()
}

func start(ctx context.Context, cfg Config) (_ *TestBed, err error) {
	if cfg.ScrapeInterval == 0 {
		cfg.ScrapeInterval = time.Second
	}
	if cfg.StateDir == "" {
		if cfg.StateDir, err = os.MkdirTemp("", "splitter-testbed-"); err != nil {
			return nil, err
		}
	}
	if cfg.StateDir, err = filepath.Abs(cfg.StateDir); err != nil {
		return nil, err
	}
	// A previous run's data would resurrect its objects: start clean.
	for _, d := range []string{"etcd", "prometheus", "pki", "logs", "audit"} {
		if err := os.RemoveAll(filepath.Join(cfg.StateDir, d)); err != nil {
			return nil, err
		}
	}
	logs := filepath.Join(cfg.StateDir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	tb := &TestBed{
		cfg:                  cfg,
		Kubeconfig:           filepath.Join(cfg.StateDir, "kubeconfig"),
		ControllerKubeconfig: filepath.Join(cfg.StateDir, "controller.kubeconfig"),
	}
	defer func() {
		if err != nil {
			tb.Stop()
		}
	}()
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "testbed: "+format+"\n", args...)
		}
	}
	t0 := time.Now()

	// etcd
	etcdClient, err := FreePort()
	if err != nil {
		return nil, err
	}
	etcdPeer, err := FreePort()
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	etcd, err := tb.start("etcd", cfg.Etcd,
		"--name=testbed",
		"--data-dir="+filepath.Join(cfg.StateDir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", etcdPeer),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", etcdPeer),
		fmt.Sprintf("--initial-cluster=testbed=http://127.0.0.1:%d", etcdPeer),
		"--unsafe-no-fsync", // a throwaway store: durability buys nothing here
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	if err := waitFor(withTimeout(ctx, 30*time.Second), etcd, "etcd health", httpOK(etcdURL+"/health", nil)); err != nil {
		return nil, err
	}
	progress("etcd ready at %s (%.1fs)", etcdURL, time.Since(t0).Seconds())

	// kube-apiserver
	pki, err := newPKI(filepath.Join(cfg.StateDir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	apiPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	host := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--tls-cert-file=" + pki.servingCert,
		"--tls-private-key-file=" + pki.servingKey,
		"--client-ca-file=" + pki.caCert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.saPub,
		"--service-account-signing-key-file=" + pki.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		// No kubelet mounts tokens and no node lifecycle controller runs:
		// ServiceAccount admission would wait for a token controller, and
		// TaintNodesByCondition would leave kwok's node tainted not-ready.
		"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
		"--allow-privileged=true",
		// The advertised address is loopback, which the endpoint reconciler refuses.
		"--endpoint-reconciler-type=none",
	}
	apiArgs = append(apiArgs, cfg.APIServerArgs...)
	if cfg.Audit {
		dir := filepath.Join(cfg.StateDir, "audit")
		args, err := auditArgs(dir)
		if err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		apiArgs = append(apiArgs, args...)
		tb.auditLog = filepath.Join(dir, "audit.log")
	}
	apiserver, err := tb.start("kube-apiserver", cfg.KubeAPIServer, apiArgs...)
	if err != nil {
		return nil, err
	}
	if err := pki.writeKubeconfig(tb.Kubeconfig, host, pki.admin); err != nil {
		return nil, err
	}
	if err := pki.writeKubeconfig(tb.ControllerKubeconfig, host, pki.controller); err != nil {
		return nil, err
	}
	tb.pki, tb.apiHost, tb.certSerial = pki, host, 100
	if tb.RESTConfig, err = clientcmd.BuildConfigFromFlags("", tb.Kubeconfig); err != nil {
		return nil, err
	}
	tb.RESTConfig.QPS, tb.RESTConfig.Burst = 200, 400
	apiTLS, err := rest.TLSConfigFor(tb.RESTConfig)
	if err != nil {
		return nil, err
	}
	if err := waitFor(withTimeout(ctx, 90*time.Second), apiserver, "kube-apiserver /readyz", httpOK(host+"/readyz", apiTLS)); err != nil {
		return nil, err
	}
	if tb.Client, err = client.New(tb.RESTConfig, client.Options{Scheme: Scheme()}); err != nil {
		return nil, err
	}
	progress("kube-apiserver ready at %s (%.1fs)", host, time.Since(t0).Seconds())

	// The rest starts in parallel: controllers, scheduler, kwok, CRDs, mesh, Prometheus.
	var (
		wg   sync.WaitGroup
		errs = make([]error, 4)
	)
	run := func(i int, f func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f() }()
	}
	run(0, func() error { return tb.startControllers(ctx) })
	run(1, func() error { return tb.startKwok(ctx) })
	run(2, func() error { return tb.installCRDs(ctx) })
	run(3, func() error { return tb.startPrometheus(ctx) })
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	progress("controllers, kwok node, CRDs and Prometheus ready (%.1fs)", time.Since(t0).Seconds())

	// The simulator needs the Istio CRDs to watch VirtualServices.
	if err := tb.startMeshSim(ctx); err != nil {
		return nil, err
	}
	if err := tb.AddScrapeTarget("meshsim", strings.TrimPrefix(tb.MeshSimURL, "http://")); err != nil {
		return nil, err
	}
	progress("mesh simulator at %s, scraped every %s (%.1fs)", tb.MeshSimURL, cfg.ScrapeInterval, time.Since(t0).Seconds())
	return tb, nil
}

func (tb *TestBed) start(name, bin string, args ...string) (*Process, error) {
	p, err := StartProcess(name, filepath.Join(tb.cfg.StateDir, "logs"), bin, args...)
	if err != nil {
		return nil, err
	}
	tb.mu.Lock()
	tb.procs = append(tb.procs, p)
	tb.mu.Unlock()
	return p, nil
}

func (tb *TestBed) startControllers(ctx context.Context) error {
	kcmPort, err := FreePort()
	if err != nil {
		return err
	}
	kcm, err := tb.start("kube-controller-manager", tb.cfg.KubeControllerManager,
		"--kubeconfig="+tb.Kubeconfig,
		"--authentication-kubeconfig="+tb.Kubeconfig,
		"--authorization-kubeconfig="+tb.Kubeconfig,
		// The controllers a Deployment needs, plus namespace deletion.
		"--controllers=deployment-controller,replicaset-controller,garbage-collector-controller,namespace-controller",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", kcmPort),
		"--concurrent-deployment-syncs=10",
		"--concurrent-replicaset-syncs=10",
	)
	if err != nil {
		return err
	}
	schedPort, err := FreePort()
	if err != nil {
		return err
	}
	sched, err := tb.start("kube-scheduler", tb.cfg.KubeScheduler,
		"--kubeconfig="+tb.Kubeconfig,
		"--authentication-kubeconfig="+tb.Kubeconfig,
		"--authorization-kubeconfig="+tb.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", schedPort),
	)
	if err != nil {
		return err
	}
	insecure := &tls.Config{InsecureSkipVerify: true} // self-signed on loopback; only /healthz is read
	if err := waitFor(withTimeout(ctx, 60*time.Second), kcm, "kube-controller-manager /healthz",
		httpOK(fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort), insecure)); err != nil {
		return err
	}
	return waitFor(withTimeout(ctx, 60*time.Second), sched, "kube-scheduler /healthz",
		httpOK(fmt.Sprintf("https://127.0.0.1:%d/healthz", schedPort), insecure))
}

func (tb *TestBed) startKwok(ctx context.Context) error {
	stages, err := filepath.Glob(filepath.Join(tb.cfg.KwokStages, "*.yaml"))
	if err != nil || len(stages) == 0 {
		return fmt.Errorf("no kwok stages in %q (run `make tools`)", tb.cfg.KwokStages)
	}
	args := []string{
		"--kubeconfig=" + tb.Kubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr=10.244.0.0/16", // fake pod IPs: nothing ever connects to them
		"--node-ip=10.0.1.1",
	}
	for _, s := range stages {
		args = append(args, "--config="+s)
	}
	kwok, err := tb.start("kwok", tb.cfg.Kwok, args...)
	if err != nil {
		return err
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        NodeName,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux"},
		},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi"),
				corev1.ResourcePods: resource.MustParse("5000"),
			},
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi"),
				corev1.ResourcePods: resource.MustParse("5000"),
			},
		},
	}
	if err := tb.Client.Create(ctx, node); err != nil {
		return fmt.Errorf("creating node: %w", err)
	}
	return waitFor(withTimeout(ctx, 60*time.Second), kwok, "kwok to mark the node Ready", func(ctx context.Context) error {
		var n corev1.Node
		if err := tb.Client.Get(ctx, client.ObjectKey{Name: NodeName}, &n); err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				if len(n.Spec.Taints) > 0 {
					return fmt.Errorf("node has taints %v", n.Spec.Taints)
				}
				return nil
			}
		}
		return errors.New("node not Ready")
	})
}

// installCRDs applies the Istio CRDs and splitter's and waits until each is Established.
func (tb *TestBed) installCRDs(ctx context.Context) error {
	files := []string{tb.cfg.IstioCRDs}
	own, err := filepath.Glob(filepath.Join(tb.cfg.CRDs, "*.yaml"))
	if err != nil {
		return err
	}
	if len(own) == 0 {
		return fmt.Errorf("no CRDs in %q (run `make manifests`)", tb.cfg.CRDs)
	}
	files = append(files, own...)
	crds, err := ReadCRDs(files...)
	if err != nil {
		return err
	}
	for _, crd := range crds {
		if err := tb.Client.Create(ctx, crd); err != nil {
			return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
		}
	}
	return waitFor(withTimeout(ctx, 60*time.Second), nil, "CRDs Established", func(ctx context.Context) error {
		for _, crd := range crds {
			var got apiextensionsv1.CustomResourceDefinition
			if err := tb.Client.Get(ctx, client.ObjectKey{Name: crd.Name}, &got); err != nil {
				return err
			}
			established := false
			for _, c := range got.Status.Conditions {
				established = established || (c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue)
			}
			if !established {
				return fmt.Errorf("CRD %s not Established", crd.Name)
			}
		}
		return nil
	})
}

// ReadCRDs decodes every CustomResourceDefinition in the given YAML files.
func ReadCRDs(files ...string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("reading CRDs: %w", err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(fh, 4096)
		for {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := dec.Decode(crd); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				fh.Close()
				return nil, fmt.Errorf("decoding %s: %w", f, err)
			}
			if crd.Kind == "CustomResourceDefinition" {
				out = append(out, crd)
			}
		}
		fh.Close()
	}
	return out, nil
}

// takenPorts hands a component, once, a port that is already taken: a test
// (TestStartRetriesAPortClash) shows that Start recovers from a clash.
var (
	takenPorts   = map[string]int{}
	takenPortsMu sync.Mutex
)

// freePort is FreePort, unless a test took the component's port.
func freePort(component string) (int, error) {
	takenPortsMu.Lock()
	p, ok := takenPorts[component]
	delete(takenPorts, component)
	takenPortsMu.Unlock()
	if ok {
		return p, nil
	}
	return FreePort()
}

func (tb *TestBed) startPrometheus(ctx context.Context) error {
	port, err := freePort("prometheus")
	if err != nil {
		return err
	}
	dir := filepath.Join(tb.cfg.StateDir, "prometheus")
	tb.targetsDir = filepath.Join(dir, "targets")
	if err := os.MkdirAll(tb.targetsDir, 0o755); err != nil {
		return err
	}
	// Targets come from files (file_sd), so tests can add a scrape target
	// (the controller's /metrics, say) while Prometheus runs. The timeout
	// must not exceed the interval; 10 s is Prometheus' default.
	interval := tb.cfg.ScrapeInterval
	config := fmt.Sprintf(`global:
  scrape_interval: %s
  scrape_timeout: %s
  evaluation_interval: %s
scrape_configs:
- job_name: testbed
  file_sd_configs:
  - files: ['%s/*.json']
    refresh_interval: 1s
`, model.Duration(interval), model.Duration(min(interval, 10*time.Second)), model.Duration(interval), tb.targetsDir)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return err
	}
	tb.PrometheusURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	// These flags and the config mean the same to Prometheus 2.42 and 3.x
	// (3 renamed none of them; its UI is not built in, the API is all the
	// test bed uses).
	prom, err := tb.start("prometheus", tb.cfg.Prometheus,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port),
		"--storage.tsdb.retention.time=1d",
		"--log.level=warn",
	)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tb.cfg.StateDir, "prometheus-url"), []byte(tb.PrometheusURL+"\n"), 0o644); err != nil {
		return err
	}
	return waitFor(withTimeout(ctx, 60*time.Second), prom, "Prometheus /-/ready", httpOK(tb.PrometheusURL+"/-/ready", nil))
}

// AddScrapeTarget makes Prometheus scrape addr (host:port) as job. The
// target is picked up within a second or two and first scraped within one
// scrape interval after that.
func (tb *TestBed) AddScrapeTarget(job, addr string) error {
	data := fmt.Sprintf(`[{"targets": [%q], "labels": {"job": %q}}]`, addr, job)
	tmp := filepath.Join(tb.targetsDir, "."+job+".tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(tb.targetsDir, job+".json"))
}

func (tb *TestBed) startMeshSim(ctx context.Context) error {
	sim, err := meshsim.New(tb.RESTConfig, tb.cfg.MeshSim)
	if err != nil {
		return err
	}
	addr, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	tb.MeshSim, tb.MeshSimURL, tb.stopMesh, tb.meshDone = sim, "http://"+addr, cancel, make(chan struct{})
	go func() {
		defer close(tb.meshDone)
		_ = sim.Run(runCtx)
	}()
	return waitFor(withTimeout(ctx, 30*time.Second), nil, "mesh simulator caches", func(context.Context) error {
		if !sim.Synced() {
			return errors.New("informers not synced")
		}
		return nil
	})
}

// StateDir is where the test bed keeps its data and logs.
func (tb *TestBed) StateDir() string { return tb.cfg.StateDir }

// ScrapeInterval is Prometheus' scrape interval (Config.ScrapeInterval).
func (tb *TestBed) ScrapeInterval() time.Duration { return tb.cfg.ScrapeInterval }

// PIDs lists the child processes' PIDs, by name.
func (tb *TestBed) PIDs() map[string]int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	out := map[string]int{}
	for _, p := range tb.procs {
		out[p.name] = p.cmd.Process.Pid
	}
	return out
}

// Stop tears everything down: the simulator, then the children in reverse
// start order (etcd last). It is safe to call more than once.
func (tb *TestBed) Stop() {
	tb.mu.Lock()
	if tb.stopped {
		tb.mu.Unlock()
		return
	}
	tb.stopped = true
	procs := tb.procs
	tb.mu.Unlock()
	if tb.stopMesh != nil {
		tb.stopMesh()
		<-tb.meshDone
	}
	var wg sync.WaitGroup
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if p.name == "etcd" || p.name == "kube-apiserver" {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop(5 * time.Second) }()
	}
	wg.Wait()
	for _, name := range []string{"kube-apiserver", "etcd"} {
		for _, p := range procs {
			if p.name == name {
				p.Stop(10 * time.Second)
			}
		}
	}
}

func withTimeout(ctx context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(ctx, d)
	go func() { <-ctx.Done(); cancel() }()
	return ctx
}

func httpOK(url string, tlsConfig *tls.Config) func(context.Context) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}
