package testbed

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func setToolEnv(t *testing.T) {
	for _, v := range []string{"TESTBED_ETCD", "TESTBED_KUBE_APISERVER", "TESTBED_KUBE_CONTROLLER_MANAGER", "TESTBED_KUBE_SCHEDULER",
		"TESTBED_KWOK", "TESTBED_KWOK_STAGES", "TESTBED_PROMETHEUS", "TESTBED_ISTIO_CRDS", "TESTBED_CRDS"} {
		t.Setenv(v, "/x")
	}
}

func TestConfigFromEnvScrapeIntervalAndAudit(t *testing.T) {
	setToolEnv(t)
	for _, tc := range []struct {
		scrape, audit string
		want          time.Duration
		wantAudit     bool
		wantErr       string
	}{
		{"", "", 0, true, ""}, // Start makes 0 into 1s
		{"15s", "", 15 * time.Second, true, ""},
		{"1m", "0", time.Minute, false, ""},
		{"500ms", "1", 500 * time.Millisecond, true, ""},
		{"15", "", 0, false, "TESTBED_SCRAPE_INTERVAL"},
		{"-1s", "", 0, false, "positive"},
		{"1.5ms", "", 0, false, "milliseconds"},
		{"1s", "maybe", 0, false, "TESTBED_AUDIT"},
	} {
		t.Setenv("TESTBED_SCRAPE_INTERVAL", tc.scrape)
		t.Setenv("TESTBED_AUDIT", tc.audit)
		c, err := ConfigFromEnv()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("scrape %q audit %q: err %v, want one mentioning %q", tc.scrape, tc.audit, err, tc.wantErr)
			}
			continue
		}
		if err != nil || c.ScrapeInterval != tc.want || c.Audit != tc.wantAudit {
			t.Errorf("scrape %q audit %q: got %s, audit %v, err %v; want %s, audit %v", tc.scrape, tc.audit, c.ScrapeInterval, c.Audit, err, tc.want, tc.wantAudit)
		}
	}
}

func TestReadAuditLog(t *testing.T) {
	const lines = `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"ResponseComplete","requestURI":"/apis/networking.istio.io/v1/namespaces/shop/virtualservices/app","verb":"patch","user":{"username":"splitter-controller","groups":["system:masters","system:authenticated"]},"objectRef":{"resource":"virtualservices","namespace":"shop","name":"app","apiGroup":"networking.istio.io","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2030-01-01T00:00:01.000100Z","stageTimestamp":"2030-01-01T00:00:01.002000Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"ResponseComplete","verb":"patch","user":{"username":"splitter-controller"},"objectRef":{"resource":"virtualservices","namespace":"shop","name":"app"},"responseStatus":{"metadata":{},"status":"Failure","reason":"Conflict","code":409},"requestReceivedTimestamp":"2030-01-01T00:00:02Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"ResponseComplete","verb":"patch","user":{"username":"splitter-controller"},"objectRef":{"resource":"splits","subresource":"status","namespace":"shop","name":"app"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2030-01-01T00:00:03Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"ResponseComplete","verb":"create","user":{"username":"testbed-admin"},"objectRef":{"resource":"services","namespace":"shop","name":"app"},"responseStatus":{"code":201},"requestReceivedTimestamp":"2030-01-01T00:00:04Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"Panic","verb":"patch","user":{"username":"splitter-controller"},"objectRef":{"resource":"virtualservices"},"requestReceivedTimestamp":"2030-01-01T00:00:05Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"ResponseComplete","verb":"patch","user":{"username":"splitter-controller"},"objectRef":{"resource":"virtualservices","namespace":"shop","name":"app"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2029-12-31T23:59:59Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"Respon`
	dir := t.TempDir()
	tb := &TestBed{auditLog: filepath.Join(dir, "audit.log")}
	if err := os.WriteFile(tb.auditLog, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	since := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	events, err := tb.AuditEvents(since)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 4 {
		t.Fatalf("%d events, want 4: %+v", len(events), events)
	}
	if e := events[0]; e.User != ControllerUser || e.Namespace != "shop" || e.Name != "app" || !e.Time.Equal(since.Add(time.Second+100*time.Microsecond)) {
		t.Errorf("first event %+v", e)
	}
	got, err := tb.AuditWrites(since, ControllerUser)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"patch virtualservices 200": 1, "patch virtualservices 409": 1, "patch splits/status 200": 1}
	if len(got) != len(want) {
		t.Errorf("AuditWrites = %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("AuditWrites[%q] = %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
	everyone, _ := tb.AuditWrites(since, "")
	if everyone["create services 201"] != 1 || len(everyone) != 4 {
		t.Errorf("AuditWrites for everyone = %v", everyone)
	}
	if _, err := (&TestBed{}).AuditWrites(since, ""); err == nil {
		t.Error("AuditWrites without an audit log succeeded, want an error")
	}
}
