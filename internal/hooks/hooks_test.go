package hooks

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/policy"
)

// serve starts a hook receiver on 127.0.0.1.
func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

const secret = "s3cr3t-t0k3n-abcdef0123456789"

func payload() Payload {
	return Payload{Namespace: "shop", Split: "checkout", Workload: "checkout", Hook: "smoke", Point: "pre-rollout", Token: "abc/1/pre-rollout/smoke"}
}

func TestCall(t *testing.T) {
	lines := "line 1\nline 2\n\nline 3\r\nline 4\nline 5\nline 6\n"
	for _, tc := range []struct {
		name     string
		handler  http.HandlerFunc
		timeout  time.Duration
		pass     bool
		want     []string
		dontWant []string
	}{
		{"2xx passes", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "12 tests passed\n") },
			time.Second, true, []string{"HTTP 200 OK: 12 tests passed"}, nil},
		{"204 without a body passes", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
			time.Second, true, []string{"HTTP 204 No Content"}, []string{": "}},
		{"500 keeps the body's first five lines", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, lines)
		}, time.Second, false, []string{"HTTP 500 Internal Server Error: line 1 | line 2 | line 3 | line 4 | line 5"}, []string{"line 6", "\r", "\n"}},
		{"404 fails", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
			time.Second, false, []string{"HTTP 404 Not Found: 404 page not found"}, nil},
		{"a hook past its timeout fails", func(w http.ResponseWriter, r *http.Request) {
			// Read the body: the server then notices the client hanging up.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}, 200 * time.Millisecond, false, []string{"no answer within 200ms (the hook's timeout)"}, nil},
		{"a redirect is not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere?token="+secret, http.StatusFound)
		}, time.Second, false, []string{"HTTP 302 Found (redirects are not followed: give the hook its final URL)"}, []string{secret}},
		{"control characters, bidi overrides and invalid UTF-8 are stripped", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "\x1b[31mred\x1b[0m\x00 \u202eevil\xff\xfe\tdone")
		}, time.Second, false, []string{"HTTP 502 Bad Gateway: [31mred[0m evil done"}, []string{"\x1b", "\x00", "\u202e", "\t"}},
		{"a body echoing the URL is redacted", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "bad token in "+r.URL.String()+"\nquery "+r.URL.RawQuery+"\n")
		}, time.Second, false, []string{"HTTP 401 Unauthorized: bad token in"}, []string{secret}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serve(t, tc.handler)
			u := srv.URL + "/hooks/" + secret + "?token=" + secret
			got := (&Caller{}).Call(context.Background(), u, tc.timeout, payload())
			if got.Pass != tc.pass {
				t.Errorf("pass = %v, want %v (%s)", got.Pass, tc.pass, got.Message)
			}
			for _, w := range tc.want {
				if !strings.Contains(got.Message, w) {
					t.Errorf("message %q lacks %q", got.Message, w)
				}
			}
			for _, w := range append(tc.dontWant, secret, srv.URL+"/hooks") {
				if strings.Contains(got.Message, w) {
					t.Errorf("message %q contains %q", got.Message, w)
				}
			}
			if !utf8.ValidString(got.Message) {
				t.Errorf("message %q is not valid UTF-8", got.Message)
			}
		})
	}
}

// The request: JSON with the schema, the idempotency key as a header, and
// no redirect leaves for the other host.
func TestCallSendsThePayload(t *testing.T) {
	var elsewhere atomic.Int32
	other := serve(t, func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) })
	var got Payload
	var header http.Header
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		header = r.Header.Clone()
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Errorf("decoding the payload: %v", err)
		}
		if r.Method != http.MethodPost {
			t.Errorf("method %s, want POST", r.Method)
		}
		http.Redirect(w, r, other.URL+"/x", http.StatusTemporaryRedirect)
	})
	p := payload()
	p.Metadata = map[string]string{"suite": "smoke"}
	out := (&Caller{}).Call(context.Background(), strings.Replace(srv.URL, "http://", "http://user:"+secret+"@", 1)+"/run", time.Second, p)
	if out.Pass {
		t.Errorf("a redirect passed: %s", out.Message)
	}
	if elsewhere.Load() != 0 {
		t.Errorf("the redirect was followed to another host %d time(s)", elsewhere.Load())
	}
	if got.Schema != Schema || got.Token != p.Token || got.Metadata["suite"] != "smoke" || got.Split != "checkout" {
		t.Errorf("payload %+v", got)
	}
	if header.Get("Content-Type") != "application/json" || header.Get("Idempotency-Key") != p.Token {
		t.Errorf("headers %v", header)
	}
	if strings.Contains(out.Message, secret) {
		t.Errorf("message %q carries the password", out.Message)
	}
}

