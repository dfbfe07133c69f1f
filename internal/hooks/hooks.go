// Package hooks calls a policy hook: it POSTs the release's state as
// versioned JSON and turns the answer into a verdict. A 2xx answer within
// the hook's timeout passes; anything else (another status, a timeout, a
// connection error, a redirect) fails, with a message safe to put in
// status, Events and logs: the status code and the response body's first
// lines, or the error, never the URL (a hook's URL may carry a token).
//
// One call is one attempt: a failed call is a failed gate, not retried
// here (the policy's onFailure says what happens next).
package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/policy"
)

// Schema names the payload's version; a change that breaks receivers
// gets a new one.
const Schema = "splitter.dev/hook/v1"

// Limits of what a failure message keeps of a response body.
const (
	MaxBodyBytes = 512
	MaxBodyLines = 5
	// MaxMessage keeps a message within status' bound (1024).
	MaxMessage = 1000
)

// Payload is the JSON body of a hook call (schema splitter.dev/hook/v1).
type Payload struct {
	Schema    string `json:"schema"`
	Namespace string `json:"namespace"`
	// Split and Workload are the Split's and the user's Deployment's name
	// (the same today).
	Split    string `json:"split"`
	Workload string `json:"workload"`
	// Hook is the hook's name in the policy.
	Hook string `json:"hook"`
	// Point is pre-rollout, step, pre-promotion or post-promotion.
	Point string `json:"point"`
	// Step is the step (1-based) a step hook runs at, else 0.
	Step int32 `json:"step"`
	// Weight is the candidate's share of traffic in percent now.
	Weight int32 `json:"weight"`
	// Candidate is the version being released (after promotion: the color
	// now live); Live the one it replaces (after promotion: the standby).
	Candidate Version `json:"candidate"`
	Live      Version `json:"live"`
	// Subset is the pod label that selects the candidate's pods only, e.g.
	// track=green: a smoke test reaches them through a header route pinned
	// to that subset or a Service selecting it.
	Subset Label `json:"subset"`
	// Service is the Service the workload is reached through.
	Service string `json:"service"`
	// Metadata is the hook's metadata from the policy.
	Metadata map[string]string `json:"metadata,omitempty"`
	// Token identifies the call (revision/attempt/point[/step]/name): the
	// same call may come more than once (at least once delivery), so use
	// it as an idempotency key. Also sent as the Idempotency-Key header.
	Token string `json:"token"`
}

// Version is one color of the workload.
type Version struct {
	Color    string `json:"color"`
	Revision string `json:"revision"`
	// Deployment is the color Deployment, <workload>-<color>.
	Deployment string `json:"deployment"`
}

// Label is a label key and value.
type Label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Call is one hook call as the engine asks for it.
type Call struct {
	Token string
	Hook  policy.Hook
	Step  int32
}

// NewPayload is what a hook is told: the Split, its Service and committed
// status, and the subset label key (the policy's, default track).
func NewPayload(split *splitterv1.Split, service, subsetLabel string, s splitterv1.SplitStatus, c Call) Payload {
	cand, candRev, live, liveRev := s.Candidate, s.CandidateRevision, s.Live, s.LiveRevision
	if cand == "" && s.Standby != "" {
		// Promoted: the release's version is live, the one it replaced is
		// on standby.
		cand, candRev, live, liveRev = s.Live, s.LiveRevision, s.Standby, s.StandbyRevision
	}
	workload := split.Spec.Workload
	if workload == "" {
		workload = split.Name
	}
	version := func(c splitterv1.Color, rev string) Version {
		v := Version{Color: string(c), Revision: rev}
		if c != "" {
			v.Deployment = workload + "-" + string(c)
		}
		return v
	}
	weight := s.Weight
	if c.Hook.At == splitterv1.HookPostPromotion {
		weight = 100
	}
	return Payload{
		Schema: Schema, Namespace: split.Namespace, Split: split.Name, Workload: workload,
		Hook: c.Hook.Name, Point: string(c.Hook.At), Step: c.Step, Weight: weight,
		Candidate: version(cand, candRev), Live: version(live, liveRev),
		Subset:  Label{Key: subsetLabel, Value: string(cand)},
		Service: service, Metadata: c.Hook.Metadata, Token: c.Token,
	}
}

// Outcome is a call's verdict.
type Outcome struct {
	Pass bool
	// Message is safe to show: no URL, valid UTF-8, no control characters.
	Message string
}

