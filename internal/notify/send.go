package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Class is what to do after an attempt.
type Class int

const (
	// Delivered: the receiver answered 2xx.
	Delivered Class = iota
	// Retry: a 5xx, 408, 429, a timeout or a connection error.
	Retry
	// Permanent: any other answer (4xx, 3xx: redirects are not followed);
	// sending the same request again would get the same answer.
	Permanent
)

func (c Class) String() string {
	switch c {
	case Delivered:
		return "delivered"
	case Retry:
		return "retry"
	}
	return "permanent"
}

// Outcome is one attempt's result. Its Detail never holds the URL.
type Outcome struct {
	Class Class
	// Status is the HTTP status code, 0 when there was no answer.
	Status int
	// Detail says what went wrong, for logs and Events.
	Detail string
	// RetryAfter is the receiver's Retry-After, if it gave one.
	RetryAfter time.Duration
}

// DefaultTimeout bounds one request: a receiver that hangs costs a worker
// this long, then the attempt counts as failed and is retried later.
const DefaultTimeout = 10 * time.Second

// NewHTTPClient is the client the Sender uses: no redirects (a redirect
// could carry the URL's token elsewhere), proxies from the environment.
func NewHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
		},
	}
}

// Send posts body to target. The URL is a secret: it appears in no
// returned text (net/http's errors quote it; they are stripped).
func Send(ctx context.Context, c *http.Client, target, id string, body []byte) Outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		// url.Parse's errors quote the URL too.
		return Outcome{Class: Permanent, Detail: "the Secret's URL does not parse as a URL"}
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return Outcome{Class: Permanent, Detail: "the Secret's URL is not http(s)"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "splitter")
	req.Header.Set("X-Splitter-Notification-Id", id)
	resp, err := c.Do(req)
	if err != nil {
		return Outcome{Class: Retry, Detail: Redact(err, target)}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	o := Outcome{Status: resp.StatusCode}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		o.Class = Delivered
		return o
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		o.Class = Retry
		o.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
	default:
		o.Class = Permanent
	}
	o.Detail = fmt.Sprintf("HTTP %d", resp.StatusCode)
	if line := firstLine(string(snippet)); line != "" {
		o.Detail += ": " + scrub(line, target)
	}
	return o
}

// Redact is err's text without the URL: a *url.Error's Op and cause, with
// any remaining trace of the URL's secret parts replaced.
func Redact(err error, target string) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if uerr.Timeout() {
			return uerr.Op + ": timed out"
		}
		err = uerr.Err
		msg := err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			msg = "timed out"
		}
		return scrub(uerr.Op+": "+msg, target)
	}
	return scrub(err.Error(), target)
}

// scrub replaces the URL, and its path, query and user info (where the
// tokens of Slack, Teams and most webhooks live), in s.
func scrub(s, target string) string {
	if target == "" {
		return s
	}
	secrets := []string{target}
	if u, err := url.Parse(target); err == nil {
		if u.User != nil {
			secrets = append(secrets, u.User.String())
		}
		if u.RawQuery != "" {
			secrets = append(secrets, u.RawQuery)
		}
		if p := strings.Trim(u.EscapedPath(), "/"); p != "" {
			secrets = append(secrets, p)
			for _, seg := range strings.Split(p, "/") {
				if len(seg) >= 8 { // a token, not "v1" or "hooks"
					secrets = append(secrets, seg)
				}
			}
		}
	}
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, sec, "<redacted>")
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strings.TrimSpace(s)
}

func retryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
