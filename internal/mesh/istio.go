package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// Istio routes with a VirtualService between the DestinationRule subsets
// "blue" and "green". Make it with NewIstio and keep it: it remembers its
// last write per object, so a pass that reads from a cache that has not seen
// that write yet neither reports the old weights nor sends the write again
// (lastwrite.go). The zero value with a Client works, without that memory.
type Istio struct {
	Client client.Client
	// OnWrite, when set, is told of every write the router sends (kind is
	// KindVirtualService or KindDestinationRule) and its outcome: nil, a
	// conflict (IsConflict or IsAlreadyExists: a lost race), or an error.
	// Writes the router skips are not reported.
	OnWrite func(kind string, err error)

	last *lastWrites
}

// NewIstio returns an Istio router that remembers its writes.
func NewIstio(c client.Client) *Istio {
	return &Istio{Client: c, last: newLastWrites()}
}

var (
	_ Router = Istio{}
	_ Router = (*Istio)(nil)
)

func (r Istio) wrote(kind string, err error) {
	if r.OnWrite != nil {
		r.OnWrite(kind, err)
	}
}

// HostMatches says whether a VirtualService destination host (relative to
// namespace) names the Service.
func HostMatches(host, service, namespace string) bool {
	switch host {
	case service, service + "." + namespace, service + "." + namespace + ".svc", service + "." + namespace + ".svc.cluster.local":
		return true
	}
	return false
}

// meshBound says whether a VirtualService with these gateways applies to
// the mesh's sidecars (no gateways, or the reserved gateway "mesh"). One
// bound to gateways only routes edge traffic, whatever its hosts.
func meshBound(gateways []string) bool {
	return len(gateways) == 0 || slices.Contains(gateways, "mesh")
}

// hostCovers says whether a VirtualService host (short, FQDN, or a
// wildcard such as "*.shop.svc.cluster.local") covers the Service.
func hostCovers(host, service, namespace string) bool {
	if HostMatches(host, service, namespace) || host == "*" {
		return true
	}
	suffix, ok := strings.CutPrefix(host, "*")
	return ok && strings.HasSuffix(service+"."+namespace+".svc.cluster.local", suffix)
}

// weightRef locates one destination weight splitter manages.
type weightRef struct {
	route, dest int
	color       splitterv1.Color
}

// pinRef locates one destination of a pinned route: a route that sends to
// one color subset of the Service only.
type pinRef struct {
	route, dest int
	color       splitterv1.Color
}

// routes is what findRoutes found in a VirtualService.
type routes struct {
	weights []weightRef // the managed routes' color destinations
	managed []int       // the managed routes, by index
	pins    []pinRef    // the pinned routes' color destinations
}

// routeLabel names a route for a user: its index and, when it has one, its name.
func routeLabel(vs *networkingv1.VirtualService, i int) string {
	if n := vs.Spec.Http[i].GetName(); n != "" {
		return fmt.Sprintf("http[%d] (name: %s)", i, n)
	}
	return fmt.Sprintf("http[%d]", i)
}

// routeShape sorts one HTTP route's destinations: those to the Service by
// color, those to the Service with another subset (or none), and the rest.
type routeShape struct {
	colors  []weightRef // destinations to the Service's blue or green subset
	subsets []int       // destinations to the Service with another subset or none
	others  int         // destinations to other hosts
}

func shapeOf(vs *networkingv1.VirtualService, i int, service string) routeShape {
	var sh routeShape
	for j, d := range vs.Spec.Http[i].Route {
		if d == nil || d.Destination == nil || !HostMatches(d.Destination.Host, service, vs.Namespace) {
			sh.others++
			continue
		}
		switch c := splitterv1.Color(d.Destination.Subset); c {
		case splitterv1.Blue, splitterv1.Green:
			sh.colors = append(sh.colors, weightRef{route: i, dest: j, color: c})
		default:
			sh.subsets = append(sh.subsets, j)
		}
	}
	return sh
}

