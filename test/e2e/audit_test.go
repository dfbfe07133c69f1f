package e2e

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"splitter.dev/splitter/test/testbed"
)

// startSplitterAs starts `splitter run` for one namespace with a
// kubeconfig. startSplitter passes tb.ControllerKubeconfig, so the API
// server's audit log names the controller's requests (user
// testbed.ControllerUser) apart from the test's, kube-controller-manager's
// and the simulator's (all the admin).
func startSplitterAs(t testing.TB, tb *testbed.TestBed, ns, kubeconfig string) *controllerProcess {
	t.Helper()
	metricsPort, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", metricsPort)
	args := []string{"run",
		"--kubeconfig=" + kubeconfig,
		"--prometheus-url=" + tb.PrometheusURL,
		"--namespaces=" + ns,
		"--leader-election-namespace=" + ns,
		"--metrics-bind-address=" + metrics,
		"--health-probe-bind-address=127.0.0.1:0",
		"--query-timeout=5s",
		"--scrape-interval=" + tb.ScrapeInterval().String(), // the watchdog looks once per scrape
	}
	// SPLITTER_E2E_ARGS adds flags, for a benchmark of a setting (e.g.
	// --gross-check-interval=250ms).
	args = append(args, strings.Fields(os.Getenv("SPLITTER_E2E_ARGS"))...)
	p, err := testbed.StartProcess("splitter-"+ns, tb.StateDir()+"/logs", splitterBinary(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	c := &controllerProcess{Process: p, metricsAddr: metrics}
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("controller log %s (tail):\n%s", p.Log(), p.Tail())
		}
	})
	return c
}

// auditCounts sums AuditWrites counts ("verb resource code" -> n) over
// verb and resource, keeping the codes that pass keep.
func auditCounts(writes map[string]int, verb, resource string, keep func(code int) bool) int {
	n := 0
	for key, c := range writes {
		parts := strings.Fields(key)
		if len(parts) != 3 || parts[0] != verb || parts[1] != resource {
			continue
		}
		if code, err := strconv.Atoi(parts[2]); err == nil && keep(code) {
			n += c
		}
	}
	return n
}

func accepted(code int) bool { return code >= 200 && code < 300 }

// auditMetricUnit turns an AuditWrites key into a benchmark unit:
// "patch splits/status 409" -> "api-patch-splits.status-409/release".
func auditMetricUnit(key string) string {
	return "api-" + strings.ReplaceAll(strings.ReplaceAll(key, "/", "."), " ", "-") + "/release"
}

// reportAudit reports what the API server received from the controller:
// one metric per "verb resource code", VirtualService patches accepted per
// step and refused (409 conflict, 422 invalid) per release.
func reportAudit(b *testing.B, writes map[string]int, steps int) {
	keys := make([]string, 0, len(writes))
	for k := range writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var lines []string
	for _, k := range keys {
		b.ReportMetric(float64(writes[k]), auditMetricUnit(k))
		lines = append(lines, fmt.Sprintf("%s: %d", k, writes[k]))
	}
	b.Logf("API server received from %s (audit log): %s", testbed.ControllerUser, strings.Join(lines, ", "))
	is := func(want int) func(int) bool { return func(code int) bool { return code == want } }
	b.ReportMetric(float64(auditCounts(writes, "patch", "virtualservices", accepted))/float64(steps), "api-vs-patches-accepted/step")
	b.ReportMetric(float64(auditCounts(writes, "patch", "virtualservices", is(409))), "api-vs-patches-409/release")
	b.ReportMetric(float64(auditCounts(writes, "patch", "virtualservices", is(422))), "api-vs-patches-422/release")
}

func TestAuditMetricUnit(t *testing.T) {
	for key, want := range map[string]string{
		"patch splits/status 409":     "api-patch-splits.status-409/release",
		"patch virtualservices 200":   "api-patch-virtualservices-200/release",
		"create destinationrules 201": "api-create-destinationrules-201/release",
	} {
		if got := auditMetricUnit(key); got != want {
			t.Errorf("auditMetricUnit(%q) = %q, want %q", key, got, want)
		}
	}
	w := map[string]int{"patch virtualservices 200": 4, "patch virtualservices 409": 2, "patch virtualservices 422": 1, "update virtualservices 200": 7}
	if got := auditCounts(w, "patch", "virtualservices", accepted); got != 4 {
		t.Errorf("accepted VirtualService patches = %d, want 4", got)
	}
	if got := auditCounts(w, "patch", "virtualservices", func(c int) bool { return !accepted(c) }); got != 3 {
		t.Errorf("refused VirtualService patches = %d, want 3", got)
	}
}
