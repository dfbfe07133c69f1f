// Package dashboard is `kubectl splitter dashboard`: a web page on the
// user's machine (127.0.0.1 only) that shows every Split the user's
// kubeconfig can read, live from a watch, with a timeline of each release
// from Prometheus, and the plugin's actions as buttons. It acts with the
// user's own credentials, so RBAC decides what a person sees and does;
// the page is guarded against other sites (Host, Origin, a session token).
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

//go:embed assets
var assets embed.FS

// Refused is an action the plugin refuses, with its reason (HTTP 409).
type Refused struct{ Reason string }

func (r *Refused) Error() string { return r.Reason }

// Act does one verb on a Split as the plugin's verb of that name would:
// read it, decide, one merge patch with a resourceVersion precondition.
// expect, when given, is what the page showed the verb acting on (the
// gate for approve, the release id for the others): a Split that moved on
// since is refused. It returns what was asked, for the user.
type Act func(ctx context.Context, namespace, name, verb, expect string) (string, error)

// Options are what the server talks to.
type Options struct {
	// Client is the user's (their kubeconfig, their RBAC).
	Client client.WithWatch
	// Namespace limits the page to one namespace; "" is every namespace.
	Namespace string
	// Prometheus, when set, gives the timeline its series.
	Prometheus promv1.API
	// Scrape is Prometheus' scrape interval (the rate windows follow it).
	Scrape time.Duration
	Decide Decide
	Act    Act
	Now    func() time.Time
	Log    logr.Logger
}

// Server is one dashboard session.
type Server struct {
	opts  Options
	guard Guard
	// cookie is the session cookie's name (per port).
	cookie string
	page   *template.Template
	mux    *http.ServeMux
}

// New builds a session served at addr (the listener's host:port).
func New(opts Options, addr string) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Scrape <= 0 {
		opts.Scrape = 15 * time.Second
	}
	g, err := NewGuard(addr)
	if err != nil {
		return nil, fmt.Errorf("making the session token: %w", err)
	}
	page, err := template.ParseFS(assets, "assets/index.html")
	if err != nil {
		return nil, fmt.Errorf("reading the page: %w", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	s := &Server{opts: opts, guard: g, cookie: SessionCookie(port), page: page, mux: http.NewServeMux()}
	static, _ := fs.Sub(assets, "assets") // the directory is embedded
	s.mux.HandleFunc("GET /{$}", s.index)
	s.mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(static)))
	s.mux.HandleFunc("GET /api/splits", s.list)
	s.mux.HandleFunc("GET /api/splits/{ns}/{name}", s.detail)
	s.mux.HandleFunc("GET /api/splits/{ns}/{name}/timeline", s.timeline)
	s.mux.HandleFunc("POST /api/splits/{ns}/{name}/{verb}", s.act)
	s.mux.HandleFunc("GET /api/events", s.events)
	return s, nil
}

// Token is the session's token (the tests read it).
func (s *Server) Token() string { return s.guard.Token }

// EntryURL is the URL that opens the session, for a listener's address.
func (s *Server) EntryURL(addr string) string { return "http://" + addr + "/?token=" + s.guard.Token }

// ServeHTTP checks every request before any handler sees it: every
// request that is not a GET is an action and needs the token.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	action := r.Method != http.MethodGet && r.Method != http.MethodHead
	req := FromHTTP(r, action, s.cookie)
	if code, why := s.guard.Check(req); code != 0 {
		s.opts.Log.Info("Refused a request", "method", r.Method, "path", r.URL.Path, "code", code, "why", why)
		http.Error(w, why, code)
		return
	}
	if req.Entry != "" && s.guard.same(req.Entry) {
		// The printed URL: the session moves into a cookie, and the token
		// out of the address bar and the history.
		http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: s.guard.Token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Serve serves on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) // the event streams end with ctx
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	ns := s.opts.Namespace
	if ns == "" {
		ns = "all namespaces"
	}
	_ = s.page.Execute(w, map[string]string{"Token": s.guard.Token, "Scope": ns, "Prometheus": fmt.Sprint(s.opts.Prometheus != nil)}) // a write error is the client gone
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // a write error is the client gone
}

// kubeError answers with the API server's own status: a 403 is the
// user's RBAC speaking.
func kubeError(w http.ResponseWriter, what string, err error) {
	code := http.StatusBadGateway
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Code != 0 {
		code = int(st.Status().Code)
	}
	http.Error(w, fmt.Sprintf("%s: %v", what, err), code)
}

func (s *Server) listOpts() []client.ListOption {
	if s.opts.Namespace == "" {
		return nil
	}
	return []client.ListOption{client.InNamespace(s.opts.Namespace)}
}

// inScope refuses a Split outside the namespace the session was started for.
func (s *Server) inScope(w http.ResponseWriter, ns string) bool {
	if s.opts.Namespace != "" && ns != s.opts.Namespace {
		http.Error(w, fmt.Sprintf("this dashboard shows namespace %s only", s.opts.Namespace), http.StatusNotFound)
		return false
	}
	return true
}

