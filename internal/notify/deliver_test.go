package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// token is the secret part of every receiver URL in these tests.
const token = "T0K3N-s3cr3t-abcdef"

// memStore holds one Split's outbox in memory; the deliverer's Kubernetes
// side is tested on the test bed (test/e2e/notify_test.go).
type memStore struct {
	mu       sync.Mutex
	split    splitterv1.Split
	types    map[string]splitterv1.ReceiverType
	urls     map[string]string
	offer    func(*splitterv1.Split)
	doneFail int // Done fails this many times first
	dropped  []string
}

func newMemStore(receivers map[string]string, typ splitterv1.ReceiverType) *memStore {
	s := &memStore{
		split: splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout", UID: "uid-1"}},
		types: map[string]splitterv1.ReceiverType{}, urls: receivers,
	}
	for name := range receivers {
		s.types[name] = typ
	}
	return s
}

func (s *memStore) names() []string {
	var out []string
	for n := range s.urls {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// queue commits a notification, as the reconciler does, and wakes the
// deliverer as the informer would.
func (s *memStore) queue(event string) {
	s.mu.Lock()
	Queue(&s.split.Status, splitterv1.Notification{Event: event, Message: "msg " + event, At: metav1.Now()}, s.names())
	cp := s.split.DeepCopy()
	offer := s.offer
	s.mu.Unlock()
	if offer != nil {
		offer(cp)
	}
}

func (s *memStore) outbox() []splitterv1.Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]splitterv1.Notification(nil), s.split.Status.Outbox...)
}

func (s *memStore) Resolve(_ context.Context, it Item) (Target, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.split.Status.Outbox {
		n := &s.split.Status.Outbox[i]
		if n.Seq == it.Seq && slices.Contains(n.Pending, it.Receiver) {
			return Target{Type: s.types[it.Receiver], URL: s.urls[it.Receiver], Payload: NewPayload(&s.split, n, it.Receiver), At: n.At.Time}, true, nil
		}
	}
	return Target{}, false, nil
}

func (s *memStore) Done(_ context.Context, it Item) (*splitterv1.Split, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.doneFail > 0 {
		s.doneFail--
		return nil, errors.New("the API server is away")
	}
	Remove(&s.split.Status, it.Seq, it.Receiver)
	return s.split.DeepCopy(), nil
}

func (s *memStore) Dropped(it Item, reason, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped = append(s.dropped, fmt.Sprintf("%d/%s %s: %s", it.Seq, it.Receiver, reason, detail))
}

func (s *memStore) List(context.Context) ([]splitterv1.Split, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []splitterv1.Split{*s.split.DeepCopy()}, nil
}

func (s *memStore) Watch(_ context.Context, offer func(*splitterv1.Split), _ func(types.UID)) error {
	s.mu.Lock()
	s.offer = offer
	cp := s.split.DeepCopy()
	s.mu.Unlock()
	offer(cp)
	return nil
}

// receiver is a local HTTP receiver: answer decides each request's
// status code from the receiver's name and the attempt number (from 1).
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    map[string][]Payload // by receiver name, in arrival order
	tries  map[string]int       // by id and receiver
	answer func(name string, try int) int
}

func newReceiver(t *testing.T, answer func(name string, try int) int) *receiver {
	r := &receiver{got: map[string][]Payload{}, tries: map[string]int{}, answer: answer}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		name := strings.TrimPrefix(strings.TrimSuffix(req.URL.Path, "/"+token), "/")
		body, _ := io.ReadAll(req.Body)
		var p Payload
		_ = json.Unmarshal(body, &p)
		r.mu.Lock()
		id := req.Header.Get("X-Splitter-Notification-Id")
		r.tries[id+"@"+name]++
		try := r.tries[id+"@"+name]
		code := r.answer(name, try)
		if code == 200 {
			r.got[name] = append(r.got[name], p)
		}
		r.mu.Unlock()
		if code == 0 {
			<-req.Context().Done() // hang until the client gives up
			return
		}
		w.WriteHeader(code)
		// An unhelpful receiver echoes the path, token included.
		fmt.Fprintf(w, "status %d for %s\nsecond line", code, req.URL.Path)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) url(name string) string { return r.URL + "/" + name + "/" + token }

