package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// TokenHeader carries the session token on every action.
const TokenHeader = "X-Splitter-Token"

// Guard is what a request must match: the dashboard runs on the user's
// machine with the user's credentials, so any web page the user opens
// could otherwise reach it (a form posted to 127.0.0.1, or a page on a
// domain that rebinds its DNS to 127.0.0.1).
type Guard struct {
	// Hosts are the Host headers the server answers to, "127.0.0.1:8080"
	// and "localhost:8080": a rebound domain comes with its own name.
	Hosts []string
	// Token is the session's secret, embedded in the page it serves.
	Token string
}

// NewGuard builds the guard for a listener's address (host:port) with a
// fresh random token.
func NewGuard(addr string) (Guard, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return Guard{}, err
	}
	return Guard{Hosts: HostsFor(addr), Token: hex.EncodeToString(b)}, nil
}

// HostsFor are the Host values a loopback listener's address may be
// reached by.
func HostsFor(addr string) []string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return []string{addr}
	}
	hosts := []string{net.JoinHostPort(host, port)}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		hosts = append(hosts, net.JoinHostPort("localhost", port))
	}
	return hosts
}

// Request is what Check looks at, taken from an *http.Request.
type Request struct {
	Method, Host, Origin, Referer, Token string
	// Action: the request changes something (approve, abort, ...).
	Action bool
}

// FromHTTP takes the fields Check needs.
func FromHTTP(r *http.Request, action bool) Request {
	return Request{Method: r.Method, Host: r.Host, Origin: r.Header.Get("Origin"), Referer: r.Header.Get("Referer"),
		Token: r.Header.Get(TokenHeader), Action: action}
}

// Check says whether a request may be served: 0 and "" if so, else the
// HTTP status and why. Pure, so that every rule is tested by a table.
func (g Guard) Check(r Request) (int, string) {
	if !g.ownHost(r.Host) {
		return http.StatusMisdirectedRequest, "Host " + quote(r.Host) + " is not this dashboard's (DNS rebinding?)"
	}
	if r.Origin != "" && !g.ownOrigin(r.Origin) {
		return http.StatusForbidden, "Origin " + quote(r.Origin) + " is not this dashboard's"
	}
	safe := r.Method == http.MethodGet || r.Method == http.MethodHead
	if !safe && r.Origin == "" && r.Referer != "" && !g.ownOrigin(r.Referer) {
		return http.StatusForbidden, "Referer is not this dashboard's"
	}
	if r.Action {
		if r.Method != http.MethodPost {
			return http.StatusMethodNotAllowed, "actions are POSTs"
		}
		if r.Token == "" || subtle.ConstantTimeCompare([]byte(r.Token), []byte(g.Token)) != 1 {
			return http.StatusForbidden, "missing or wrong session token (reload the page)"
		}
	} else if !safe {
		return http.StatusMethodNotAllowed, "only GET here"
	}
	return 0, ""
}

func (g Guard) ownHost(h string) bool {
	for _, own := range g.Hosts {
		if strings.EqualFold(h, own) {
			return true
		}
	}
	return false
}

// ownOrigin: an Origin (or a Referer's origin) is http://one-of-Hosts.
func (g Guard) ownOrigin(o string) bool {
	u, err := url.Parse(o)
	if err != nil || u.Scheme != "http" || u.User != nil {
		return false
	}
	return g.ownHost(u.Host)
}

// quote shows a header value in a refusal, cut short.
func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return `"` + strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s) + `"`
}

// guarded serves h only to requests the guard lets through.
func (g Guard) guarded(action bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if code, why := g.Check(FromHTTP(r, action)); code != 0 {
			http.Error(w, why, code)
			return
		}
		h(w, r)
	}
}