// has says whether the route sends to color.
func (sh routeShape) has(c splitterv1.Color) bool {
	for _, r := range sh.colors {
		if r.color == c {
			return true
		}
	}
	return false
}

// weighted says whether the route is exactly what splitter can manage: two
// destinations to the Service, subsets blue and green, nothing else.
func (sh routeShape) weighted() bool {
	return len(sh.colors) == 2 && sh.colors[0].color != sh.colors[1].color && len(sh.subsets) == 0 && sh.others == 0
}

// findRoutes sorts the VirtualService's HTTP routes for the Service.
//
// Managed routes get their weights changed, and nothing else. Without
// names, a route is managed when it carries both color subsets of the
// Service; it must then have exactly those two destinations (splitter does
// not guess what a third destination's weight should become). With names
// (the splitter.dev/routes annotation), exactly the routes of those names
// are managed, and each must have exactly the two color destinations.
//
// Pinned routes send to one color subset of the Service only (a debug
// header route, say): the user's decision, left alone unless pinned
// routes follow the live color. Every other route (other hosts, other
// subsets, redirects, delegates) and every TCP/TLS route is never touched.
func findRoutes(vs *networkingv1.VirtualService, service string, names []string) (*routes, error) {
	obj := "VirtualService/" + vs.Name
	if meshBound(vs.Spec.Gateways) && !slices.ContainsFunc(vs.Spec.Hosts, func(h string) bool { return hostCovers(h, service, vs.Namespace) }) {
		return nil, &ConfigError{Object: obj, Field: "spec.hosts", Msg: fmt.Sprintf(
			"%v does not name %s: requests to %s inside the mesh do not pass through this VirtualService, so its weights would not move them; add %s to spec.hosts",
			vs.Spec.Hosts, service, service, service)}
	}
	named := map[string]bool{}
	for _, n := range names {
		named[n] = false
	}
	rt := &routes{}
	for i, r := range vs.Spec.Http {
		if r == nil {
			continue
		}
		sh := shapeOf(vs, i, service)
		_, isNamed := named[r.GetName()]
		manage := sh.has(splitterv1.Blue) && sh.has(splitterv1.Green)
		if len(names) > 0 {
			manage = isNamed
			if isNamed {
				named[r.GetName()] = true
			}
		}
		switch {
		case manage && !sh.weighted():
			why := "carries both color subsets"
			if len(names) > 0 {
				why = "is named by the " + splitterv1.RoutesAnnotation + " annotation"
			}
			return nil, &ConfigError{Object: obj, Field: fmt.Sprintf("spec.http[%d].route", i), Msg: fmt.Sprintf(
				"route %s %s, so it must have exactly two destinations, %s subsets blue and green, and nothing else: "+
					"splitter changes weights, never the shape of a route (move other destinations to a route of their own, or name the routes to manage with %s)",
				routeLabel(vs, i), why, service, splitterv1.RoutesAnnotation)}
		case manage:
			rt.weights = append(rt.weights, sh.colors...)
			rt.managed = append(rt.managed, i)
		case len(sh.colors) > 0 && !(sh.has(splitterv1.Blue) && sh.has(splitterv1.Green)):
			for _, c := range sh.colors {
				rt.pins = append(rt.pins, pinRef(c))
			}
		}
	}
	for _, n := range names {
		if !named[n] {
			return nil, &ConfigError{Object: obj, Field: "spec.http", Msg: fmt.Sprintf(
				"no HTTP route named %q (named by the %s annotation on the Deployment)", n, splitterv1.RoutesAnnotation)}
		}
	}
	if len(rt.managed) == 0 {
		msg := fmt.Sprintf("no HTTP route sends traffic to %s with both subsets blue and green: add one "+
			"(e.g. route: [{destination: {host: %s, subset: blue}, weight: 100}, {destination: {host: %s, subset: green}, weight: 0}])",
			service, service, service)
		if len(rt.pins) > 0 {
			msg += fmt.Sprintf("; routes to one color only (%s) are left alone", pinList(vs, rt.pins))
		}
		return nil, &ConfigError{Object: obj, Field: "spec.http", Msg: msg}
	}
	return rt, nil
}