// A huge body is not read whole: the message keeps at most 512 bytes of it.
func TestCallHugeBody(t *testing.T) {
	var written atomic.Int64
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		chunk := []byte(strings.Repeat("é", 1<<14)) // two bytes each: a cut may split one
		for range 1 << 10 {                         // 32 MiB
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	out := (&Caller{}).Call(context.Background(), srv.URL, 5*time.Second, payload())
	if out.Pass {
		t.Fatal("a 500 passed")
	}
	body := strings.TrimPrefix(out.Message, "HTTP 500 Internal Server Error: ")
	if len(body) > MaxBodyBytes || len(body) < MaxBodyBytes-2 || !utf8.ValidString(body) {
		t.Errorf("kept %d bytes of the body (valid UTF-8: %v), want at most %d", len(body), utf8.ValidString(body), MaxBodyBytes)
	}
	t.Logf("the server wrote %d bytes before the call closed the connection", written.Load())
}

// Errors carry no URL: net/http's own errors name it.
func TestCallErrorsHideTheURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, tc := range []struct{ name, url, want string }{
		{"connection refused", "http://" + addr + "/hooks/" + secret + "?token=" + secret, "connection refused"},
		{"not a URL", "http://[::1/" + secret, "the hook's URL is not an absolute http(s) URL"},
		{"not http", "ftp://example.com/" + secret, "the hook's URL is not an absolute http(s) URL"},
		{"no host", "http:///" + secret, "the hook's URL is not an absolute http(s) URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := (&Caller{}).Call(context.Background(), tc.url, time.Second, payload())
			if out.Pass || !strings.Contains(out.Message, tc.want) {
				t.Errorf("got %+v, want a Fail saying %q", out, tc.want)
			}
			if strings.Contains(out.Message, secret) || strings.Contains(out.Message, "/hooks/") || strings.Contains(out.Message, "Post ") {
				t.Errorf("message %q shows the URL", out.Message)
			}
		})
	}
}

func TestFirstLines(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"\n\n  \n", ""},
		{"a\nb", "a | b"},
		{"  padded  \r\n", "padded"},
		{"1\n2\n3\n4\n5\n6\n7", "1 | 2 | 3 | 4 | 5"},
		{"tab\there", "tab here"},
		{"bell\a and \x7f del", "bell and  del"},
		{"zero\u200bwidth", "zerowidth"},
		{strings.Repeat("x", 600), strings.Repeat("x", 512)},
		{strings.Repeat("x", 511) + "é", strings.Repeat("x", 511)},
	} {
		if got := FirstLines([]byte(tc.in)); got != tc.want {
			t.Errorf("FirstLines(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ msg, url, want string }{
		{"Post http://h/x?t=abcdefgh: boom", "http://h/x?t=abcdefgh", "Post (redacted): boom"},
		{"bad t=abcdefgh", "http://h/x?t=abcdefgh", "bad (redacted)"},
		{"token abcdefgh", "http://h/x?t=abcdefgh", "token (redacted)"},
		{"path T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX", "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX", "path T000/B000/(redacted)"},
		{"user u:pw-secret", "http://u:pw-secret@h/", "user (redacted)"},
		{"short t=ab stays", "http://h/x?t=ab", "short (redacted) stays"},
		{"nothing secret in /run", "http://h/run", "nothing secret in /run"},
	} {
		if got := redact(tc.msg, tc.url); got != tc.want {
			t.Errorf("redact(%q, %q) = %q, want %q", tc.msg, tc.url, got, tc.want)
		}
	}
}

func TestNewPayload(t *testing.T) {
	split := &splitterv1.Split{
		ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: "shop"},
		Spec:       splitterv1.SplitSpec{Workload: "checkout"},
	}
	smoke := policy.Hook{Name: "smoke", At: splitterv1.HookStep, Metadata: map[string]string{"suite": "smoke"}}
	shifting := splitterv1.SplitStatus{
		Phase: splitterv1.PhaseShifting, Live: splitterv1.Blue, LiveRevision: "aaa",
		Candidate: splitterv1.Green, CandidateRevision: "bbb", Step: 2, Weight: 10,
	}
	p := NewPayload(split, "checkout", "track", shifting, Call{Token: "bbb/1/step/2/smoke", Hook: smoke, Step: 2})
	want := Payload{
		Schema: Schema, Namespace: "shop", Split: "checkout", Workload: "checkout", Hook: "smoke", Point: "step",
		Step: 2, Weight: 10,
		Candidate: Version{Color: "green", Revision: "bbb", Deployment: "checkout-green"},
		Live:      Version{Color: "blue", Revision: "aaa", Deployment: "checkout-blue"},
		Subset:    Label{Key: "track", Value: "green"}, Service: "checkout",
		Metadata: map[string]string{"suite": "smoke"}, Token: "bbb/1/step/2/smoke",
	}
	if a, b := mustJSON(t, p), mustJSON(t, want); a != b {
		t.Errorf("step payload\n got %s\nwant %s", a, b)
	}

	// After promotion the candidate is live and the old color on standby.
	promoted := splitterv1.SplitStatus{
		Phase: splitterv1.PhasePromoting, Live: splitterv1.Green, LiveRevision: "bbb",
		Standby: splitterv1.Blue, StandbyRevision: "aaa",
	}
	post := policy.Hook{Name: "verify", At: splitterv1.HookPostPromotion}
	p = NewPayload(split, "checkout", "color", promoted, Call{Token: "t", Hook: post})
	if p.Candidate.Deployment != "checkout-green" || p.Live.Deployment != "checkout-blue" || p.Weight != 100 ||
		p.Subset != (Label{Key: "color", Value: "green"}) || p.Point != "post-promotion" {
		t.Errorf("post-promotion payload %+v", p)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
