package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/notify"
	"splitter.dev/splitter/test/testbed"
)

// notifyToken is the secret part of the receivers' URLs: it must never show
// in the controller's log, in Events or in status.
const notifyToken = "xoxb-T0K3N-7e1c9a55f00d"

// notifyArrival is one request a receiver read (whatever it answered).
type notifyArrival struct {
	path    string // webhook, slack, teams
	id      string // X-Splitter-Notification-Id
	payload notify.Payload
	body    map[string]any
	at      time.Time
}

// notifyReceiver is an HTTP receiver in the test process, on 127.0.0.1.
type notifyReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	arrivals []notifyArrival
	tries    map[string]int
	// answer picks the status of a request: 0 holds it open until the
	// client goes away or release is closed.
	answer  func(a notifyArrival, try int) int
	held    chan notifyArrival
	release chan struct{}
}

func newNotifyReceiver(t testing.TB, answer func(a notifyArrival, try int) int) *notifyReceiver {
	r := &notifyReceiver{tries: map[string]int{}, answer: answer, held: make(chan notifyArrival, 16), release: make(chan struct{})}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		a := notifyArrival{path: strings.Split(strings.Trim(req.URL.Path, "/"), "/")[0], id: req.Header.Get("X-Splitter-Notification-Id"), at: time.Now()}
		_ = json.Unmarshal(body, &a.payload)
		_ = json.Unmarshal(body, &a.body)
		r.mu.Lock()
		r.arrivals = append(r.arrivals, a)
		r.tries[a.path+" "+a.id]++
		code := 200
		if r.answer != nil {
			code = r.answer(a, r.tries[a.path+" "+a.id])
		}
		r.mu.Unlock()
		if code == 0 {
			select {
			case r.held <- a:
			default: // nobody is waiting for it
			}
			select {
			case <-req.Context().Done():
				return
			case <-r.release:
			}
			code = 200
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(func() {
		select {
		case <-r.release:
		default:
			close(r.release)
		}
		r.Close()
	})
	return r
}

func (r *notifyReceiver) url(path string) string { return r.URL + "/" + path + "/" + notifyToken }

// at returns the arrivals on path.
func (r *notifyReceiver) at(path string) []notifyArrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []notifyArrival
	for _, a := range r.arrivals {
		if a.path == path {
			out = append(out, a)
		}
	}
	return out
}

// firstEvents lists the events on path in order of first notifyArrival, and
// counts the arrivals of each id.
func firstEvents(as []notifyArrival) (events []string, count map[string]int) {
	count = map[string]int{}
	for _, a := range as {
		if count[a.id]++; count[a.id] == 1 {
			events = append(events, a.payload.Event)
		}
	}
	return events, count
}

// notifyingPolicy adds receivers to a test policy, with their URLs in the
// Secret "hooks".
func notifyingPolicy(t testing.TB, tb *testbed.TestBed, ns string, pol *splitterv1.SplitPolicy, urls map[string]string, types map[string]splitterv1.ReceiverType) {
	t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hooks", Namespace: ns}, StringData: urls}
	tb.Create(t, sec)
	var names []string
	for name := range types {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		pol.Spec.Notifications = append(pol.Spec.Notifications, splitterv1.Receiver{
			Name: name, Type: types[name], URLFrom: splitterv1.SecretKeyRef{Name: "hooks", Key: name},
		})
	}
	tb.Create(t, pol)
}

// waitOutboxDrained waits until every notification was delivered (or
// dropped) and returns the Split.
func waitOutboxDrained(t testing.TB, tb *testbed.TestBed, ns string, wantSeq int64) *splitterv1.Split {
	t.Helper()
	var s *splitterv1.Split
	testbed.Eventually(t, 2*time.Minute, 250*time.Millisecond, "outbox drained", func(ctx context.Context) (err error) {
		if s, err = getSplit(ctx, tb, ns); err != nil {
			return err
		}
		if len(s.Status.Outbox) > 0 || s.Status.NotificationSeq < wantSeq {
			return fmt.Errorf("notificationSeq %d, outbox %+v", s.Status.NotificationSeq, s.Status.Outbox)
		}
		return nil
	})
	return s
}