// pinList names the pinned routes, e.g. "http[1] (name: debug) -> blue".
func pinList(vs *networkingv1.VirtualService, pins []pinRef) string {
	var out []string
	for _, p := range pinnedRoutes(vs, pins) {
		out = append(out, p.Route+" -> "+string(p.Color))
	}
	return strings.Join(out, ", ")
}

// pinnedRoutes lists the pinned routes once each, with their color.
func pinnedRoutes(vs *networkingv1.VirtualService, pins []pinRef) []splitterv1.PinnedRoute {
	var out []splitterv1.PinnedRoute
	seen := map[int]bool{}
	for _, p := range pins {
		if !seen[p.route] {
			seen[p.route] = true
			out = append(out, splitterv1.PinnedRoute{Route: routeLabel(vs, p.route), Color: p.color})
		}
	}
	return out
}

// findWeights is findRoutes' managed weights, every route sorted by shape.
func findWeights(vs *networkingv1.VirtualService, service string) ([]weightRef, error) {
	rt, err := findRoutes(vs, service, nil)
	if err != nil {
		return nil, err
	}
	return rt.weights, nil
}

// readWeights returns the weights of the first managed route, and whether
// every managed route agrees with it.
func readWeights(vs *networkingv1.VirtualService, refs []weightRef) (rollout.Weights, bool) {
	per := map[int]*rollout.Weights{}
	for _, r := range refs {
		w := per[r.route]
		if w == nil {
			w = &rollout.Weights{}
			per[r.route] = w
		}
		weight := vs.Spec.Http[r.route].Route[r.dest].Weight
		if r.color == splitterv1.Blue {
			w.Blue = weight
		} else {
			w.Green = weight
		}
	}
	first := *per[refs[0].route]
	for _, w := range per {
		if *w != first {
			return first, false
		}
	}
	return first, true
}

// weightPatch is a JSON patch that changes only the managed weights (and,
// for pins, the subset of pinned destinations), and only if the object is
// still at resourceVersion.
func weightPatch(resourceVersion string, refs []weightRef, w rollout.Weights, pins ...pinMove) ([]byte, error) {
	ops := []map[string]any{{"op": "test", "path": "/metadata/resourceVersion", "value": resourceVersion}}
	for _, r := range refs {
		ops = append(ops, map[string]any{
			// "add" sets a member whether or not it is present: Istio's JSON
			// omits a weight of 0, and "replace" refuses a missing member.
			"op": "add", "path": fmt.Sprintf("/spec/http/%d/route/%d/weight", r.route, r.dest), "value": w.Of(r.color),
		})
	}
	for _, p := range pins {
		ops = append(ops, map[string]any{
			"op": "replace", "path": fmt.Sprintf("/spec/http/%d/route/%d/destination/subset", p.route, p.dest), "value": string(p.to),
		})
	}
	return json.Marshal(ops)
}

// pinMove moves one pinned destination to another color subset.
type pinMove struct {
	route, dest int
	to          splitterv1.Color
}

// pinMoves are the moves that make pinned routes follow t.Follow: every
// pinned destination not on it, except those on t.Keep.
func pinMoves(pins []pinRef, t Target) []pinMove {
	if t.Follow == "" {
		return nil
	}
	var out []pinMove
	for _, p := range pins {
		if p.color != t.Follow && p.color != t.Keep {
			out = append(out, pinMove{route: p.route, dest: p.dest, to: t.Follow})
		}
	}
	return out
}

