package testbed

import (
	"os"
	"os/exec"
	"testing"
)

// Command finds an external command a test needs: $envVar when set, else
// the first of names found (an absolute path, or a name on PATH). make test
// installs or requires every such command and sets SPLITTER_REQUIRE_TOOLS,
// so there a missing one fails the test; run outside make, the test is
// skipped. howToGet says how to install it.
func Command(t testing.TB, envVar string, names []string, howToGet string) string {
	t.Helper()
	if envVar != "" {
		if p := os.Getenv(envVar); p != "" {
			if path, err := exec.LookPath(p); err == nil {
				return path
			}
			t.Fatalf("%s=%s is not an executable: %s", envVar, p, howToGet)
		}
	}
	for _, p := range names {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := "no " + names[0] + " for this test: " + howToGet
	if os.Getenv("SPLITTER_REQUIRE_TOOLS") != "" {
		t.Fatal(msg + " (SPLITTER_REQUIRE_TOOLS is set: make test needs it)")
	}
	t.Skip(msg)
	return ""
}

// Chromium is the browser the dashboard's tests drive headless: $CHROMIUM
// or Debian's chromium (make chromium installs it).
func Chromium(t testing.TB) string {
	t.Helper()
	return Command(t, "CHROMIUM", []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"},
		"make chromium, or apt-get install -y chromium, or set CHROMIUM=/path/to/chromium")
}

// Promtool is Prometheus' rule checker: $PROMTOOL or Debian's promtool
// (package prometheus; make prometheus installs it).
func Promtool(t testing.TB) string {
	t.Helper()
	return Command(t, "PROMTOOL", []string{"promtool", "/usr/bin/promtool"},
		"make prometheus, or apt-get install -y prometheus, or set PROMTOOL=/path/to/promtool")
}