// notifyNoLeak checks the controller's log, the namespace's Events and
// the Split for the receivers' token.
func notifyNoLeak(t *testing.T, tb *testbed.TestBed, ns string, logs ...string) {
	t.Helper()
	for _, path := range logs {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), notifyToken) {
			t.Errorf("the receivers' token is in the controller's log %s", path)
		}
	}
	ctx := context.Background()
	var evs eventsv1.EventList
	if err := tb.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs.Items {
		if strings.Contains(ev.Note, notifyToken) {
			t.Errorf("Event %s %s holds the token", ev.Reason, ev.Note)
		}
	}
	s, err := getSplit(ctx, tb, ns)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(s); strings.Contains(string(b), notifyToken) {
		t.Error("the Split holds the token")
	}
}

// A healthy release, a faulty one, then a policy that stops compiling,
// told to a JSON webhook, a Slack and a Teams receiver on 127.0.0.1: each
// gets ReleaseStarted, StepPassed, Promoted, ReleaseStarted, RolledBack
// (with the reason), Stalled, in order, once each; the Slack receiver
// answers 503 to every first try, so every one of its notifications goes
// through a retry.
func TestNotificationsOfReleases(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "notify")
	rcv := newNotifyReceiver(t, func(a notifyArrival, try int) int {
		if a.path == "slack" && try == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	notifyingPolicy(t, tb, ns, fastPolicy(ns, "fast", []int32{20, 100}),
		map[string]string{"webhook": rcv.url("webhook"), "slack": rcv.url("slack"), "teams": rcv.url("teams")},
		map[string]splitterv1.ReceiverType{"webhook": splitterv1.ReceiverWebhook, "slack": splitterv1.ReceiverSlack, "teams": splitterv1.ReceiverTeams})
	ctrl := startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:2", nil)
	waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, time.Minute, nil)
	release(t, tb, ns, "example.com/app:bad", map[string]string{"meshsim.splitter.dev/error-rate": "0.3"})
	waitPhase(t, tb, ns, splitterv1.PhaseRolledBack, 2*time.Minute, nil)
	waitOutboxDrained(t, tb, ns, 5)

	// A policy that stops compiling stalls the Split: the receivers of the
	// last policy that compiled (kept in status) are told.
	ctx := context.Background()
	pol := &splitterv1.SplitPolicy{}
	if err := tb.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "fast"}, pol); err != nil {
		t.Fatal(err)
	}
	pol.Spec.Checks = append(pol.Spec.Checks, splitterv1.Check{Name: "custom", Query: `sum(up{pod="{{ .Pod }}"})`, Max: ptr.To("1")})
	if err := tb.Client.Update(ctx, pol); err != nil {
		t.Fatal(err)
	}
	s := waitOutboxDrained(t, tb, ns, 6)

	want := []string{notify.EventReleaseStarted, notify.EventStepPassed, notify.EventPromoted, notify.EventReleaseStarted, notify.EventRolledBack, notify.EventStalled}
	if s.Status.NotificationSeq != int64(len(want)) {
		t.Errorf("notificationSeq %d, want %d", s.Status.NotificationSeq, len(want))
	}
	for _, path := range []string{"webhook", "slack", "teams"} {
		events, count := firstEvents(rcv.at(path))
		if path == "webhook" && fmt.Sprint(events) != fmt.Sprint(want) {
			t.Errorf("webhook got %v, want %v", events, want)
		}
		if len(count) != len(want) {
			t.Errorf("%s got %d notifications, want %d", path, len(count), len(want))
		}
		for id, n := range count {
			if wantN := map[bool]int{true: 2, false: 1}[path == "slack"]; n != wantN {
				t.Errorf("%s got %s %d times, want %d", path, id, n, wantN)
			}
		}
	}
	var last, stalled notify.Payload
	for _, a := range rcv.at("webhook") {
		if a.payload.Event == notify.EventStalled {
			stalled = a.payload
			continue
		}
		last = a.payload
		if a.payload.Schema != notify.Schema || a.payload.ID != a.id || !strings.HasPrefix(a.id, string(s.UID)+"/") ||
			a.payload.Namespace != ns || a.payload.Split != "app" || a.payload.Workload != "app" || a.payload.Receiver != "webhook" {
			t.Errorf("webhook payload %+v (header id %s)", a.payload, a.id)
		}
	}
	if last.Event != notify.EventRolledBack || last.Reason != "CheckFailed" || !last.Warning || !strings.Contains(last.Message, "success-rate") ||
		last.Phase != splitterv1.PhaseRollingBack || last.Step != 1 {
		t.Errorf("the rollback's payload %+v, want RolledBack by CheckFailed naming success-rate, at step 1", last)
	}
	if stalled.Reason != "PolicyInvalid" || !stalled.Warning || !strings.Contains(stalled.Message, "spec.checks[2].query") {
		t.Errorf("the stall's payload %+v, want PolicyInvalid naming spec.checks[2].query", stalled)
	}
	for _, a := range rcv.at("slack") {
		if text, _ := a.body["text"].(string); !strings.Contains(text, ns+"/app: ") {
			t.Errorf("Slack body %v", a.body)
		}
	}
	for _, a := range rcv.at("teams") {
		if a.body["type"] != "message" {
			t.Errorf("Teams body %v", a.body)
		}
	}
	notifyNoLeak(t, tb, ns, ctrl.Log())
}