// PinColors is where pinned routes go under splitter.dev/pinned-routes:
// follow-live, for a Split in status st: to the live color (follow),
// except that routes pinned to the candidate of a release in progress stay
// (keep): a user may be trying the candidate through them before it gets
// weight. Before adoption there is no live color and nothing moves.
func PinColors(st splitterv1.SplitStatus) (follow, keep splitterv1.Color) {
	switch st.Phase {
	case splitterv1.PhasePreparing, splitterv1.PhaseShifting, splitterv1.PhaseAwaitingApproval:
		keep = st.Candidate
	}
	return st.Live, keep
}

func (t Target) vsName() string {
	if t.VirtualService != "" {
		return t.VirtualService
	}
	return t.Service
}

// getVS reads the VirtualService (our last write's result when the cache
// has not caught up with it) and checks that splitter may use it.
func (r Istio) getVS(ctx context.Context, t Target) (*networkingv1.VirtualService, error) {
	key := client.ObjectKey{Namespace: t.Namespace, Name: t.vsName()}
	cur, err := r.read(ctx, KindVirtualService, key, &networkingv1.VirtualService{})
	if err != nil {
		return nil, err
	}
	if cur == nil {
		if t.VirtualService != "" {
			return nil, &ConfigError{Object: "VirtualService/" + t.VirtualService, Msg: "not found (named by the " + splitterv1.VirtualServiceAnnotation + " annotation)"}
		}
		return nil, nil
	}
	vs := cur.(*networkingv1.VirtualService)
	if t.VirtualService == "" && !isOwnedBy(vs, t.Owner) {
		return nil, &ConfigError{Object: "VirtualService/" + vs.Name, Msg: fmt.Sprintf(
			"exists and is not splitter's: annotate the Deployment with %s: %s to let splitter change only its weights",
			splitterv1.VirtualServiceAnnotation, vs.Name)}
	}
	return vs, nil
}

// Ensure recreates the subsets' DestinationRule when it is missing.
func (r Istio) Ensure(ctx context.Context, t Target) error { return r.ensureDestinationRule(ctx, t) }

// Routing is what the Istio router found in the VirtualService: the
// weights, and which routes it manages and which are pinned to one color.
type Routing struct {
	// Weights routed now; nil when nothing routes to the colors yet.
	Weights *rollout.Weights
	// Managed names the routes whose weights splitter manages.
	Managed []string
	// Pinned are the routes to one color only.
	Pinned []splitterv1.PinnedRoute
}

// PinsToMove says whether SetWeights with t would move a pinned route.
func (g *Routing) PinsToMove(t Target) bool {
	if g == nil || t.Follow == "" {
		return false
	}
	for _, p := range g.Pinned {
		if p.Color != t.Follow && p.Color != t.Keep {
			return true
		}
	}
	return false
}

// Inspect reads the weights routed now and the routes they are on.
func (r Istio) Inspect(ctx context.Context, t Target) (*Routing, error) {
	vs, err := r.getVS(ctx, t)
	if err != nil || vs == nil {
		return &Routing{}, err
	}
	rt, err := findRoutes(vs, t.Service, t.Routes)
	if err != nil {
		return nil, err
	}
	g := &Routing{Pinned: pinnedRoutes(vs, rt.pins)}
	for _, i := range rt.managed {
		g.Managed = append(g.Managed, routeLabel(vs, i))
	}
	w, consistent := readWeights(vs, rt.weights)
	if !consistent || w.Blue+w.Green != 100 {
		// Routes disagree or do not sum to 100: report something no plan
		// asks for, so the next SetWeights rewrites them all.
		w = rollout.Weights{Blue: -1, Green: -1}
	}
	g.Weights = &w
	return g, nil
}

// Observe reads the weights routed now.
func (r Istio) Observe(ctx context.Context, t Target) (*rollout.Weights, error) {
	g, err := r.Inspect(ctx, t)
	if err != nil {
		return nil, err
	}
	return g.Weights, nil
}

