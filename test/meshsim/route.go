// Package meshsim stands in for Envoy in tests and the demo, and for nothing
// else: it reads VirtualServices, DestinationRules, Services and Pods from
// the API server, sends synthetic requests that follow the routing exactly
// as stored, and exports Istio's standard metrics for Prometheus to scrape.
// It never connects to a pod: a pod's behaviour comes from its annotations.
//
// This file is the pure part: a snapshot of the world and the routing of one
// request through it.
package meshsim

import (
	"math"
	"math/rand/v2"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Annotations that drive the simulation.
const (
	// ErrorRateAnnotation on a pod: the share of its responses that are 500 (0..1).
	ErrorRateAnnotation = "meshsim.splitter.dev/error-rate"
	// LatencyAnnotation on a pod: the median latency of its responses in ms.
	LatencyAnnotation = "meshsim.splitter.dev/latency-ms"
	// RPSAnnotation on a Service: requests per second sent to it.
	RPSAnnotation = "meshsim.splitter.dev/rps"
	// TrafficAnnotation on a Service: a JSON list of request classes,
	// e.g. [{"weight":90},{"weight":10,"headers":{"x-beta":"1"}}].
	TrafficAnnotation = "meshsim.splitter.dev/traffic"
)

// DefaultLatencyMs is a pod's median latency without the annotation.
const DefaultLatencyMs = 5.0

// latencySigma spreads latencies log-normally around the median: p99 is
// about exp(2.326*0.3) = 2x the median, as in a healthy service.
const latencySigma = 0.3

// Request is one synthetic request.
type Request struct {
	Method  string
	Path    string
	Headers map[string]string // lower-case names
}

// Endpoint is a Ready pod that can serve requests.
type Endpoint struct {
	Pod       *corev1.Pod
	Workload  string // the owning Deployment's name, as Istio derives it
	ErrorRate float64
	LatencyMs float64
}

// Outcome is what happened to one request.
type Outcome struct {
	// Service is the destination Service (nil when the host is unknown).
	Service *corev1.Service
	// Host is the destination host as routed (FQDN when known).
	Host string
	// Endpoint is the pod that served the request; nil when it never
	// reached one (no route, no subset, no healthy upstream).
	Endpoint  *Endpoint
	Code      int
	Flags     string // Envoy response flags: "-", "NR", "UH"
	LatencyMs float64
}

// World is a consistent snapshot of the objects that decide routing.
type World struct {
	services map[string]*corev1.Service              // ns/name
	pods     map[string][]*corev1.Pod                // ns -> pods
	vsByHost map[string]*networkingv1.VirtualService // FQDN -> VS bound to the mesh
	drByHost map[string]*networkingv1.DestinationRule
}

// FQDN is a Service's cluster-local host name.
func FQDN(name, namespace string) string {
	return name + "." + namespace + ".svc.cluster.local"
}

// resolveHost turns a VirtualService/DestinationRule host into an FQDN,
// relative to the namespace of the object that names it, as Istio does for
// short names.
func resolveHost(host, namespace string) string {
	parts := strings.Split(host, ".")
	switch {
	case len(parts) == 1:
		return FQDN(host, namespace)
	case len(parts) == 2:
		return FQDN(parts[0], parts[1])
	case len(parts) == 3 && parts[2] == "svc":
		return FQDN(parts[0], parts[1])
	}
	return host
}

// NewWorld builds a snapshot. VirtualServices and DestinationRules must
// already be admitted by Istio's validation (see validate.go). Where two objects claim
// the same host, the oldest wins, as Istio picks the oldest on conflict.
func NewWorld(services []*corev1.Service, pods []*corev1.Pod, vss []*networkingv1.VirtualService, drs []*networkingv1.DestinationRule) *World {
	w := &World{
		services: map[string]*corev1.Service{},
		pods:     map[string][]*corev1.Pod{},
		vsByHost: map[string]*networkingv1.VirtualService{},
		drByHost: map[string]*networkingv1.DestinationRule{},
	}
	for _, s := range services {
		w.services[s.Namespace+"/"+s.Name] = s
	}
	for _, p := range pods {
		w.pods[p.Namespace] = append(w.pods[p.Namespace], p)
	}
	for _, ps := range w.pods {
		sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	}
	vss = append([]*networkingv1.VirtualService(nil), vss...)
	sort.SliceStable(vss, func(i, j int) bool {
		return older(&vss[i].CreationTimestamp.Time, &vss[j].CreationTimestamp.Time, vss[i].Name, vss[j].Name)
	})
	for _, vs := range vss {
		if !boundToMesh(vs.Spec.Gateways) {
			continue
		}
		for _, h := range vs.Spec.Hosts {
			fq := resolveHost(h, vs.Namespace)
			if _, taken := w.vsByHost[fq]; !taken {
				w.vsByHost[fq] = vs
			}
		}
	}
	drs = append([]*networkingv1.DestinationRule(nil), drs...)
	sort.SliceStable(drs, func(i, j int) bool {
		return older(&drs[i].CreationTimestamp.Time, &drs[j].CreationTimestamp.Time, drs[i].Name, drs[j].Name)
	})
	for _, dr := range drs {
		fq := resolveHost(dr.Spec.Host, dr.Namespace)
		if _, taken := w.drByHost[fq]; !taken {
			w.drByHost[fq] = dr
		}
	}
	return w
}

// older orders objects by creation time, then name, so the pick is stable.
func older(a, b *time.Time, an, bn string) bool {
	if !a.Equal(*b) {
		return a.Before(*b)
	}
	return an < bn
}

// Services lists the Services traffic is sent to, sorted by namespace/name.
func (w *World) Services() []*corev1.Service {
	out := make([]*corev1.Service, 0, len(w.services))
	for _, s := range w.services {
		if len(s.Spec.Selector) > 0 {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name
	})
	return out
}

func boundToMesh(gateways []string) bool {
	if len(gateways) == 0 {
		return true
	}
	for _, g := range gateways {
		if g == "mesh" {
			return true
		}
	}
	return false
}

// Route sends one request to the Service svc and returns what happened.
func (w *World) Route(svc *corev1.Service, req Request, rng *rand.Rand) Outcome {
	host := FQDN(svc.Name, svc.Namespace)
	vs, ok := w.vsByHost[host]
	if !ok {
		// No VirtualService: kube-proxy's part, spread over the selector's Ready pods.
		return w.serve(svc, host, nil, rng)
	}
	route := matchRoute(vs.Spec.Http, req)
	if route == nil {
		return Outcome{Service: svc, Host: host, Code: 404, Flags: "NR"}
	}
	if route.DirectResponse != nil {
		return Outcome{Service: svc, Host: host, Code: int(route.DirectResponse.Status), Flags: "-"}
	}
	dest := pickDestination(route.Route, rng)
	if dest == nil || dest.Destination == nil {
		return Outcome{Service: svc, Host: host, Code: 404, Flags: "NR"}
	}
	dhost := resolveHost(dest.Destination.Host, vs.Namespace)
	dsvc := w.serviceForHost(dhost)
	if dsvc == nil {
		return Outcome{Host: dhost, Code: 503, Flags: "NR"}
	}
	var subset labels.Set
	if dest.Destination.Subset != "" {
		var found bool
		if subset, found = w.subsetLabels(dhost, dest.Destination.Subset); !found {
			// Envoy has no cluster for an unknown subset.
			return Outcome{Service: dsvc, Host: dhost, Code: 503, Flags: "NR"}
		}
	}
	return w.serve(dsvc, dhost, subset, rng)
}

func (w *World) serviceForHost(fqdn string) *corev1.Service {
	name, rest, ok := strings.Cut(fqdn, ".")
	if !ok {
		return nil
	}
	ns, _, _ := strings.Cut(rest, ".")
	if fqdn != FQDN(name, ns) {
		return nil
	}
	return w.services[ns+"/"+name]
}

func (w *World) subsetLabels(host, subset string) (labels.Set, bool) {
	dr, ok := w.drByHost[host]
	if !ok {
		return nil, false
	}
	for _, s := range dr.Spec.Subsets {
		if s != nil && s.Name == subset {
			return labels.Set(s.Labels), true
		}
	}
	return nil, false
}

// serve picks a Ready endpoint of svc (restricted to a subset) and applies
// its behaviour.
func (w *World) serve(svc *corev1.Service, host string, subset labels.Set, rng *rand.Rand) Outcome {
	eps := w.Endpoints(svc, subset)
	if len(eps) == 0 {
		return Outcome{Service: svc, Host: host, Code: 503, Flags: "UH"}
	}
	ep := eps[rng.IntN(len(eps))]
	out := Outcome{Service: svc, Host: host, Endpoint: &ep, Code: 200, Flags: "-"}
	if ep.ErrorRate > 0 && rng.Float64() < ep.ErrorRate {
		out.Code = 500
	}
	out.LatencyMs = ep.LatencyMs * math.Exp(latencySigma*rng.NormFloat64())
	return out
}

// Endpoints lists the Ready pods selected by svc and the subset labels.
func (w *World) Endpoints(svc *corev1.Service, subset labels.Set) []Endpoint {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var out []Endpoint
	for _, p := range w.pods[svc.Namespace] {
		if !podReady(p) || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		if subset != nil && !labels.SelectorFromSet(subset).Matches(labels.Set(p.Labels)) {
			continue
		}
		out = append(out, Endpoint{
			Pod:       p,
			Workload:  WorkloadName(p),
			ErrorRate: annotationFloat(p, ErrorRateAnnotation, 0, 0, 1),
			LatencyMs: annotationFloat(p, LatencyAnnotation, DefaultLatencyMs, 0, math.MaxFloat64),
		})
	}
	return out
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// WorkloadName is the pod's workload as Istio names it: the Deployment for a
// ReplicaSet-owned pod (the ReplicaSet's name less the pod-template-hash),
// else the owner's name, else the pod's.
func WorkloadName(p *corev1.Pod) string {
	for _, ref := range p.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		if ref.Kind == "ReplicaSet" {
			if hash := p.Labels["pod-template-hash"]; hash != "" {
				if name, ok := strings.CutSuffix(ref.Name, "-"+hash); ok {
					return name
				}
			}
		}
		return ref.Name
	}
	return p.Name
}

func annotationFloat(p *corev1.Pod, key string, def, lo, hi float64) float64 {
	s, ok := p.Annotations[key]
	if !ok {
		return def
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) {
		return def
	}
	return math.Min(math.Max(v, lo), hi)
}

// matchRoute returns the first route whose match conditions the request
// meets; a route without conditions matches every request.
func matchRoute(routes []*networkingapi.HTTPRoute, req Request) *networkingapi.HTTPRoute {
	for _, r := range routes {
		if r == nil {
			continue
		}
		if len(r.Match) == 0 {
			return r
		}
		for _, m := range r.Match {
			if m != nil && matches(m, req) {
				return r
			}
		}
	}
	return nil
}

func matches(m *networkingapi.HTTPMatchRequest, req Request) bool {
	if len(m.Gateways) > 0 && !boundToMesh(m.Gateways) {
		return false
	}
	if m.Uri != nil && !stringMatches(m.Uri, req.Path, m.IgnoreUriCase) {
		return false
	}
	if m.Method != nil && !stringMatches(m.Method, req.Method, false) {
		return false
	}
	for name, sm := range m.Headers {
		v, ok := req.Headers[strings.ToLower(name)]
		if !ok || !stringMatches(sm, v, false) {
			return false
		}
	}
	for name, sm := range m.WithoutHeaders {
		if v, ok := req.Headers[strings.ToLower(name)]; ok && stringMatches(sm, v, false) {
			return false
		}
	}
	return true
}

// stringMatches applies an Istio StringMatch. An empty match only asks that
// the value is present. Regexes are RE2 and must match the whole value, as
// in Envoy.
func stringMatches(sm *networkingapi.StringMatch, v string, ignoreCase bool) bool {
	if sm == nil {
		return true
	}
	switch t := sm.MatchType.(type) {
	case *networkingapi.StringMatch_Exact:
		if ignoreCase {
			return strings.EqualFold(t.Exact, v)
		}
		return t.Exact == v
	case *networkingapi.StringMatch_Prefix:
		if ignoreCase {
			return strings.HasPrefix(strings.ToLower(v), strings.ToLower(t.Prefix))
		}
		return strings.HasPrefix(v, t.Prefix)
	case *networkingapi.StringMatch_Regex:
		re, err := regexp.Compile("^(?:" + t.Regex + ")$")
		return err == nil && re.MatchString(v)
	}
	return true
}

// pickDestination draws a destination by weight. A lone destination takes
// all traffic whatever its weight; otherwise weight 0 takes none.
func pickDestination(ds []*networkingapi.HTTPRouteDestination, rng *rand.Rand) *networkingapi.HTTPRouteDestination {
	if len(ds) == 1 {
		return ds[0]
	}
	total := 0
	for _, d := range ds {
		total += int(d.Weight)
	}
	if total <= 0 {
		return nil
	}
	n := rng.IntN(total)
	for _, d := range ds {
		if n < int(d.Weight) {
			return d
		}
		n -= int(d.Weight)
	}
	return nil
}