// Caller makes hook calls. The zero value is ready to use.
type Caller struct {
	// Transport defaults to http.DefaultTransport's settings (proxy from
	// the environment, system CAs) without keep-alives.
	Transport http.RoundTripper
}

// noRedirect makes a 3xx the answer: a redirect is not followed, so the
// request (and any credentials in the URL) never goes to a host the
// policy did not name, and a 3xx fails the hook.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Call POSTs p to rawURL and waits at most timeout for the answer. A
// canceled ctx fails the call too; the caller tells a shutdown apart by
// ctx.Err().
func (c *Caller) Call(ctx context.Context, rawURL string, timeout time.Duration, p Payload) Outcome {
	p.Schema = Schema
	body, err := json.Marshal(p)
	if err != nil {
		return fail("encoding the payload: %v", err)
	}
	if msg := CheckURL(rawURL); msg != "" {
		return fail("the hook's URL %s", msg)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return fail("%s", redact(unwrapURLError(err), rawURL))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "splitter-hook/v1")
	req.Header.Set("Idempotency-Key", p.Token)

	client := &http.Client{Transport: c.transport(), CheckRedirect: noRedirect}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return fail("no answer within %s (the hook's timeout)", timeout)
		}
		return fail("%s", redact(unwrapURLError(err), rawURL))
	}
	defer resp.Body.Close()
	// What was read within the timeout is kept; the verdict is the status.
	head, _ := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	msg := "HTTP " + resp.Status
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		msg += " (redirects are not followed: give the hook its final URL)"
	}
	if lines := FirstLines(head); lines != "" {
		msg += ": " + redact(lines, rawURL)
	}
	return Outcome{Pass: resp.StatusCode >= 200 && resp.StatusCode < 300, Message: clip(msg)}
}

// defaultTransport keeps no idle connections: hooks are called a few
// times per release, and a body read only in part cannot be reused.
var defaultTransport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableKeepAlives = true
	return t
}()

func (c *Caller) transport() http.RoundTripper {
	if c.Transport != nil {
		return c.Transport
	}
	return defaultTransport
}

func fail(format string, args ...any) Outcome {
	return Outcome{Message: clip(fmt.Sprintf(format, args...))}
}

// CheckURL says what is wrong with a hook URL, or "". The URL is never
// echoed.
func CheckURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "is not an absolute http(s) URL"
	}
	return ""
}

// unwrapURLError drops net/http's "Post <url>:" prefix.
func unwrapURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// FirstLines keeps the first MaxBodyLines non-empty lines of at most
// MaxBodyBytes of a body, as valid UTF-8 without control or format
// characters (no terminal escapes, no bidi overrides), joined by " | ".
func FirstLines(b []byte) string {
	if len(b) > MaxBodyBytes {
		b = b[:MaxBodyBytes]
	}
	s := strings.ToValidUTF8(string(b), "")
	var lines []string
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(strings.Map(printable, line))
		if line == "" {
			continue
		}
		lines = append(lines, line)
		if len(lines) == MaxBodyLines {
			break
		}
	}
	return strings.Join(lines, " | ")
}

func printable(r rune) rune {
	switch {
	case r == '\t':
		return ' '
	case unicode.IsControl(r), unicode.Is(unicode.Cf, r), r == utf8.RuneError:
		return -1
	}
	return r
}

// redact removes from msg the URL and the parts of it that may be a
// credential: the password, the query and its values, long path segments
// (incoming-webhook URLs carry their token in the path).
func redact(msg, rawURL string) string {
	if rawURL == "" {
		return msg
	}
	secrets := []string{rawURL}
	if u, err := url.Parse(rawURL); err == nil {
		if u.User != nil {
			secrets = append(secrets, u.User.String())
			if pw, ok := u.User.Password(); ok {
				secrets = append(secrets, pw)
			}
		}
		if u.RawQuery != "" {
			secrets = append(secrets, u.RawQuery)
			for _, vs := range u.Query() {
				for _, v := range vs {
					if len(v) >= 6 {
						secrets = append(secrets, v, url.QueryEscape(v))
					}
				}
			}
		}
		for seg := range strings.SplitSeq(u.EscapedPath(), "/") {
			if len(seg) >= 16 {
				secrets = append(secrets, seg)
				if un, err := url.PathUnescape(seg); err == nil {
					secrets = append(secrets, un)
				}
			}
		}
	}
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "(redacted)")
		}
	}
	return msg
}

// clip bounds a message at a rune boundary.
func clip(s string) string {
	if len(s) <= MaxMessage {
		return s
	}
	cut := MaxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