// The controller is SIGKILLed while a receiver holds a notification's
// request open, with a second notification committed behind it; a new
// controller takes over. Every notification status committed arrives at
// least once, none more than twice, and the release's events arrive in
// order.
func TestNotificationsSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "notify-kill")
	holdFirst := true
	rcv := newNotifyReceiver(t, func(a notifyArrival, try int) int {
		if holdFirst && a.payload.Event == notify.EventReleaseStarted {
			holdFirst = false
			return 0
		}
		return http.StatusOK
	})
	pol := fastPolicy(ns, "fast", []int32{50, 100})
	pol.Spec.Approval = &splitterv1.Approval{BeforeFirstStep: true}
	notifyingPolicy(t, tb, ns, pol, map[string]string{"hook": rcv.url("webhook")},
		map[string]splitterv1.ReceiverType{"hook": splitterv1.ReceiverWebhook})
	first := startSplitter(t, tb, ns)
	optedIn(t, tb, ns, "fast")
	waitPhase(t, tb, ns, splitterv1.PhaseIdle, 90*time.Second, readyCondition)

	release(t, tb, ns, "example.com/app:2", nil)
	select {
	case <-rcv.held:
	case <-time.After(time.Minute):
		t.Fatal("no notification arrived")
	}
	// AwaitingApproval is committed behind the held ReleaseStarted.
	gate := waitPhase(t, tb, ns, splitterv1.PhaseAwaitingApproval, time.Minute, nil).Status.Gate
	first.Kill()
	second := startSplitter(t, tb, ns)

	s, err := getSplit(context.Background(), tb, ns)
	if err != nil {
		t.Fatal(err)
	}
	base := s.DeepCopy()
	s.Annotations = map[string]string{splitterv1.ApproveAnnotation: gate}
	if err := tb.Client.Patch(context.Background(), s, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, tb, ns, splitterv1.PhasePromoting, 2*time.Minute, nil)
	s = waitOutboxDrained(t, tb, ns, 5)

	events, count := firstEvents(rcv.at("webhook"))
	want := []string{notify.EventReleaseStarted, notify.EventAwaitingApproval, notify.EventApproved, notify.EventStepPassed, notify.EventPromoted}
	if fmt.Sprint(events) != fmt.Sprint(want) {
		t.Errorf("events in order of first notifyArrival %v, want %v", events, want)
	}
	for seq := int64(1); seq <= s.Status.NotificationSeq; seq++ {
		id := fmt.Sprintf("%s/%d", s.UID, seq)
		if n := count[id]; n < 1 || n > 2 {
			t.Errorf("notification %s arrived %d times, want once or twice", id, n)
		}
	}
	t.Logf("arrivals per id: %v", count)
	notifyNoLeak(t, tb, ns, first.Log(), second.Log())
}
