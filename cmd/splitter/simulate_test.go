package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"splitter.dev/splitter/internal/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const slosSample = "../../config/samples/15-splitpolicy-slos.yaml"

func TestSimulateExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: splitter.dev/v1alpha1\nkind: SplitPolicy\nmetadata: {name: p}\nspec: {steps: [50, 10, 100]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    int
		stdout  string // a line the output must hold
		stderrs string
	}{
		{"healthy", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--runs", "20"}, 0, "false rollbacks:", ""},
		{"regression", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.002", "--latency-slow", "0.3%", "--regression", "5x", "--runs", "20"}, 0, "5x regression", ""},
		{"json", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--runs", "10", "-o", "json"}, 0, `"rolledBackShare"`, ""},
		{"policy fails lint", []string{"-f", bad, "--rps", "100", "--error-rate", "0.1%"}, 1, "", "fails lint"},
		{"missing file", []string{"-f", filepath.Join(dir, "nope.yaml"), "--rps", "100", "--error-rate", "0.1%"}, 1, "", "no such file"},
		{"no file", []string{"--rps", "100", "--error-rate", "0.1%"}, 2, "", "-f"},
		{"no rps", []string{"-f", slosSample, "--error-rate", "0.1%"}, 2, "", "--rps"},
		{"bad rate", []string{"-f", slosSample, "--rps", "100", "--error-rate", "lots"}, 2, "", "--error-rate"},
		{"latency p99", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--latency-p99", "200ms", "--runs", "10"}, 0, "lognormal with p50 50ms and p99 200ms", ""},
		{"latency p99 and slow", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--latency-p99", "200ms", "--latency-slow", "1%"}, 2, "", "not both"},
		{"p50 above p99", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--latency-p99", "200ms", "--latency-p50", "1s"}, 2, "", "must not exceed"},
		{"callers", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--callers", "90%,10%", "--runs", "10"}, 0, "Callers: 90.00%, 10.00% of the traffic", ""},
		{"callers not adding up", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--callers", "90%,20%"}, 2, "", "add up to 110%"},
		{"callers not shares", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--callers", "web,batch"}, 2, "", `--callers: "web" is not a share`},
		{"clumps and drift", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--clump", "3", "--drift", "1", "--runs", "10"}, 0, "Drift: both colors' rates", ""},
		{"bad clump", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--clump", "0"}, 2, "", "--clump"},
		{"bad drift", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--drift", "-1"}, 2, "", "--drift"},
		{"bad regression", []string{"-f", slosSample, "--rps", "100", "--error-rate", "0.1%", "--regression", "0.5x"}, 2, "", "--regression"},
	} {
		var out, errOut bytes.Buffer
		got := simulateCmd(tc.args, &out, &errOut)
		if got != tc.want {
			t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", tc.name, got, tc.want, out.String(), errOut.String())
		}
		if !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errOut.String(), tc.stderrs) {
			t.Errorf("%s: want %q in stdout, %q in stderr; got\nstdout: %s\nstderr: %s", tc.name, tc.stdout, tc.stderrs, out.String(), errOut.String())
		}
		if strings.Contains(errOut.String(), "goroutine") {
			t.Errorf("%s: a stack trace: %s", tc.name, errOut.String())
		}
		if tc.name == "json" {
			var r []simReport
			if err := json.Unmarshal(out.Bytes(), &r); err != nil || len(r) != 1 || r[0].Healthy.Runs != 10 {
				t.Errorf("json: %v, %+v", err, r)
			}
		}
	}
}

// The text output, from a fixed report.
func TestFormatSimulationGolden(t *testing.T) {
	r := simReport{Policy: "shop/slos",
		Model: simModel{RPS: 100, ErrorRate: 0.002, SlowRate: 0.003, Regression: 5, ScrapeInterval: "15s", Runs: 2000, Seed: 300,
			PodsPerColor: 3, RestartEvery: "10m0s", FailedReads: 0.01, Propagation: "2s", Steps: []int32{20, 50, 100}},
		Healthy: simOutcomes{Runs: 2000, Promoted: 1985, Paused: 11, RolledBack: 4,
			RolledBackShare: simShare{0.002, 0.00078, 0.0051}, PausedShare: simShare{0.0055, 0.0031, 0.0098},
			Promotion: &simQuantiles{P50: 483, P90: 603, P99: 724},
			Reasons:   map[string]int{"WatchdogTripped: watchdog (RelativeRegression): green's bad requests": 3, "CheckFailed: latency": 1}},
		Regression: &simOutcomes{Runs: 2000, Promoted: 2, Paused: 3, RolledBack: 1995,
			RolledBackShare: simShare{0.9975, 0.9942, 0.9989}, PausedShare: simShare{0.0015, 0.0005, 0.0044},
			Detection: &simQuantiles{P50: 133, P90: 199, P99: 260},
			ByStep:    []simStepCatch{{Step: 1, Weight: 20, Caught: 1900, P50: 130, P90: 190}, {Step: 2, Weight: 50, Caught: 95, P50: 250, P90: 280}},
			Reasons:   map[string]int{"WatchdogTripped: watchdog (RelativeRegression)": 1995}},
	}
	got := formatSimulation(r)
	golden := filepath.Join("testdata", "simulate.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("formatSimulation differs from %s (-update rewrites it):\n%s", golden, got)
	}
}

// lint --rps warns about a policy that will not decide at that rate,
// and the warning does not change its exit code.
func TestLintWarnsFromSimulation(t *testing.T) {
	data, err := os.ReadFile(slosSample)
	if err != nil {
		t.Fatal(err)
	}
	_, _, nps := policy.LintPlans(data)
	plan := nps[0].Plan
	if w := lintWarnings(plan, lintTraffic(plan, 100, 0, 15*time.Second)); len(w) != 0 {
		t.Errorf("recommended policy at 100 req/s: warnings %q", w)
	}
	w := lintWarnings(plan, lintTraffic(plan, 5, 0, 15*time.Second))
	if len(w) == 0 || !strings.Contains(w[0], "promoted") {
		t.Errorf("recommended policy at 5 req/s: warnings %q, want one about promotions", w)
	}
	if got := lint([]string{"--rps", "5", slosSample}); got != 0 {
		t.Errorf("lint --rps 5: exit %d, want 0", got)
	}
}
