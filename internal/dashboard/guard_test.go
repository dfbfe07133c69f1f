package dashboard

import (
	"net/http"
	"reflect"
	"testing"
)

func TestHostsFor(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want []string
	}{
		{"127.0.0.1:8080", []string{"127.0.0.1:8080", "localhost:8080"}},
		{"[::1]:9", []string{"[::1]:9", "localhost:9"}},
		{"10.0.0.1:80", []string{"10.0.0.1:80", "10.0.0.1"}},
		{"127.0.0.1:80", []string{"127.0.0.1:80", "localhost:80", "127.0.0.1", "localhost"}},
		{"nonsense", []string{"nonsense"}},
	} {
		if got := HostsFor(tc.addr); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("HostsFor(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestGuardCheck(t *testing.T) {
	g := Guard{Hosts: HostsFor("127.0.0.1:8080"), Token: "s3cret"}
	const own = "http://127.0.0.1:8080"
	for _, tc := range []struct {
		name string
		r    Request
		want int
	}{
		{"page, no origin", Request{Cookie: "s3cret", Method: "GET", Host: "127.0.0.1:8080"}, 0},
		{"page via localhost", Request{Cookie: "s3cret", Method: "GET", Host: "localhost:8080"}, 0},
		{"host case", Request{Cookie: "s3cret", Method: "GET", Host: "LOCALHOST:8080"}, 0},
		{"fetch, own origin", Request{Cookie: "s3cret", Method: "GET", Host: "127.0.0.1:8080", Origin: own}, 0},
		{"rebound domain", Request{Cookie: "s3cret", Method: "GET", Host: "evil.example:8080"}, http.StatusMisdirectedRequest},
		{"other port", Request{Cookie: "s3cret", Method: "GET", Host: "127.0.0.1:8081"}, http.StatusMisdirectedRequest},
		{"no host", Request{Cookie: "s3cret", Method: "GET", Host: ""}, http.StatusMisdirectedRequest},
		{"foreign origin read", Request{Cookie: "s3cret", Method: "GET", Host: "127.0.0.1:8080", Origin: "http://evil.example"}, http.StatusForbidden},
		{"null origin", Request{Cookie: "s3cret", Method: "GET", Host: "127.0.0.1:8080", Origin: "null"}, http.StatusForbidden},
		{"https origin", Request{Cookie: "s3cret", Method: "GET", Host: "127.0.0.1:8080", Origin: "https://127.0.0.1:8080"}, http.StatusForbidden},
		{"origin with user", Request{Cookie: "s3cret", Method: "GET", Host: "127.0.0.1:8080", Origin: "http://u@127.0.0.1:8080"}, http.StatusForbidden},
		{"other port origin", Request{Cookie: "s3cret", Method: "GET", Host: "127.0.0.1:8080", Origin: "http://127.0.0.1:9000"}, http.StatusForbidden},
		{"action ok", Request{Cookie: "s3cret", Method: "POST", Host: "127.0.0.1:8080", Origin: own, Token: "s3cret", Action: true}, 0},
		{"action, no origin (curl with token)", Request{Cookie: "s3cret", Method: "POST", Host: "127.0.0.1:8080", Token: "s3cret", Action: true}, 0},
		{"action, own referer", Request{Cookie: "s3cret", Method: "POST", Host: "127.0.0.1:8080", Referer: own + "/#/ns/app", Token: "s3cret", Action: true}, 0},
		{"action, foreign referer", Request{Cookie: "s3cret", Method: "POST", Host: "127.0.0.1:8080", Referer: "http://evil.example/x", Token: "s3cret", Action: true}, http.StatusForbidden},
		{"action, foreign origin with token", Request{Cookie: "s3cret", Method: "POST", Host: "127.0.0.1:8080", Origin: "http://evil.example", Token: "s3cret", Action: true}, http.StatusForbidden},
		{"action, no token", Request{Cookie: "s3cret", Method: "POST", Host: "127.0.0.1:8080", Origin: own, Action: true}, http.StatusForbidden},
		{"action, wrong token", Request{Cookie: "s3cret", Method: "POST", Host: "127.0.0.1:8080", Origin: own, Token: "s3cre", Action: true}, http.StatusForbidden},
		{"action by GET", Request{Cookie: "s3cret", Method: "GET", Host: "127.0.0.1:8080", Token: "s3cret", Action: true}, http.StatusMethodNotAllowed},
		{"POST to a read", Request{Cookie: "s3cret", Method: "POST", Host: "127.0.0.1:8080", Origin: own, Token: "s3cret"}, http.StatusMethodNotAllowed},
		{"no session", Request{Method: "GET", Host: "127.0.0.1:8080"}, http.StatusUnauthorized},
		{"wrong session", Request{Cookie: "s3cre", Method: "GET", Host: "127.0.0.1:8080"}, http.StatusUnauthorized},
		{"the printed URL opens the session", Request{Entry: "s3cret", Method: "GET", Host: "127.0.0.1:8080"}, 0},
		{"a wrong printed URL", Request{Entry: "x", Method: "GET", Host: "127.0.0.1:8080"}, http.StatusUnauthorized},
		{"printed URL from a foreign page", Request{Entry: "s3cret", Method: "GET", Host: "127.0.0.1:8080", Origin: "http://evil.example"}, http.StatusForbidden},
		{"action with the header token, no session", Request{Method: "POST", Host: "127.0.0.1:8080", Origin: own, Token: "s3cret", Action: true}, http.StatusUnauthorized},
		{"action, rebound host with token", Request{Cookie: "s3cret", Method: "POST", Host: "evil.example:8080", Token: "s3cret", Action: true}, http.StatusMisdirectedRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, why := g.Check(tc.r)
			if code != tc.want {
				t.Errorf("Check(%+v) = %d %q, want %d", tc.r, code, why, tc.want)
			}
			if (code == 0) != (why == "") {
				t.Errorf("Check(%+v) = %d with reason %q", tc.r, code, why)
			}
		})
	}
}

func TestNewGuardTokens(t *testing.T) {
	a, err := NewGuard("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewGuard("127.0.0.1:1")
	if len(a.Token) != 64 || a.Token == b.Token {
		t.Errorf("tokens %q, %q: want 64 hex digits, fresh each time", a.Token, b.Token)
	}
}
