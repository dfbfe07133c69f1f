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

// The session. The URL the command prints carries the token
// (http://127.0.0.1:PORT/?token=...), as Jupyter's does: opening it sets an
// HttpOnly, SameSite=Strict cookie holding the token and redirects to a
// URL without it. Every request then needs that cookie, reads and assets
// included, so neither another web page (the browser does not send a
// SameSite=Strict cookie on its requests) nor another program or user on
// this machine (loopback does not tell users apart) can read or act
// without the printed URL. Actions also carry the token in a header.

// SessionCookie is the session cookie's name for a port: cookies are per
// host, not per port, so two dashboards must not share one.
func SessionCookie(port string) string { return "splitter_session_" + port }

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
	if port == "80" { // browsers leave the default port out
		for _, h := range hosts {
			hosts = append(hosts, strings.TrimSuffix(h, ":80"))
		}
	}
	return hosts
}

// Request is what Check looks at, taken from an *http.Request.
type Request struct {
	Method, Host, Origin, Referer, Token string
	// Cookie is the session cookie's value; Entry is the token of the
	// printed URL (GET /?token=...), which opens the session.
	Cookie, Entry string
	// Action: the request changes something (approve, abort, ...).
	Action bool
}

// FromHTTP takes the fields Check needs.
func FromHTTP(r *http.Request, action bool, cookie string) Request {
	req := Request{Method: r.Method, Host: r.Host, Origin: r.Header.Get("Origin"), Referer: r.Header.Get("Referer"),
		Token: r.Header.Get(TokenHeader), Action: action}
	if c, err := r.Cookie(cookie); err == nil {
		req.Cookie = c.Value
	}
	if r.Method == http.MethodGet && r.URL.Path == "/" {
		req.Entry = r.URL.Query().Get("token")
	}
	return req
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
	if !g.same(r.Cookie) && !g.same(r.Entry) {
		return http.StatusUnauthorized, "no session: open the URL `kubectl splitter dashboard` printed (it carries the session's token)"
	}
	if r.Action {
		if r.Method != http.MethodPost {
			return http.StatusMethodNotAllowed, "actions are POSTs"
		}
		if !g.same(r.Token) {
			return http.StatusForbidden, "missing or wrong session token (reload the page)"
		}
	} else if !safe {
		return http.StatusMethodNotAllowed, "only GET here"
	}
	return 0, ""
}

// same compares a presented token with the session's, in constant time.
func (g Guard) same(tok string) bool {
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(g.Token)) == 1
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