// SetWeights writes the weights in one request: a create of splitter's own
// VirtualService the first time, a weights-only JSON patch after (which
// also moves pinned routes to t.Follow, when set).
func (r Istio) SetWeights(ctx context.Context, t Target, w rollout.Weights) error {
	if err := r.ensureDestinationRule(ctx, t); err != nil {
		return err
	}
	vs, err := r.getVS(ctx, t)
	if err != nil {
		return err
	}
	if vs == nil {
		return r.create(ctx, KindVirtualService, OwnedVirtualService(t, w))
	}
	rt, err := findRoutes(vs, t.Service, t.Routes)
	if err != nil {
		return err
	}
	moves := pinMoves(rt.pins, t)
	if routed, consistent := readWeights(vs, rt.weights); consistent && routed == w && len(moves) == 0 {
		// Already routed, typically by our own last write that the cache
		// has not shown yet: writing it again could only be refused.
		return nil
	}
	from := vs.ResourceVersion
	patch, err := weightPatch(from, rt.weights, w, moves...)
	if err != nil {
		return err
	}
	err = r.Client.Patch(ctx, vs, client.RawPatch(types.JSONPatchType, patch))
	if PatchNotApplied(err) {
		// The resourceVersion precondition failed: the object changed
		// since it was read. That is a lost race, reported as the
		// conflict it is (the reconciler retries quietly).
		err = apierrors.NewConflict(networkingv1.Resource("virtualservices"), vs.Name,
			fmt.Errorf("the VirtualService is no longer at resourceVersion %s: %w", from, err))
	}
	r.wrote(KindVirtualService, err)
	if err != nil {
		return err
	}
	r.last.remember(KindVirtualService, client.ObjectKeyFromObject(vs), from, vs)
	return nil
}

// read gets the object at key into obj and returns the object to act on:
// obj, our last write's result when the cache shows a version that write
// replaced, or nil when neither exists.
func (r Istio) read(ctx context.Context, kind string, key client.ObjectKey, obj client.Object) (client.Object, error) {
	return readThrough(ctx, r.Client, r.last, kind, key, obj)
}

func readThrough(ctx context.Context, c client.Reader, last *lastWrites, kind string, key client.ObjectKey, obj client.Object) (client.Object, error) {
	var cached client.Object
	switch err := c.Get(ctx, key, obj); {
	case err == nil:
		cached = obj
	case !apierrors.IsNotFound(err):
		return nil, err
	}
	return last.current(kind, key, cached), nil
}

// create creates one of splitter's own objects and remembers it. An
// AlreadyExists is returned as it is: the cache had not seen the object yet,
// a lost race the reconciler retries quietly.
func (r Istio) create(ctx context.Context, kind string, obj client.Object) error {
	err := r.Client.Create(ctx, obj)
	r.wrote(kind, err)
	if err != nil {
		return err
	}
	r.last.remember(kind, client.ObjectKeyFromObject(obj), "", obj)
	return nil
}

// OwnedVirtualService is the VirtualService splitter creates for a Service
// without one: one HTTP route, two weighted subsets.
func OwnedVirtualService(t Target, w rollout.Weights) *networkingv1.VirtualService {
	return &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{
			Name: t.Service, Namespace: t.Namespace, OwnerReferences: ownerRef(t.Owner),
			Labels: map[string]string{ManagedByLabel: ManagedBy},
		},
		Spec: networkingapi.VirtualService{
			Hosts: []string{t.Service},
			Http: []*networkingapi.HTTPRoute{{
				Name: "splitter",
				Route: []*networkingapi.HTTPRouteDestination{
					{Destination: &networkingapi.Destination{Host: t.Service, Subset: string(splitterv1.Blue)}, Weight: w.Blue},
					{Destination: &networkingapi.Destination{Host: t.Service, Subset: string(splitterv1.Green)}, Weight: w.Green},
				},
			}},
		},
	}
}

