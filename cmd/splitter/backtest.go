package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/backtest"
	"splitter.dev/splitter/internal/policy"
)

// backtestCmd is `splitter policy backtest`: the policy replayed over what
// Prometheus recorded of a workload, a past release (release mode) or a
// window without one (--baseline-only).
func backtestCmd(args []string, stdout, stderr io.Writer, now time.Time) int {
	fs := flag.NewFlagSet("policy backtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "the SplitPolicy YAML file")
	name := fs.String("policy", "", "which SplitPolicy of the file (when it holds several)")
	promURL := fs.String("prometheus-url", "", "Prometheus' address (default: the policy's prometheus.address)")
	namespace := fs.String("n", "", "the workload's namespace")
	fs.StringVar(namespace, "namespace", "", "the workload's namespace")
	workload := fs.String("workload", "", "the workload: the user's Deployment (its colors are <workload>-blue and <workload>-green)")
	service := fs.String("service", "", "the workload's Service, for PromQL checks that use it (default: the workload's name)")
	fromFlag := fs.String("from", "", "the window's start: RFC 3339 (2026-11-20T10:00:00Z), or now-<duration> (now-2h)")
	toFlag := fs.String("to", "now", "the window's end, as --from")
	baseline := fs.Bool("baseline-only", false, "the window has no release: replay many releases between two identical colors made of the workload's traffic (the false-rollback rate)")
	releases := fs.Int("releases", 200, "with --baseline-only, how many releases to start over the window")
	seed := fs.Uint64("seed", 1, "random seed for the thinning (the same seed gives the same replay)")
	output := fs.String("o", "text", "output format: text or json")
	svgFile := fs.String("svg", "", "also write a chart of the replay (weights, error rates, decisions) to this SVG file (release mode)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long reading Prometheus may take")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "splitter policy backtest: "+format+"\n", a...)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "splitter policy backtest: %v\n", err)
		return 1
	}
	switch {
	case *file == "" || fs.NArg() > 0:
		return usageErr("name one policy file with -f")
	case *namespace == "":
		return usageErr("name the workload's namespace with -n")
	case *workload == "":
		return usageErr("name the workload with --workload")
	case *fromFlag == "":
		return usageErr("give the window's start with --from (RFC 3339, or now-2h)")
	case *output != "text" && *output != "json":
		return usageErr("-o is text or json")
	case *baseline && *svgFile != "":
		return usageErr("--svg charts a release: it does not go with --baseline-only")
	case *releases <= 0:
		return usageErr("--releases must be above 0")
	}
	from, err := parseInstant(*fromFlag, now)
	if err != nil {
		return usageErr("--from: %v", err)
	}
	to, err := parseInstant(*toFlag, now)
	if err != nil {
		return usageErr("--to: %v", err)
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return fail(err)
	}
	np, err := pickPolicy(data, *file, *name)
	if err != nil {
		return fail(err)
	}
	address := *promURL
	if address == "" {
		address = np.Plan.PrometheusAddress
	}
	if address == "" {
		return usageErr("give Prometheus' address with --prometheus-url (the policy names none)")
	}
	client, err := promapi.NewClient(promapi.Config{Address: address})
	if err != nil {
		return fail(fmt.Errorf("Prometheus client for %s: %w", address, err))
	}
	api := promv1.NewAPI(client)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rec, err := backtest.Fetch(ctx, api, backtest.Query{Namespace: *namespace, Workload: *workload, From: from, To: to,
		SLOs: analysis.Specs(np.Plan.SLOs), Now: now})
	if err != nil {
		return fail(err)
	}
	opt := backtest.Options{Policy: np.Name, Plan: np.Plan, Seed: *seed, Releases: *releases}
	if *baseline {
		rep, err := backtest.Baseline(rec, opt)
		if err != nil {
			return fail(err)
		}
		rep.Simulate = simulateLine(*file, np, rep.Traffic, rec.Scrape)
		return emit(stdout, stderr, *output, rep, func() string { return backtest.BaselineTable(rep) })
	}
	ev := analysis.Evaluator{API: api}
	svc := *service
	if svc == "" {
		svc = *workload
	}
	opt.Checks = func(at time.Time, live, candidate string) []analysis.Result {
		vars := analysis.Vars{Namespace: *namespace, Workload: *workload, Service: svc, Candidate: candidate, Live: live, Window: np.Plan.Window()}
		var out []analysis.Result
		for _, c := range np.Plan.Checks {
			out = append(out, ev.Evaluate(ctx, c, vars, at))
		}
		return out
	}
	if len(np.Plan.SLOs) == 0 && len(np.Plan.Checks) == 0 {
		return fail(errors.New("the policy has neither slos nor checks: there is nothing to judge a release on"))
	}
	rep, err := backtest.Release(rec, opt)
	if err != nil {
		return fail(err)
	}
	if *svgFile != "" {
		if err := os.WriteFile(*svgFile, backtest.SVG(rep), 0o644); err != nil {
			return fail(err)
		}
	}
	return emit(stdout, stderr, *output, rep, func() string { return backtest.Table(rep) })
}

