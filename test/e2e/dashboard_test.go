package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/dashboard"
	"splitter.dev/splitter/test/testbed"
)

// `kubectl splitter dashboard` in headless Chromium against the test bed:
// the real kubectl runs the plugin with the admin kubeconfig, the page
// follows two releases: one approved from the page, one faulty that the
// watchdog snaps back.

// dashboardProcess is a running `kubectl splitter dashboard`.
type dashboardProcess struct {
	url  string
	host string
	// token is the session's, from the printed URL (?token=).
	token string
}

// entry is the printed URL, which opens the session.
func (d *dashboardProcess) entry() string { return d.url + "/?token=" + d.token }

// cookie is the session cookie the printed URL sets.
func (d *dashboardProcess) cookie() *http.Cookie {
	_, port, _ := net.SplitHostPort(d.host)
	return &http.Cookie{Name: dashboard.SessionCookie(port), Value: d.token}
}

func startDashboard(t *testing.T, tb *testbed.TestBed, args ...string) *dashboardProcess {
	t.Helper()
	cmd := kubectlCmd(t, tb, append([]string{"splitter", "dashboard", "--open-browser=false", "--prometheus-url", tb.PrometheusURL}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut syncBuffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("dashboard stderr:\n%s", errOut.String())
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case line := <-lines:
		// "Dashboard of every namespace at http://127.0.0.1:PORT/?token=... (Ctrl-C to stop)"
		i := strings.Index(line, "http://")
		if i < 0 {
			t.Fatalf("the dashboard said %q", line)
		}
		u, err := url.Parse(strings.Fields(line[i:])[0])
		if err != nil || u.Query().Get("token") == "" {
			t.Fatalf("the dashboard printed %q: want a URL with the session's token", line)
		}
		t.Logf("$ kubectl splitter dashboard %s\n%s", strings.Join(args, " "), strings.Replace(line, u.Query().Get("token"), "<token>", 1))
		return &dashboardProcess{url: "http://" + u.Host, host: u.Host, token: u.Query().Get("token")}
	case <-time.After(30 * time.Second):
		t.Fatalf("the dashboard printed no URL; stderr:\n%s", errOut.String())
	}
	return nil
}

// browse starts headless Chromium; a failed test keeps its screenshot.
func browse(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(testbed.Chromium(t)), chromedp.NoSandbox, chromedp.WindowSize(1200, 800))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx); err != nil { // starts the browser, on a context without a deadline
		t.Fatalf("starting Chromium: %v", err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		png, err := runFor(ctx, 10*time.Second, chromedp.FullScreenshot(100))
		if err != nil {
			t.Logf("no screenshot: %v", err)
			return
		}
		dir := os.Getenv("DASHBOARD_ARTIFACTS")
		if dir == "" {
			dir = t.TempDir()
			// t.TempDir is removed with the test: say where to keep it.
			t.Logf("set DASHBOARD_ARTIFACTS=DIR to keep the failure's screenshot")
		}
		p := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-failure.png")
		if err := os.WriteFile(p, png, 0o644); err == nil {
			t.Logf("screenshot of the failure: %s", p)
		}
	})
	return ctx
}

func runFor[T any](ctx context.Context, d time.Duration, a chromedp.Action[T]) (T, error) {
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return chromedp.Run(c, a)
}

func doFor(ctx context.Context, d time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return chromedp.Do(c, steps...)
}

