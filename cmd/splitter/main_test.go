package main

import (
	"os"
	"path/filepath"
	"testing"
)

// lint's exit code is what CI pipelines act on.
func TestLintExitCodes(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: splitter.dev/v1alpha1\nkind: SplitPolicy\nmetadata: {name: p}\nspec: {steps: [50, 10, 100]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	samples, _ := filepath.Glob("../../config/samples/*.yaml")
	walkthrough, _ := filepath.Glob("../../config/walkthrough/*.yaml")
	samples = append(samples, walkthrough...)
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"samples are clean", samples, 0},
		{"samples explained", append([]string{"--rps", "100"}, samples...), 0},
		{"invalid steps", []string{bad}, 1},
		{"missing file", []string{filepath.Join(t.TempDir(), "nope.yaml")}, 1},
		{"no file", nil, 2},
	} {
		if got := lint(tc.args); got != tc.want {
			t.Errorf("%s: exit %d, want %d", tc.name, got, tc.want)
		}
	}
}

// The same binary is the kubectl plugin under kubectl's plugin names.
func TestPluginMode(t *testing.T) {
	for arg0, want := range map[string]string{
		"/usr/local/bin/kubectl-splitter":   "plugin",
		"kubectl-splitter.exe":              "plugin",
		"/tmp/x/kubectl_complete-splitter":  "complete",
		"/usr/local/bin/splitter":           "",
		"./bin/splitter":                    "",
		"/usr/local/bin/kubectl-splitter-x": "",
	} {
		if got := pluginMode(arg0); got != want {
			t.Errorf("pluginMode(%q) = %q, want %q", arg0, got, want)
		}
	}
}