func emit(stdout, stderr io.Writer, format string, v any, text func() string) int {
	if format == "json" {
		if err := writeJSON(stdout, v); err != nil {
			fmt.Fprintf(stderr, "splitter policy backtest: %v\n", err)
			return 1
		}
		return 0
	}
	fmt.Fprint(stdout, text())
	return 0
}

// writeJSON is the commands' -o json: indented, one document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// pickPolicy is the file's one SplitPolicy, or the one named; a file that
// fails lint is refused with its findings.
func pickPolicy(data []byte, file, name string) (policy.NamedPlan, error) {
	_, findings, plans := policy.LintPlans(data)
	if len(findings) > 0 {
		var b strings.Builder
		for _, f := range findings {
			fmt.Fprintf(&b, "%s: %s\n", file, f)
		}
		return policy.NamedPlan{}, fmt.Errorf("%s%s fails lint: fix it first (splitter policy lint %s)", b.String(), file, file)
	}
	var names []string
	for _, np := range plans {
		if np.Name == name || (name == "" && len(plans) == 1) {
			return np, nil
		}
		names = append(names, np.Name)
	}
	switch {
	case len(plans) == 0:
		return policy.NamedPlan{}, fmt.Errorf("%s holds no SplitPolicy", file)
	case name == "":
		return policy.NamedPlan{}, fmt.Errorf("%s holds %d SplitPolicies (%s): pick one with --policy", file, len(plans), strings.Join(names, ", "))
	}
	return policy.NamedPlan{}, fmt.Errorf("%s holds no SplitPolicy %q (it holds %s)", file, name, strings.Join(names, ", "))
}

// parseInstant reads RFC 3339, "now", or "now-<duration>".
func parseInstant(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "now-"):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "now-"))
		if err != nil || d < 0 {
			return time.Time{}, fmt.Errorf("%q: want now-<duration>, such as now-2h", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-11-20T10:00:00Z) or now-<duration>", s)
	}
	return t, nil
}

// simulateLine is the `policy simulate` command for the traffic measured.
func simulateLine(file string, np policy.NamedPlan, tr backtest.Traffic, scrape time.Duration) string {
	var errRate, slow float64
	var haveErr, haveSlow bool
	for _, s := range np.Plan.SLOs {
		if s.ThresholdMs > 0 {
			slow, haveSlow = max(slow, tr.BadRate[s.Name]), true
		} else {
			errRate, haveErr = max(errRate, tr.BadRate[s.Name]), true
		}
	}
	if !haveErr {
		errRate = slow
	}
	line := fmt.Sprintf("splitter policy simulate -f %s --rps %s --error-rate %s%%", file, strconv.FormatFloat(tr.RPS, 'f', 1, 64), strconv.FormatFloat(100*errRate, 'f', 3, 64))
	if haveSlow && haveErr {
		line += fmt.Sprintf(" --latency-slow %s%%", strconv.FormatFloat(100*slow, 'f', 3, 64))
	}
	return line + " --scrape-interval " + scrape.String()
}
