package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	istionetworking "istio.io/client-go/pkg/apis/networking/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/controller"
)

func run(args []string) int {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig path; empty uses $KUBECONFIG, ~/.kube/config, or the in-cluster config")
	kubeContext := fs.String("context", "", "kubeconfig context to use; empty uses the current context")
	promURL := fs.String("prometheus-url", "http://prometheus.istio-system:9090", "default Prometheus for checks (a policy's prometheus.address overrides it)")
	queryTimeout := fs.Duration("query-timeout", 10*time.Second, "timeout of one Prometheus query; a timeout is an Error verdict")
	scrapeInterval := fs.Duration("scrape-interval", 15*time.Second, "Prometheus' scrape interval for the Istio metrics: each step's evidence starts two scrapes after its weights are applied, and the watchdog looks once per scrape")
	watchdogInterval := fs.Duration("watchdog-interval", 0, "how often the watchdog looks at every release with SLOs (one sweep for all); default: the scrape interval")
	grossInterval := fs.Duration("gross-check-interval", analysis.GrossLookEvery, "the longest time, between the watchdog's looks, before the gross check judges each release's newest samples again; it also looks as soon as a scrape is due to have landed, at most every 250ms (the counters are read at each look, one handful of queries for all releases); 0 turns the gross check off (for a Prometheus whose sample timestamps are not when the proxies were read, e.g. an aggregator that re-exports them late)")
	namespaces := fs.String("namespaces", "", "comma-separated namespaces to watch; empty watches all")
	metricsAddr := fs.String("metrics-bind-address", ":8080", "address of /metrics; 0 disables it")
	probeAddr := fs.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	leaderElect := fs.Bool("leader-elect", true, "elect a leader with a Lease so only one replica acts")
	leaderNS := fs.String("leader-election-namespace", "", "namespace of the Lease; empty uses the pod's namespace in a cluster, the kubeconfig context's namespace outside one")
	leaseDuration := fs.Duration("leader-election-lease-duration", 15*time.Second, "how long a replica waits after the leader's last renewal before taking over: the longest a killed leader's releases go unattended")
	renewDeadline := fs.Duration("leader-election-renew-deadline", 10*time.Second, "how long the leader retries renewing before it stops acting and exits (less than the lease duration)")
	retryPeriod := fs.Duration("leader-election-retry-period", 2*time.Second, "how often replicas try to acquire or renew the Lease")
	concurrency := fs.Int("max-concurrent-reconciles", 4, "Splits reconciled in parallel")
	logFormat := fs.String("log-format", "json", "json or console")
	logLevel := fs.String("log-level", "info", "debug, info or error")
	_ = fs.Parse(args)

	var level zapcore.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "--log-level:", err)
		return 2
	}
	ctrl.SetLogger(crzap.New(crzap.Level(level), encoder(*logFormat)))
	logger := ctrl.Log.WithName("splitter")

	cfg, contextNS, err := restConfig(*kubeconfig, *kubeContext)
	if err != nil {
		logger.Error(err, "Cannot load the kubeconfig")
		return 1
	}
	if *leaderElect && *leaderNS == "" && !inCluster() {
		// Run on a laptop: the Lease goes where the context points (as
		// kubectl's -n would), not where a pod would be.
		*leaderNS = contextNS
		logger.Info("Not in a cluster: the leader-election Lease goes in the kubeconfig context's namespace", "namespace", contextNS,
			"flag", "--leader-election-namespace")
	}
	for _, a := range []struct{ flag, addr string }{{"--metrics-bind-address", *metricsAddr}, {"--health-probe-bind-address", *probeAddr}} {
		if err := portFree(a.addr); err != nil {
			fmt.Fprintf(os.Stderr, "splitter run: %s %s: %v: another process listens there; pass %s with a free address (e.g. 127.0.0.1:0 picks one; 0 disables /metrics)\n",
				a.flag, a.addr, err, a.flag)
			return 2
		}
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, istionetworking.AddToScheme, splitterv1.AddToScheme} {
		if err := add(scheme); err != nil {
			logger.Error(err, "Cannot build the scheme")
			return 1
		}
	}
	// Of ReplicaSets, the cache keeps the metadata of those of the color
	// Deployments only (the revision label): which pods run a color's
	// revision, at a memory that follows the releases, not the cluster.
	ours, err := labels.NewRequirement(splitterv1.RevisionLabel, selection.Exists, nil)
	if err != nil {
		logger.Error(err, "Cannot build the ReplicaSet selector")
		return 1
	}
	cacheOpts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		controller.ReplicaSetMetadata(): {Label: labels.NewSelector().Add(*ours)},
	}}
	if *namespaces != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(*namespaces, ",") {
			cacheOpts.DefaultNamespaces[strings.TrimSpace(ns)] = cache.Config{}
		}
	}
	var lock resourcelock.Interface
	if *leaderElect {
		if lock, err = newLeaseLock(cfg, *leaderNS, "splitter.dev", *renewDeadline); err != nil {
			logger.Error(err, "Cannot set up leader election")
			return 1
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cacheOpts,
		Metrics:                 metricsserver.Options{BindAddress: *metricsAddr},
		HealthProbeBindAddress:  *probeAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "splitter.dev",
		LeaderElectionNamespace: *leaderNS,
		// A replica stopped cleanly hands the Lease over at once; a killed
		// one is replaced a lease duration after its last renewal. A leader
		// that cannot renew within the deadline exits (its pod restarts),
		// and every write it might still send carries a resourceVersion
		// precondition that a new leader's first write invalidates. The
		// lock never releases a Lease another replica holds (leaselock.go).
		LeaderElectionReleaseOnCancel:       true,
		LeaderElectionResourceLockInterface: lock,
		LeaseDuration:                       leaseDuration,
		RenewDeadline:                       renewDeadline,
		RetryPeriod:                         retryPeriod,
		Controller:                          config.Controller{MaxConcurrentReconciles: *concurrency},
	})
	if err != nil {
		logger.Error(err, "Cannot create the manager")
		return 1
	}
	if *watchdogInterval <= 0 {
		*watchdogInterval = *scrapeInterval
	}
	// A reading serves every release for at most half a sweep, and no
	// longer than the looks at a pending trip, or the gross check's, are
	// apart (so each of them reads samples the last one did not have).
	counterTTL := min(*watchdogInterval/2, analysis.PendingLookEvery(analysis.Timing{Scrape: *scrapeInterval}))
	if *grossInterval > 0 {
		counterTTL = min(counterTTL, controller.GrossCounterTTL)
	}
	prom := &controller.PrometheusChecks{Default: *promURL, Timeout: *queryTimeout, CounterTTL: counterTTL, Scrape: *scrapeInterval}
	r := &controller.SplitReconciler{
		Client:           mgr.GetClient(),
		Recorder:         mgr.GetEventRecorder("splitter"),
		Checks:           prom,
		Counters:         prom,
		WatchdogInterval: *watchdogInterval,
		GrossInterval:    *grossInterval,
		ScrapeInterval:   *scrapeInterval,
		Metrics:          controller.NewMetrics(),
	}
	if err := r.SetupWithManager(mgr); err != nil {
		logger.Error(err, "Cannot set up the controller")
		return 1
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		logger.Error(err, "Cannot add the health check")
		return 1
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		logger.Error(err, "Cannot add the readiness check")
		return 1
	}
	logger.Info("Starting", "version", version, "prometheus", *promURL, "namespaces", *namespaces, "leaderElection", *leaderElect)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		logger.Error(err, "Manager stopped")
		return 1
	}
	return 0
}