// rawRequest is a plain HTTP request to the dashboard with the session's
// cookie (unless hdr sets a Cookie: "" for none), headers as given.
func rawRequest(t *testing.T, d *dashboardProcess, method, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, d.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, own := hdr["Cookie"]; !own {
		req.AddCookie(d.cookie())
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
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDashboard(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	pluginBin(t)
	ctx := browse(t)

	// Two releases: "gated" waits for approval before promotion; "faulty"
	// gets a green with 30% errors, which the watchdog snaps back.
	gated := tb.Namespace(t, "dash-gated")
	pol := fastPolicy(gated, "gated", []int32{20, 50, 100})
	pol.Spec.Approval = &splitterv1.Approval{BeforePromotion: true}
	tb.Create(t, pol)
	faulty := tb.Namespace(t, "dash-faulty")
	slo := sloPolicy(faulty, []int32{20, 100}, 2*time.Minute)
	slo.Spec.MaxExtensions = ptr.To(int32(1))
	tb.Create(t, slo)
	for _, p := range []struct{ ns, policy string }{{gated, "gated"}, {faulty, "slo"}} {
		startSplitter(t, tb, p.ns)
		optedIn(t, tb, p.ns, p.policy)
	}
	waitPhase(t, tb, gated, splitterv1.PhaseIdle, 90*time.Second, readyCondition)
	waitPhase(t, tb, faulty, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	d := startDashboard(t, tb, "-A")

	// Refused: another site's page, a rebound domain, an action without the token.
	for _, tc := range []struct {
		name, method, path string
		hdr                map[string]string
		want               int
	}{
		{"foreign Origin", "GET", "/api/splits", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"foreign Origin, action with a token", "POST", "/api/splits/" + gated + "/app/abort", map[string]string{"Origin": "http://evil.example", dashboard.TokenHeader: "x"}, http.StatusForbidden},
		{"rebound Host", "GET", "/api/splits", map[string]string{"Host": "evil.example:" + strings.Split(d.host, ":")[1]}, http.StatusMisdirectedRequest},
		{"action without the token", "POST", "/api/splits/" + gated + "/app/abort", map[string]string{"Origin": d.url}, http.StatusForbidden},
		{"own Origin reads", "GET", "/api/splits", map[string]string{"Origin": d.url}, http.StatusOK},
		{"reads without the session (another program on this machine)", "GET", "/api/splits", map[string]string{"Cookie": ""}, http.StatusUnauthorized},
		{"the page without the session", "GET", "/", map[string]string{"Cookie": ""}, http.StatusUnauthorized},
	} {
		if code, body := rawRequest(t, d, tc.method, tc.path, tc.hdr); code != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, code, body, tc.want)
		}
	}

	if err := doFor(ctx, 30*time.Second, chromedp.Navigate(d.entry()),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-split="`+gated+`/app"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-split="`+faulty+`/app"]`))); err != nil {
		t.Fatalf("the overview does not list both Splits: %v", err)
	}

	release(t, tb, faulty, "example.com/app:bad", map[string]string{"meshsim.splitter.dev/error-rate": "0.3"})
	release(t, tb, gated, "example.com/app:2", nil)

	// The weight on the page follows the VirtualService: every change the
	// router writes shows within 2 s.
	var lags []time.Duration
	var mu sync.Mutex
	seen := map[int32]bool{}
	pageGreen := func() (string, error) {
		return runFor(ctx, 5*time.Second, chromedp.Evaluate[string](
			`(document.querySelector('tr[data-split="`+gated+`/app"] .weight') || {dataset: {}}).dataset.green || ""`))
	}
	if err := doFor(ctx, 30*time.Second, chromedp.WaitVisible(chromedp.CSS(`tr[data-split="`+gated+`/app"][data-phase="Shifting"], tr[data-split="`+gated+`/app"][data-phase="Preparing"]`))); err != nil {
		t.Fatalf("the overview does not show the release running: %v", err)
	}
	testbed.Eventually(t, 3*time.Minute, 50*time.Millisecond, "the release waits for approval, each weight followed", func(c context.Context) error {
		w, err := routedWeights(c, tb, gated)
		if err != nil {
			return err
		}
		if !seen[w.Green] {
			seen[w.Green] = true
			at := time.Now()
			want := fmt.Sprint(w.Green)
			for {
				got, err := pageGreen()
				if err == nil && got == want {
					break
				}
				if time.Since(at) > 2*time.Second {
					t.Errorf("the VirtualService gives green %d%%; 2 s later the page shows %q (%v)", w.Green, got, err)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			mu.Lock()
			lags = append(lags, time.Since(at))
			mu.Unlock()
		}
		s, err := getSplit(c, tb, gated)
		if err != nil {
			return err
		}
		if s.Status.Phase != splitterv1.PhaseAwaitingApproval {
			return fmt.Errorf("phase %s, weights %v", s.Status.Phase, w)
		}
		return nil
	})
	t.Logf("the page showed each weight the VirtualService took (%v) %v after it was read from the API server", keys(seen), lags)
	if !seen[20] || !seen[50] {
		t.Errorf("weights seen %v, want 20 and 50", keys(seen))
	}

	s := waitPhase(t, tb, gated, splitterv1.PhaseAwaitingApproval, time.Minute, nil)

	// RBAC decides: a user who may only read Splits sees the release but
	// cannot approve it (the API server refuses the dashboard's patch).
	tb.Create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "split-viewer", Namespace: gated},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{splitterv1.GroupVersion.Group}, Resources: []string{"splits"}, Verbs: []string{"get", "list", "watch"}}}})
	tb.Create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "split-viewer", Namespace: gated},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "split-viewer"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "viewer"}}})
	viewer := startDashboard(t, tb, "-n", gated, "--as", "viewer")
	if code, body := rawRequest(t, viewer, "GET", "/api/splits", nil); code != http.StatusOK || !strings.Contains(body, `"phase":"AwaitingApproval"`) {
		t.Errorf("the viewer's overview: %d %s", code, body)
	}
	_, page := rawRequest(t, viewer, "GET", "/", nil)
	tok := page[strings.Index(page, `name="splitter-token" content="`)+len(`name="splitter-token" content="`):]
	tok = tok[:strings.Index(tok, `"`)]
	code, body := rawRequest(t, viewer, "POST", "/api/splits/"+gated+"/app/approve?expect="+s.Status.Gate, map[string]string{"Origin": viewer.url, dashboard.TokenHeader: tok})
	if code != http.StatusForbidden || !strings.Contains(body, "forbidden") {
		t.Errorf("the viewer's approve: %d %q, want 403 from the API server", code, body)
	}
	t.Logf("the viewer's approve: %d %s", code, strings.TrimSpace(body))

	// Approve from the release's page.
	if err := doFor(ctx, 30*time.Second, chromedp.Navigate(d.url+"/#/"+gated+"/app"),
		chromedp.WaitEnabled(chromedp.CSS(`button[data-verb="approve"]`)),
		chromedp.Click(chromedp.CSS(`button[data-verb="approve"]`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("r-result").textContent.includes("approved gate")`, chromedp.WithPollingTimeout(15*time.Second)),
	); err != nil {
		res, _ := runFor(ctx, 5*time.Second, chromedp.Text(chromedp.CSS(`#r-result`)))
		t.Fatalf("approve from the page: %v (the page says %q)", err, res)
	}
	p := waitPhase(t, tb, gated, splitterv1.PhasePromoting, time.Minute, nil)
	if a := lastAction(p); a.Verb != "approve" || a.By != testbed.AdminUser || a.Detail != s.Status.Gate {
		t.Errorf("status.actions[0] = %+v, want approve of %s by %s", a, s.Status.Gate, testbed.AdminUser)
	}

	// The faulty release: the snap-back on its page, and green's error
	// rate from Prometheus on the timeline.
	waitPhase(t, tb, faulty, splitterv1.PhaseRolledBack, 2*time.Minute, nil)
	if err := doFor(ctx, 30*time.Second, chromedp.Navigate(d.url+"/#/"+faulty+"/app"),
		chromedp.WaitVisible(chromedp.CSS(`#r-markers li[data-kind="snapback"]`))); err != nil {
		t.Fatalf("no snap-back marker on the faulty release's page: %v", err)
	}
	code, body = rawRequest(t, d, "GET", "/api/splits/"+faulty+"/app/timeline", nil)
	var tl dashboard.Timeline
	if code != http.StatusOK || json.Unmarshal([]byte(body), &tl) != nil {
		t.Fatalf("timeline: %d %s", code, body)
	}
	peak := 0.0
	for _, p := range tl.ErrorRate["green"] {
		peak = max(peak, p.V)
	}
	blue := 0.0
	for _, p := range tl.ErrorRate["blue"] {
		blue = max(blue, p.V)
	}
	t.Logf("timeline of the faulty release: green's error rate peaks at %.3f, blue's at %.3f; %d markers; weight from %s; problem %q",
		peak, blue, len(tl.Markers), tl.WeightSource, tl.Problem)
	if peak < 0.1 || blue > 0.05 || tl.Problem != "" {
		t.Errorf("the timeline's error rates: green peaks at %.3f (want about 0.3), blue at %.3f (want about 0); problem %q", peak, blue, tl.Problem)
	}
	if len(tl.LatencyP99["blue"]) == 0 {
		t.Errorf("no p99 latency for blue on the timeline")
	}

	// Page update latency: from a write to the Split (a label, which the
	// controller ignores) returning to the page holding its resourceVersion.
	var lat []time.Duration
	for i := range 20 {
		sp, err := getSplit(context.Background(), tb, faulty)
		if err != nil {
			t.Fatal(err)
		}
		base := sp.DeepCopy()
		if sp.Labels == nil {
			sp.Labels = map[string]string{}
		}
		sp.Labels["dashboard-probe"] = strconv.Itoa(i)
		start := time.Now()
		if err := tb.Client.Patch(context.Background(), sp, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
		if _, err := runFor(ctx, 5*time.Second, chromedp.Poll[chromedp.Void](
			fmt.Sprintf(`(splits.get(%q) || {}).resourceVersion === %q`, faulty+"/app", sp.ResourceVersion))); err != nil {
			t.Fatalf("the page did not get resourceVersion %s: %v", sp.ResourceVersion, err)
		}
		lat = append(lat, time.Since(start))
	}
	t.Logf("page update latency (write returned -> the page has it), 20 writes: median %s, worst %s", median(lat), worst(lat))

	// The picture for the README: both releases on the overview would
	// do, the snap-back on the chart says more.
	if out := os.Getenv("DASHBOARD_SCREENSHOT"); out != "" {
		if err := doFor(ctx, 10*time.Second, chromedp.Sleep(time.Second)); err != nil {
			t.Fatal(err)
		}
		png, err := runFor(ctx, 10*time.Second, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", out, len(png))
	}
	waitPhase(t, tb, gated, splitterv1.PhaseIdle, time.Minute, nil)
}

func keys(m map[int32]bool) []int32 {
	var out []int32
	for k := range m {
		out = append(out, k)
	}
	return out
}