// OwnedDestinationRule defines the color subsets for the Service.
func OwnedDestinationRule(t Target) *networkingv1.DestinationRule {
	return &networkingv1.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{
			Name: t.Service, Namespace: t.Namespace, OwnerReferences: ownerRef(t.Owner),
			Labels: map[string]string{ManagedByLabel: ManagedBy},
		},
		Spec: networkingapi.DestinationRule{
			Host: t.Service,
			Subsets: []*networkingapi.Subset{
				{Name: string(splitterv1.Blue), Labels: map[string]string{t.SubsetLabel: string(splitterv1.Blue)}},
				{Name: string(splitterv1.Green), Labels: map[string]string{t.SubsetLabel: string(splitterv1.Green)}},
			},
		},
	}
}

// ensureDestinationRule makes sure exactly one DestinationRule in the
// namespace defines the subsets for the Service's host. It looks them up
// by host (short or FQDN, as HostMatches), not by name: a user's
// DestinationRule for the host, whatever its name, is used as it is if it
// defines both subsets by the subset label, and never changed; one without
// them is a ConfigError. Two for the same host is a ConfigError too: Istio
// merges or picks among them, so which subsets apply would be a guess.
// splitter creates its own (named after the Service) only when none has
// the host. DestinationRules in other namespaces are not looked at.
func (r Istio) ensureDestinationRule(ctx context.Context, t Target) error {
	drs, err := r.destinationRules(ctx, t)
	if err != nil {
		return err
	}
	switch len(drs) {
	case 0:
		return r.create(ctx, KindDestinationRule, OwnedDestinationRule(t))
	case 1:
	default:
		var names []string
		for _, dr := range drs {
			n := dr.Name
			if isOwnedBy(dr, t.Owner) {
				n += " (splitter's: it is not re-created while another exists)"
			}
			names = append(names, n)
		}
		return &ConfigError{Object: "DestinationRule/" + drs[1].Name, Field: "spec.host", Msg: fmt.Sprintf(
			"DestinationRules %s all set host %s: Istio merges or picks among them, so which subsets apply is unclear; delete all but one",
			strings.Join(names, ", "), t.Service)}
	}
	dr := drs[0]
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		ok := false
		for _, s := range dr.Spec.Subsets {
			ok = ok || (s != nil && s.Name == string(c) && s.Labels[t.SubsetLabel] == string(c))
		}
		if !ok {
			return &ConfigError{Object: "DestinationRule/" + dr.Name, Field: "spec.subsets",
				Msg: fmt.Sprintf("sets host %s and needs a subset %q with labels {%s: %s}; splitter does not change a DestinationRule it did not create", t.Service, c, t.SubsetLabel, c)}
		}
	}
	return nil
}

