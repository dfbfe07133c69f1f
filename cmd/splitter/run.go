package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	istionetworking "istio.io/client-go/pkg/apis/networking/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/controller"
)

func run(args []string) int {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig path; empty uses in-cluster config or $KUBECONFIG")
	promURL := fs.String("prometheus-url", "http://prometheus.istio-system:9090", "default Prometheus for checks (a policy's prometheus.address overrides it)")
	queryTimeout := fs.Duration("query-timeout", 10*time.Second, "timeout of one Prometheus query; a timeout is an Error verdict")
	scrapeInterval := fs.Duration("scrape-interval", 15*time.Second, "Prometheus' scrape interval for the Istio metrics: each step's evidence starts two scrapes after its weights are applied, and the watchdog looks once per scrape")
	watchdogInterval := fs.Duration("watchdog-interval", 0, "how often the watchdog looks at every release with SLOs (one sweep for all); default: the scrape interval")
	namespaces := fs.String("namespaces", "", "comma-separated namespaces to watch; empty watches all")
	metricsAddr := fs.String("metrics-bind-address", ":8080", "address of /metrics; 0 disables it")
	probeAddr := fs.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	leaderElect := fs.Bool("leader-elect", true, "elect a leader with a Lease so only one replica acts")
	leaderNS := fs.String("leader-election-namespace", "", "namespace of the Lease; empty uses the pod's namespace")
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

	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		logger.Error(err, "Cannot load the kubeconfig")
		return 1
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, istionetworking.AddToScheme, splitterv1.AddToScheme} {
		if err := add(scheme); err != nil {
			logger.Error(err, "Cannot build the scheme")
			return 1
		}
	}
	cacheOpts := cache.Options{}
	if *namespaces != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(*namespaces, ",") {
			cacheOpts.DefaultNamespaces[strings.TrimSpace(ns)] = cache.Config{}
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
		// precondition that a new leader's first write invalidates.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 leaseDuration,
		RenewDeadline:                 renewDeadline,
		RetryPeriod:                   retryPeriod,
		Controller:                    config.Controller{MaxConcurrentReconciles: *concurrency},
	})
	if err != nil {
		logger.Error(err, "Cannot create the manager")
		return 1
	}
	if *watchdogInterval <= 0 {
		*watchdogInterval = *scrapeInterval
	}
	prom := &controller.PrometheusChecks{Default: *promURL, Timeout: *queryTimeout, CounterTTL: *watchdogInterval / 2, Scrape: *scrapeInterval}
	r := &controller.SplitReconciler{
		Client:           mgr.GetClient(),
		Recorder:         mgr.GetEventRecorder("splitter"),
		Checks:           prom,
		Counters:         prom,
		WatchdogInterval: *watchdogInterval,
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

func restConfig(path string) (*rest.Config, error) {
	if path == "" {
		return ctrl.GetConfig()
	}
	return clientcmd.BuildConfigFromFlags("", path)
}
