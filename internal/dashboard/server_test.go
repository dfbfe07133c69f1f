package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func mt(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
func mtp(d time.Duration) *metav1.Time {
	t := mt(d)
	return &t
}

func split(ns, name string, st splitterv1.SplitStatus) *splitterv1.Split {
	return &splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: splitterv1.SplitSpec{Workload: name, Policy: "p"}, Status: st}
}

func shifting() splitterv1.SplitStatus {
	return splitterv1.SplitStatus{Phase: splitterv1.PhaseShifting, Live: splitterv1.Blue, Candidate: splitterv1.Green,
		LiveRevision: "aaaa1111", CandidateRevision: "bbbb2222", ReleaseID: "bbbb2222/2", Step: 2, Weight: 25,
		ReleaseStartedAt: mtp(-5 * time.Minute), StepStartedAt: mtp(-time.Minute),
		Checks: []splitterv1.CheckResult{{Name: "success-rate", Verdict: splitterv1.VerdictPass, Value: "0.999", Bound: ">= 0.95", Step: 1, EvaluatedAt: mt(-90 * time.Second)}}}
}

func rolledBack(finished time.Duration) splitterv1.SplitStatus {
	return splitterv1.SplitStatus{Phase: splitterv1.PhaseRolledBack, Live: splitterv1.Blue, Candidate: splitterv1.Green,
		CandidateRevision: "cccc3333", ReleaseID: "cccc3333/1",
		History: []splitterv1.Release{{Revision: "cccc3333", Color: splitterv1.Green, StartedAt: mt(finished - 2*time.Minute), FinishedAt: mt(finished),
			Outcome: splitterv1.OutcomeRolledBack, Reason: "WatchdogTripped", Message: "availability", Step: 1, ID: "cccc3333/1"}}}
}

func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = splitterv1.AddToScheme(s)
	return s
}

type acted struct{ ns, name, verb string }

// bed is a dashboard over a fake API server, served on 127.0.0.1.
type bed struct {
	c     client.WithWatch
	srv   *Server
	url   string
	acted chan acted
}

func newBed(t *testing.T, ns string, objs ...client.Object) *bed {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(objs...).Build()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &bed{c: c, acted: make(chan acted, 4)}
	srv, err := New(Options{Client: c, Namespace: ns, Now: func() time.Time { return t0 },
		Decide: func(s *splitterv1.Split, verb string) string {
			if verb == "abort" && !inProgress(s.Status.Phase) {
				return "nothing to abort"
			}
			return ""
		},
		Act: func(ctx context.Context, ns, name, verb, expect string) (string, error) {
			if verb == "retry" {
				return "", &Refused{Reason: "nothing to retry on " + name}
			}
			b.acted <- acted{ns, name, verb}
			return verb + " done", nil
		}}, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Listener.Close()
	ts.Listener = ln
	ts.Start()
	t.Cleanup(func() {
		ts.CloseClientConnections() // the event streams the browser holds
		ts.Close()
	})
	b.srv, b.url = srv, ts.URL
	return b
}

// do sends a request with the session's cookie, unless hdr sets a
// Cookie of its own ("" for none).
func (b *bed) do(t *testing.T, method, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, b.url+path, nil)
	if _, own := hdr["Cookie"]; !own {
		req.AddCookie(&http.Cookie{Name: SessionCookie(b.port()), Value: b.srv.Token()})
	}
	for k, v := range hdr {
		if k == "Cookie" && v == "" {
			continue
		}
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *bed) port() string {
	u, _ := url.Parse(b.url)
	return u.Port()
}

func TestListSortsRollbacksFirst(t *testing.T) {
	b := newBed(t, "",
		split("a", "idle", splitterv1.SplitStatus{Phase: splitterv1.PhaseIdle, Live: splitterv1.Green}),
		split("b", "rolling", shifting()),
		split("c", "old-rollback", rolledBack(-48*time.Hour)),
		split("c", "new-rollback", rolledBack(-time.Minute)),
		split("d", "older-rollback", rolledBack(-time.Hour)),
	)
	code, body := b.do(t, "GET", "/api/splits", nil)
	if code != 200 {
		t.Fatalf("GET /api/splits: %d %s", code, body)
	}
	var got []Summary
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.Namespace+"/"+s.Name)
	}
	want := "c/new-rollback d/older-rollback b/rolling a/idle c/old-rollback"
	if strings.Join(names, " ") != want {
		t.Errorf("order %v, want %s", names, want)
	}
	r := got[2]
	if r.Weights["green"] != 25 || r.Weights["blue"] != 75 || r.Step != 2 || len(r.Checks) != 1 || r.Actions["abort"] != "" {
		t.Errorf("shifting summary %+v", r)
	}
	if got[3].Weights["green"] != 100 || got[3].Actions["abort"] == "" {
		t.Errorf("idle summary %+v", got[3])
	}
}