// destinationRules lists the namespace's DestinationRules for the
// Service's host, oldest first; splitter's own is read through the memory
// of our last write (a cache that has not shown our create yet still
// counts it, and one we deleted is not counted).
func (r Istio) destinationRules(ctx context.Context, t Target) ([]*networkingv1.DestinationRule, error) {
	var list networkingv1.DestinationRuleList
	if err := r.Client.List(ctx, &list, client.InNamespace(t.Namespace)); err != nil {
		return nil, fmt.Errorf("listing DestinationRules: %w", err)
	}
	var out []*networkingv1.DestinationRule
	for _, dr := range list.Items {
		if dr.Name != t.Service && HostMatches(dr.Spec.Host, t.Service, t.Namespace) {
			out = append(out, dr)
		}
	}
	own, err := r.read(ctx, KindDestinationRule, client.ObjectKey{Namespace: t.Namespace, Name: t.Service}, &networkingv1.DestinationRule{})
	if err != nil {
		return nil, err
	}
	if own != nil {
		dr := own.(*networkingv1.DestinationRule)
		if HostMatches(dr.Spec.Host, t.Service, t.Namespace) {
			out = append(out, dr)
		} else if len(out) == 0 {
			// Its name is taken by one for another host: splitter cannot
			// create its own under the Service's name.
			return nil, &ConfigError{Object: "DestinationRule/" + dr.Name, Field: "spec.host", Msg: fmt.Sprintf(
				"has host %s, not %s, and no DestinationRule sets host %s: splitter would create one named %s; create one for %s with subsets blue and green, or rename this one",
				dr.Spec.Host, t.Service, t.Service, t.Service, t.Service)}
		}
	}
	slices.SortStableFunc(out, func(a, b *networkingv1.DestinationRule) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

// Release deletes splitter's own VirtualService and DestinationRule so the
// Service routes as it did before opt-in. A user's VirtualService keeps its
// weights (the live color at 100%) and the DestinationRule its subsets stay
// with it: splitter never leaves a user's route pointing at nothing.
func (r Istio) Release(ctx context.Context, t Target) error {
	if t.VirtualService != "" {
		return nil
	}
	key := client.ObjectKey{Namespace: t.Namespace, Name: t.Service}
	if err := r.deleteIfOwned(ctx, KindVirtualService, key, &networkingv1.VirtualService{}, t.Owner); err != nil {
		return err
	}
	return r.deleteIfOwned(ctx, KindDestinationRule, key, &networkingv1.DestinationRule{}, t.Owner)
}

// deleteIfOwned deletes the object at key only if owner owns it, with a
// UID precondition so a re-created object of the same name is left alone.
// An object we created that the cache does not show yet is deleted too, and
// one we deleted that the cache still shows is not deleted again.
func (r Istio) deleteIfOwned(ctx context.Context, kind string, key client.ObjectKey, obj client.Object, owner metav1.Object) error {
	cur, err := r.read(ctx, kind, key, obj)
	if err != nil || cur == nil {
		return err
	}
	if !isOwnedBy(cur, owner) {
		return nil
	}
	uid := cur.GetUID()
	err = client.IgnoreNotFound(r.Client.Delete(ctx, cur, client.Preconditions{UID: &uid}))
	r.wrote(kind, err)
	if err == nil {
		r.last.remember(kind, key, cur.GetResourceVersion(), nil)
	}
	return err
}

// ColorSubsetRouted returns a color subset that the VirtualService still
// routes to, or "" when none: while one is, opting out would leave that
// route pointing at pods that are about to go.
func ColorSubsetRouted(vs *networkingv1.VirtualService) string {
	for _, route := range vs.Spec.Http {
		for _, d := range route.GetRoute() {
			if sub := d.GetDestination().GetSubset(); sub == string(splitterv1.Blue) || sub == string(splitterv1.Green) {
				return sub
			}
		}
	}
	return ""
}

// PinnedNotLive is the warning for routes pinned to a color that is not
// live (and not the candidate of a release in progress) in status now,
// when that set of routes is new since status before: such a route sends
// its requests to the standby color, which is scaled to zero when the
// standby ends, or to a candidate that was rolled back. "" when there is
// nothing new to say.
func PinnedNotLive(before, now splitterv1.SplitStatus) string {
	stale := func(st splitterv1.SplitStatus) []string {
		if st.Live == "" {
			return nil
		}
		_, keep := PinColors(st)
		var out []string
		for _, p := range st.PinnedRoutes {
			if p.Color != st.Live && p.Color != keep {
				out = append(out, p.Route+" -> "+string(p.Color))
			}
		}
		return out
	}
	was, is := stale(before), stale(now)
	if len(is) == 0 || slices.Equal(was, is) {
		return ""
	}
	return fmt.Sprintf("routes pinned to a color that is not live (%s is): %s; that color is scaled to zero when it is no longer needed and the route will fail: "+
		"point it at %s, or annotate the Deployment with %s: %s to have splitter move pinned routes to the live color",
		now.Live, strings.Join(is, ", "), now.Live, splitterv1.PinnedRoutesAnnotation, splitterv1.PinnedRoutesFollowLive)
}