func (r *receiver) events(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, p := range r.got[name] {
		out = append(out, p.Event)
	}
	return out
}

func (r *receiver) totalTries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.tries {
		n += c
	}
	return n
}

// start runs a deliverer with fast retries and its log captured; at the
// end of the test it checks that neither the URL nor its token was logged
// or reported.
func start(t *testing.T, store *memStore, tweak func(*Deliverer)) *Deliverer {
	var logs syncBuffer
	d := &Deliverer{
		Store: store, Log: crzap.New(crzap.WriteTo(&logs), crzap.Level(zapcore.DebugLevel)),
		HTTP: NewHTTPClient(200 * time.Millisecond), MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		MaxAttempts: 5, Sweep: 50 * time.Millisecond,
	}
	if tweak != nil {
		tweak(d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		out := logs.String() + strings.Join(store.dropped, "\n")
		for name, u := range store.urls {
			if strings.Contains(out, u) || strings.Contains(out, token) {
				t.Errorf("receiver %s's URL or token in the logs or Events:\n%s", name, out)
			}
		}
		if t.Failed() {
			t.Logf("deliverer log:\n%s", out)
		}
	})
	return d
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventually polls cond for up to 10 s (no assertion on how long it took).
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

func outboxEmpty(s *memStore) func() error {
	return func() error {
		if ob := s.outbox(); len(ob) > 0 {
			return fmt.Errorf("outbox %+v", ob)
		}
		return nil
	}
}

// 5xx, 408 and 429 are retried until a 2xx; each receiver gets a Split's
// notifications in order, once each.
func TestDeliverRetriesUntilDelivered(t *testing.T) {
	for _, code := range []int{500, 502, 503, 408, 429} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			rcv := newReceiver(t, func(_ string, try int) int {
				if try <= 2 {
					return code
				}
				return 200
			})
			store := newMemStore(map[string]string{"a": rcv.url("a"), "b": rcv.url("b")}, splitterv1.ReceiverWebhook)
			start(t, store, nil)
			for _, ev := range []string{"ReleaseStarted", "StepPassed", "Promoted"} {
				store.queue(ev)
			}
			eventually(t, "outbox delivered", outboxEmpty(store))
			for _, name := range []string{"a", "b"} {
				if got := rcv.events(name); fmt.Sprint(got) != "[ReleaseStarted StepPassed Promoted]" {
					t.Errorf("receiver %s got %v, want each once, in order", name, got)
				}
			}
			if n := rcv.totalTries(); n != 3*2*3 {
				t.Errorf("%d requests, want 18 (3 notifications x 2 receivers x 3 tries)", n)
			}
			if len(store.dropped) > 0 {
				t.Errorf("dropped: %v", store.dropped)
			}
		})
	}
}

// Any other 4xx is permanent: dropped after one attempt, with an Event
// naming the receiver, and the next notification goes on.
func TestDeliverDropsClientErrors(t *testing.T) {
	for _, code := range []int{400, 403, 404, 410} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			rcv := newReceiver(t, func(name string, _ int) int {
				if name == "bad" {
					return code
				}
				return 200
			})
			store := newMemStore(map[string]string{"bad": rcv.url("bad"), "good": rcv.url("good")}, splitterv1.ReceiverSlack)
			start(t, store, nil)
			store.queue("ReleaseStarted")
			store.queue("RolledBack")
			eventually(t, "outbox emptied", outboxEmpty(store))
			if n := rcv.totalTries(); n != 4 {
				t.Errorf("%d requests, want 4 (one each: a %d is not retried)", n, code)
			}
			if len(store.dropped) != 2 || !strings.Contains(store.dropped[0], "1/bad rejected: HTTP "+fmt.Sprint(code)) {
				t.Errorf("dropped %q, want both of bad's, rejected with the status", store.dropped)
			}
			if got := len(rcv.got["good"]); got != 2 {
				t.Errorf("good receiver got %d, want 2", got)
			}
		})
	}
}

