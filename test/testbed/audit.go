package testbed

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The users the test bed's client certificates name (their CN; both are in
// system:masters).
const (
	// AdminUser is the admin kubeconfig's user (Kubeconfig): the tests, the
	// simulator, kube-controller-manager, kube-scheduler and kwok.
	AdminUser = "testbed-admin"
	// ControllerUser is ControllerKubeconfig's user, for a splitter
	// controller whose requests the audit log should tell apart.
	ControllerUser = "splitter-controller"
)

// auditPolicy logs, at Metadata level (who, what, which object, the
// response code; no bodies), the writes to the kinds splitter writes, and
// nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete"]
  resources:
  - group: networking.istio.io
    resources: ["virtualservices", "destinationrules"]
  - group: ""
    resources: ["services"]
  - group: apps
    resources: ["deployments"]
  - group: splitter.dev
    resources: ["splits", "splits/status"]
- level: None
`

// auditArgs writes the audit policy into dir and returns kube-apiserver's
// flags for a JSON audit log there (one file, never rotated: the policy
// keeps it small). The log backend blocks, so each event is in the file
// soon after its response (it is written once the handler returns).
func auditArgs(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	return []string{
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + filepath.Join(dir, "audit.log"),
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxsize=0", // no rotation
	}, nil
}

// AuditEvent is one request the API server received, from its audit log.
type AuditEvent struct {
	Time      time.Time // when the request was received
	User      string    // AdminUser, ControllerUser, ...
	Verb      string    // create, update, patch, delete
	Resource  string    // plural, with the subresource: "virtualservices", "splits/status"
	Namespace string
	Name      string
	Code      int // the response's HTTP status: 200, 201, 409, 422, ...
}

// Key is how AuditWrites counts the event: "<verb> <resource> <code>",
// e.g. "patch virtualservices 200" or "patch splits/status 409".
func (e AuditEvent) Key() string { return fmt.Sprintf("%s %s %d", e.Verb, e.Resource, e.Code) }

// AuditLog is the audit log's path; empty when Config.Audit is off.
func (tb *TestBed) AuditLog() string { return tb.auditLog }

// AuditEvents reads the writes the API server received from since on (by
// the time each request was received), in log order. It fails when the
// test bed runs without the audit log.
func (tb *TestBed) AuditEvents(since time.Time) ([]AuditEvent, error) {
	if tb.auditLog == "" {
		return nil, errors.New("the test bed runs without the audit log (TESTBED_AUDIT=0)")
	}
	return readAuditLog(tb.auditLog, since)
}

// AuditWrites counts the writes user made from since on, by Key ("verb
// resource code" -> count); user "" counts everyone's. Only the kinds of
// the audit policy are logged: VirtualServices, DestinationRules,
// Services, Deployments, Splits and their status.
func (tb *TestBed) AuditWrites(since time.Time, user string) (map[string]int, error) {
	events, err := tb.AuditEvents(since)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, e := range events {
		if user == "" || e.User == user {
			out[e.Key()]++
		}
	}
	return out, nil
}

// auditLine is the part of an audit.k8s.io/v1 Event that AuditEvent keeps.
type auditLine struct {
	Stage string `json:"stage"`
	Verb  string `json:"verb"`
	User  struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
}

func readAuditLog(path string, since time.Time) ([]AuditEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l auditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			// The API server may be writing the last line right now.
			continue
		}
		if l.Stage != "ResponseComplete" || l.ObjectRef == nil || l.RequestReceivedTimestamp.Before(since) {
			continue
		}
		e := AuditEvent{
			Time: l.RequestReceivedTimestamp, User: l.User.Username, Verb: l.Verb,
			Resource: l.ObjectRef.Resource, Namespace: l.ObjectRef.Namespace, Name: l.ObjectRef.Name,
		}
		if l.ObjectRef.Subresource != "" {
			e.Resource += "/" + l.ObjectRef.Subresource
		}
		if l.ResponseStatus != nil {
			e.Code = l.ResponseStatus.Code
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