func TestDetailAndScope(t *testing.T) {
	b := newBed(t, "b", split("b", "app", shifting()), split("c", "other", shifting()))
	code, body := b.do(t, "GET", "/api/splits/b/app", nil)
	var d Detail
	if code != 200 || json.Unmarshal([]byte(body), &d) != nil {
		t.Fatalf("GET detail: %d %s", code, body)
	}
	if d.Name != "app" || d.Status.Step != 2 || d.Status.Policy != nil {
		t.Errorf("detail %+v", d)
	}
	if code, _ := b.do(t, "GET", "/api/splits/c/other", nil); code != http.StatusNotFound {
		t.Errorf("a Split outside -n b: %d, want 404", code)
	}
	if code, _ := b.do(t, "GET", "/api/splits/b/missing", nil); code != http.StatusNotFound {
		t.Errorf("a missing Split: %d, want 404 (the API server's)", code)
	}
	code, body = b.do(t, "GET", "/api/splits/b/app/timeline", nil)
	var tl Timeline
	if code != 200 || json.Unmarshal([]byte(body), &tl) != nil {
		t.Fatalf("GET timeline: %d %s", code, body)
	}
	if tl.WeightSource != "events" || tl.Weight[0].V != 0 || tl.Weight[len(tl.Weight)-1].V != 25 || tl.Problem == "" {
		t.Errorf("timeline without Prometheus: %+v", tl)
	}
	if code, _ := b.do(t, "GET", "/api/splits/b/app/timeline?from=x", nil); code != http.StatusBadRequest {
		t.Errorf("from=x: %d, want 400", code)
	}
}