// A receiver that hangs times out, is retried, and after MaxAttempts is
// given up with an Event; another receiver is not held up meanwhile.
func TestDeliverTimeoutGivesUp(t *testing.T) {
	rcv := newReceiver(t, func(name string, _ int) int {
		if name == "hangs" {
			return 0
		}
		return 200
	})
	store := newMemStore(map[string]string{"hangs": rcv.url("hangs"), "fine": rcv.url("fine")}, splitterv1.ReceiverTeams)
	start(t, store, func(d *Deliverer) { d.MaxAttempts = 3 })
	store.queue("ReleaseStarted")
	store.queue("Promoted")
	eventually(t, "fine receiver served", func() error {
		if got := rcv.events("fine"); len(got) != 2 {
			return fmt.Errorf("fine got %v", got)
		}
		return nil
	})
	eventually(t, "outbox emptied", outboxEmpty(store))
	if len(store.dropped) != 2 || !strings.Contains(store.dropped[0], "1/hangs gave-up") {
		t.Errorf("dropped %q, want hangs' two given up", store.dropped)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for id, n := range rcv.tries {
		if strings.HasSuffix(id, "@hangs") && n != 3 {
			t.Errorf("%s tried %d times, want MaxAttempts (3)", id, n)
		}
	}
}

// Connection errors are retried; their text (which net/http fills with
// the URL) is logged without it.
func TestDeliverConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String() + "/hook/" + token + "?key=" + token
	l.Close()
	store := newMemStore(map[string]string{"dead": dead}, splitterv1.ReceiverWebhook)
	start(t, store, func(d *Deliverer) { d.MaxAttempts = 2 })
	store.queue("RolledBack")
	eventually(t, "given up", outboxEmpty(store))
	if len(store.dropped) != 1 || !strings.Contains(store.dropped[0], "connection refused") {
		t.Errorf("dropped %q, want a connection error", store.dropped)
	}
}

// A delivered notification whose removal from pending fails is not sent
// again: only the write is retried.
func TestDeliverAckRetriedWithoutResend(t *testing.T) {
	rcv := newReceiver(t, func(string, int) int { return 200 })
	store := newMemStore(map[string]string{"a": rcv.url("a")}, splitterv1.ReceiverWebhook)
	store.doneFail = 3
	start(t, store, nil)
	store.queue("ReleaseStarted")
	store.queue("Promoted")
	eventually(t, "outbox delivered", outboxEmpty(store))
	if got := rcv.events("a"); fmt.Sprint(got) != "[ReleaseStarted Promoted]" || rcv.totalTries() != 2 {
		t.Errorf("receiver got %v in %d requests, want each once", got, rcv.totalTries())
	}
}

func TestRedact(t *testing.T) {
	target := "https://user:pa55word@hooks.example.com/services/T000/B000/" + token + "?sig=" + token
	c := NewHTTPClient(50 * time.Millisecond)
	for _, u := range []string{target, "https://127.0.0.1:1/services/" + token} {
		o := Send(context.Background(), c, u, "id", []byte("{}"))
		if o.Class != Retry || strings.Contains(o.Detail, token) || strings.Contains(o.Detail, "pa55word") || o.Detail == "" {
			t.Errorf("outcome %+v", o)
		}
	}
	if o := Send(context.Background(), c, "::not a url "+token, "id", nil); o.Class != Permanent || strings.Contains(o.Detail, token) {
		t.Errorf("outcome %+v", o)
	}
	if o := Send(context.Background(), c, "ftp://x/"+token, "id", nil); o.Class != Permanent || strings.Contains(o.Detail, token) {
		t.Errorf("outcome %+v", o)
	}
}

func TestBackoff(t *testing.T) {
	d := &Deliverer{}
	d.defaults()
	prev := time.Duration(0)
	for n := 1; n <= 12; n++ {
		b := d.backoff(n, 0)
		if b < time.Duration(float64(d.MinBackoff)*0.8) || b > time.Duration(float64(d.MaxBackoff)*1.2) {
			t.Errorf("backoff(%d) = %s, outside [0.8 x %s, 1.2 x %s]", n, b, d.MinBackoff, d.MaxBackoff)
		}
		if n <= 5 && b < prev/2 {
			t.Errorf("backoff(%d) = %s after %s: not growing", n, b, prev)
		}
		prev = b
	}
	if b := d.backoff(1, 30*time.Second); b != 30*time.Second {
		t.Errorf("Retry-After 30s: backoff %s", b)
	}
	if b := d.backoff(1, time.Hour); b != d.MaxBackoff {
		t.Errorf("Retry-After 1h: backoff %s, want the cap", b)
	}
}
