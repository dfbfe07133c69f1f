package testbed

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A child that cannot bind its port (another test package took it between
// FreePort and the child's start) no longer fails the test bed: Start tries
// again on new ports.
func TestStartRetriesAPortClash(t *testing.T) {
	cfg, err := ConfigFromEnv()
	if err != nil {
		if os.Getenv("SPLITTER_REQUIRE_TOOLS") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	takenPortsMu.Lock()
	takenPorts["prometheus"] = port
	takenPortsMu.Unlock()

	var progress bytes.Buffer
	cfg.StateDir, cfg.Progress = t.TempDir(), &progress
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tb, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start with Prometheus' port taken: %v\n%s", err, progress.String())
	}
	defer tb.Stop()
	if !strings.Contains(progress.String(), "address already in use") || !strings.Contains(progress.String(), "starting again on new ports") {
		t.Errorf("the clash was not met or not reported:\n%s", progress.String())
	}
	if strings.HasSuffix(tb.PrometheusURL, ":"+strconv.Itoa(port)) {
		t.Errorf("Prometheus at %s, the port that was taken", tb.PrometheusURL)
	}
}