func (s *Server) summaries(l *splitterv1.SplitList) []Summary {
	now := s.opts.Now()
	out := make([]Summary, 0, len(l.Items))
	for i := range l.Items {
		out = append(out, Summarize(&l.Items[i], now, s.opts.Decide))
	}
	Sort(out)
	return out
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	var l splitterv1.SplitList
	if err := s.opts.Client.List(r.Context(), &l, s.listOpts()...); err != nil {
		kubeError(w, "listing Splits", err)
		return
	}
	writeJSON(w, s.summaries(&l))
}

func (s *Server) get(ctx context.Context, w http.ResponseWriter, r *http.Request) (*splitterv1.Split, bool) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if !s.inScope(w, ns) {
		return nil, false
	}
	sp := &splitterv1.Split{}
	if err := s.opts.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, sp); err != nil {
		kubeError(w, "reading Split "+ns+"/"+name, err)
		return nil, false
	}
	return sp, true
}

// splitEvents reads the Split's Events; none if the user may not.
func (s *Server) splitEvents(ctx context.Context, sp *splitterv1.Split) []Event {
	var l eventsv1.EventList
	if err := s.opts.Client.List(ctx, &l, client.InNamespace(sp.Namespace)); err != nil {
		return nil
	}
	return EventsOf(l.Items, sp.Name)
}

func (s *Server) detail(w http.ResponseWriter, r *http.Request) {
	sp, ok := s.get(r.Context(), w, r)
	if !ok {
		return
	}
	writeJSON(w, DetailOf(sp, s.splitEvents(r.Context(), sp), s.opts.Now(), s.opts.Decide))
}

func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	ns, name, verb := r.PathValue("ns"), r.PathValue("name"), r.PathValue("verb")
	if !s.inScope(w, ns) {
		return
	}
	known := false
	for _, v := range Verbs {
		known = known || v == verb
	}
	if !known || s.opts.Act == nil {
		http.Error(w, fmt.Sprintf("unknown action %q", verb), http.StatusNotFound)
		return
	}
	done, err := s.opts.Act(r.Context(), ns, name, verb, r.URL.Query().Get("expect"))
	var refused *Refused
	switch {
	case errors.As(err, &refused):
		http.Error(w, refused.Reason, http.StatusConflict)
		return
	case err != nil:
		kubeError(w, verb, err)
		return
	}
	s.opts.Log.Info("Acted", "verb", verb, "split", ns+"/"+name)
	writeJSON(w, map[string]string{"done": done})
}

// sse writes one server-sent event.
func sse(w http.ResponseWriter, event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return err
	}
	w.(http.Flusher).Flush()
	return nil
}

// events streams the Splits: a snapshot, then each change as the watch
// delivers it ("split", "deleted"); a watch the server ends is resumed,
// one too old to resume starts again with a snapshot.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if _, ok := w.(http.Flusher); !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for ctx.Err() == nil {
		var l splitterv1.SplitList
		if err := s.opts.Client.List(ctx, &l, s.listOpts()...); err != nil {
			_ = sse(w, "failure", map[string]string{"error": "listing Splits: " + err.Error()})
			if !sleep(ctx, 5*time.Second) {
				return
			}
			continue
		}
		if sse(w, "snapshot", s.summaries(&l)) != nil {
			return
		}
		rv := l.ResourceVersion
		for relist := false; !relist; {
			opts := append(s.listOpts(), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
			wi, err := s.opts.Client.Watch(ctx, &splitterv1.SplitList{}, opts...)
			if err != nil {
				_ = sse(w, "failure", map[string]string{"error": "watching Splits: " + err.Error()})
				if !sleep(ctx, 2*time.Second) {
					return
				}
				break
			}
			relist = s.follow(ctx, w, wi, &rv, ping.C)
			wi.Stop()
			if ctx.Err() != nil || (relist && !sleep(ctx, time.Second)) {
				return
			}
		}
	}
}

// follow relays one watch until it ends; it says whether to list again.
func (s *Server) follow(ctx context.Context, w http.ResponseWriter, wi watch.Interface, rv *string, ping <-chan time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-ping:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return false
			}
			w.(http.Flusher).Flush()
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return false // the server ended the watch: resume from rv
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				sp, ok := ev.Object.(*splitterv1.Split)
				if !ok {
					continue
				}
				*rv = sp.ResourceVersion
				if sse(w, "split", Summarize(sp, s.opts.Now(), s.opts.Decide)) != nil {
					return false
				}
			case watch.Deleted:
				if sp, ok := ev.Object.(*splitterv1.Split); ok {
					*rv = sp.ResourceVersion
					if sse(w, "deleted", map[string]string{"namespace": sp.Namespace, "name": sp.Name}) != nil {
						return false
					}
				}
			case watch.Bookmark:
				if o, ok := ev.Object.(client.Object); ok {
					*rv = o.GetResourceVersion()
				}
			case watch.Error:
				return true // too old to resume (410) or another failure: list again
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
