package testbed

import (
	"os"
	"os/exec"
	"testing"
)

// Chromium is the browser the dashboard's tests drive headless: $CHROMIUM
// or Debian's chromium. make test installs it (make chromium), so there
// (SPLITTER_REQUIRE_TOOLS) a missing browser fails the test; elsewhere
// the test is skipped.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("SPLITTER_REQUIRE_TOOLS") != "" {
		t.Fatal("no Chromium for the browser test (SPLITTER_REQUIRE_TOOLS is set): make chromium, or apt-get install -y chromium")
	}
	t.Skip("no Chromium for the browser test: apt-get install -y chromium")
	return ""
}