// encoder picks the log format; timestamps are RFC 3339 with fractions of
// a second: a snap-back is measured in milliseconds.
func encoder(format string) crzap.Opts {
	nanoTime := func(c *zapcore.EncoderConfig) { c.EncodeTime = zapcore.RFC3339NanoTimeEncoder }
	if format == "console" {
		return crzap.ConsoleEncoder(nanoTime)
	}
	return crzap.JSONEncoder(nanoTime)
}

// restConfig loads the client configuration as kubectl does: the given
// kubeconfig path (else $KUBECONFIG, else ~/.kube/config), the given
// context (else the current one); in a pod without any kubeconfig, the
// in-cluster config. It returns the context's namespace too.
func restConfig(path, context string) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		if path == "" && context == "" && inCluster() {
			cfg, err = rest.InClusterConfig()
			return cfg, "", err
		}
		return nil, "", err
	}
	ns, _, err := cc.Namespace()
	if err != nil || ns == "" {
		ns = "default"
	}
	return cfg, ns, nil
}

// inCluster says the process runs in a pod (the service account's
// environment is there).
func inCluster() bool {
	return os.Getenv("KUBERNETES_SERVICE_HOST") != "" && os.Getenv("KUBERNETES_SERVICE_PORT") != ""
}

// portFree says whether addr can be listened on ("0" disables a server).
func portFree(addr string) error {
	if addr == "" || addr == "0" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			return op.Err
		}
		return err
	}
	return l.Close()
}
