package notify

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func samplePayloads() map[string]Payload {
	split := &splitterv1.Split{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout", UID: "5f0c1d2e-1111-4a4a-9b9b-000000000001"},
		Spec:       splitterv1.SplitSpec{Workload: "checkout", Policy: "standard"},
	}
	at := metav1.NewTime(time.Date(2026, 11, 27, 21, 4, 5, 0, time.UTC))
	return map[string]Payload{
		"rolledback": NewPayload(split, &splitterv1.Notification{
			Seq: 7, Event: EventRolledBack, Reason: "CheckFailed", Warning: true,
			Message: "all traffic back to blue: success-rate Fail (value 0.912, bound >= 0.99)",
			Phase:   splitterv1.PhaseRollingBack, Revision: "6d5f8c7b9", Step: 2, At: at,
		}, "oncall"),
		"promoted": NewPayload(split, &splitterv1.Notification{
			Seq: 9, Event: EventPromoted, Reason: "Promoted",
			Message: "green (revision 6d5f8c7b9) is live; blue stays up for 10m0s",
			Phase:   splitterv1.PhasePromoting, Revision: "6d5f8c7b9", At: at,
		}, "oncall"),
		"approval": NewPayload(split, &splitterv1.Notification{
			Seq: 8, Event: EventAwaitingApproval, Reason: "AwaitingApproval",
			Message: `waiting for approval "6d5f8c7b9/promotion": kubectl annotate split <name> splitter.dev/approve=6d5f8c7b9/promotion --overwrite`,
			Phase:   splitterv1.PhaseAwaitingApproval, Revision: "6d5f8c7b9", Step: 4, Weight: 50, At: at,
		}, "oncall"),
	}
}

// The request bodies, golden: go test ./internal/notify -run TestFormats -update
func TestFormats(t *testing.T) {
	for name, p := range samplePayloads() {
		for _, typ := range []splitterv1.ReceiverType{splitterv1.ReceiverWebhook, splitterv1.ReceiverSlack, splitterv1.ReceiverTeams} {
			body, err := Render(typ, p)
			if err != nil {
				t.Fatal(err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, body, "", "  "); err != nil {
				t.Fatalf("%s/%s: not JSON: %v", typ, name, err)
			}
			pretty.WriteByte('\n')
			path := filepath.Join("testdata", string(typ)+"-"+name+".json")
			if *update {
				if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("%s differs from the golden file:\n%s", path, pretty.String())
			}
		}
	}
	if _, err := Render("pager", Payload{}); err == nil {
		t.Error("an unknown receiver type rendered")
	}
}

// The generic webhook's body is schema v1: these fields, these names.
func TestWebhookSchemaV1(t *testing.T) {
	body, _ := Render(splitterv1.ReceiverWebhook, samplePayloads()["rolledback"])
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "id", "seq", "namespace", "split", "workload", "policy", "receiver", "event", "reason", "message", "warning", "phase", "revision", "step", "weight", "time"} {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing", k)
		}
	}
	if m["schema"] != Schema || m["id"] != "5f0c1d2e-1111-4a4a-9b9b-000000000001/7" || m["time"] != "2026-11-27T21:04:05Z" {
		t.Errorf("schema %v id %v time %v", m["schema"], m["id"], m["time"])
	}
}
