// Command splitter is the controller and its tools:
//
//	splitter run [flags]            run the controller
//	splitter policy lint FILE...    check SplitPolicy YAML as the controller would, without a cluster
//	splitter policy simulate -f FILE --rps N --error-rate P
//	                                Monte-Carlo releases of a policy through the engine
//	splitter version
//
// Installed (or linked) as kubectl-splitter it is the kubectl plugin,
// `kubectl splitter ...` (internal/plugin); as kubectl_complete-splitter it
// answers kubectl's shell completion for the plugin.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"splitter.dev/splitter/internal/plugin"
	"splitter.dev/splitter/internal/policy"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	args := os.Args[1:]
	switch pluginMode(os.Args[0]) {
	case "plugin":
		plugin.Version = version
		os.Exit(plugin.Main(args, plugin.ProcessEnv()))
	case "complete":
		// kubectl (1.26+) runs kubectl_complete-splitter with the words
		// to complete.
		plugin.Version = version
		os.Exit(plugin.Main(append([]string{"__complete"}, args...), plugin.ProcessEnv()))
	}
	if len(args) == 0 {
		usage()
	}
	var code int
	switch args[0] {
	case "run":
		code = run(args[1:])
	case "policy":
		if len(args) < 2 {
			usage()
		}
		switch args[1] {
		case "lint":
			code = lint(args[2:])
		case "simulate":
			code = simulateCmd(args[2:], os.Stdout, os.Stderr)
		case "backtest":
			code = backtestCmd(args[2:], os.Stdout, os.Stderr, time.Now())
		default:
			usage()
		}
	case "version":
		fmt.Println("splitter", version)
	default:
		usage()
	}
	os.Exit(code)
}

// pluginMode says, from the name the binary was run as, whether it is the
// kubectl plugin ("plugin"), kubectl's completion helper for it
// ("complete"), or the splitter command ("").
func pluginMode(arg0 string) string {
	base := strings.TrimSuffix(filepath.Base(arg0), ".exe")
	switch base {
	case "kubectl-splitter":
		return "plugin"
	case "kubectl_complete-splitter":
		return "complete"
	}
	return ""
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  splitter run [flags]           run the controller (splitter run -h lists the flags)
  splitter policy lint [--rps N [--scrape-interval D] [--bad-rate P]] FILE...
                                 check SplitPolicy YAML without a cluster; exits 1 on any error;
                                 with --rps, explain how long each step needs at that request rate
  splitter policy simulate -f FILE --rps N --error-rate P [--latency-slow P | --latency-p99 D [--latency-p50 D]] [--regression 5x]
                         [--runs 2000] [--scrape-interval 15s] [--seed N] [-o json]
                                 simulate releases of the policy through the engine: false rollbacks,
                                 time to promotion, pauses for lack of evidence, a regression's detection
  splitter policy backtest -f FILE --prometheus-url URL -n NAMESPACE --workload W --from T1 [--to T2]
                         [--baseline-only [--releases 200]] [--svg FILE] [--seed N] [-o json]
                                 replay the policy over what Prometheus recorded: what it would have
                                 decided on a past release, or its false-rollback rate on a quiet window
  splitter version
Installed as kubectl-splitter (make install-plugin) it is the kubectl plugin:
  kubectl splitter --help`)
	os.Exit(2)
}

func lint(args []string) int {
	fs := flag.NewFlagSet("policy lint", flag.ExitOnError)
	rps := fs.Float64("rps", 0, "the workload's request rate: explain how long each step needs to reach a verdict")
	scrape := fs.Duration("scrape-interval", 15*time.Second, "Prometheus' scrape interval (with --rps)")
	badRate := fs.Float64("bad-rate", 0, "both colors' bad-request rate today, e.g. 0.001 (with --rps; default a fifth of each SLO's budget)")
	_ = fs.Parse(args)
	files := fs.Args()
	if len(files) == 0 {
		fmt.Fprintln(os.Stderr, "splitter policy lint: name at least one file")
		return 2
	}
	bad, total := 0, 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			bad++
			continue
		}
		n, findings, plans := policy.LintPlans(data)
		total += n
		for _, fd := range findings {
			fmt.Printf("%s: %s\n", f, fd)
		}
		if *rps > 0 {
			for _, np := range plans {
				fmt.Printf("%s: SplitPolicy %s:\n", f, np.Name)
				for _, line := range policy.Explain(np.Plan, policy.Traffic{RPS: *rps, Scrape: *scrape, BadRate: *badRate}) {
					fmt.Println("  " + line)
				}
				for _, line := range lintWarnings(np.Plan, lintTraffic(np.Plan, *rps, *badRate, *scrape)) {
					fmt.Println("  " + line)
				}
			}
		}
		bad += len(findings)
	}
	if bad > 0 {
		fmt.Printf("%d problem(s) in %d SplitPolicy object(s)\n", bad, total)
		return 1
	}
	fmt.Printf("%d SplitPolicy object(s) OK\n", total)
	return 0
}