func TestServerGuards(t *testing.T) {
	b := newBed(t, "", split("b", "app", shifting()))
	own := b.url
	tok := b.srv.Token()
	for _, tc := range []struct {
		name, method, path string
		hdr                map[string]string
		want               int
	}{
		{"page", "GET", "/", nil, 200},
		{"page without the session", "GET", "/", map[string]string{"Cookie": ""}, http.StatusUnauthorized},
		{"reads without the session", "GET", "/api/splits", map[string]string{"Cookie": ""}, http.StatusUnauthorized},
		{"stream without the session", "GET", "/api/events", map[string]string{"Cookie": ""}, http.StatusUnauthorized},
		{"assets without the session", "GET", "/assets/app.js", map[string]string{"Cookie": ""}, http.StatusUnauthorized},
		{"the printed URL", "GET", "/?token=" + tok, map[string]string{"Cookie": ""}, http.StatusSeeOther},
		{"a wrong printed URL", "GET", "/?token=nope", map[string]string{"Cookie": ""}, http.StatusUnauthorized},
		{"asset", "GET", "/assets/chart.umd.js", nil, 200},
		{"rebinding", "GET", "/api/splits", map[string]string{"Host": "evil.example"}, http.StatusMisdirectedRequest},
		{"foreign origin", "GET", "/api/splits", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"foreign origin on the stream", "GET", "/api/events", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"action without token", "POST", "/api/splits/b/app/pause", map[string]string{"Origin": own}, http.StatusForbidden},
		{"action, foreign origin", "POST", "/api/splits/b/app/pause", map[string]string{"Origin": "http://evil.example", TokenHeader: tok}, http.StatusForbidden},
		{"action", "POST", "/api/splits/b/app/pause", map[string]string{"Origin": own, TokenHeader: tok}, 200},
		{"refused action", "POST", "/api/splits/b/app/retry", map[string]string{"Origin": own, TokenHeader: tok}, http.StatusConflict},
		{"unknown verb", "POST", "/api/splits/b/app/delete", map[string]string{"Origin": own, TokenHeader: tok}, http.StatusNotFound},
		{"PUT", "PUT", "/api/splits/b/app/pause", map[string]string{"Origin": own, TokenHeader: tok}, http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := b.do(t, tc.method, tc.path, tc.hdr)
			if code != tc.want {
				t.Errorf("%s %s: %d %q, want %d", tc.method, tc.path, code, body, tc.want)
			}
		})
	}
	select {
	case a := <-b.acted:
		if a != (acted{"b", "app", "pause"}) {
			t.Errorf("acted %+v", a)
		}
	default:
		t.Error("the allowed action did not reach Act")
	}
	if len(b.acted) != 0 {
		t.Errorf("a refused request acted: %+v", <-b.acted)
	}
	_, page := b.do(t, "GET", "/", nil)
	if !strings.Contains(page, `content="`+tok+`"`) {
		t.Errorf("the page does not carry the session token")
	}
}

// The event stream: a snapshot, then each change the watch delivers.
func TestEventsFollowTheWatch(t *testing.T) {
	b := newBed(t, "", split("b", "app", shifting()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.url+"/api/events", nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie(b.port()), Value: b.srv.Token()})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	events := make(chan [2]string)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev = line[7:]
			case strings.HasPrefix(line, "data: "):
				events <- [2]string{ev, line[6:]}
			}
		}
		close(events)
	}()
	// within waits for the next event up to d; ok is false if none came.
	within := func(d time.Duration) (ev, data string, ok bool) {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case e, open := <-events:
			if !open {
				t.Fatal("the stream ended")
			}
			return e[0], e[1], true
		case <-timer.C:
			return "", "", false
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return "", "", false
	}
	next := func() (string, string) {
		ev, data, _ := within(time.Hour) // bounded by ctx
		return ev, data
	}
	if ev, data := next(); ev != "snapshot" || !strings.Contains(data, `"name":"app"`) {
		t.Fatalf("first event %s %s, want the snapshot", ev, data)
	}
	s := &splitterv1.Split{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: "b", Name: "app"}, s); err != nil {
		t.Fatal(err)
	}
	s.Status.Weight, s.Status.Step = 50, 3
	// The watch may be opened just after the snapshot, and a write before
	// it shows no event: write again whenever none comes (it used to wait
	// for one until the test's deadline, and failed 1 run in 3).
	for shown := false; !shown; {
		if err := b.c.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		for {
			ev, data, ok := within(200 * time.Millisecond)
			if !ok {
				break
			}
			var sum Summary
			if ev == "split" && json.Unmarshal([]byte(data), &sum) == nil && sum.Weights["green"] == 50 {
				shown = true
				break
			}
		}
	}
	if err := b.c.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	for {
		if ev, data := next(); ev == "deleted" {
			if !strings.Contains(data, `"name":"app"`) {
				t.Errorf("deleted %s", data)
			}
			break
		}
	}
}

func TestKubeErrorStatus(t *testing.T) {
	w := httptest.NewRecorder()
	kubeError(w, "x", errors.New("plain"))
	if w.Code != http.StatusBadGateway {
		t.Errorf("a plain error: %d", w.Code)
	}
}
